"""A run folder belongs to one live p2p-train at a time, and an existing run is never replaced by accident.

- The owner holds ``RUN/.lock`` with ``flock``: the kernel drops the lock when the process
  dies, so a run killed with -9 never leaves a stale lock. The file names the owner (pid
  and command line) for the message a second run gets. It is never deleted (deleting a
  lock file lets two processes lock two different files).
- ``claim`` takes the lock before anything in the folder is touched, then refuses a folder
  that holds a run unless ``--resume`` or ``--overwrite`` says what to do with it, and
  removes the temporary files an interrupted save left (p2p-train's own names only).
- ``p2p-train --nproc N`` claims the folder in the launcher, hands the lock to torchrun
  (an inherited descriptor: it lives as long as the ranks' parent) and tells the ranks so
  through ``CLAIM_ENV``; a rank started by plain torchrun is claimed for by rank 0.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Callable

from p2p.runtime.cli_options import runnable
from p2p.runtime.errors import UserError
from p2p.runtime.files import TEMP_SUFFIX, output_error

from .checkpoint import CHECKPOINT_NAME, PREVIOUS_NAME

LOCK_NAME = ".lock"
CLAIM_ENV = "P2P_RUN_CLAIMED"  # "PID:FOLDER": the launcher PID holds FOLDER's lock for the ranks it started
LOG_NAME = "log.jsonl"
# what p2p-train writes, and so what --overwrite removes; anything else in the folder is left alone
OWN_FILES = (CHECKPOINT_NAME, PREVIOUS_NAME, LOG_NAME, "loss.png", "config.json")
OWN_PATTERNS = ("samples/iter_*.png", "tensorboard/events.out.tfevents.*")
OVERWRITE_HELP = ("checkpoint.pt, checkpoint.prev.pt, log.jsonl, loss.png, config.json, samples/iter_*.png and "
                  "tensorboard/ event files")
# atomic_write's temporary names: ".NAME." + 8 characters of tempfile's alphabet + ".tmp"
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + "$")


class RunFolderError(UserError, RuntimeError):
    """A run folder that cannot be used as asked; the message says what to do."""


class RunLock:
    """The flock on RUN/.lock, held until ``release`` (or until the process ends, however it ends)."""

    def __init__(self, folder: Path, fd: int | None):
        self.folder, self.fd = Path(folder), fd

    @classmethod
    def acquire(cls, folder: Path) -> "RunLock":
        folder = Path(folder)
        path = folder / LOCK_NAME
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise RunFolderError(f"{output_error(exc, path)}: p2p-train writes its checkpoints and log in "
                                 f"--out {folder}; pick a folder on a writable disk") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RunFolderError(f"cannot lock {path}: {exc.strerror}") from None
            raise busy(folder) from None
        os.ftruncate(fd, 0)  # who holds it, for the message a second run gets
        os.write(fd, f"{os.getpid()}\n{' '.join(sys.argv)}\n".encode())
        return cls(folder, fd)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def busy(folder: Path) -> RunFolderError:
    return RunFolderError(f"{folder} is in use by another p2p-train ({holder(folder)}): wait for it to finish, "
                          "stop it, or use another --out")


def check_free(folder: Path) -> None:
    """RunFolderError now if another process holds the folder (before a resume reads what that run writes)."""
    if is_locked(folder) and inherited_claim(folder) is None:
        raise busy(folder)


def holder(folder: Path) -> str:
    """The process that holds the lock, in words ("pid 123: p2p-train --out runs/x")."""
    try:
        pid, _, command = (Path(folder) / LOCK_NAME).read_text().partition("\n")
        pid, command = int(pid), command.strip()
    except (OSError, ValueError):
        return "a process that has not said which"
    name = Path(command.split()[0]).name if command else ""
    return f"pid {pid}: {name} {' '.join(command.split()[1:])}".strip() if command else f"pid {pid}"


def is_locked(folder: Path) -> bool:
    """True while some process holds the folder's lock."""
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def inherited_claim(folder: Path) -> RunLock | None:
    """The launcher's claim on ``folder``, if this process is one of the ranks it started (CLAIM_ENV)."""
    pid, _, claimed = os.environ.get(CLAIM_ENV, "").partition(":")
    if not claimed or Path(claimed).resolve() != Path(folder).resolve():
        return None
    if not is_locked(folder) or not holder(folder).startswith(f"pid {pid}"):
        return None  # a stale variable (e.g. copied into another job's environment): claim it afresh
    return RunLock(folder, None)


def describe_run(folder: Path) -> str | None:
    """What p2p-train left in ``folder`` ("iteration 500 in checkpoint.pt"), or None if it holds no run."""
    folder = Path(folder)
    checkpoint = folder / CHECKPOINT_NAME
    if checkpoint.is_file():
        iteration = peek_iteration(checkpoint)
        return f"iteration {iteration} in {CHECKPOINT_NAME}" if iteration is not None else \
            f"an unreadable {CHECKPOINT_NAME}"
    found = [name for name in OWN_FILES if (folder / name).exists()]
    found += [pattern.split("/")[0] + "/" for pattern in OWN_PATTERNS if any(folder.glob(pattern))]
    return f"no checkpoint yet, but {', '.join(found)}" if found else None


def peek_iteration(checkpoint: Path) -> int | None:
    """The iteration a checkpoint holds, read cheaply (memory-mapped, not verified); None if unreadable."""
    import torch  # only here: the rest of this module is torch-free

    try:
        return int(torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["iteration"])
    except Exception:
        return None


def own_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    files = [folder / name for name in OWN_FILES if (folder / name).is_file()]
    return files + sorted(p for pattern in OWN_PATTERNS for p in folder.glob(pattern) if p.is_file())


def stale_temporaries(folder: Path) -> list[Path]:
    """Temporary files of interrupted saves (p2p-train's own names only) in ``folder`` and its samples/."""
    found = []
    for where, names in ((Path(folder), OWN_FILES), (Path(folder) / "samples", None)):
        if not where.is_dir():
            continue
        for p in where.iterdir():
            m = TEMP_NAME.match(p.name)
            if m and p.is_file() and (m["name"] in names if names else re.fullmatch(r"iter_\d+\.png", m["name"])):
                found.append(p)
    return sorted(found)


def _remove(paths: list[Path]) -> int:
    """Delete ``paths``; the bytes that frees (hard-linked files free nothing)."""
    freed = 0
    for p in paths:
        try:
            st = p.stat()
            p.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise RunFolderError(f"cannot remove {p}: {exc.strerror}") from None
        freed += st.st_size if st.st_nlink == 1 else 0
    return freed


def size_words(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _refuse_a_run(folder: Path) -> None:
    found = describe_run(folder)
    if found:
        resumable = (folder / CHECKPOINT_NAME).is_file()
        again = f"{runnable('p2p-train')} --out {shlex.quote(str(folder))} --resume"
        ways = f"continue it with {again}, or " if resumable else ""
        raise RunFolderError(f"{folder} already holds a run ({found}): {ways}start again with --overwrite "
                             f"(which deletes its {OVERWRITE_HELP})")


def claim(folder: Path, *, resume: bool, overwrite: bool, log: Callable[[str], None] = print) -> RunLock:
    """Lock ``folder`` for this run, then make it ready: RunFolderError if it cannot be used as asked.

    Without ``resume`` or ``overwrite`` a folder that holds a run is refused, and not one
    byte of it changes. With ``overwrite`` p2p-train's own files of the old run go (after
    the lock is held; other files, e.g. an exported model.onnx, stay). Temporary files of
    interrupted saves are removed either way, and the freed space said.
    """
    folder = Path(folder)
    lock = inherited_claim(folder)
    if lock is not None:
        return lock  # the launcher did all of this before it started the ranks
    if not resume and not overwrite:
        _refuse_a_run(folder)  # before the lock too: a refused command does not change one byte there
    lock = RunLock.acquire(folder)
    try:
        found = describe_run(folder)
        if not resume and not overwrite:
            _refuse_a_run(folder)  # again, now that no other run can start there
        if found and overwrite:
            old = own_files(folder)
            freed = _remove(old)
            others = sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME and p.name not in
                            ("samples", "tensorboard") and not TEMP_NAME.match(p.name))
            log(f"--overwrite: removed the old run's {len(old)} file(s) from {folder} ({size_words(freed)})"
                + (f"; kept {', '.join(others)}" if others else ""))
        stale = stale_temporaries(folder)
        if stale:
            freed = _remove(stale)
            log(f"removed {len(stale)} temporary file(s) of an interrupted save from {folder} ({size_words(freed)})")
    except BaseException:
        lock.release()
        raise
    return lock
