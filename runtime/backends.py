"""One entry point from a model file to the best backend that can run it here.

``.engine`` → native TensorRT. ``.onnx`` → ONNX Runtime with the TensorRT provider,
else CUDA, else CPU (whichever the installed onnxruntime build has).
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from . import ort_backend, ort_providers, trt_backend
from .artifacts import ArtifactError, ShapeLimits, model_kind
from .errors import BackendUnavailable
from .spec import ModelSpec


class Backend(Protocol):
    """What the Translator needs from a backend; ``OrtBackend`` and ``TensorRTBackend`` provide it."""

    name: str                   # "tensorrt", "ort-cpu", ...: the one that really runs
    spec: ModelSpec             # from the artifact's own metadata
    precision: str              # "fp32", "fp16" or "int8"
    limits: ShapeLimits | None  # the (N, H, W) range an engine was built for; None: any multiple works

    def run(self, image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
        """(N, C, H, W) float32 and the masks → (N, out_channels, H, W) float32, valid until the next run."""

    def close(self) -> None:
        """Release sessions, device memory and streams."""


BACKENDS = ("auto", "tensorrt", *ort_providers.PROVIDERS)


def available_backends() -> list[str]:
    """The backends this machine can run, best first (for --help and benchmarks)."""
    names = ["tensorrt"] if trt_backend.available() else []
    return names + [n for n in ort_providers.PROVIDERS if ort_providers.available(n)]


def open_backend(path: Path, backend: str = "auto", profile=None, **ort_options) -> Backend:
    """Open ``path`` on ``backend`` ("auto" picks the best that starts here, for the file's kind).

    ``profile``: the frame range to prepare for (see OrtBackend); an engine has its own, built in.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    kind = model_kind(path)
    if kind == "engine":
        if backend not in ("auto", "tensorrt"):
            raise ArtifactError(f"{path} is a TensorRT engine: only --backend tensorrt runs it "
                                "(for ONNX Runtime pass the .onnx file)")
        return trt_backend.TensorRTBackend(path)
    if backend == "tensorrt":
        raise BackendUnavailable(f"--backend tensorrt runs TensorRT engines: pass the .engine that p2p-export "
                                 f"built from {Path(path).name}, or use --backend ort-tensorrt for this ONNX file")
    return ort_backend.OrtBackend(path, backend, profile=profile, **ort_options)
