"""A p2p-train session: from the command's options to a finished (or resumable) run.

``configure`` turns the flags into a TrainConfig (taking what was not typed again from
the run being resumed), ``train`` sets up the process group and runs the Trainer. The
CLI only parses options and reports; tests and scripts call these directly.
"""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Callable

from p2p.runtime.pairs import DataError

from .checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint
from .config import TrainConfig, default_data_dir
from .distributed import World, init_process_group
from .trainer import Trainer, TrainError, resolve_device


class UsageError(ValueError):
    """Flags that cannot go together; the message says which and what to do."""


def configure(options: dict, given: set[str], resume: bool,
              log: Callable[[str], None] = print) -> tuple[TrainConfig, dict | None]:
    """The run's configuration and, with ``resume``, the checkpoint it continues from (read once: it is large).

    ``options``: TrainConfig's fields as the CLI parsed them (``data`` None for the embedded
    clips); ``given``: the names the user typed, which win over the resumed run's values.
    """
    opts = dict(options)
    out = Path(opts["out"])
    state = None
    if resume:
        if not (out / CHECKPOINT_NAME).exists():
            raise TrainError(f"--resume: {out / CHECKPOINT_NAME} does not exist; start the run without --resume")
        try:
            state = load_checkpoint(out)
        except CheckpointError as exc:
            raise TrainError(f"cannot resume: {exc}") from None
        for k, v in state["config"].items():  # what the user did not type again comes from the run
            if k in opts and k not in given and k != "progress":
                opts[k] = v
    if opts["data"] is None:
        opts["data"] = default_data_dir()
        if "task" not in given and not resume:
            opts["task"] = "edges"
        if opts["task"] == "paired":
            raise UsageError("the embedded data are photos: use --task edges or --task colorize, or give --data")
        log(f"No --data: training {opts['task']} on the embedded clips in {opts['data']}")
    opts["data"], opts["out"] = str(opts["data"]), str(out)
    cfg = TrainConfig(**opts)
    cfg.validate()
    return cfg, state


def train(cfg: TrainConfig, resume_state: dict | None, world: World = World(),
          warn: Callable[[str], None] = print) -> dict:
    """Run (or continue) the training; returns Trainer.run()'s result. Raises TrainError or DataError."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda m, *a, **k: warn(f"warning: {m}")
        if world.distributed:
            init_process_group(world, resolve_device(cfg.device))
        trainer = Trainer(cfg, resume=resume_state, world=world)
        if resume_state is None:
            trainer.train_set.check_all()
        return trainer.run()


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """Run this command (``argv`` without --nproc) under torchrun with nproc processes here; its exit status."""
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "p2p.training", *args]
    print(f"launching: {' '.join(cmd)}", file=sys.stderr)
    return subprocess.call(cmd)


__all__ = ["configure", "train", "launch_torchrun", "UsageError", "TrainError", "DataError"]
