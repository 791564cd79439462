"""Writing files so that a crash, a full disk or a read-only file system never loses what was there.

- ``atomic_write``: the new file is written beside its final name and renamed over it when
  complete, so a crash or Ctrl-C leaves the old file or the new one, never half of one;
- ``append_line``: one log record written whole (one write of a complete line), or not at all;
- ``read_jsonl``: the records of a JSON-lines log, dropping a torn last line with a note;
- ``output_error``: an OSError in the words a user needs ("disk full writing PATH",
  "read-only file system"), as a one-line ``OutputError``.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError, UserError

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
TEMP_SUFFIX = ".tmp"  # temporary files are ".NAME.XXXXXXXX.tmp" beside NAME


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def why_not_written(exc: OSError) -> str:
    """What stopped a write, in a user's words."""
    if exc.errno in DISK_FULL:
        return "disk full"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "no permission"
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def output_error(exc: OSError, path, intact: str = "") -> OutputError:
    """``exc`` (raised writing ``path``) as one line: 'disk full writing PATH; INTACT'."""
    if isinstance(exc, OutputError):
        return exc
    why = why_not_written(exc)
    message = f"{why} writing {path}" if exc.errno in DISK_FULL else f"cannot write {path}: {why}"
    return OutputError(message + (f"; {intact}" if intact else ""))  # errno unset: OSError would print it


class _Recording:
    """A file that remembers the OSError of a failed write: torch.save and savefig wrap it in their own errors."""

    def __init__(self, f):
        self._f, self.failure = f, None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as exc:
            self.failure = exc
            raise

    def flush(self):
        try:
            return self._f.flush()
        except OSError as exc:
            self.failure = exc
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


@contextmanager
def atomic_write(path):
    """Yield a binary file in ``path``'s folder; on success it is fsynced and renamed over ``path``.

    Any write failure (also one that a library wrapped in its own exception) becomes an
    ``OutputError`` naming ``path`` and saying why (disk full, read-only file system, ...);
    the temporary file is removed and the old ``path``, if any, is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise output_error(exc, path) from exc
    f = _Recording(os.fdopen(fd, "wb"))
    try:
        try:
            yield f
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
            os.replace(tmp, path)
        except UserError:
            raise
        except OSError as exc:
            raise output_error(exc, path) from exc
        except Exception as exc:
            if f.failure is not None:  # e.g. torch.save's RuntimeError around an ENOSPC
                raise output_error(f.failure, path) from exc
            raise
    except BaseException:
        f.close()
        Path(tmp).unlink(missing_ok=True)
        raise


def probe_writable(folder, path=None) -> None:
    """OutputError now (naming ``path``, or ``folder``) if a file cannot be created in ``folder``.

    Permission bits say nothing for root, read-only mounts or full disks: this really tries.
    """
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise output_error(exc, path or folder) from None


def write_atomic(path, data: bytes | str) -> None:
    with atomic_write(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def append_line(path, text: str) -> None:
    """Append ``text`` as one complete line, or nothing: a full disk never leaves a torn line.

    One write of the whole line on an O_APPEND descriptor; if the disk fills part-way, the
    file is cut back to its old length and an ``OutputError`` says so.
    """
    data = (text.rstrip("\n") + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise output_error(exc, path) from exc
    try:
        size = os.fstat(fd).st_size
        done = 0
        try:
            while done < len(data):  # a short write (the disk filled) is retried once to learn why
                done += os.write(fd, data[done:])
        except OSError as exc:
            if done:
                os.ftruncate(fd, size)
            raise output_error(exc, path) from exc
    finally:
        os.close(fd)


def read_jsonl(path, repair: bool = False) -> tuple[list[dict], str | None]:
    """The records of a JSON-lines file and a note about lines it dropped (None if none).

    A last line without its newline, or that does not parse, is what a crash or a full
    disk left mid-write: it is dropped (and with ``repair`` cut from the file, so the
    next record starts on a line of its own). Unparseable lines elsewhere are skipped and
    counted.
    """
    path = Path(path)
    if not path.exists():
        return [], None
    data = path.read_bytes()
    *complete, tail = data.split(b"\n")  # tail: b"" when the file ends with a newline
    keep = len(data) - len(tail)  # the bytes before a torn last line
    records, bad = [], 0
    for k, line in enumerate(complete):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if k == len(complete) - 1 and not tail.strip():  # the last line: torn, though its newline made it
                tail, keep = line, keep - len(line) - 1
                continue
            bad += 1
    notes = []
    if tail.strip():
        notes.append(f"dropped a torn last line ({len(tail)} bytes, cut off by a crash or a full disk)")
        if repair:
            with open(path, "r+b") as f:
                f.truncate(keep)
    if bad:
        notes.append(f"skipped {bad} unreadable line(s)")
    return records, f"{path}: {'; '.join(notes)}" if notes else None


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
