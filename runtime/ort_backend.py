"""ONNX Runtime backend: the TensorRT, CUDA or CPU execution provider, whichever is best and present.

Tuned for CPU, where most users meet it first: all graph optimisations, the
physical cores as intra-op threads, denormals flushed to zero, and IO binding
into a preallocated output buffer (no per-frame output allocation or copy).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import contract
from .artifacts import ArtifactError
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


def available(name: str) -> bool:
    return PROVIDERS[name] in ort.get_available_providers()


class OrtBackend:
    """Runs a p2p ONNX file. ``provider``: "auto" (best present) or one of ``PROVIDERS``."""

    def __init__(self, path: Path, provider: str = "auto", *, threads: int | None = None,
                 optimization: str = "all", spinning: bool = True, trt_cache: Path | None = None):
        self.path = Path(path)
        present = ort.get_available_providers()
        if provider == "auto":
            wanted = [n for n in PROVIDERS if PROVIDERS[n] in present]
        else:
            if PROVIDERS[provider] not in present:
                raise BackendUnavailable(
                    f"backend {provider} needs ONNX Runtime's {PROVIDERS[provider]}, but the installed "
                    f"onnxruntime has only {', '.join(present)}: install onnxruntime-gpu instead of "
                    "onnxruntime (never both), or pick another --backend")
            # fall back to the CPU for any node the provider cannot take
            wanted = [provider] + (["ort-cpu"] if provider != "ort-cpu" else [])
        self.session = self._open(wanted, threads, optimization, spinning, trt_cache)
        try:
            self.spec, self.precision = contract.read_metadata(self.session.get_modelmeta().custom_metadata_map,
                                                               str(self.path))
            contract.check_io(self.spec, [i.name for i in self.session.get_inputs()],
                              [o.name for o in self.session.get_outputs()], str(self.path))
        except SpecError as exc:
            raise ArtifactError(str(exc)) from None
        self.mask_names = contract.mask_names(self.spec)
        used = self.session.get_providers()[0]
        self.name = next((n for n, p in PROVIDERS.items() if p == used), used)
        # GPU providers copy inputs to the device themselves; the output comes back into _out.
        self._binding = self.session.io_binding()
        self._out: np.ndarray | None = None
        self.limits = None  # any multiple of spec.multiple works

    def _open(self, wanted, threads, optimization, spinning, trt_cache):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,  # incl. the NCHWc layout for CPU convolutions
        }[optimization]
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # one chain of convolutions: no branch parallelism
        if threads:
            opts.intra_op_num_threads = int(threads)  # default (0): one per physical core
        opts.inter_op_num_threads = 1
        # Flush denormals: tiny activations otherwise slow x86 FP units by orders of magnitude.
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        # Spinning threads cut latency but eat the cores that decode/encode threads need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        opts.log_severity_level = 3  # errors only: provider fallbacks are reported by name instead
        providers = []
        for name in wanted:
            if name == "ort-tensorrt":
                cache = Path(trt_cache or cache_dir())
                cache.mkdir(parents=True, exist_ok=True)
                providers.append((PROVIDERS[name], {
                    "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
                    # fp16 models ask for fp16 kernels; fp32 ones keep fp32 numerics
                    "trt_fp16_enable": self._fp16_hint(),
                }))
            elif name == "ort-cuda":
                # TF32 convolutions drift ~1e-3 from fp32; keep the numerics the other backends have
                providers.append((PROVIDERS[name], {"use_tf32": "0"}))
            else:
                providers.append(PROVIDERS[name])
        try:
            return ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... classes
            raise ArtifactError(f"{self.path}: ONNX Runtime cannot load it (corrupt, truncated, or not an "
                                f"ONNX model?): {first_line(exc)}") from None

    def _fp16_hint(self) -> bool:
        # read before the session exists: the spec is not known yet; the file name is not trusted,
        # so ask onnx only for the metadata when the package is there
        try:
            import onnx
            model = onnx.load(str(self.path), load_external_data=False)
            return any(p.key == contract.META_PRECISION and p.value == "fp16" for p in model.metadata_props)
        except Exception:
            return False

    def run(self, image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
        """(N, C, H, W) float32 → (N, out_channels, H, W) float32, valid until the next run."""
        n, _, h, w = image.shape
        b = self._binding
        b.bind_cpu_input(contract.INPUT, image)
        for name, mask in zip(self.mask_names, masks):
            b.bind_cpu_input(name, mask)
        shape = contract.output_shape(self.spec, n, h, w)
        if self._out is None or self._out.shape != shape:
            self._out = np.empty(shape, np.float32)
            b.clear_binding_outputs()
            b.bind_output(contract.OUTPUT, "cpu", 0, np.float32, list(shape), self._out.ctypes.data)
        self.session.run_with_iobinding(b)
        return self._out

    def close(self) -> None:
        self._binding = None
        self.session = None
