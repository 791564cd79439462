"""Runs that go wrong: non-finite losses, flags changed on resume, distributed runs that must end cleanly.

The GPU-only behaviour (NCCL device placement, bf16 support) is checked here with fakes;
benchmarks/gpu_check.py checks the same paths on a real GPU.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from click.testing import CliRunner
from conftest import one_line_error

from p2p.training import steps as steps_module  # the objective: where the loss functions are called
from p2p.training import trainer as trainer_module
from p2p.training.checkpoint import load_checkpoint
from p2p.training.cli import main

TINY = ["--size", "32", "--ngf", "4", "--ndf", "4", "--no-progress", "--sample-every", "1000"]


def train(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def nan_l1_from_call(monkeypatch, k: int) -> None:
    """Make G's L1 term NaN from its k-th call on (1-based): a run that diverges at iteration k."""
    real, calls = steps_module.l1_loss, {"n": 0}

    def l1(fake, target):
        calls["n"] += 1
        loss = real(fake, target)
        return loss * float("nan") if calls["n"] >= k else loss

    monkeypatch.setattr(steps_module, "l1_loss", l1)


def all_finite(state: dict) -> bool:
    return all(torch.isfinite(t).all() for key in ("generator", "discriminator") if state.get(key)
               for t in state[key].values() if t.is_floating_point())


def assert_same_weights(a: dict, b: dict) -> None:
    for key in ("generator", "discriminator"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"


# --- defect 1: a non-finite loss never replaces a good checkpoint -------------------------
def test_nan_loss_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    assert train("--out", clean, *TINY, "--iters", "4").exit_code == 0
    nan_l1_from_call(monkeypatch, 5)  # iteration 5 diverges; the save at 4 is the last good one
    line = one_line_error(train("--out", broken, *TINY, "--iters", "8", "--save-every", "2"))
    assert "non-finite" in line and "iteration 5" in line and "checkpoint of iteration 4" in line, line
    state = load_checkpoint(broken)
    assert state["iteration"] == 4 and all_finite(state)
    assert_same_weights(state, load_checkpoint(clean))


def test_a_run_diverging_at_once_writes_no_checkpoint(tmp_path):
    out = tmp_path / "run"
    line = one_line_error(train("--out", out, *TINY, "--iters", "6", "--lr", "1e35"))
    assert "non-finite" in line and "no checkpoint" in line, line
    assert not (out / "checkpoint.pt").exists()


def test_save_refuses_non_finite_weights(tmp_path):
    from p2p.training.config import TrainConfig, default_data_dir
    from p2p.training.trainer import Trainer, TrainError

    t = Trainer(TrainConfig(data=str(default_data_dir()), out=str(tmp_path), task="edges", size=32, ngf=4, ndf=4,
                            progress=False))
    with torch.no_grad():
        next(t.G.parameters()).fill_(float("inf"))
    with pytest.raises(TrainError, match="non-finite"):
        t.save()
    assert not (tmp_path / "checkpoint.pt").exists()


# --- defects 2, 3 and 5 in two processes (gloo) ------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, out: str, mode: str) -> None:
    """One rank of a 2-process run; writes what it saw to out/rank{rank}.json."""
    import torch.distributed as dist

    from p2p.training.config import World
    from p2p.training.session import TrainError, configure
    from p2p.training.session import train as run_training

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    report: dict = {"rank": rank}
    opts = dict(data=None, out=out, task="edges", size=32, ngf=4, ndf=4, iters=8, save_every=2, progress=False,
                sample_every=1000)
    if mode == "nan-on-rank-1":
        opts["objective"] = "l1"
        if rank == 1:
            real, calls = steps_module.l1_loss, {"n": 0}

            def l1(fake, target):
                calls["n"] += 1
                return real(fake, target) * (float("nan") if calls["n"] >= 5 else 1.0)
            steps_module.l1_loss = l1
    try:
        cfg, state = configure(opts, set(), False, log=lambda m: None)
        run_training(cfg, state, World(rank, world, rank), warn=lambda m: None)
        report["result"] = "ok"
    except TrainError as exc:
        report["result"] = "error"
        report["message"] = str(exc)
    report["process_group_left_open"] = dist.is_initialized()
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))


def run_two_ranks(tmp_path: Path, mode: str, timeout: float = 120) -> list[dict]:
    """Both ranks' reports; fails (instead of hanging the suite) if a rank does not finish in time."""
    ctx = mp.start_processes(_rank_worker, args=(2, free_port(), str(tmp_path), mode), nprocs=2, join=False,
                             start_method="spawn")
    for p in ctx.processes:
        p.join(timeout)
    alive = [p for p in ctx.processes if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, f"{len(alive)} rank(s) hung ({mode})"
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank_with_the_same_error(tmp_path):
    reports = run_two_ranks(tmp_path, "nan-on-rank-1")
    assert [r["result"] for r in reports] == ["error", "error"]
    assert reports[0]["message"] == reports[1]["message"]
    assert "iteration 5" in reports[0]["message"] and "rank 1" in reports[0]["message"]
    state = load_checkpoint(tmp_path)
    assert state["iteration"] == 4 and all_finite(state)
    assert not any(r["process_group_left_open"] for r in reports)


@pytest.mark.slow
def test_a_finished_distributed_run_destroys_its_process_group(tmp_path):
    reports = run_two_ranks(tmp_path, "clean")
    assert [r["result"] for r in reports] == ["ok", "ok"]
    assert not any(r["process_group_left_open"] for r in reports)


@pytest.mark.slow
def test_repeated_torchrun_launches_with_sync_bn_all_exit_zero(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for attempt in range(5):  # the abort at exit came 1 time in 4 under load
        out = tmp_path / f"run{attempt}"
        r = subprocess.run([sys.executable, "-m", "p2p.training", "--nproc", "2", "--sync-bn",  # embedded clips
                            "--out", str(out), *TINY, "--iters", "2"],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, (attempt, r.stderr[-2000:])
        assert "terminate called" not in r.stderr
        assert load_checkpoint(out)["iteration"] == 2


# --- defect 4: NCCL needs each rank's GPU set before the process group ---------------------
def test_each_rank_sets_its_gpu_before_init_process_group(monkeypatch):
    from p2p.training import distributed as D

    calls = []
    monkeypatch.setattr(D.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(D.dist, "init_process_group", lambda backend, **kw: calls.append(("init", backend, kw)))
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    D.init_process_group(D.World(rank=3, size=4, local_rank=1), torch.device("cuda"))
    assert calls[0] == ("set_device", 1), calls
    assert calls[1][:2] == ("init", "nccl")
    calls.clear()
    D.init_process_group(D.World(rank=1, size=2, local_rank=1), torch.device("cpu"))
    assert calls == [("init", "gloo", {})]


# --- defect 5: every parameter is trained, with and without --sync-bn ---------------------------
def _parameter_worker(rank: int, world: int, port: int, out: str, sync_bn: bool) -> None:
    from p2p.training.config import TrainConfig, World, default_data_dir
    from p2p.training.trainer import Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if world > 1:
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    report = parameter_report(Trainer(TrainConfig(data=str(default_data_dir()), out=out, task="edges", size=32,
                                                  ngf=4, ndf=4, batch_size=2, sync_bn=sync_bn, progress=False),
                                      world=World(rank, world, rank)))
    Path(out, f"params{rank}.json").write_text(json.dumps(report))
    if world > 1:
        torch.distributed.destroy_process_group()


def parameter_report(t) -> dict:
    """For G and D: parameters not in the optimiser, and parameters one step left unchanged."""
    report = {}
    for name, net, opt in (("G", t.G, t.opt_g), ("D", t.D, t.opt_d)):
        in_opt = {id(p) for group in opt.param_groups for p in group["params"]}
        report[f"{name}_missing"] = [n for n, p in net.named_parameters() if id(p) not in in_opt]
        report[f"{name}_count"] = len(list(net.parameters()))
    before = {n: p.detach().clone() for net in (t.G, t.D) for n, p in net.named_parameters()}
    x, y, _ = next(iter(t.loader(0, 0)))
    t.step(x, y)
    after = {n: p for net in (t.G, t.D) for n, p in net.named_parameters()}
    report["unchanged"] = [n for n in before if torch.equal(before[n], after[n])]
    return report


@pytest.mark.parametrize("sync_bn", [False, True])
def test_every_parameter_is_trained_in_one_process(tmp_path, sync_bn):
    from p2p.training.config import TrainConfig, default_data_dir
    from p2p.training.trainer import Trainer

    t = Trainer(TrainConfig(data=str(default_data_dir()), out=str(tmp_path), task="edges", size=32, ngf=4, ndf=4,
                            batch_size=2, sync_bn=sync_bn, progress=False))
    report = parameter_report(t)
    assert report["G_missing"] == [] and report["D_missing"] == [], report
    assert report["unchanged"] == [], report


@pytest.mark.slow
@pytest.mark.parametrize("sync_bn", [False, True])
def test_every_parameter_is_trained_in_two_processes(tmp_path, sync_bn):
    mp.spawn(_parameter_worker, args=(2, free_port(), str(tmp_path), sync_bn), nprocs=2, join=True)
    for rank in (0, 1):
        report = json.loads((tmp_path / f"params{rank}.json").read_text())
        assert report["G_missing"] == [] and report["D_missing"] == [], report
        assert report["unchanged"] == [], report


# --- defect 11: flags changed on --resume are applied and logged, or refused ----------------------
def test_resume_applies_a_new_learning_rate_and_records_it(tmp_path):
    out = tmp_path / "run"
    assert train("--out", out, *TINY, "--iters", "2").exit_code == 0
    r = train("--out", out, "--resume", "--lr", "1e-5", "--iters", "4", "--no-progress", "--log-every", "1")
    assert r.exit_code == 0, r.output
    assert "lr" in r.output and "1e-05" in r.output  # said on the terminal
    state = load_checkpoint(out)
    assert state["opt_g"]["param_groups"][0]["lr"] == pytest.approx(1e-5)
    assert json.loads((out / "config.json").read_text())["lr"] == pytest.approx(1e-5)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records if r.get("iter") == 4 and "lr" in r] == [pytest.approx(1e-5)]
    assert any(r.get("changed", {}).get("lr") for r in records)


def test_resume_refuses_flags_that_cannot_change(tmp_path):
    out = tmp_path / "run"
    assert train("--out", out, *TINY, "--iters", "2").exit_code == 0
    before = (out / "checkpoint.pt").read_bytes()
    for flag, value in (("--batch-size", "4"), ("--seed", "7"), ("--lambda-l1", "10")):
        line = one_line_error(train("--out", out, "--resume", flag, value, "--iters", "4", "--no-progress"))
        assert flag in line and "cannot" in line, line
    assert (out / "checkpoint.pt").read_bytes() == before


# --- defect 12: smaller ones -----------------------------------------------------------------------
def test_bf16_only_where_the_gpu_really_has_it(monkeypatch):
    from p2p.training.config import TrainConfig
    from p2p.training.trainer import amp_dtype_for

    # a pre-Ampere GPU: bf16 only by emulation
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    cfg = TrainConfig(data="d", out="o")
    assert amp_dtype_for(cfg, torch.device("cuda")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert amp_dtype_for(cfg, torch.device("cuda")) == torch.bfloat16
    assert amp_dtype_for(cfg, torch.device("cpu")) is None


def test_resume_of_a_cpu_checkpoint_with_fp16_amp(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert train("--out", out, *TINY, "--iters", "2").exit_code == 0  # CPU: no grad scaler state
    monkeypatch.setattr(trainer_module, "amp_dtype_for", lambda cfg, device: torch.float16)
    r = train("--out", out, "--resume", "--iters", "3", "--no-progress")
    assert r.exit_code == 0, r.output
    assert load_checkpoint(out)["scaler"]  # the fp16 run's scaler state is saved from now on


def test_deterministic_flag_turns_on_deterministic_algorithms(tmp_path):
    before = torch.are_deterministic_algorithms_enabled()
    try:
        r = train("--out", tmp_path / "run", *TINY, "--iters", "1", "--deterministic")
        assert r.exit_code == 0, r.output
        assert json.loads((tmp_path / "run" / "config.json").read_text())["deterministic"] is True
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)
