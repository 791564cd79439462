"""Check an exported ONNX file against the PyTorch generator on identical inputs and masks.

The reference is the generator in train mode (dropout on, batch statistics),
the function pix2pix computes at test time. Three things are checked:
ONNX Runtime ≈ PyTorch (max abs difference within tolerance) for each batch
size and frame size; the same masks twice give identical output; new masks
change it (the noise survived export).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from p2p.runtime.spec import ModelSpec

from .fp16 import FP16_TOLERANCE
from .onnx_export import ExportError, read_onnx_precision, read_onnx_spec

FP32_TOLERANCE = 1e-4


def tolerance_for(precision: str) -> float:
    return FP16_TOLERANCE if precision == "fp16" else FP32_TOLERANCE


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


def random_masks(spec: ModelSpec, batch: int, height: int, width: int, seed: int) -> list[np.ndarray]:
    """Masks of 0 or 1/(1−p), float32, in input order, drawn with numpy (no torch needed)."""
    rng = np.random.default_rng(seed)
    keep = 1.0 - spec.dropout_p
    return [((rng.random(s) < keep) / keep).astype(np.float32)
            for s in spec.mask_shapes(batch, height, width)]


def ort_session(path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def feed(spec: ModelSpec, image: np.ndarray, masks) -> dict:
    return {"image": np.ascontiguousarray(image, np.float32),
            **{name: np.ascontiguousarray(m, np.float32) for name, m in zip(spec.mask_names(), masks)}}


def verify_onnx(path, generator, *, sizes=None, batches=(1, 2), tolerance: float | None = None,
                seed: int = 0, threads: int | None = None) -> VerifyResult:
    """Compare ``path`` (ONNX Runtime CPU) with ``generator`` (PyTorch, train mode, on a copy).

    ``sizes``: (height, width) pairs, default the spec's training size. The
    tolerance defaults to 1e-4 for fp32 files and ``FP16_TOLERANCE`` for fp16.
    """
    import torch

    path = Path(path)
    spec = read_onnx_spec(path)
    precision = read_onnx_precision(path)
    result = VerifyResult(precision, tolerance if tolerance is not None else tolerance_for(precision))
    sizes = list(sizes or [(spec.image_size, spec.image_size)])
    net = copy.deepcopy(generator).cpu().float().train()
    sess = ort_session(path, threads)
    rng = np.random.default_rng(seed)

    def ort_run(image, masks):
        return sess.run(["output"], feed(spec, image, masks))[0]

    for i, (height, width) in enumerate(sizes):
        for batch in batches:
            image = rng.uniform(-1, 1, (batch, spec.in_channels, height, width)).astype(np.float32)
            masks = random_masks(spec, batch, height, width, seed + 1000 * i + batch)
            with torch.no_grad():
                ref = net(torch.from_numpy(image), [torch.from_numpy(m) for m in masks]).numpy()
            out = ort_run(image, masks)
            if out.shape != ref.shape:
                raise ExportError(f"ONNX output shape {out.shape} differs from PyTorch's {ref.shape}")
            result.diffs[(batch, height, width)] = float(np.abs(out - ref).max())

    # repeatability and the noise, at the first size and batch 1
    height, width = sizes[0]
    image = rng.uniform(-1, 1, (1, spec.in_channels, height, width)).astype(np.float32)
    masks = random_masks(spec, 1, height, width, seed)
    first = ort_run(image, masks)
    result.repeatable = bool(np.array_equal(first, ort_run(image, masks)))
    if spec.dropout_blocks and spec.dropout_p > 0:
        other = ort_run(image, random_masks(spec, 1, height, width, seed + 1))
        result.masks_matter = bool(np.abs(other - first).max() > 0)
    return result
