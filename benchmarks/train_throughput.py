"""Training throughput: iterations/s and images/s of full pix2pix steps (D then G) per configuration.

    python benchmarks/train_throughput.py                       # the default grid on this device
    python benchmarks/train_throughput.py --configs 128:32:1 --ddp 2   # 2 data-parallel ranks

Each configuration runs --warmup steps, then times --steps steps on a fixed batch of
the embedded data (edges→photo), so the numbers measure compute, not decoding.
"""
from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time

import torch
import torch.multiprocessing as mp

from p2p.training.config import default_data_dir
from p2p.training.distributed import World
from p2p.training.trainer import TrainConfig, Trainer


def make_trainer(size: int, ngf: int, batch: int, device: str, amp: bool, world=World()) -> Trainer:
    cfg = TrainConfig(data=str(default_data_dir()), out=tempfile.mkdtemp(), task="edges", size=size, ngf=ngf,
                      ndf=ngf, batch_size=batch, device=device, amp=amp, progress=False, sync_bn=world.distributed)
    return Trainer(cfg, world=world)


def time_steps(t: Trainer, warmup: int, steps: int) -> float:
    x, y, _ = next(iter(t.loader(0, 0)))
    x, y = x.to(t.device), y.to(t.device)
    for _ in range(warmup):
        t.step(x, y)
    if t.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        t.step(x, y)
    if t.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def _ddp_worker(rank, world, port, args, size, ngf, batch, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(max(1, args.threads // world))
    dev = torch.device("cuda", rank) if args.device == "cuda" else torch.device("cpu")
    torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    t = make_trainer(size, ngf, batch, str(dev), args.amp, World(rank, world, rank))
    sec = time_steps(t, args.warmup, args.steps)
    if rank == 0:
        queue.put(sec)
    torch.distributed.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="64:32:1,128:32:1,128:64:1,256:64:1,256:64:4",
                   help="comma-separated size:ngf:batch")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--ddp", type=int, default=1, help="data-parallel ranks (gloo on CPU, nccl on CUDA)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} threads"
    print(f"# train throughput: {name}, torch {torch.__version__}, amp={args.amp and args.device == 'cuda'}, "
          f"ranks={args.ddp}")
    print("| size | ngf | batch/rank | ranks | s/iter | iter/s | img/s |")
    print("|---|---|---|---|---|---|---|")
    for item in args.configs.split(","):
        size, ngf, batch = map(int, item.split(":"))
        if args.ddp > 1:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            queue = mp.get_context("spawn").SimpleQueue()
            mp.spawn(_ddp_worker, args=(args.ddp, port, args, size, ngf, batch, queue), nprocs=args.ddp)
            sec = queue.get()
        else:
            sec = time_steps(make_trainer(size, ngf, batch, args.device, args.amp), args.warmup, args.steps)
        print(f"| {size} | {ngf} | {batch} | {args.ddp} | {sec:.3f} | {1 / sec:.2f} | {batch * args.ddp / sec:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
