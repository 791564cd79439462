"""p2p-train: objectives, exact resume, and every kind of bad input, on CPU."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from conftest import one_line_error, shared_data

from p2p.training.checkpoint import load_checkpoint
from p2p.training.cli import main
from p2p.training.config import default_data_dir
from p2p.training.objective import OBJECTIVES
from p2p.training.trainer import TrainConfig, Trainer

TINY = ["--size", "32", "--ngf", "4", "--ndf", "4", "--no-progress", "--sample-every", "1000"]


def train(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def fail(*args: str, code: int = 1) -> str:
    """A run that must stop with a clear one-line error, not a traceback; returns that line."""
    return one_line_error(CliRunner().invoke(main, list(args)), code)


def write_aligned(folder: Path, n: int = 4, h: int = 40, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 255, (h, 2 * h, 3), dtype=np.uint8))
    return folder


@pytest.mark.parametrize("objective,unconditional",
                         [(o, False) for o in OBJECTIVES] + [("l1+cgan", True), ("cgan", True)])
def test_each_objective_gives_finite_losses_and_gradients(tmp_path, objective, unconditional):
    cfg = TrainConfig(data=str(default_data_dir()), out=str(tmp_path), task="edges", size=32, ngf=4, ndf=4,
                      objective=objective, unconditional=unconditional, batch_size=2, progress=False)
    t = Trainer(cfg)
    before = [p.detach().clone() for p in t.G.parameters()]
    x, y, _ = next(iter(t.loader(0, 0)))
    losses = t.step(x, y)
    assert losses and all(np.isfinite(v) for v in losses.values())
    assert ("d" in losses) == (objective != "l1")
    assert ("g_l1" in losses) == objective.startswith("l1")
    assert all(torch.isfinite(p.grad).all() for p in t.G.parameters() if p.grad is not None)
    assert any(not torch.equal(a, b) for a, b in zip(before, t.G.parameters()))
    if t.D is not None:  # D sees (x, y) when conditional, y alone otherwise
        conditional = "cgan" in objective and not unconditional
        assert t.D.model[0].in_channels == (4 if conditional else 3)


def test_resume_is_exact(tmp_path):
    args = ["--out"] + TINY + ["--batch-size", "8", "--epochs", "1", "--epochs-decay", "1", "--iters", "10"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train(*args[:1], str(straight), *args[1:]).exit_code == 0
    cut = [a if a != "10" else "4" for a in args]  # stops inside the first epoch (7 batches/epoch)
    assert train(cut[0], str(split), *cut[1:]).exit_code == 0
    assert load_checkpoint(split)["iteration"] == 4
    assert train("--out", str(split), "--resume", "--iters", "10", "--no-progress").exit_code == 0
    a, b = load_checkpoint(straight), load_checkpoint(split)
    assert a["iteration"] == b["iteration"] == 10 and a["epoch"] == b["epoch"] == 1
    for key in ("generator", "discriminator"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"
    assert a["opt_g"]["param_groups"][0]["lr"] == b["opt_g"]["param_groups"][0]["lr"] < 2e-4  # decay began
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_run_writes_log_samples_curve_and_checkpoint(tmp_path):
    out = tmp_path / "run"
    r = train("--out", str(out), *TINY[:-2], "--sample-every", "3", "--iters", "6", "--task", "colorize")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["iteration"] == 6
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("loss_d" in r for r in records) and [r["iter"] for r in records if "val_l1" in r] == [0, 3, 6]
    assert cv2.imread(str(out / "loss.png")) is not None
    grid = cv2.imread(str(out / "samples" / "iter_0000006.png"))
    assert grid.shape[1] == 3 * 32  # input | output | target
    state = load_checkpoint(out)
    assert state["spec"].task == "colorize" and state["spec"].out_channels == 2
    assert not list(out.glob(".*tmp*")), "temporary files left behind"


# --- bad input -------------------------------------------------------------------------
def test_missing_and_empty_data_folders(tmp_path):
    assert "does not exist" in fail("--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), *TINY)
    (tmp_path / "empty").mkdir()
    assert "no images" in fail("--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), *TINY)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_images_are_named(tmp_path, damage):
    data = write_aligned(tmp_path / "d")
    bad = data / "2.png"
    raw = bad.read_bytes()
    bad.write_bytes({"garbage": b"not an image at all", "truncated": raw[: len(raw) // 3], "empty": b""}[damage])
    out = fail("--data", str(data), "--out", str(tmp_path / "o"), *TINY, "--iters", "2")
    assert "2.png" in out
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


def test_aligned_image_of_wrong_width(tmp_path):
    data = write_aligned(tmp_path / "d")
    cv2.imwrite(str(data / "1.png"), np.zeros((40, 50, 3), np.uint8))
    assert "width must be twice the height" in fail("--data", str(data), "--out", str(tmp_path / "o"), *TINY)


def test_grayscale_rgba_and_16bit_images_train(tmp_path):
    data = write_aligned(tmp_path / "d", n=1)
    rng = np.random.default_rng(1)
    cv2.imwrite(str(data / "g.png"), rng.integers(0, 255, (40, 80), dtype=np.uint8))
    cv2.imwrite(str(data / "a.png"), rng.integers(0, 255, (40, 80, 4), dtype=np.uint8))
    cv2.imwrite(str(data / "w.png"), rng.integers(0, 65535, (40, 80, 3), dtype=np.uint16))
    cv2.imwrite(str(data / "w.tif"), rng.integers(0, 65535, (40, 80), dtype=np.uint16))
    r = train("--data", str(data), "--out", str(tmp_path / "o"), *TINY, "--iters", "5")
    assert r.exit_code == 0, r.output


def test_mismatched_a_b_folders(tmp_path):
    for side, names in (("A", ["x", "y"]), ("B", ["x", "z"])):
        (tmp_path / "d" / side).mkdir(parents=True)
        for n in names:
            cv2.imwrite(str(tmp_path / "d" / side / f"{n}.png"), np.zeros((32, 32, 3), np.uint8))
    out = fail("--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), *TINY)
    assert "do not match" in out and "'y'" in out and "'z'" in out


def test_matching_a_b_folders_train(tmp_path):
    for side in "AB":
        (tmp_path / "d" / side).mkdir(parents=True)
        for n in range(3):
            cv2.imwrite(str(tmp_path / "d" / side / f"{n}.jpg"), np.full((48, 48, 3), 40 * n, np.uint8))
    assert train("--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), *TINY, "--iters", "2").exit_code == 0


def test_image_smaller_than_crop_is_upscaled_with_a_warning(tmp_path):
    data = write_aligned(tmp_path / "d", n=2, h=12)
    r = CliRunner().invoke(main, ["--data", str(data), "--out", str(tmp_path / "o"), *TINY, "--iters", "2"])
    assert r.exit_code == 0, r.output
    assert "smaller than --size 32" in r.output


def test_resume_with_another_architecture_is_refused(tmp_path):
    out = tmp_path / "o"
    assert train("--out", str(out), *TINY, "--iters", "2").exit_code == 0
    before = (out / "checkpoint.pt").read_bytes()
    msg = fail("--out", str(out), "--resume", "--ngf", "8", "--iters", "3", "--no-progress")
    assert "ngf=4 there" in msg and "ngf=8 asked" in msg
    msg = fail("--out", str(out), "--resume", "--generator", "encdec", "--iters", "3", "--no-progress")
    assert "generator" in msg
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_of_a_corrupt_checkpoint_is_refused(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"\x80\x04garbage")
    assert "not a readable p2p checkpoint" in fail("--out", str(out), "--resume", *TINY)
    assert "does not exist" in fail("--out", str(tmp_path / "new"), "--resume", *TINY)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path):
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "p2p.training", "--out", str(out), *TINY, "--iters", "100000", "--log-every", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = out / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and log.read_text().count("loss_d") >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    state = load_checkpoint(out)
    assert state["iteration"] >= 3
    r = train("--out", str(out), "--resume", "--iters", str(state["iteration"] + 2), "--no-progress")
    assert r.exit_code == 0, r.output
    assert load_checkpoint(out)["iteration"] == state["iteration"] + 2


def test_the_time_estimate_after_resume_counts_from_where_the_run_resumed(tmp_path):
    out = tmp_path / "o"
    assert train("--out", str(out), *TINY, "--iters", "4").exit_code == 0
    r = CliRunner().invoke(main, ["--out", str(out), "--resume", "--iters", "30", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "training 26 iterations" in r.output and "21 iterations to go" in r.output, r.output


@pytest.mark.slow
def test_real_facades_validation_l1_drops(tmp_path):
    data = shared_data("facades")
    out = tmp_path / "facades"
    r = train("--data", str(data), "--direction", "BtoA", "--out", str(out), "--size", "64", "--ngf", "16",
              "--ndf", "16", "--iters", "150", "--sample-every", "150", "--no-progress", "--batch-size", "4")
    assert r.exit_code == 0, r.output
    val = [json.loads(line)["val_l1"] for line in (out / "log.jsonl").read_text().splitlines() if "val_l1" in line]
    assert len(val) == 2 and val[-1] < val[0] - 0.005, val


def test_patch_too_large_for_the_size_is_a_clear_error(tmp_path):
    msg = fail("--out", str(tmp_path / "o"), "--size", "64", "--ngf", "4", "--ndf", "4", "--patch", "286",
               "--iters", "1", "--no-progress", code=2)  # a bad flag combination: click's usage exit
    assert "--patch 286 at --size 64" in msg
    r = train("--out", str(tmp_path / "o2"), "--size", "128", "--ngf", "4", "--ndf", "4", "--patch", "286",
              "--iters", "1", "--no-progress")
    assert r.exit_code == 0, r.output


def test_tensorboard_event_files_hold_the_curves_and_the_grid(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    r = train("--out", str(out), *TINY[:-2], "--iters", "4", "--sample-every", "2", "--log-every", "1", "--tensorboard")
    assert r.exit_code == 0, r.output
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    for tag in ("loss/D", "loss/G_GAN", "loss/G_L1", "learning_rate", "images_per_s", "validation/L1"):
        assert tag in tags["scalars"], tags
    assert [e.step for e in events.Scalars("loss/G_L1")] == [1, 2, 3, 4]
    logged = [json.loads(line)["val_l1"] for line in (out / "log.jsonl").read_text().splitlines() if "val_l1" in line]
    assert [round(e.value, 5) for e in events.Scalars("validation/L1")] == [round(v, 5) for v in logged]
    grids = events.Images("samples")
    assert [g.step for g in grids] == [0, 2, 4] and grids[0].width == 3 * 32
