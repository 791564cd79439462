"""ONNX Runtime's execution providers: which are present, what each needs loaded first, their options.

``get_available_providers()`` lists what the installed build contains, not what can start here;
``OrtBackend`` checks what each session really runs on. This module holds what it asks for.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import os
import re
from pathlib import Path

try:
    import onnxruntime as ort
except ImportError:  # it comes from an extra (cpu, gpu-cu12, gpu-cu13): said when a model is opened
    ort = None

from . import contract, install_hints
from .artifacts import ShapeLimits, read_onnx_metadata
from .errors import BackendUnavailable, first_line
from .spec import SpecError

# backend name → ONNX Runtime provider, best first
PROVIDERS = {
    "ort-tensorrt": "TensorrtExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-cpu": "CPUExecutionProvider",
}


def cache_dir() -> Path:
    """Where the TensorRT provider keeps built engines and timing caches between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "p2p" / "ort-tensorrt"


NO_ORT = f"ONNX Runtime is not installed: {install_hints.ORT}"


def present_providers() -> list[str]:
    """The providers the installed onnxruntime build contains (not all of them may start here)."""
    if ort is None:
        raise BackendUnavailable(NO_ORT)
    return ort.get_available_providers()


def available(name: str) -> bool:
    return ort is not None and PROVIDERS[name] in ort.get_available_providers()


# What each GPU provider needs, for the message when it is in the build but cannot start.
NEEDS = {
    "ort-tensorrt": "a CUDA GPU, and TensorRT 10's libraries (libnvinfer.so.10) for the CUDA that onnxruntime-gpu "
                    f"was built for: the tensorrt package, which p2p imports first to load them ({install_hints.GPU})",
    "ort-cuda": "a CUDA GPU and driver, and the CUDA and cuDNN 9 libraries onnxruntime-gpu was built for "
                f"(onnxruntime-gpu[cuda,cudnn] brings them: {install_hints.GPU}; onnxruntime-gpu 1.27 and later "
                "want CUDA 13, driver ≥ 580)",
}


def load_gpu_libraries(name: str) -> list[str]:
    """Load what a GPU provider needs before its session is made; returns what could not be loaded.

    In a plain pip install neither provider finds its libraries by itself: onnxruntime-gpu's
    CUDA provider takes CUDA and cuDNN from the nvidia-* wheels only once
    ``onnxruntime.preload_dlls()`` (onnxruntime ≥ 1.21) has loaded them, and its TensorRT
    provider dlopens libnvinfer by name, which succeeds once ``import tensorrt`` (the PyPI
    wheels load their libraries on import) has loaded it. Older builds (e.g. Jetson's) find
    JetPack's system libraries and have no preload_dlls. Done once per process and name.
    """
    if name not in _LOADED:
        missing = []
        if hasattr(ort, "preload_dlls"):
            printed = io.StringIO()
            try:
                with contextlib.redirect_stdout(printed):  # it reports a library it cannot load on stdout
                    ort.preload_dlls()
            except Exception as exc:  # e.g. RuntimeError for a missing directory: the session will say more
                missing.append(f"preload_dlls: {first_line(exc)}")
            missing += [line.strip() for line in printed.getvalue().splitlines() if line.startswith("Failed to load")]
        if name == "ort-tensorrt":
            try:
                import tensorrt  # noqa: F401  (loads libnvinfer into the process for the provider)
            except Exception as exc:  # ImportError, or OSError from a wheel whose libraries are missing
                missing.append(f"tensorrt cannot be imported ({first_line(exc, 120)})")
        _LOADED[name] = missing
    return _LOADED[name]


_LOADED: dict[str, list[str]] = {}


def can_disable_fallback(session_class) -> bool:
    """Whether ``InferenceSession(..., enable_fallback=0)`` works: onnxruntime ≥ 1.23's Session takes it.

    Before 1.23 (1.19–1.22) the keyword disappears into ``**kwargs``: a provider that raises
    is retried at once on the fallback providers without their options, with a banner on stdout.
    """
    for klass in inspect.getmro(session_class):
        init = vars(klass).get("__init__")
        try:
            if init is not None and "enable_fallback" in inspect.signature(init).parameters:
                return True
        except (TypeError, ValueError):  # a compiled __init__ without a signature
            continue
    return False


SOURCE_LOCATION = re.compile(r"^/\S+\.(?:cc|cpp|h):\d+ [^(]*\([^)]*\)\s*")

# What a session asks for, best first: nodes a provider cannot take go to the next one.
CHAINS = {"ort-tensorrt": ("ort-tensorrt", "ort-cuda", "ort-cpu"), "ort-cuda": ("ort-cuda", "ort-cpu"),
          "ort-cpu": ("ort-cpu",)}


def provider_entry(name: str, path: Path, trt_cache: Path | None = None, profile=None):
    """ONNX Runtime's provider entry for backend ``name``: its provider name, with options where it takes some.

    ``profile``: the (N, H, W) ShapeLimits frames will have, or a function of the spec giving them (see OrtBackend).
    """
    if name == "ort-tensorrt":
        return _tensorrt_provider(path, trt_cache, profile)
    if name == "ort-cuda":
        # TF32 convolutions drift ~1e-3 from fp32; keep the numerics the other backends have
        return PROVIDERS[name], {"use_tf32": "0"}
    return PROVIDERS[name]


def _tensorrt_provider(path: Path, trt_cache: Path | None, profile) -> tuple[str, dict]:
    """The TensorRT provider with engine and timing caches, and an optimisation profile over every input."""
    cache = Path(trt_cache or cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
               "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}
    try:  # the spec before the session exists, for the profile (the onnx package may be absent on a Jetson)
        spec, precision = read_onnx_metadata(path)
    except (ImportError, SpecError):  # without it TensorRT makes its own profiles; the session checks the file
        spec = None
    if spec is not None:
        options["trt_fp16_enable"] = precision == contract.FP16  # fp32 models keep fp32 numerics
        limits = profile(spec) if callable(profile) else profile
        limits = limits or ShapeLimits(*[(1, spec.height, spec.width)] * 3)
        for key, shape in zip(("min", "opt", "max"), (limits.min, limits.opt, limits.max)):
            # "image:1x3x256x256,dropout_mask_0:1x512x2x2,...": every dynamic input needs one
            options[f"trt_profile_{key}_shapes"] = ",".join(
                f"{n}:{'x'.join(map(str, dims))}" for n, dims in contract.input_shapes(spec, *shape).items())
    return PROVIDERS["ort-tensorrt"], options


def sentence(message: str) -> str:
    """ "/onnxruntime_src/...state.cc:729 void onnxruntime::...(...) Please install ...": keep the sentence."""
    return SOURCE_LOCATION.sub("", message)[:300]
