"""Full disks, read-only file systems and broken inputs (docs/promises.md): one line that names the file and
says what is intact, a non-zero exit, and nothing a user had before the fault is lost.

The disks are real: small tmpfs mounts that fill up (conftest.small_disk) or are mounted read-only
(conftest.read_only); a fake writer that stops at the Nth byte covers the log's partial write.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TINY, flip_byte, invoke, one_line_error, shared_data
from test_runtime import export_tiny

from p2p.evaluation.cli import main as eval_main
from p2p.export.cli import main as export_main
from p2p.runtime import files
from p2p.runtime.errors import OutputError
from p2p.runtime.images import ImageError, read_image
from p2p.training.checkpoint import load_checkpoint
from p2p.training.cli import main as train_main
from p2p.training.config import default_data_dir
from p2p.video import pipeline
from p2p.video.cli import translate_main, video_main


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return export_tiny("paired", tmp_path_factory.mktemp("models"))[0]


def images(folder: Path, n: int, size: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    return folder


def no_temporaries(folder: Path) -> bool:
    return not [p for p in Path(folder).rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


# --- 4. a full disk while training ----------------------------------------------------------------------------
def test_a_full_disk_during_a_checkpoint_save_keeps_the_last_one(tiny_run, small_disk):
    size = (tiny_run / "checkpoint.pt").stat().st_size
    out = small_disk(f"{(size * 3 // 2 + 200_000) // 1024}k") / "run"  # room for one checkpoint, not two
    line = one_line_error(invoke(train_main, "--out", out, *TINY, "--iters", "6", "--save-every", "2"))
    assert line.startswith(f"Error: disk full writing {out / 'checkpoint.pt'}"), line
    assert "the checkpoint of iteration 2" in line and "is intact" in line and "--resume" in line, line
    assert load_checkpoint(out)["iteration"] == 2  # and its checksum verifies
    assert no_temporaries(out)
    assert all(json.loads(line) for line in (out / "log.jsonl").read_text().splitlines())


def test_a_full_disk_mid_line_leaves_the_log_whole(small_disk):
    disk = small_disk("64k")
    log = disk / "log.jsonl"
    log.write_text('{"iter": 1}\n' * 300)  # 3.6 kB: the rest of its last page is still free
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill every other page of the disk
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    before = log.read_bytes()
    with pytest.raises(OutputError, match=f"disk full writing {log}"):
        files.append_line(log, json.dumps({"iter": 2, "note": "x" * 1000}))  # fits only in part
    assert log.read_bytes() == before  # the part that fitted was taken back


def test_a_full_disk_during_a_log_append_stops_the_run_in_one_line(tmp_path, monkeypatch):
    real, budget = os.write, {"bytes": 700}

    def write(fd, data):  # a disk with 700 bytes left: a short write, then ENOSPC
        if budget["bytes"] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, bytes(data[:budget["bytes"]]))
        budget["bytes"] -= n
        return n

    monkeypatch.setattr(files.os, "write", write)
    out = tmp_path / "run"
    line = one_line_error(invoke(train_main, "--out", out, *TINY, "--iters", "50", "--save-every", "2",
                                 "--log-every", "1"))
    assert f"disk full writing {out / 'log.jsonl'}" in line and "is intact" in line, line
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records and (out / "log.jsonl").read_text().endswith("\n")  # whole lines only
    assert load_checkpoint(out)["iteration"] <= records[-1]["iter"]


def test_a_torn_last_log_line_is_dropped_with_a_note_and_the_run_resumes(tiny_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    with open(out / "log.jsonl", "a") as f:
        f.write('{"iter": 5, "loss_d": 0.6')  # what an old version left on a full disk
    r = invoke(train_main, "--out", out, "--resume", "--iters", "5", "--no-progress", "--log-every", "1")
    assert r.exit_code == 0, r.output
    assert "dropped a torn last line" in r.output, r.output
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if "loss_d" in r][-1] == 5


# --- 4. read-only file systems --------------------------------------------------------------------------------
def test_read_only_file_systems_are_named_as_such(tiny_run, model, read_only, tmp_path):
    ro = read_only(lambda d: shutil.copytree(tiny_run, d / "run"))
    for args in (["--out", ro / "new", *TINY, "--iters", "1"], ["--out", ro / "run", "--resume", "--iters", "6"]):
        line = one_line_error(invoke(train_main, *args))
        assert "read-only file system" in line and "permission" not in line, line
    assert load_checkpoint(ro / "run")["iteration"] == 4
    image_dir = images(tmp_path / "in", 1)
    for command, args in ((translate_main, [model, image_dir, "-o", ro / "out"]),
                          (export_main, [tiny_run, "-o", ro / "model.onnx"]),
                          (video_main, [model, shared_data("video", "tree.avi"), ro / "out.mp4", "--max-frames", "3"]),
                          (eval_main, [tiny_run, "--data", default_data_dir(), "--limit", "1", "--no-progress",
                                       "--report", ro / "report"])):
        line = one_line_error(invoke(command, *args))
        assert "read-only file system" in line.lower() and "permission" not in line, (command.name, line)


# --- 4. a full disk in the other commands ---------------------------------------------------------------------
@pytest.mark.slow
def test_export_on_a_full_disk_names_the_file_and_leaves_nothing(tiny_run, small_disk, monkeypatch, tmp_path):
    disk = small_disk("32k")
    line = one_line_error(invoke(export_main, tiny_run, "-o", disk / "model.onnx"))
    assert line == f"Error: disk full writing {disk / 'model.onnx'}", line
    assert not list(disk.iterdir())
    from p2p.export import onnx_export

    def nameless(path, data):  # ENOSPC as many libraries raise it: no file name attached
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(onnx_export, "write_atomic", nameless)
    line = one_line_error(invoke(export_main, tiny_run, "-o", tmp_path / "model.onnx"))
    assert line == f"Error: disk full writing {tmp_path / 'model.onnx'}", line


def test_translate_on_a_full_disk_keeps_what_it_wrote_whole(model, small_disk, tmp_path):
    disk = small_disk("96k")
    line = one_line_error(invoke(translate_main, model, images(tmp_path / "in", 12, 96), "-o", disk))
    assert line.startswith(f"Error: disk full writing {disk}/") and "written before it are whole" in line, line
    written = sorted(disk.glob("*.png"))
    assert written and all(cv2.imread(str(p)) is not None for p in written)
    assert no_temporaries(disk)


# --- 7. videos: written beside the final name, checked, renamed ------------------------------------------------
def test_a_video_on_a_full_disk_fails_in_one_line_and_leaves_the_old_file(model, small_disk):
    disk = small_disk("384k")
    out = disk / "out.avi"
    out.write_bytes(b"yesterday's video")
    line = one_line_error(invoke(video_main, model, shared_data("video", "tree.avi"), out, "--max-frames", "150",
                                 "--no-progress"))
    assert line.startswith(f"Error: disk full writing {out}") and "earlier file there is untouched" in line, line
    assert out.read_bytes() == b"yesterday's video"
    assert [p.name for p in disk.iterdir()] == ["out.avi"]  # no temporary file left either


def test_a_video_that_reads_back_short_is_not_left_under_its_name(model, tmp_path, monkeypatch):
    real = pipeline.VideoOutput.write

    def dropping(self, frame):  # an encoder that loses frames without a word, as OpenCV's may
        if self.frames % 5:
            self.writer.write(frame)
        self.frames += 1

    monkeypatch.setattr(pipeline.VideoOutput, "write", dropping)
    out = tmp_path / "out.mp4"
    line = one_line_error(invoke(video_main, model, shared_data("video", "tree.avi"), out, "--max-frames", "20",
                                 "--no-progress"))
    assert "reads back as 16 of 20 frames" in line and "nothing was left under out.mp4" in line, line
    assert not list(tmp_path.iterdir())
    monkeypatch.setattr(pipeline.VideoOutput, "write", real)
    r = invoke(video_main, model, shared_data("video", "tree.avi"), out, "--max-frames", "20", "--no-progress")
    assert r.exit_code == 0 and "wrote" in r.output, r.output
    assert int(cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT)) == 20


def test_a_1x1_video_names_the_size_not_a_missing_encoder(model, tmp_path):
    src = tmp_path / "dot.avi"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (1, 1))
    for _ in range(3):
        writer.write(np.full((1, 1, 3), 200, np.uint8))
    writer.release()
    line = one_line_error(invoke(video_main, model, src, tmp_path / "out.mp4", "--no-progress"))
    assert "refuses 1x1 frames" in line and "no mp4v encoder" not in line, line
    assert not (tmp_path / "out.mp4").exists() and no_temporaries(tmp_path)


# --- 8. broken inputs: the file named, no traceback -----------------------------------------------------------
def test_an_image_over_opencvs_pixel_limit_is_one_line_naming_it(model, tmp_path):
    folder = images(tmp_path / "in", 1)
    r = subprocess.run([str(Path(sys.executable).parent / "p2p-translate"), str(model), str(folder / "0.png"), "-o",
                        str(tmp_path / "out")], capture_output=True, text=True,
                       env={**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": "100"}, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"{folder / '0.png'}: too many pixels for OpenCV" in r.stderr, r.stderr


def test_a_jpeg_damaged_in_the_middle_is_refused_naming_it(model, tmp_path, capfd):
    data = tmp_path / "facades" / "train"
    data.mkdir(parents=True)
    for name in ("1.jpg", "10.jpg"):
        shutil.copy(shared_data("facades", "train", name), data / name)
    raw = (data / "10.jpg").read_bytes()
    start = raw.index(b"\xff\xda") + (len(raw) - raw.index(b"\xff\xda")) // 2
    for k in range(20):  # damage in the middle of the scan: libjpeg decodes it anyway, with a warning
        flip_byte(data / "10.jpg", start + k)
    with pytest.raises(ImageError, match="10.jpg: damaged JPEG data"):
        read_image(data / "10.jpg")
    line = one_line_error(invoke(train_main, "--data", data.parent, "--out", tmp_path / "run", *TINY, "--iters", "1"))
    assert f"{data / '10.jpg'}: damaged JPEG data" in line and "fix or remove it" in line, line
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    line = one_line_error(invoke(translate_main, model, data / "10.jpg", "-o", tmp_path / "out"))
    assert "10.jpg: damaged JPEG data" in line, line
    assert "Corrupt JPEG" not in capfd.readouterr().err  # libjpeg's own nameless warning is not shown
