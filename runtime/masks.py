"""Dropout masks: pix2pix's noise, drawn here and fed to the exported graph as inputs.

Each mask holds 0 or 1/(1−p), drawn by ``contract.draw_masks`` (the rule training
uses too). Noise modes:

- ``per-frame``: a fresh draw for every call: the paper's test-time behaviour;
- ``fixed``: one seeded draw per frame size for the whole session, shared by every
  frame of a batch: stochastic looks without flicker on video;
- ``off``: masks of ones: deterministic output (dropout disabled).
"""
from __future__ import annotations

import secrets

import numpy as np

from . import contract
from .spec import ModelSpec

NOISE_MODES = ("per-frame", "fixed", "off")


class MaskSampler:
    """Draws the dropout masks for a batch of N frames at a model size H×W."""

    def __init__(self, spec: ModelSpec, mode: str = "per-frame", seed: int | None = None):
        self.spec = spec
        # Without a seed, pick one and remember it, so that any run can be reproduced.
        self.seed = int(seed) if seed is not None else secrets.randbits(32)
        self._rng = np.random.default_rng(self.seed)
        self._cache: dict[tuple, list[np.ndarray]] = {}
        self.mode = mode

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in NOISE_MODES:
            raise ValueError(f"unknown noise mode {mode!r}; expected one of {', '.join(NOISE_MODES)}")
        self._mode = mode

    def next_mode(self) -> str:
        """Cycle per-frame → fixed → off → per-frame (the live window's n key)."""
        self.mode = NOISE_MODES[(NOISE_MODES.index(self.mode) + 1) % len(NOISE_MODES)]
        return self.mode

    def __call__(self, batch: int, height: int, width: int) -> list[np.ndarray]:
        if self.mode == "per-frame":
            return contract.draw_masks(self.spec, self._rng, batch, height, width)
        key = (self.mode, batch, height, width)
        if key not in self._cache:  # cached: fixed and off cost nothing per frame
            if self.mode == "off":
                masks = contract.ones_masks(self.spec, batch, height, width)
            else:
                # One draw per size from (seed, H, W): the same masks whatever came before,
                # repeated over the batch so identical frames give identical outputs.
                rng = np.random.default_rng([self.seed, height, width])
                masks = [np.ascontiguousarray(np.repeat(m, batch, axis=0))
                         for m in contract.draw_masks(self.spec, rng, 1, height, width)]
            self._cache[key] = masks
        return self._cache[key]
