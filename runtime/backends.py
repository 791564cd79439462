"""One entry point from a model file to the best backend that can run it here.

``.engine`` → native TensorRT. ``.onnx`` → ONNX Runtime with the TensorRT provider,
else CUDA, else CPU (whichever the installed onnxruntime build has). Every backend
has ``spec``, ``precision``, ``name``, ``limits`` (a ShapeLimits or None) and
``run(image, masks) -> output`` on float32 NCHW arrays.
"""
from __future__ import annotations

from pathlib import Path

from . import ort_backend, trt_backend
from .artifacts import ArtifactError, model_kind
from .ort_backend import BackendUnavailable

BACKENDS = ("auto", "tensorrt", *ort_backend.PROVIDERS)


def available_backends() -> list[str]:
    """The backends this machine can run, best first (for --help and benchmarks)."""
    import onnxruntime as ort

    names = ["tensorrt"] if trt_backend.available() else []
    present = ort.get_available_providers()
    return names + [n for n, p in ort_backend.PROVIDERS.items() if p in present]


def open_backend(path: Path, backend: str = "auto", **ort_options):
    """Open ``path`` on ``backend`` ("auto" picks the best present for the file's kind)."""
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
    return ort_backend.OrtBackend(path, backend, **ort_options)
