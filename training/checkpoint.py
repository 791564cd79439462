"""Checkpoints: everything needed to resume exactly, written atomically, checked and loaded safely.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings,
lists and dicts, so ``torch.load(weights_only=True)`` reads it: no unrestricted
unpickling, ever. It carries the model spec, so export and serving need no flags,
and the SHA-256 of its own content (``payload_digest``), so a flipped byte is caught
by every loader instead of becoming a garbage model. The digest lives inside the
file: no second file has to stay in step with it.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from p2p.runtime.errors import UserError, first_line
from p2p.runtime.files import TEMP_SUFFIX, atomic_write
from p2p.runtime.spec import ModelSpec, SpecError

from .models import Generator

CHECKPOINT_FORMAT = 1
CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_NAME = "checkpoint.prev.pt"  # the checkpoint before the last save (a hard link: no copy)
DIGEST_KEY = "sha256"


class CheckpointError(UserError, ValueError):
    """A file that is not a usable p2p checkpoint; the message says why."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint whose content no longer matches the checksum written with it."""


def payload_digest(state, threads: int | None = None) -> str:
    """SHA-256 over a checkpoint's content in a canonical order: every tensor's dtype, shape and the
    SHA-256 of its bytes, and every other value's type and repr (floats round-trip exactly). The
    same after a save and a load, whatever device the tensors were on. Tensors are hashed on
    several threads (hashlib lets go of the GIL): the check costs less than reading the file."""
    parts: list = []
    _flatten(state, parts)
    tensors = [p for p in parts if torch.is_tensor(p)]
    with ThreadPoolExecutor(max(1, min(len(tensors), threads or os.cpu_count() or 1))) as pool:
        digests = iter(list(pool.map(_tensor_digest, tensors)))
    h = hashlib.sha256()
    for p in parts:
        h.update(next(digests) if torch.is_tensor(p) else p)
    return h.hexdigest()


def _tensor_digest(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous()
    return hashlib.sha256(memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else b"").digest()


def _flatten(obj, parts: list) -> None:
    """``obj`` as a sequence of bytes and tensors, in an order that does not depend on how it was built."""
    if torch.is_tensor(obj):
        parts += [f"T{obj.dtype}{tuple(obj.shape)}".encode(), obj]
    elif isinstance(obj, dict):
        parts.append(b"D%d" % len(obj))
        for key in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            _flatten(key, parts)
            _flatten(obj[key], parts)
    elif isinstance(obj, (list, tuple)):
        parts.append(b"L%d" % len(obj))
        for value in obj:
            _flatten(value, parts)
    else:
        parts.append(f"{type(obj).__name__}:{obj!r};".encode())


def checkpoint_path(run_or_file: Path) -> Path:
    """A run folder means its checkpoint.pt; a file means itself."""
    path = Path(run_or_file)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
        if not path.is_file():
            raise CheckpointError(f"{path.parent} has no {CHECKPOINT_NAME}: is it a p2p-train --out folder?")
    elif not path.exists():
        raise CheckpointError(f"{path} does not exist")
    return path


def save_checkpoint(state: dict, path: Path, keep_previous: bool = False) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the old one.

    A crash or Ctrl-C at any moment leaves either the old checkpoint or the new
    one, never half of one; a full disk or a read-only file system raises an
    OutputError and leaves the old one. With ``keep_previous`` the old checkpoint stays
    as PREVIOUS_NAME beside it (a hard link, so at most two checkpoints are ever on disk).
    """
    path = Path(path)
    state = {"kind": "p2p-checkpoint", "format": CHECKPOINT_FORMAT, **state}
    state[DIGEST_KEY] = payload_digest(state)
    if keep_previous and path.is_file():
        _link_previous(path)
    with atomic_write(path) as f:
        torch.save(state, f)


def _link_previous(path: Path) -> None:
    """PREVIOUS_NAME becomes another name of the current checkpoint (the one before it is freed)."""
    previous = path.parent / PREVIOUS_NAME
    tmp = path.parent / f".{PREVIOUS_NAME}.{secrets.token_hex(4)}{TEMP_SUFFIX}"  # atomic_write's pattern
    try:
        os.link(path, tmp)
        os.replace(tmp, previous)
    except OSError:  # no hard links on this file system: keep none rather than a second copy
        pass
    # rename(2) does nothing when both names are links to one file (a run killed after the link and
    # before its new checkpoint was written): the temporary name would stay behind
    tmp.unlink(missing_ok=True)


def previous_checkpoint(path: Path) -> Path:
    return Path(path).parent / PREVIOUS_NAME


WEIGHTS_ONLY_REFUSAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")  # torch's long message, its point


def load_checkpoint(run_or_file: Path, map_location="cpu") -> dict:
    """A verified checkpoint: CheckpointError (CorruptCheckpoint for a checksum mismatch) otherwise.

    Checkpoints from before checksums load without one being checked.
    """
    path = checkpoint_path(run_or_file)
    try:
        with warnings.catch_warnings():  # torch's notes on foreign pickles are noise here: we refuse them below
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle, zip and tensor errors all mean the same to a user
        refused = WEIGHTS_ONLY_REFUSAL.search(str(exc))
        if refused:
            raise CheckpointError(
                f"{path} holds Python objects that a safe load refuses (such as {refused[1]}): p2p never unpickles "
                "those; it is not a p2p checkpoint (or another program saved it)") from None
        raise CheckpointError(f"{path} is not a readable p2p checkpoint (corrupt, truncated, or another "
                              f"kind of file): {first_line(exc, 200)}") from None
    if not isinstance(state, dict) or state.get("kind") != "p2p-checkpoint":
        raise CheckpointError(f"{path} is a PyTorch file but not a p2p checkpoint")
    if int(state.get("format", 0)) > CHECKPOINT_FORMAT:  # first: a newer format may check itself otherwise
        raise CheckpointError(f"{path} has checkpoint format {state['format']}, newer than this p2p "
                              f"reads ({CHECKPOINT_FORMAT}): upgrade p2p")
    stored = state.pop(DIGEST_KEY, None)
    if stored is not None and stored != payload_digest(state):
        raise CorruptCheckpoint(f"{path} is corrupt: its content does not match the checksum written with it "
                                "(a damaged disk or copy)")
    try:
        state["spec"] = ModelSpec.from_dict(state["spec"])
    except (KeyError, SpecError) as exc:
        raise CheckpointError(f"{path}: bad model spec: {exc}") from None
    return state


def load_generator(run_or_file: Path, map_location="cpu"):
    """The generator of a checkpoint, rebuilt from its spec; returns (generator, spec, state)."""
    state = load_checkpoint(run_or_file, map_location)
    gen = Generator(state["spec"])
    try:
        gen.load_state_dict(state["generator"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{run_or_file}: generator weights do not fit its spec: "
                              f"{first_line(exc, 200)}") from None
    return gen, state["spec"], state
