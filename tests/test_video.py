"""p2p-video, p2p-live and p2p-translate as a user runs them, on the real clips in ../shared/data/video."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import one_line_error, shared_data
from test_runtime import export_tiny

from p2p.video import display
from p2p.video.capture import (
    CaptureError,
    LatestFrameReader,
    Source,
    has_gstreamer,
    parse_source,
)
from p2p.video.cli import translate_main, video_main
from p2p.video.display import FpsMeter
from p2p.video.live import CSI_PIPELINE, SnapshotSaver
from p2p.video.live import main as live_main


@pytest.fixture(scope="session")
def model(tmp_path_factory) -> Path:
    return export_tiny("paired", tmp_path_factory.mktemp("models"))[0]


def clip(name: str) -> Path:
    return shared_data("video", name)


def probe(path: Path) -> tuple[int, float, tuple[int, int]]:
    """(frames actually decodable, frame rate, (width, height)) of a video file."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    fps, size = cap.get(cv2.CAP_PROP_FPS), (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    count = 0
    while cap.grab():
        count += 1
    cap.release()
    return count, fps, size


def invoke(command, *args: str):
    return CliRunner().invoke(command, [str(a) for a in args])


# --- p2p-video -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tree.avi", "vtest_first10s.mp4"])
def test_video_keeps_frame_count_and_rate(tmp_path, model, name):
    """The container's frame count, not just the decodable pictures (tree.avi: 444 frames, 68 pictures)."""
    src = clip(name)
    _, fps, size = probe(src)
    cap = cv2.VideoCapture(str(src))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    out = tmp_path / "out.mp4"
    result = invoke(video_main, model, src, out, "--no-progress", "--noise", "per-frame", "--seed", "0")
    assert result.exit_code == 0, result.output
    assert f"{frames} frames" in result.output
    out_frames, out_fps, out_size = probe(out)
    assert out_frames == frames and out_size == size
    assert out_fps == pytest.approx(fps, rel=1e-3)


def test_video_side_by_side_and_fit_pad(tmp_path, model):
    src = clip("vtest_first10s.mp4")
    out = tmp_path / "side.avi"
    result = invoke(video_main, model, src, out, "--side-by-side", "--fit", "pad", "--max-frames", "12",
                    "--no-progress", "--noise", "off")
    assert result.exit_code == 0, result.output
    frames, fps, size = probe(out)
    assert (frames, size) == (12, (2 * 768, 576)) and fps == pytest.approx(10)
    # the left half is the input frame itself; the right half the translation
    cap_in, cap_out = cv2.VideoCapture(str(src)), cv2.VideoCapture(str(out))
    (_, original), (_, written) = cap_in.read(), cap_out.read()
    assert np.abs(written[:, :768].astype(int) - original).mean() < 6  # MJPEG is lossy, not different
    assert np.abs(written[:, 768:].astype(int) - original).mean() > 20


def test_video_errors_are_one_line(tmp_path, model):
    src = clip("tree.avi")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    assert "does not exist" in one_line_error(invoke(video_main, model, tmp_path / "missing.mp4", tmp_path / "o.mp4"))
    assert "cannot read" in one_line_error(invoke(video_main, model, text, tmp_path / "o.mp4"))
    assert "does not exist" in one_line_error(invoke(video_main, model, src, tmp_path / "no" / "dir" / "o.mp4"))
    assert "unknown video type" in one_line_error(invoke(video_main, model, src, tmp_path / "o.gif"))
    assert "is the input" in one_line_error(invoke(video_main, model, src, src))
    assert "model" in one_line_error(invoke(video_main, tmp_path / "nope.onnx", src, tmp_path / "o.mp4"))
    if os.geteuid() != 0:  # root can write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "no permission" in one_line_error(invoke(video_main, model, src, locked / "o.mp4"))
    assert not list(tmp_path.glob("o.*"))  # nothing half-written left behind
    assert one_line_error(invoke(video_main, model, src, tmp_path / "o.mp4", "--size", "huge"), code=2)


# --- p2p-live ------------------------------------------------------------------------------
def test_live_headless_on_a_clip_reports_fps(tmp_path, model):
    record = tmp_path / "rec.mp4"
    result = invoke(live_main, model, "--source", clip("tree.avi"), "--headless", "--max-frames", "8",
                    "--record", record)
    assert result.exit_code == 0, result.output
    summary = re.search(r"(\d+) frames in [\d.]+ s: ([\d.]+) fps \(ort-cpu \| noise fixed", result.stderr)
    assert summary and int(summary.group(1)) == 8 and float(summary.group(2)) > 0, result.output
    assert result.stdout == ""  # the summary and the frame-rate lines are messages: stderr, like the others
    frames, _, size = probe(record)
    assert frames == 8 and size == (640, 240)  # input | output


def test_live_file_source_ends_cleanly(tmp_path, model):
    """A file replayed as a live source ends when the file does (paced at its 10 fps: ~1 s here)."""
    short = tmp_path / "short.avi"
    cap = cv2.VideoCapture(str(clip("vtest_first10s.mp4")))
    writer = cv2.VideoWriter(str(short), cv2.VideoWriter_fourcc(*"MJPG"), 10, (192, 144))
    for _ in range(10):
        writer.write(cv2.resize(cap.read()[1], (192, 144)))
    writer.release()
    result = invoke(live_main, model, "--source", short, "--headless", "--noise", "per-frame")
    assert result.exit_code == 0, result.output
    count = int(re.search(r"(\d+) frames in", result.output).group(1))
    assert 1 <= count <= 10


def test_live_without_camera_is_one_line(tmp_path):
    """The real program, as typed, on a machine without a camera: one line on stderr, exit 1."""
    if Path("/dev/video0").exists():
        pytest.skip("this machine has a camera at /dev/video0")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = "import sys; from p2p.video.live import main; sys.argv = ['p2p-live', '--camera', '0']; main()"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot open camera 0"), result.stderr
    assert result.stdout == ""


def test_live_window_needs_a_gui(model, monkeypatch):
    """With opencv-python-headless (P2P_OPENCV=headless ./install.sh): one line saying what to do."""
    monkeypatch.setattr(display, "gui_backend", lambda: "NONE")
    line = one_line_error(invoke(live_main, model, "--source", clip("tree.avi")))
    assert "--headless" in line and "pip install opencv-python" in line and "./install.sh" in line


def test_live_window_needs_a_display(model, monkeypatch):
    """A GUI OpenCV on a machine without a display (SSH, CI): one line pointing at --headless."""
    monkeypatch.setattr(display, "gui_backend", lambda: "QT5")
    monkeypatch.setattr(display.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    line = one_line_error(invoke(live_main, model, "--source", clip("tree.avi")))
    assert "no display here" in line and "--headless" in line


def test_live_default_model_from_runs(tmp_path, model, monkeypatch):
    import p2p.runtime.artifacts as artifacts

    monkeypatch.chdir(tmp_path)
    result = invoke(live_main, "--source", clip("tree.avi"), "--headless", "--max-frames", "1")
    assert result.exit_code == 0, result.output
    demo = artifacts.demo_model()
    assert f"model: {demo} (no export under runs/: the shipped demo model)\n" in result.stderr

    monkeypatch.setattr(artifacts, "demo_model", lambda: None)
    assert "no MODEL given" in one_line_error(invoke(live_main, "--source", clip("tree.avi"), "--headless"))
    exported = tmp_path / "runs" / "facades" / "model.onnx"
    exported.parent.mkdir(parents=True)
    exported.write_bytes(model.read_bytes())
    result = invoke(live_main, "--source", clip("tree.avi"), "--headless", "--max-frames", "2")
    assert result.exit_code == 0, result.output
    assert f"model: {Path('runs') / 'facades' / 'model.onnx'} (newest export under runs/)\n" in result.stderr


def test_headless_ctrl_c_stops_with_the_summary(tmp_path):
    """Ctrl+C is how a headless run on a camera ends: exit 0 and the summary, not click's 'Aborted!'."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DISPLAY", None)
    code = "from p2p.video.live import main; main()"
    process = subprocess.Popen([sys.executable, "-c", code, "--source", str(clip("vtest_first10s.mp4")),
                                "--headless"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        line = ""
        while not line.startswith("frame ") and time.monotonic() < deadline and process.poll() is None:
            line = process.stderr.readline()  # the first per-second frame-rate line: the loop is running
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "Aborted" not in err and "Traceback" not in err, err
    assert re.search(r"^\d+ frames in [\d.]+ s: [\d.]+ fps", err, re.M), err
    assert out == ""


def test_fps_meter_leaves_out_paused_time():
    now = [0.0]
    meter = FpsMeter(clock=lambda: now[0])
    for _ in range(10):
        now[0] += 0.1
        meter.tick()
    meter.pause()
    now[0] += 5.0  # paused 5 s
    assert meter.elapsed == pytest.approx(1.0)
    meter.resume()
    now[0] += 0.1
    meter.tick()
    assert meter.overall == pytest.approx(11 / 1.1) and meter.fps == pytest.approx(10.0)
    assert meter.paused_for == pytest.approx(5.0)


def test_snapshots_are_unique_and_never_overwrite(tmp_path):
    saver = SnapshotSaver(tmp_path, clock=lambda: 1_700_000_000.25)  # every snapshot in the same millisecond
    first = saver.save(np.zeros((4, 6, 3), np.uint8))
    taken = first.with_name(first.name.replace("-001.png", "-002.png"))
    taken.write_bytes(b"someone else's file")
    second = saver.save(np.ones((4, 6, 3), np.uint8))
    assert "-250-" in first.name  # milliseconds in the name
    assert second != first and second != taken and taken.read_bytes() == b"someone else's file"
    assert cv2.imread(str(second)).max() == 1 and cv2.imread(str(first)).max() == 0


def test_live_bad_options(model):
    assert "not both" in one_line_error(invoke(live_main, model, "--camera", "1", "--source", "x.mp4"), code=2)
    if not has_gstreamer():
        line = one_line_error(invoke(live_main, model, "--source", CSI_PIPELINE, "--headless"))
        assert "GStreamer" in line and "JetPack" in line


# --- capture: newest frame only, reconnects -------------------------------------------------
class FakeCapture:
    """Delivers `frames` numbered frames as fast as asked, then fails like an unplugged camera."""

    def __init__(self, frames: int, delay: float = 0.0):
        self.left, self.delay, self.n = frames, delay, 0

    def read(self):
        time.sleep(self.delay)
        if self.left <= 0:
            return False, None
        self.left -= 1
        self.n += 1
        return True, np.full((4, 4, 3), self.n, np.uint8)

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        pass


class FakeSource(Source):
    def __init__(self, captures):
        super().__init__("camera", 9)
        object.__setattr__(self, "captures", list(captures))

    def open(self):
        if not self.captures:
            raise CaptureError("camera 9 is gone")
        return self.captures.pop(0)


def test_reader_keeps_only_the_newest_frame():
    reader = LatestFrameReader(FakeSource([FakeCapture(200, delay=0.001)]), reconnects=0, retry_delay=0.01).start()
    first = reader.read(timeout=5)
    time.sleep(0.1)  # a slow consumer: the camera delivers many frames meanwhile
    second = reader.read(timeout=5)
    assert second[0, 0, 0] - first[0, 0, 0] > 5  # the frames in between were skipped, not queued
    reader.stop()
    assert reader.dropped > 0


def test_reader_reconnects_then_gives_one_clear_line():
    events = []
    source = FakeSource([FakeCapture(3), FakeCapture(2)])  # drops, comes back once, then is gone
    reader = LatestFrameReader(source, reconnects=3, retry_delay=0.01, on_event=events.append).start()
    seen = []
    with pytest.raises(CaptureError, match=r"camera 9 stopped delivering frames and did not come back after 3"):
        while True:
            frame = reader.read(timeout=5)
            seen.append(int(frame[0, 0, 0]))
            time.sleep(0.02)  # slower than the fake camera: keeps only the newest
    assert seen and seen[-1] == 2  # the last frame of the second connection was delivered
    assert len(events) == 1 + 3 and all("reconnecting" in e for e in events)
    reader.stop()


def test_parse_source():
    assert parse_source() == Source("camera", 0)
    assert parse_source(camera=2) == Source("camera", 2)
    assert parse_source(source="1") == Source("camera", 1)
    assert parse_source(source="rtsp://cam/stream").kind == "url"
    assert parse_source(source="clip.mp4") == Source("file", "clip.mp4")
    assert parse_source(source=CSI_PIPELINE).kind == "pipeline"
    assert not Source("file", "x.mp4").live and Source("url", "http://x").live


# --- p2p-translate ---------------------------------------------------------------------------
def test_translate_images_and_samples(tmp_path, model):
    photos = sorted(shared_data("photos", "val").glob("*.jpg"))[:3]
    folder = tmp_path / "in"
    folder.mkdir()
    for p in photos:
        (folder / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    result = invoke(translate_main, model, folder, "-o", out, "--noise", "off")
    assert result.exit_code == 0, result.output
    for p in photos:
        image, source = cv2.imread(str(out / f"{p.stem}.png")), cv2.imread(str(p))
        assert image.shape == source.shape
    result = invoke(translate_main, model, photos[0], "-o", out / "k", "--samples", "3", "--seed", "0",
                    "--fit", "pad")
    assert result.exit_code == 0, result.output
    samples = [cv2.imread(str(out / "k" / f"{photos[0].stem}_s{k}.png")) for k in range(3)]
    assert all(s.shape == cv2.imread(str(photos[0])).shape for s in samples)
    assert not np.array_equal(samples[0], samples[1]) and not np.array_equal(samples[1], samples[2])


def test_translate_errors(tmp_path, model):
    assert "needs --noise per-frame" in one_line_error(
        invoke(translate_main, model, tmp_path, "-o", tmp_path / "o", "--samples", "2", "--noise", "fixed"), code=2)
    assert "no images" in one_line_error(invoke(translate_main, model, tmp_path, "-o", tmp_path / "o"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert "broken.png" in one_line_error(invoke(translate_main, model, broken, "-o", tmp_path / "o"))


def test_help_has_examples():
    for command in (live_main, video_main, translate_main):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Examples:" in result.output


def test_a_bug_keeps_its_traceback_and_p2p_debug_shows_user_errors_in_full(tmp_path, model, monkeypatch):
    """One-line output is for errors p2p raises on purpose; a programming error is a bug to report."""
    from p2p.runtime.translator import Translator

    frame = tmp_path / "in.png"
    cv2.imwrite(str(frame), np.full((40, 40, 3), 128, np.uint8))

    def broken(self, image):
        raise ValueError("index arithmetic went wrong")  # a bug, not the user's input
    monkeypatch.setattr(Translator, "translate", broken)
    result = invoke(translate_main, model, frame, "-o", tmp_path / "o")
    assert isinstance(result.exception, ValueError)  # propagates: Python prints the traceback
    assert "Error: index arithmetic" not in result.output
    monkeypatch.undo()

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert "broken.png" in one_line_error(invoke(translate_main, model, bad, "-o", tmp_path / "o"))
    monkeypatch.setenv("P2P_DEBUG", "1")
    result = invoke(translate_main, model, bad, "-o", tmp_path / "o")
    assert result.exit_code == 1 and type(result.exception).__name__ == "ImageError"  # the full traceback
