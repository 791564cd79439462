"""A p2p-train session: from the command's options to a finished (or resumable) run.

``configure`` turns the flags into a TrainConfig (taking what was not typed again from
the run being resumed), ``train`` sets up the process group and runs the Trainer. The
CLI only parses options and reports; tests and scripts call these directly.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

from p2p.runtime.pairs import DataError

from .checkpoint import CHECKPOINT_NAME, CheckpointError, CorruptCheckpoint, load_checkpoint, previous_checkpoint
from .config import RESUME_CHANGEABLE, ConfigError, TrainConfig, default_data_dir
from .distill import TeacherError
from .distributed import World, close_process_group, gather_objects, init_process_group
from .run_folder import CLAIM_ENV, RunFolderError, RunLock, check_free, claim
from .stopping import SIGNALS, StopSignals, die_with_parent
from .trainer import StoppedAtOnce, Trainer, TrainError, resolve_device

STATUS_ENV = "P2P_LAUNCH_STATUS"  # under p2p-train --nproc: the file where rank 0 leaves its exit status


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
    check_free(out)  # a run in progress there: say so first, whatever else would be wrong
    state = _resume_state(out, opts, given, log) if resume else None
    if opts.get("teacher") and not resume:
        _take_from_teacher(opts, given)
    if opts["data"] is None:
        _embedded_data(opts, given, resume, log)
    opts["data"], opts["out"] = str(opts["data"]), str(out)
    for key in ("teacher", "extra_inputs"):
        opts[key] = str(opts[key]) if opts.get(key) is not None else None
    cfg = TrainConfig(**opts)
    cfg.validate()
    return cfg, state


def _resume_state(out: Path, opts: dict, given: set[str], log) -> dict:
    """The checkpoint a --resume continues; ``opts`` takes the run's values for the flags not typed again."""
    if not (out / CHECKPOINT_NAME).exists():
        raise TrainError(f"--resume: {out / CHECKPOINT_NAME} does not exist; start the run without --resume")
    try:
        state = load_checkpoint(out)
    except CorruptCheckpoint as exc:
        raise TrainError(f"cannot resume: {exc}; {_previous_in_words(out)}") from None
    except CheckpointError as exc:
        raise TrainError(f"cannot resume: {exc}") from None
    state["changes"] = _resume_changes(opts, given, state["config"], out)
    for k, v in state["config"].items():  # what the user did not type again comes from the run
        if k in opts and k not in given and k != "progress":
            opts[k] = v
    for k, (old, new) in state["changes"].items():
        log(f"resuming with --{k.replace('_', '-')} {new} (the run had {old})")
    return state


def _embedded_data(opts: dict, given: set[str], resume: bool, log) -> None:
    """No --data: the clips shipped in the package, which are photos (edges→photo unless --task says)."""
    opts["data"] = default_data_dir()
    if "task" not in given and not resume:
        opts["task"] = "edges"
    if opts["task"] == "paired":
        raise ConfigError("the embedded data are photos: use --task edges or --task colorize, or give --data")
    log(f"No --data: training {opts['task']} on the embedded clips in {opts['data']}")


def _previous_in_words(out: Path) -> str:
    """Whether the checkpoint before the last save is there and intact, and how to resume from it."""
    previous, current = previous_checkpoint(out / CHECKPOINT_NAME), out / CHECKPOINT_NAME
    if not previous.is_file():
        return f"no older checkpoint is kept in {out}: restore {current} from a backup, or start again with --overwrite"
    try:
        iteration = load_checkpoint(previous)["iteration"]
    except CheckpointError:
        return f"{previous} is damaged too: restore {current} from a backup, or start again with --overwrite"
    return f"{previous} (iteration {iteration}) is intact: mv {previous} {current}, then resume"


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
          warn: Callable[[str], None] = print, *, overwrite: bool = False, stop: StopSignals | None = None) -> dict:
    """Run (or continue) the training; returns Trainer.run()'s result. Raises TrainError or DataError.

    The run folder is claimed first (run_folder.claim: locked for the life of the run; a
    run there is refused unless resumed or ``overwrite``). A distributed run leaves its
    process group before returning, also after an error, so that every rank exits cleanly.
    """
    lock = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda m, *a, **k: warn(f"warning: {m}")
            if world.distributed:
                init_process_group(world, resolve_device(cfg.device))
            lock = claim_run_folder(Path(cfg.out), world, resume=resume_state is not None, overwrite=overwrite,
                                    log=warn)
            trainer = Trainer(cfg, resume=resume_state, world=world, stop=stop)
            if resume_state is None:
                trainer.train_set.check_all()
            elif resume_state.get("changes"):
                trainer.note({"resumed": True, "changed": {k: list(v) for k, v in resume_state["changes"].items()}})
            return trainer.run()
    finally:
        if world.distributed:
            close_process_group()
        if lock is not None:
            lock.release()


def claim_run_folder(out: Path, world: World, *, resume: bool, overwrite: bool,
                     log: Callable[[str], None]) -> RunLock | None:
    """Rank 0 (or the only process) claims the folder; under torchrun every rank learns the outcome."""
    lock, refusal = None, None
    if world.rank == 0:
        try:
            lock = claim(out, resume=resume, overwrite=overwrite, log=log)
        except RunFolderError as exc:
            if not world.distributed:
                raise
            refusal = str(exc)
    if world.distributed:
        refusal = gather_objects(refusal)[0]
    if refusal:
        raise RunFolderError(refusal)
    return lock


def launch_torchrun(nproc: int, argv: list[str], out: Path, *, resume: bool = False, overwrite: bool = False,
                    log: Callable[[str], None] = print) -> int:
    """Run this command (``argv`` without --nproc) under torchrun with nproc processes here; its exit status.

    The launcher claims the run folder itself (so a second launch is refused at once, in one
    line) and lends the lock to torchrun, whose ranks are told so (CLAIM_ENV). SIGINT and
    SIGTERM are passed on to the ranks, which stop together, save once and leave their exit
    status in a file (STATUS_ENV) instead of making torchrun report a failure. torchrun dies
    with the launcher (PR_SET_PDEATHSIG), even if the launcher is killed with -9, and then
    stops the ranks with SIGTERM: no process outlives the launcher for long.
    """
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
    with claim(Path(out), resume=resume, overwrite=overwrite, log=log) as lock:
        fd, status_file = tempfile.mkstemp(prefix="p2p-train-status-")
        os.close(fd)
        env = {**os.environ, CLAIM_ENV: f"{os.getpid()}:{Path(out).resolve()}", STATUS_ENV: status_file}
        log(f"launching: {' '.join(cmd)}")
        try:
            # its own session: a Ctrl-C at the terminal reaches the launcher only, which passes it on once
            proc = subprocess.Popen(cmd, env=env, pass_fds=(lock.fd,), start_new_session=True,
                                    preexec_fn=die_with_parent)
            code = _wait_passing_signals(proc)
            text = Path(status_file).read_text().strip()
        finally:
            Path(status_file).unlink(missing_ok=True)
    if text.lstrip("-").isdigit():
        return int(text)
    return code if code >= 0 else 128 - code  # no status: torchrun (or a rank) failed on its own


def _wait_passing_signals(proc: subprocess.Popen) -> int:
    """Wait for torchrun; each SIGINT/SIGTERM meanwhile goes to its ranks (to torchrun while it has none)."""
    def forward(signum, frame):
        for pid in child_pids(proc.pid) or [proc.pid]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    old = {s: signal.signal(s, forward) for s in SIGNALS}
    try:
        return proc.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux /proc), or [] if it cannot be told."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += [int(c) for c in task.read_text().split()]
        except OSError:
            continue
    return children


def report_status(status: int) -> None:
    """Under p2p-train --nproc: rank 0 leaves its exit status for the launcher (see launch_torchrun)."""
    path = os.environ.get(STATUS_ENV)
    if path:
        Path(path).write_text(str(status))


def launched() -> bool:
    """True in a rank that p2p-train --nproc started (it exits 0 and reports its status in a file)."""
    return bool(os.environ.get(STATUS_ENV))


__all__ = ["configure", "train", "launch_torchrun", "ConfigError", "TrainError", "DataError", "StoppedAtOnce",
           "RunFolderError"]
