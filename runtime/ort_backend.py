"""ONNX Runtime backend: the TensorRT, CUDA or CPU execution provider, whichever is best and present.

Tuned for CPU, where most users meet it first: all graph optimisations, the
physical cores as intra-op threads, denormals flushed to zero, and IO binding
into a preallocated output buffer (no per-frame output allocation or copy). Without
``threads``, the CPU session's settings are the ones ``ort_tuning`` measured fastest for
this model on this machine (once, then remembered).
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

try:
    import onnxruntime as ort
except ImportError:  # it comes from an extra (cpu, gpu-cu12, gpu-cu13): said when a model is opened
    ort = None

from . import contract, install_hints, ort_tuning
from .artifacts import ArtifactError, ShapeLimits, read_onnx_metadata
from .errors import BackendUnavailable, first_line
from .files import file_sha256
from .integrity import check_onnx_file
from .spec import ModelSpec, SpecError

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


class OrtBackend:
    """Runs a p2p ONNX file. ``provider``: "auto" (the best that really starts here) or one of ``PROVIDERS``.

    ``get_available_providers()`` lists what the installed build contains, not what works:
    onnxruntime-gpu without a usable GPU quietly builds a CPU session. So every session's
    ``get_providers()[0]`` is checked: an explicit request that did not start is an error
    naming what is missing, and "auto" reports the provider that really runs (``skipped``
    says which better ones did not start, and why).

    ``profile``: the (N, H, W) range frames will have, for the TensorRT provider's
    optimisation profile (one engine for the range instead of one per frame size); a
    function of the spec, or None for the training size.
    """

    def __init__(self, path: Path, provider: str = "auto", *, threads: int | None = None,
                 optimization: str = "all", spinning: bool = True, trt_cache: Path | None = None,
                 profile: ShapeLimits | Callable[[ModelSpec], ShapeLimits] | None = None):
        self.path = Path(path)
        if self.path.is_file():
            check_onnx_file(self.path)  # a damaged file is refused before ONNX Runtime reads it
        self.skipped: list[str] = []
        settings = _Settings(threads or 0, optimization, spinning, trt_cache, profile)
        self.session, used = self._first_that_starts(provider, settings)
        self.name = next(n for n, p in PROVIDERS.items() if p == used)
        try:
            self.spec, self.precision = contract.read_metadata(self.session.get_modelmeta().custom_metadata_map,
                                                               str(self.path))
            contract.check_io(self.spec, [i.name for i in self.session.get_inputs()],
                              [o.name for o in self.session.get_outputs()], str(self.path))
            contract.check_channels(self.spec, {t.name: t.shape for t in (*self.session.get_inputs(),
                                                                          *self.session.get_outputs())}, str(self.path))
        except SpecError as exc:
            raise ArtifactError(str(exc)) from None
        self.mask_names = contract.mask_names(self.spec)
        self.settings = settings
        if self.name == "ort-cpu" and not threads and ort_tuning.mode() != "off":
            self.session, self.settings = self._tuned(settings)
        self._general: tuple | None = None  # for shapes other than the one a session was planned for
        self._bound = None  # the binding the output buffer is bound to
        # GPU providers copy inputs to the device themselves; the output comes back into _out.
        self._binding = self.session.io_binding()
        self._out: np.ndarray | None = None
        self.limits = None  # any multiple of spec.multiple works

    def _first_that_starts(self, provider: str, settings: "_Settings") -> tuple[ort.InferenceSession, str]:
        """(session, the provider it runs on): ``provider``'s, or with "auto" the best one that starts.

        What was tried and did not start is said in ``self.skipped``; a provider asked for by name that
        does not start is BackendUnavailable.
        """
        present = present_providers()
        if provider == "auto":
            candidates = [n for n in PROVIDERS if PROVIDERS[n] in present]
        elif PROVIDERS[provider] not in present:
            raise BackendUnavailable(
                f"backend {provider} needs ONNX Runtime's {PROVIDERS[provider]}, but the installed "
                f"onnxruntime has only {', '.join(present)}: install onnxruntime-gpu instead of "
                "onnxruntime (never both), or pick another --backend")
        else:
            candidates = [provider]
        for name in candidates:
            missing = load_gpu_libraries(name) if name != "ort-cpu" else []
            session = self._start(name, provider, settings, missing)
            if session is None:
                continue
            used = session.get_providers()[0]
            if used == PROVIDERS[name]:
                break
            if provider == "auto" and used in (PROVIDERS[c] for c in candidates):
                # e.g. a TensorRT session that started on CUDA is a CUDA session, and says so
                started = session.get_providers()
                self.skipped += [f"{n}: did not start (the session runs on {used})" for n in CHAINS[name]
                                 if PROVIDERS[n] not in started]
                break
            if provider != "auto":
                seen = f" ({'; '.join(missing)})" if missing else ""
                raise BackendUnavailable(
                    f"backend {name} asked for, but ONNX Runtime could not start its {PROVIDERS[name]} (the session "
                    f"would run on {used}){seen}: it needs {NEEDS[name]}; ONNX Runtime's log above says which part "
                    "is missing; or pick --backend ort-cpu")
            self.skipped.append(f"{name}: did not start (the session would run on {used})")
        return session, used

    def _start(self, name: str, provider: str, settings: "_Settings", missing: list[str]):
        """A session on ``name``'s providers, or None (said in ``self.skipped``) when it fails to start."""
        try:
            return self._open(name, settings)
        except _StartFailure as exc:
            if name == "ort-cpu":
                raise ArtifactError(f"{self.path}: ONNX Runtime cannot load it (corrupt, truncated, or not an "
                                    f"ONNX model?): {exc}") from None
            reason = "; ".join([str(exc), *missing])
            if provider != "auto":
                raise BackendUnavailable(f"backend {name} could not start ({reason}): it needs {NEEDS[name]}; "
                                         "or pick --backend ort-cpu") from None
            self.skipped.append(f"{name}: {reason}")
            return None

    def _tuned(self, base: "_Settings") -> tuple[ort.InferenceSession, "_Settings"]:
        """The CPU session with the settings ort_tuning stored for this model, machine and frame shape
        (measured now, a few seconds, when there are none); the session opened by default if they are it."""
        limits = base.profile(self.spec) if callable(base.profile) else base.profile
        limits = limits or ShapeLimits(*[(1, self.spec.height, self.spec.width)] * 3)
        shape = limits.opt
        exact = shape if limits.min == limits.max else None  # a session planned for one shape needs to know it
        keys = file_sha256(self.path), ort_tuning.machine_key(ort.__version__), shape
        default = ort_tuning.SessionSettings(base.threads, base.optimization)
        chosen = None if ort_tuning.mode() == "again" else ort_tuning.load(*keys)
        sessions = {default: self.session}
        if chosen is None:
            print(f"tuning ONNX Runtime's CPU settings for {self.path.name} on this machine (once) ...",
                  file=sys.stderr, flush=True)
            image = np.random.default_rng(0).uniform(-1, 1, (shape[0], self.spec.in_channels, *shape[1:]))
            feeds = contract.feeds(self.spec, image, contract.ones_masks(self.spec, *shape))

            def make_run(s: ort_tuning.SessionSettings):
                if s not in sessions:
                    sessions[s] = self._open("ort-cpu", _with(base, s))
                return lambda: sessions[s].run(None, feeds)

            chosen, measured = ort_tuning.tune(make_run, default, exact)
            ort_tuning.store(*keys, chosen, measured)
            print(f"  {chosen.describe()}", file=sys.stderr, flush=True)
        settings = _with(base, chosen)
        session = sessions.get(chosen) or self._open("ort-cpu", settings)
        return session, settings

    def _session_for(self, n: int, h: int, w: int):
        """(session, binding) for an input of this shape: a session planned for one shape runs only that."""
        if self.settings.shape in (None, (n, h, w)):
            return self.session, self._binding
        if self._general is None:
            session = self._open(self.name, dataclasses.replace(self.settings, shape=None))
            self._general = session, session.io_binding()
        return self._general

    def _open(self, name: str, settings: "_Settings") -> ort.InferenceSession:
        """A session that asks for ``name`` first (what it really got is checked by the caller)."""
        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,  # incl. the NCHWc layout for CPU convolutions
        }[settings.optimization]
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # one chain of convolutions: no branch parallelism
        if settings.threads:
            opts.intra_op_num_threads = int(settings.threads)  # default (0): one per physical core
        opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = settings.arena
        if settings.shape:  # plan for this input shape only (the dimension names p2p-export writes)
            for dim, value in ort_tuning.dimension_values(self.spec, settings.shape).items():
                opts.add_free_dimension_override_by_name(dim, value)
        # Flush denormals: tiny activations otherwise slow x86 FP units by orders of magnitude.
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        # Spinning threads cut latency but eat the cores that decode/encode threads need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.spinning else "0")
        opts.log_severity_level = 3  # errors only: provider fallbacks are reported by name instead
        providers = [self._provider(n, settings) for n in CHAINS[name]]
        # No silent retry on other providers with ours' options dropped (and no banner on stdout): the
        # caller decides what a provider that cannot start means. onnxruntime < 1.23 cannot be told so:
        # its retry's banner is caught and turned back into the error it reports.
        kwargs = {"enable_fallback": 0} if can_disable_fallback(ort.InferenceSession) else {}
        banner = io.StringIO()
        try:
            with contextlib.redirect_stdout(banner):
                session = ort.InferenceSession(str(self.path), opts, providers=providers, **kwargs)
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/EPFail/... classes
            raise _StartFailure(_sentence(first_line(exc, 2000))) from None
        retried = re.search(r"EP Error (.*) when using \[", banner.getvalue())
        if retried:  # onnxruntime < 1.23 fell back to other providers after this error
            raise _StartFailure(_sentence(retried.group(1)))
        return session

    def _provider(self, name: str, settings: "_Settings"):
        """ONNX Runtime's provider entry for ``name``: its name, with options where it takes some."""
        if name == "ort-tensorrt":
            return self._tensorrt_provider(settings)
        if name == "ort-cuda":
            # TF32 convolutions drift ~1e-3 from fp32; keep the numerics the other backends have
            return PROVIDERS[name], {"use_tf32": "0"}
        return PROVIDERS[name]

    def _tensorrt_provider(self, settings: "_Settings") -> tuple[str, dict]:
        """The TensorRT provider with engine and timing caches, and an optimisation profile over every input."""
        cache = Path(settings.trt_cache or cache_dir())
        cache.mkdir(parents=True, exist_ok=True)
        options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                   "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}
        try:  # the spec before the session exists, for the profile (the onnx package may be absent on a Jetson)
            spec, precision = read_onnx_metadata(self.path)
        except (ImportError, SpecError):  # without it TensorRT makes its own profiles; the session checks the file
            spec = None
        if spec is not None:
            options["trt_fp16_enable"] = precision == contract.FP16  # fp32 models keep fp32 numerics
            limits = settings.profile(spec) if callable(settings.profile) else settings.profile
            limits = limits or ShapeLimits(*[(1, spec.height, spec.width)] * 3)
            for key, shape in zip(("min", "opt", "max"), (limits.min, limits.opt, limits.max)):
                # "image:1x3x256x256,dropout_mask_0:1x512x2x2,...": every dynamic input needs one
                options[f"trt_profile_{key}_shapes"] = ",".join(
                    f"{n}:{'x'.join(map(str, dims))}" for n, dims in contract.input_shapes(spec, *shape).items())
        return PROVIDERS["ort-tensorrt"], options

    def run(self, image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
        """(N, C, H, W) float32 → (N, out_channels, H, W) float32, valid until the next run."""
        n, _, h, w = image.shape
        session, b = self._session_for(n, h, w)
        b.bind_cpu_input(contract.INPUT, image)
        for name, mask in zip(self.mask_names, masks):
            b.bind_cpu_input(name, mask)
        shape = contract.output_shape(self.spec, n, h, w)
        if self._out is None or self._out.shape != shape or b is not self._bound:
            if self._out is None or self._out.shape != shape:
                self._out = np.empty(shape, np.float32)
            b.clear_binding_outputs()
            b.bind_output(contract.OUTPUT, "cpu", 0, np.float32, list(shape), self._out.ctypes.data)
            self._bound = b
        session.run_with_iobinding(b)
        return self._out

    def close(self) -> None:
        self._binding = self._general = self._bound = None
        self.session = None

def _sentence(message: str) -> str:
    """ "/onnxruntime_src/...state.cc:729 void onnxruntime::...(...) Please install ...": keep the sentence."""
    return SOURCE_LOCATION.sub("", message)[:300]


class _StartFailure(Exception):
    """ONNX Runtime raised while creating a session (its message's first line)."""


@dataclass(frozen=True)
class _Settings:
    threads: int  # 0: ONNX Runtime's default, one per physical core
    optimization: str
    spinning: bool
    trt_cache: Path | None
    profile: ShapeLimits | Callable[[ModelSpec], ShapeLimits] | None
    arena: bool = True
    shape: tuple[int, int, int] | None = None  # (N, H, W) the CPU session is planned for; None: any


def _with(base: _Settings, tuned: ort_tuning.SessionSettings) -> _Settings:
    return dataclasses.replace(base, threads=tuned.threads, optimization=tuned.optimization, arena=tuned.arena,
                               shape=tuned.shape)
