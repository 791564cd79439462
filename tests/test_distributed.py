"""Data-parallel training on CPU with gloo: the same maths as one process over the global batch."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import shared_data

from p2p.training.checkpoint import load_checkpoint
from p2p.training.distributed import World
from p2p.training.models import MaskDropout
from p2p.training.trainer import TrainConfig, Trainer


def config(data, out, **kw) -> TrainConfig:
    return TrainConfig(data=str(data), out=str(out), direction="BtoA", size=32, ngf=4, ndf=4,
                       progress=False, **kw)


def fixed_batch(trainer: Trainer, indices):
    items = [trainer.train_set.pairs[i] for i in indices]
    return torch.from_numpy(np.stack([x for x, _ in items])), torch.from_numpy(np.stack([y for _, y in items]))


def no_dropout(trainer: Trainer) -> None:
    for m in trainer.G.modules():
        if isinstance(m, MaskDropout):
            m.p = 0.0  # masks of ones: the comparison is about BatchNorm and gradient averaging


def _worker(rank: int, world: int, port: int, data: str, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    t = Trainer(config(data, out, sync_bn=True, batch_size=2), world=World(rank, world, rank))
    no_dropout(t)
    x, y = fixed_batch(t, [2 * rank, 2 * rank + 1])
    losses = t.step(x, y)
    torch.save({"losses": losses, "G": t.G.state_dict(), "D": t.D.state_dict(),
                "grads": [p.grad.clone() for p in t.G.parameters()]}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_with_sync_bn_equal_one_process_over_the_global_batch(tmp_path):
    data = shared_data("facades")
    mp.spawn(_worker, args=(2, free_port(), str(data), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key in ("G", "D"):  # DDP keeps the ranks identical
        assert all(torch.equal(r0[key][k], r1[key][k]) for k in r0[key])

    single = Trainer(config(data, tmp_path / "single", batch_size=4))
    no_dropout(single)
    losses = single.step(*fixed_batch(single, [0, 1, 2, 3]))
    # losses are per-rank means; their average is the global batch's mean
    for k in losses:
        assert np.isclose((r0["losses"][k] + r1["losses"][k]) / 2, losses[k], rtol=1e-4), k
    for g_ddp, p in zip(r0["grads"], single.G.parameters()):
        # float tolerance, relative to each tensor's scale (sums over ranks reorder additions)
        torch.testing.assert_close(g_ddp, p.grad, rtol=1e-3, atol=1e-3 * float(p.grad.abs().max()))
    # (weights are not compared: Adam's first update is lr·sign(g), which flips for g ≈ 0 at float noise)


@pytest.mark.slow
def test_torchrun_launch_and_single_process_resume(tmp_path):
    data = shared_data("facades")
    out = tmp_path / "ddp"
    args = ["--data", str(data), "--direction", "BtoA", "--out", str(out), "--size", "32", "--ngf", "4",
            "--ndf", "4", "--no-progress", "--sample-every", "1000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "p2p.training", "--nproc", "2", "--sync-bn", "--iters", "3", *args],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    state = load_checkpoint(out)
    assert state["iteration"] == 3 and state["config"]["sync_bn"]
    assert len(state["rng"]["ranks"]) == 2  # each rank's dropout RNG is kept
    log = (out / "log.jsonl").read_text().splitlines()
    assert sum('"loss_d"' in line for line in log) == 1  # rank 0 alone logs (iteration 3 of 3)
    r = subprocess.run([sys.executable, "-m", "p2p.training", "--out", str(out), "--resume", "--iters", "5",
                        "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_checkpoint(out)["iteration"] == 5


def test_module_entry_point_takes_the_same_flags():
    from click.testing import CliRunner

    from p2p.training.cli import main

    cli_help = CliRunner().invoke(main, ["--help"]).output
    module_help = subprocess.run([sys.executable, "-m", "p2p.training", "--help"], capture_output=True,
                                 text=True, timeout=60).stdout
    flags = lambda text: sorted(w for w in text.split() if w.startswith("--"))  # noqa: E731
    assert flags(cli_help) == flags(module_help) and "--nproc" in flags(cli_help)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_step_keeps_losses_finite(tmp_path, dtype):
    from p2p.training.config import default_data_dir

    t = Trainer(TrainConfig(data=str(default_data_dir()), out=str(tmp_path), task="edges", size=32, ngf=4, ndf=4,
                            progress=False))
    t.amp_dtype = dtype  # on CUDA this is chosen from the card; here the same code path runs on CPU
    t.scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16)
    x, y, _ = next(iter(t.loader(0, 0)))
    for _ in range(2):
        losses = t.step(x, y)
    assert all(np.isfinite(v) for v in losses.values()), losses
    assert all(p.dtype == torch.float32 for p in t.G.parameters())  # weights stay fp32
