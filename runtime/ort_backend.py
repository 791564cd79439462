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
import io
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

from . import contract, ort_tuning
from .artifacts import ArtifactError, ShapeLimits
from .errors import BackendUnavailable, first_line
from .files import file_sha256
from .integrity import check_onnx_file
from .ort_providers import (
    CHAINS,
    NEEDS,
    PROVIDERS,
    can_disable_fallback,
    load_gpu_libraries,
    present_providers,
    provider_entry,
    sentence,
)
from .spec import ModelSpec, SpecError


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
        providers = [provider_entry(n, self.path, settings.trt_cache, settings.profile) for n in CHAINS[name]]
        # No silent retry on other providers with ours' options dropped (and no banner on stdout): the
        # caller decides what a provider that cannot start means. onnxruntime < 1.23 cannot be told so:
        # its retry's banner is caught and turned back into the error it reports.
        kwargs = {"enable_fallback": 0} if can_disable_fallback(ort.InferenceSession) else {}
        banner = io.StringIO()
        try:
            with contextlib.redirect_stdout(banner):
                session = ort.InferenceSession(str(self.path), opts, providers=providers, **kwargs)
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/EPFail/... classes
            raise _StartFailure(sentence(first_line(exc, 2000))) from None
        retried = re.search(r"EP Error (.*) when using \[", banner.getvalue())
        if retried:  # onnxruntime < 1.23 fell back to other providers after this error
            raise _StartFailure(sentence(retried.group(1)))
        return session

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
