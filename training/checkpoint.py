"""Checkpoints: everything needed to resume exactly, written atomically, loaded safely.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings,
lists and dicts, so ``torch.load(weights_only=True)`` reads it: no unrestricted
unpickling, ever. It carries the model spec, so export and serving need no flags.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from p2p.runtime.errors import UserError, first_line
from p2p.runtime.files import atomic_write
from p2p.runtime.spec import ModelSpec, SpecError

from .models import Generator

CHECKPOINT_FORMAT = 1
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(UserError, ValueError):
    """A file that is not a usable p2p checkpoint; the message says why."""


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


def save_checkpoint(state: dict, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the old one.

    A crash or Ctrl-C at any moment leaves either the old checkpoint or the new
    one, never half of one.
    """
    state = {"kind": "p2p-checkpoint", "format": CHECKPOINT_FORMAT, **state}
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(run_or_file: Path, map_location="cpu") -> dict:
    path = checkpoint_path(run_or_file)
    try:
        with warnings.catch_warnings():  # torch's notes on foreign pickles are noise here: we refuse them below
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle, zip and tensor errors all mean the same to a user
        raise CheckpointError(f"{path} is not a readable p2p checkpoint (corrupt, truncated, or another "
                              f"kind of file): {first_line(exc, 200)}") from None
    if not isinstance(state, dict) or state.get("kind") != "p2p-checkpoint":
        raise CheckpointError(f"{path} is a PyTorch file but not a p2p checkpoint")
    if int(state.get("format", 0)) > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {state['format']}, newer than this p2p "
                              f"reads ({CHECKPOINT_FORMAT}): upgrade p2p")
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
