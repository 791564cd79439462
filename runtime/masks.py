"""Dropout masks: pix2pix's noise, drawn here and fed to the exported graph as inputs.

Each mask holds 0 or 1/(1−p) (inverted dropout, as PyTorch's train-mode dropout and
``p2p.training.models.draw_mask``: keep where a uniform draw is ≥ p). Noise modes:

- ``per-frame``: a fresh draw for every call: the paper's test-time behaviour;
- ``fixed``: one seeded draw per frame size for the whole session, shared by every
  frame of a batch: stochastic looks without flicker on video;
- ``off``: masks of ones: deterministic output (dropout disabled).
"""
from __future__ import annotations

import secrets

import numpy as np

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
        shapes = self.spec.mask_shapes(batch, height, width)
        if not shapes:
            return []
        if self.mode == "per-frame":
            return [self._draw(self._rng, s) for s in shapes]
        key = (self.mode, batch, height, width)
        if key not in self._cache:  # cached: fixed and off cost nothing per frame
            if self.mode == "off":
                masks = [np.ones(s, np.float32) for s in shapes]
            else:
                # One draw per size from (seed, H, W): the same masks whatever came before,
                # repeated over the batch so identical frames give identical outputs.
                rng = np.random.default_rng([self.seed, height, width])
                masks = [np.ascontiguousarray(np.repeat(self._draw(rng, (1, *s[1:])), batch, axis=0))
                         for s in shapes]
            self._cache[key] = masks
        return self._cache[key]

    def _draw(self, rng: np.random.Generator, shape) -> np.ndarray:
        p = self.spec.dropout_p
        keep = rng.random(shape, dtype=np.float32) >= p
        return keep.astype(np.float32) * np.float32(1.0 / (1.0 - p))
