"""Check an exported ONNX file against the PyTorch generator on identical inputs and masks.

The reference is the generator in train mode (dropout on, batch statistics),
the function pix2pix computes at test time. Three things are checked:
ONNX Runtime ≈ PyTorch (max abs difference within tolerance) for each batch
size and frame size; the same masks twice give identical output; new masks
change it (the noise survived export).
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from p2p.runtime import contract
from p2p.runtime.backends import Backend

from .fp16 import FP16_TOLERANCE
from .onnx_export import ExportError

FP32_TOLERANCE = 1e-4


def tolerance_for(precision: str) -> float:
    return FP16_TOLERANCE if precision == contract.FP16 else FP32_TOLERANCE


@dataclass
class VerifyResult:
    precision: str
    tolerance: float
    diffs: dict = field(default_factory=dict)   # (batch, height, width) → max abs diff
    repeatable: bool = True                     # same masks twice → identical output
    masks_matter: bool | None = None            # new masks → different output (None: model has no dropout)

    @property
    def max_diff(self) -> float:
        return max(self.diffs.values(), default=0.0)

    @property
    def ok(self) -> bool:
        return self.max_diff <= self.tolerance and self.repeatable and self.masks_matter is not False

    def lines(self) -> list[str]:
        out = [f"batch {n}, {w}x{h}: max abs diff ONNX Runtime vs PyTorch {d:.2e}"
               for (n, h, w), d in self.diffs.items()]
        out.append(f"same masks twice: {'identical' if self.repeatable else 'DIFFERENT'}")
        if self.masks_matter is not None:
            out.append(f"new masks: {'output changes' if self.masks_matter else 'output UNCHANGED (noise lost)'}")
        verdict = "OK" if self.ok else "FAILED"
        out.append(f"{verdict}: {self.precision}, max diff {self.max_diff:.2e} (tolerance {self.tolerance:.0e})")
        return out

    def check(self) -> "VerifyResult":
        if not self.ok:
            raise ExportError("verification failed: " + "; ".join(self.lines()))
        return self


def verify_onnx(path, generator, *, sizes=None, batches=(1, 2), tolerance: float | None = None,
                seed: int = 0, threads: int | None = None) -> VerifyResult:
    """Compare ``path`` (the runtime's ONNX Runtime CPU backend) with ``generator`` (PyTorch, on a copy).

    ``sizes``: (height, width) pairs, default the spec's training size. The
    tolerance defaults to 1e-4 for fp32 files and ``FP16_TOLERANCE`` for fp16.
    """
    from p2p.runtime.ort_backend import OrtBackend
    from p2p.training.torch_backend import TorchBackend

    path = Path(path)
    reference = TorchBackend(path, generator=copy.deepcopy(generator).cpu().float().train())  # the paper's test time
    # threads given: the runtime's settings tuning (seconds, a cache in ~) is not for a one-off check
    candidate = OrtBackend(path, "ort-cpu", threads=threads or os.cpu_count() or 1)
    try:
        return verify(candidate, reference, sizes=sizes, batches=batches, tolerance=tolerance, seed=seed)
    finally:
        candidate.close()


def verify(candidate: Backend, reference: Backend, *, sizes=None, batches=(1, 2), tolerance: float | None = None,
           seed: int = 0) -> VerifyResult:
    """Compare any two backends of one model on identical inputs and masks: ``candidate`` (e.g. an export,
    on any runtime backend) against ``reference`` (e.g. its PyTorch generator); repeatability and the noise
    are checked on ``candidate``."""
    spec, precision = candidate.spec, candidate.precision
    result = VerifyResult(precision, tolerance if tolerance is not None else tolerance_for(precision))
    sizes = list(sizes or [(spec.height, spec.width)])
    rng = np.random.default_rng(seed)

    def ort_run(image, masks):
        return np.array(candidate.run(image, masks))  # a copy: a backend may reuse its output buffer

    def masks_for(batch, height, width, seed):
        return contract.draw_masks(spec, np.random.default_rng(seed), batch, height, width)

    for i, (height, width) in enumerate(sizes):
        for batch in batches:
            image = rng.uniform(-1, 1, (batch, spec.in_channels, height, width)).astype(np.float32)
            masks = masks_for(batch, height, width, seed + 1000 * i + batch)
            ref = np.array(reference.run(image, masks))
            out = ort_run(image, masks)
            if out.shape != ref.shape:
                raise ExportError(f"ONNX output shape {out.shape} differs from PyTorch's {ref.shape}")
            result.diffs[(batch, height, width)] = contract.compare_outputs(out, ref).max

    # repeatability and the noise, at the first size and batch 1
    height, width = sizes[0]
    image = rng.uniform(-1, 1, (1, spec.in_channels, height, width)).astype(np.float32)
    masks = masks_for(1, height, width, seed)
    first = ort_run(image, masks)
    result.repeatable = bool(np.array_equal(first, ort_run(image, masks)))
    if spec.dropout_blocks and spec.dropout_p > 0:
        other = ort_run(image, masks_for(1, height, width, seed + 1))
        result.masks_matter = contract.compare_outputs(other, first).max > 0
    return result
