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
from .distill import TeacherError
from .config import RESUME_CHANGEABLE, ConfigError, TrainConfig, default_data_dir
from .distributed import World, close_process_group, init_process_group
from .trainer import Trainer, TrainError, resolve_device


def configure(options: dict, given: set[str], resume: bool,
              log: Callable[[str], None] = print) -> tuple[TrainConfig, dict | None]:
    """The run's configuration and, with ``resume``, the checkpoint it continues from (read once: it is large).

    ``options``: TrainConfig's fields as the CLI parsed them (``data`` None for the embedded
    clips); ``given``: the names the user typed. On resume, flags not typed again come from
    the run; typed ones that differ are applied if they may change (RESUME_CHANGEABLE) and
    said, and refused otherwise. The state's ``"changes"`` lists what was applied.
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
        state["changes"] = _resume_changes(opts, given, state["config"], out)
        for k, v in state["config"].items():  # what the user did not type again comes from the run
            if k in opts and k not in given and k != "progress":
                opts[k] = v
        for k, (old, new) in state["changes"].items():
            log(f"resuming with --{k.replace('_', '-')} {new} (the run had {old})")
    if opts.get("teacher") and not resume:
        _take_from_teacher(opts, given)
    if opts["data"] is None:
        opts["data"] = default_data_dir()
        if "task" not in given and not resume:
            opts["task"] = "edges"
        if opts["task"] == "paired":
            raise ConfigError("the embedded data are photos: use --task edges or --task colorize, or give --data")
        log(f"No --data: training {opts['task']} on the embedded clips in {opts['data']}")
    opts["data"], opts["out"] = str(opts["data"]), str(out)
    for key in ("teacher", "extra_inputs"):
        opts[key] = str(opts[key]) if opts.get(key) is not None else None
    cfg = TrainConfig(**opts)
    cfg.validate()
    return cfg, state


TEACHER_DEFAULTS = ("data", "task", "direction", "layout", "size", "generator")  # what a student takes from it


def _take_from_teacher(opts: dict, given: set[str]) -> None:
    """A distillation run translates what its teacher translates: flags not given come from the teacher's run."""
    try:
        stored = load_checkpoint(opts["teacher"])["config"]
    except CheckpointError as exc:
        raise TeacherError(f"--teacher: {exc}") from None
    for key in TEACHER_DEFAULTS:
        if key not in given and key in stored:
            opts[key] = stored[key]


def _resume_changes(opts: dict, given: set[str], stored: dict, out: Path) -> dict:
    """{flag: (the run's value, the new one)} for typed flags that differ; TrainError for one that may not."""
    changes = {}
    for k in sorted(given):
        if k not in stored or k in ("out", "progress"):
            continue
        old, new = stored[k], opts[k]
        if str(old) == str(new):
            continue
        if k not in RESUME_CHANGEABLE:
            raise TrainError(f"cannot resume {out} with --{k.replace('_', '-')} {new} ({k}={old!r} there, "
                             f"{k}={new!r} asked): it defines the run; resume without it, or start a new run "
                             "with another --out")
        changes[k] = (old, new)
    return changes


def train(cfg: TrainConfig, resume_state: dict | None, world: World = World(),
          warn: Callable[[str], None] = print) -> dict:
    """Run (or continue) the training; returns Trainer.run()'s result. Raises TrainError or DataError.

    A distributed run leaves its process group before returning, also after an error, so
    that every rank exits cleanly.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda m, *a, **k: warn(f"warning: {m}")
            if world.distributed:
                init_process_group(world, resolve_device(cfg.device))
            trainer = Trainer(cfg, resume=resume_state, world=world)
            if resume_state is None:
                trainer.train_set.check_all()
            elif resume_state.get("changes"):
                trainer.note({"resumed": True, "changed": {k: list(v) for k, v in resume_state["changes"].items()}})
            return trainer.run()
    finally:
        if world.distributed:
            close_process_group()


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


__all__ = ["configure", "train", "launch_torchrun", "ConfigError", "TrainError", "DataError"]
