"""Run folders keep their promises (docs/promises.md): never replaced by accident, one live run at a time,
SIGTERM treated as Ctrl-C (also under torchrun), temporary files of interrupted saves cleaned up.

Real child processes and real signals: what a container runtime, a scheduler or a second terminal does.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, one_line_error, tree_bytes

from p2p.training import trainer as trainer_module
from p2p.training.checkpoint import load_checkpoint
from p2p.training.cli import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def start(out: Path, *extra: str, nproc: int = 1) -> subprocess.Popen:
    """p2p-train in a child process (its own session, as a service manager starts it)."""
    cmd = [sys.executable, "-m", "p2p.training", "--out", str(out), *TINY, "--log-every", "1", *extra]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)


def logged_iterations(out: Path) -> list[int]:
    log = out / "log.jsonl"
    if not log.exists():
        return []
    return [json.loads(line)["iter"] for line in log.read_text().splitlines() if '"loss_' in line]


def wait_for_iterations(proc: subprocess.Popen, out: Path, n: int, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while len(logged_iterations(out)) < n:
        if proc.poll() is not None:
            pytest.fail(f"p2p-train ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"no {n} iterations in {timeout} s")
        time.sleep(0.1)


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for children in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                kids = {int(c) for c in children.read_text().split()}
            except OSError:
                continue
            todo += list(kids - found)
            found |= kids
    return found


def alive(pids) -> set[int]:
    """Those of ``pids`` still running (zombies count as gone)."""
    living = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            living.add(pid)
    return living


def wait_gone(pids, timeout: float = 60) -> set[int]:
    deadline = time.time() + timeout
    while alive(pids) and time.time() < deadline:
        time.sleep(0.2)
    return alive(pids)


# --- 1. a run is never replaced by accident ------------------------------------------------------------
def test_a_run_is_never_replaced_without_overwrite(tmp_path):
    out = tmp_path / "run"
    assert train("--out", out, *TINY, "--iters", "2").exit_code == 0
    before = tree_bytes(out)
    line = one_line_error(train("--out", out, *TINY, "--iters", "2"))
    assert str(out) in line and "iteration 2" in line, line
    assert "--resume" in line and "--overwrite" in line, line
    assert tree_bytes(out) == before  # not one byte changed, the lock file included


def test_overwrite_starts_again_and_keeps_files_that_are_not_the_runs(tmp_path):
    out = tmp_path / "run"
    assert train("--out", out, *TINY, "--iters", "3", "--save-every", "1").exit_code == 0
    (out / "model.onnx").write_bytes(b"an export of the old run")
    r = train("--out", out, *TINY, "--iters", "1", "--overwrite")
    assert r.exit_code == 0, r.output
    assert "--overwrite: removed" in r.output and "kept model.onnx" in r.output, r.output
    assert load_checkpoint(out)["iteration"] == 1
    assert not (out / "checkpoint.prev.pt").exists()  # the old run's previous checkpoint went with it
    assert [json.loads(line)["iter"] for line in (out / "log.jsonl").read_text().splitlines()][0] == 0
    assert (out / "model.onnx").read_bytes() == b"an export of the old run"
    assert one_line_error(train("--out", out, "--resume", "--overwrite"), code=2)


# --- 2. one live run per folder; kill -9 leaves no stale lock --------------------------------------------
def test_a_second_run_is_refused_naming_the_holder_and_kill_9_leaves_no_lock(tmp_path):
    out = tmp_path / "run"
    first = start(out, "--save-every", "2")
    try:
        wait_for_iterations(first, out, 3)
        for extra in ([], ["--resume"], ["--overwrite"]):
            line = one_line_error(train("--out", out, *TINY, "--iters", "5", *extra))
            assert "in use" in line and f"pid {first.pid}" in line, line
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        first.kill()
    before = load_checkpoint(out)["iteration"]
    r = train("--out", out, "--resume", "--iters", str(before + 1), "--no-progress")
    assert r.exit_code == 0, r.output  # the kernel dropped the lock with the process
    assert load_checkpoint(out)["iteration"] == before + 1


# --- 3. SIGTERM is Ctrl-C: finish the step, save, say how to resume ------------------------------------
def test_sigterm_saves_says_how_to_resume_and_exits_143(tmp_path):
    out = tmp_path / "run"
    proc = start(out, "--save-every", "100000")
    wait_for_iterations(proc, out, 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "SIGTERM" in line]
    assert len(lines) == 1 and f"p2p-train --out {out} --resume" in lines[0], err
    state = load_checkpoint(out)
    assert state["iteration"] == logged_iterations(out)[-1]  # the last step finished, and was saved


def two_ranks_training(out: Path) -> tuple[subprocess.Popen, set[int]]:
    """p2p-train --nproc 2 once it has trained 3 iterations, and every process below it (torchrun, the ranks)."""
    proc = start(out, "--save-every", "100000", nproc=2)
    wait_for_iterations(proc, out, 3)
    tree = descendants(proc.pid)
    assert len(tree) >= 3, tree
    return proc, tree


@pytest.mark.slow
def test_sigterm_under_torchrun_stops_every_rank_at_one_step_and_no_process_outlives_the_launcher(tmp_path):
    out = tmp_path / "run"
    proc, tree = two_ranks_training(out)
    try:
        second = subprocess.run([sys.executable, "-m", "p2p.training", "--out", str(out), *TINY, "--nproc", "2"],
                                capture_output=True, text=True, env=ENV, timeout=120)
        assert second.returncode == 1 and "in use" in second.stderr, second.stderr[-2000:]
        assert "Traceback" not in second.stderr
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "ChildFailedError" not in err, err[-3000:]
    assert sum("SIGTERM at iteration" in line for line in err.splitlines()) == 1, err[-3000:]
    assert not wait_gone(tree, 30)
    last = logged_iterations(out)[-1]
    assert load_checkpoint(out)["iteration"] == last  # rank 0 saved the step every rank stopped at
    time.sleep(2)
    assert logged_iterations(out)[-1] == last  # and nothing trains on


@pytest.mark.slow
def test_kill_9_of_the_launcher_stops_torchrun_and_every_rank(tmp_path):
    out = tmp_path / "run"
    proc, tree = two_ranks_training(out)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert not wait_gone(tree, 90), "processes outlived the launcher"
    finally:
        for pid in alive(tree):
            os.kill(pid, signal.SIGKILL)
    state = load_checkpoint(out)  # torchrun stopped the ranks with SIGTERM: they saved on the way out
    assert state["iteration"] == logged_iterations(out)[-1]


def test_a_second_signal_before_any_save_says_no_checkpoint_was_written(tmp_path, monkeypatch):
    real = trainer_module.Trainer.step

    def step(self, *args):
        if self.iteration == 2:
            raise KeyboardInterrupt  # what the handler raises on a second Ctrl-C
        return real(self, *args)

    monkeypatch.setattr(trainer_module.Trainer, "step", step)
    r = train("--out", tmp_path / "run", *TINY, "--iters", "10", "--save-every", "100")
    assert r.exit_code == 130, r.output
    assert "no checkpoint was written" in r.output and "intact" not in r.output, r.output
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# --- 5. temporary files of interrupted saves -------------------------------------------------------------
def test_temporary_files_of_interrupted_saves_are_removed_and_said(tmp_path):
    out = tmp_path / "run"
    assert train("--out", out, *TINY, "--iters", "2").exit_code == 0
    ours = [out / ".checkpoint.pt.k2x9_a0q.tmp", out / "samples" / ".iter_0000002.png.abcdefgh.tmp"]
    theirs = [out / ".model.onnx.abcdefgh.tmp", out / "notes.tmp", out / ".checkpoint.pt.tmp"]
    for p in ours + theirs:
        p.write_bytes(b"\0" * 500_000)
    r = train("--out", out, "--resume", "--iters", "3", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "removed 2 temporary file(s)" in r.output and "1.0 MB" in r.output, r.output
    assert not any(p.exists() for p in ours) and all(p.exists() for p in theirs)


@pytest.mark.slow
def test_kill_9_at_random_moments_leaves_a_verified_checkpoint_and_only_temporaries_to_clean(tmp_path):
    out = tmp_path / "run"
    rng = torch.Generator().manual_seed(0)
    for attempt in range(3):
        proc = start(out, "--save-every", "1", *(["--resume"] if attempt else []), "--iters", "100000")
        try:
            wait_for_iterations(proc, out, len(logged_iterations(out)) + 2)
            time.sleep(float(torch.rand((), generator=rng)) * 0.5)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            proc.kill()
        state = load_checkpoint(out)  # verified against its checksum
        assert all(torch.isfinite(t).all() for t in state["generator"].values() if t.is_floating_point())
    r = train("--out", out, "--resume", "--iters", str(load_checkpoint(out)["iteration"] + 1), "--no-progress")
    assert r.exit_code == 0, r.output
    assert not list(out.glob(".*.tmp"))


def test_p2p_debug_still_shows_the_traceback(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert train("--out", out, *TINY, "--iters", "1").exit_code == 0
    monkeypatch.setenv("P2P_DEBUG", "1")
    r = train("--out", out, *TINY, "--iters", "1")
    assert r.exit_code == 1 and type(r.exception).__name__ == "RunFolderError"
