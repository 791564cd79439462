"""p2p-train --teacher: a narrow student distilled from a trained teacher, on real data."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import one_line_error, shared_data

from p2p.training.checkpoint import load_checkpoint
from p2p.training.cli import main

TINY = ["--size", "32", "--ndf", "8", "--no-progress", "--sample-every", "1000"]


def train(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny facades labels→photo teacher (ngf 16) trained for a few iterations on the real data."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    r = train("--data", shared_data("facades"), "--direction", "BtoA", "--out", out, "--ngf", "16", *TINY,
              "--iters", "6")
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.slow
def test_student_exports_verifies_and_translates_with_its_masks(teacher, tmp_path):
    from p2p.runtime import Translator

    before = digest(teacher / "checkpoint.pt")
    student = tmp_path / "student"
    r = train("--teacher", teacher, "--ngf", "4", "--out", student, *TINY, "--iters", "4", "--log-every", "1")
    assert r.exit_code == 0, r.output
    state = load_checkpoint(student)
    spec = state["spec"]
    assert spec.ngf == 4 and spec.task == "paired" and spec.direction == "BtoA"  # taken from the teacher
    assert state["teacher"]["sha256"] == before and state["adapters"]
    records = [json.loads(line) for line in (student / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss_g_teacher"]) and np.isfinite(r["loss_g_feat"]) for r in records if "loss_d" in r)
    assert digest(teacher / "checkpoint.pt") == before  # the teacher is never written

    from p2p.export.cli import main as export_main
    r = CliRunner().invoke(export_main, [str(student), "--verify"])
    assert r.exit_code == 0 and "OK: fp32" in r.output, r.output
    label = shared_data("facades", "val")
    frame = __import__("cv2").imread(str(sorted(label.iterdir())[0]))[:, 256:]
    with Translator(student / "model.onnx", noise="per-frame", seed=0) as tr:
        a, b = tr(frame), tr(frame)
        assert a.shape == frame.shape and not np.array_equal(a, b)  # its dropout noise survives
        # the student's own (narrow) masks: 32, 16, 8 channels at ngf 4 (the teacher's would be 128, 64, 32)
        assert [m.shape[1] for m in tr.last_masks] == [32, 16, 8]


def test_distillation_resumes_exactly(teacher, tmp_path):
    args = ["--teacher", teacher, "--ngf", "4", *TINY, "--batch-size", "4", "--epochs", "1", "--epochs-decay", "1"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train(*args, "--out", straight, "--iters", "7").exit_code == 0
    assert train(*args, "--out", split, "--iters", "3").exit_code == 0
    assert train("--out", split, "--resume", "--iters", "7", "--no-progress").exit_code == 0
    a, b = load_checkpoint(straight), load_checkpoint(split)
    assert a["iteration"] == b["iteration"] == 7
    for key in ("generator", "discriminator", "adapters"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"


def test_teacher_noise_and_extra_inputs(teacher, tmp_path):
    """Images without targets train against the teacher's translation."""
    from p2p.training.config import TrainConfig
    from p2p.training.trainer import Trainer

    extra = shared_data("facades", "val")  # label|photo pairs: any images of the input domain would do
    cfg = TrainConfig(data=str(shared_data("facades")), out=str(tmp_path), direction="BtoA", size=32, ngf=4, ndf=8,
                      teacher=str(teacher), teacher_noise="off", extra_inputs=str(extra), progress=False)
    t = Trainer(cfg)
    assert len(t.train_set) == 400 + 100
    x, y, has_target = next(iter(t.loader(0, 0)))
    x, y, _ = (v for v in t.train_set[450])  # an extra: zero target, flagged
    assert t.train_set[450][2] == 0 and not y.any()
    batch = torch.stack([torch.from_numpy(t.train_set[i][0]) for i in (0, 450)])
    targets = torch.stack([torch.from_numpy(t.train_set[i][1]) for i in (0, 450)])
    flags = torch.tensor([1.0, 0.0])
    t_out, _ = t.teacher(batch)
    seen = {}
    real_l1 = __import__("p2p.training.steps", fromlist=["l1_loss"]).l1_loss  # where the objective lives

    def spy(fake, target):  # the first call is the ground-truth term
        seen.setdefault("target", target.detach().clone())
        return real_l1(fake, target)
    import p2p.training.steps as T
    T.l1_loss = spy
    try:
        t.step(batch, targets, flags)
    finally:
        T.l1_loss = real_l1
    assert torch.equal(seen["target"][0], targets[0])      # a pair keeps its real target
    assert torch.allclose(seen["target"][1], t_out[1])     # an extra gets the teacher's (noise off: deterministic)
    t_out2, _ = t.teacher(batch)
    assert torch.equal(t_out, t_out2)                      # --teacher-noise off: masks of ones


@pytest.mark.parametrize("case", ["missing", "corrupt", "other-task", "changed-on-resume"])
def test_bad_teachers_get_one_line(teacher, tmp_path, case):
    out = tmp_path / "student"
    if case == "missing":
        line = one_line_error(train("--teacher", tmp_path / "nope", "--ngf", "4", "--out", out, *TINY))
        assert "--teacher" in line and "does not exist" in line
    elif case == "corrupt":
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"not a checkpoint")
        line = one_line_error(train("--teacher", bad, "--ngf", "4", "--out", out, *TINY))
        assert "--teacher" in line and "not a readable p2p checkpoint" in line
    elif case == "other-task":
        line = one_line_error(train("--teacher", teacher, "--ngf", "4", "--out", out, *TINY, "--direction", "AtoB",
                                    "--iters", "1"))
        assert "direction: teacher 'BtoA', student 'AtoB'" in line
    else:
        copy = tmp_path / "teacher-copy"
        copy.mkdir()
        (copy / "checkpoint.pt").write_bytes((teacher / "checkpoint.pt").read_bytes())
        assert train("--teacher", copy, "--ngf", "4", "--out", out, *TINY, "--iters", "2").exit_code == 0
        assert train("--out", copy, "--resume", "--iters", "8", "--no-progress").exit_code == 0  # the teacher moves on
        line = one_line_error(train("--out", out, "--resume", "--iters", "3", "--no-progress"))
        assert "not the one this run started from" in line
    assert not (out / "checkpoint.pt").exists() or case == "changed-on-resume"


@pytest.mark.slow
def test_distillation_with_two_ranks(teacher, tmp_path):
    out = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "p2p.training", "--nproc", "2", "--teacher", str(teacher), "--ngf", "4",
                        "--out", str(out), *TINY, "--iters", "2"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    state = load_checkpoint(out)
    assert state["iteration"] == 2 and len(state["rng"]["ranks"]) == 2 and state["adapters"]
