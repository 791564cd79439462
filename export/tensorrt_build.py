"""ONNX → TensorRT engine, with the TensorRT Python API (no trtexec needed).

The engine is GPU- and TensorRT-version-specific: build it on the machine that
runs it (a Jetson builds its own). Beside ``model.engine`` goes
``model.engine.json``: the spec, the (N, H, W) range it was built for, the
precision and the TensorRT version, which the runtime checks before running.

Precision: TensorRT 8.6 and 10 build FP16 from the fp32 ONNX with the FP16 builder
flag, every layer of each batch normalisation pinned to fp32; TensorRT 11 is strongly
typed, so FP16 comes from an FP16 ONNX (``export_onnx(..., fp16=True)``, whose
normalisations stay fp32 too) and no flag exists. TensorRT 8.6's parser needs the
opset-17 graph (``export_onnx(..., opset=17)``; export/opset17.py says why).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import onnx

from p2p.runtime import contract, install_hints
from p2p.runtime.artifacts import ShapeLimits
from p2p.runtime.files import write_atomic
from p2p.runtime.integrity import seal_engine_meta
from p2p.runtime.spec import ModelSpec, SpecError
from p2p.runtime.trt_backend import MIN_TENSORRT, version_tuple

from .fp16 import norm_nodes
from .onnx_export import ExportError, read_onnx_spec
from .opset17 import tensorrt8_problems

INSTALL_HINT = f"{install_hints.GPU}; {install_hints.JETSON}"


class TensorRTUnavailable(ExportError):
    """TensorRT or a CUDA GPU is missing; the message says which and how to install it."""


@dataclass(frozen=True)
class Shapes(ShapeLimits):
    """The optimisation profile to build: (N, H, W) at min, opt and max."""

    @classmethod
    def single(cls, spec: ModelSpec, batch: int = 1, height: int | None = None, width: int | None = None):
        s = (batch, height or spec.height, width or spec.width)
        return cls(s, s, s)

    @classmethod
    def from_sizes(cls, sizes, max_batch: int = 1) -> "Shapes":
        """Cover frame sizes [(H, W), ...]: opt at the first, min/max over all; batch 1..max_batch."""
        sizes = list(sizes)
        if not sizes:
            raise SpecError("no frame sizes given")
        hs, ws = [h for h, _ in sizes], [w for _, w in sizes]
        return cls((1, min(hs), min(ws)), (1, *sizes[0]), (max_batch, max(hs), max(ws)))

    def validated(self, spec: ModelSpec) -> "Shapes":
        """This profile, after checking that ``spec`` accepts every shape in it (SpecError otherwise)."""
        for name, (n, h, w) in (("min", self.min), ("opt", self.opt), ("max", self.max)):
            if n < 1:
                raise SpecError(f"{name} batch must be ≥ 1, got {n}")
            try:
                spec.check_size(h, w)
            except SpecError as exc:
                raise SpecError(f"{name} shape {n}x{h}x{w}: {exc}") from None
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise SpecError(f"shapes must satisfy min ≤ opt ≤ max in each of N, H, W; got "
                            f"min {self.min}, opt {self.opt}, max {self.max}")
        return self

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def parse_nhw(text: str) -> tuple[int, int, int]:
    """'1x256x256' → (1, 256, 256)."""
    m = re.fullmatch(r"\s*(\d+)[x×,](\d+)[x×,](\d+)\s*", text or "")
    if not m:
        raise SpecError(f"shape {text!r} is not NxHxW (e.g. 1x256x256)")
    return tuple(int(g) for g in m.groups())


def import_tensorrt():
    """``tensorrt`` and a usable Builder, or TensorRTUnavailable saying what is missing."""
    try:
        import tensorrt as trt  # optional: only --trt needs it
    except ImportError as exc:
        raise TensorRTUnavailable(f"TensorRT is not installed ({exc}): {INSTALL_HINT}") from None
    if version_tuple(trt.__version__) < MIN_TENSORRT:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} is too old to build p2p engines (8.5 or later; "
                                  "JetPack 6 ships 8.6 and 10.3): upgrade to JetPack 6, or run the .onnx file with "
                                  "ONNX Runtime")
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # no driver / no GPU: TensorRT raises from its factory
        builder, err = None, exc
    else:
        err = None
    if builder is None:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} found but no usable CUDA GPU "
                                  f"({err or 'Builder could not be created'}): building an engine needs the "
                                  f"NVIDIA GPU it will run on and its driver")
    return trt, logger, builder


def installed_tensorrt() -> str | None:
    """The version of the tensorrt module here (no GPU needed), or None where it cannot be imported."""
    try:
        import tensorrt as trt
    except Exception:  # missing, or a wheel whose libraries cannot load: the build says so later
        return None
    return getattr(trt, "__version__", None)


def trt_major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def default_timing_cache(trt) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "p2p" / f"tensorrt-{trt.__version__}.timing-cache"


def build_engine(onnx_path, engine_path, *, shapes: Shapes | None = None, fp16: bool = False,
                 fp16_onnx_path=None, timing_cache=None, workspace_gb: float | None = None,
                 log=print) -> Path:
    """Build ``engine_path`` (+ ``.json``) from ``onnx_path``; returns the engine path.

    ``fp16_onnx_path``: the FP16 ONNX, needed for FP16 on TensorRT ≥ 11 (strongly typed).
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    spec = read_onnx_spec(onnx_path)
    shapes = (shapes or Shapes.single(spec)).validated(spec)
    trt, logger, builder = import_tensorrt()
    source, network_flags = _network_source(trt, onnx_path, fp16, fp16_onnx_path)
    graph, network = _parse(trt, logger, builder, source, network_flags)

    config = builder.create_builder_config()
    if workspace_gb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    _add_profile(builder, config, network, spec, shapes, source)
    precision = _set_precision(trt, network, config, graph, fp16, from_fp32=source == onnx_path)
    cache_path = _load_timing_cache(trt, config, timing_cache)

    log(f"building TensorRT {trt.__version__} engine ({precision}, N×H×W {shapes.min} … {shapes.max}); "
        f"this takes minutes the first time")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT failed to build the engine (see its messages above)")
    engine_bytes = bytes(serialized)
    write_atomic(engine_path, engine_bytes)
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    except OSError as exc:  # a cache is an optimisation; never fail a good build over it
        log(f"note: timing cache not saved to {cache_path}: {exc}")
    meta = seal_engine_meta(contract.engine_meta(spec, shapes.to_dict(), precision, tensorrt_version=trt.__version__,
                                                 device=_device_name(), onnx=Path(fp16_onnx_path or onnx_path).name),
                            engine_bytes)
    write_atomic(contract.engine_meta_path(engine_path), (json.dumps(meta, indent=2) + "\n").encode())
    return engine_path


def _network_source(trt, onnx_path: Path, fp16: bool, fp16_onnx_path) -> tuple[Path, int]:
    """The ONNX file TensorRT parses and the network's creation flags, by TensorRT version."""
    major = trt_major(trt)
    source, network_flags = onnx_path, 0
    if major < 10:  # TensorRT 8.x defaults to implicit batch, which the ONNX parser refuses
        network_flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if fp16 and major >= 11:
        if fp16_onnx_path is None:
            raise ExportError(f"TensorRT {trt.__version__} is strongly typed: FP16 needs the FP16 ONNX "
                              f"(export with --fp16)")
        source = Path(fp16_onnx_path)
    if major >= 11:  # always strongly typed there; the flag (if it still exists) is harmless
        flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        network_flags = (1 << int(flag)) if flag is not None else 0
    return source, network_flags


def _parse(trt, logger, builder, source: Path, network_flags: int):
    """(the ONNX graph, TensorRT's network parsed from it); ExportError with the parser's errors."""
    graph = onnx.load(str(source), load_external_data=False)
    if trt_major(trt) < 10:  # TensorRT 8.6's parser misreads opset-18 forms without an error: refuse them here
        problems = tensorrt8_problems(graph)
        if problems:
            raise ExportError(f"TensorRT {trt.__version__} cannot parse {source} as it is ({'; '.join(problems[:3])}"
                              f"{'; ...' if len(problems) > 3 else ''}): export it with --opset 17")
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    native = getattr(getattr(trt, "OnnxParserFlag", None), "NATIVE_INSTANCENORM", None)
    if native is not None:  # InstanceNormalization as TensorRT's own layer, not the plugin
        parser.set_flag(native)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {source}: {errors or 'unknown error'}")
    return graph, network


def _add_profile(builder, config, network, spec, shapes: Shapes, source: Path) -> None:
    """One optimisation profile over the image and every mask input (one missing would fail the build)."""
    profile = builder.create_optimization_profile()
    low, opt, high = (contract.input_shapes(spec, *s) for s in (shapes.min, shapes.opt, shapes.max))
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    contract.check_io(spec, inputs, outputs, str(source), ordered=False)  # the parser may reorder inputs
    for name in inputs:
        profile.set_shape(name, low[name], opt[name], high[name])
    config.add_optimization_profile(profile)


def _set_precision(trt, network, config, graph, fp16: bool, from_fp32: bool) -> str:
    """Builder flags for the precision; returns its name (fp16: weakly typed with pinned norms, or typed)."""
    precision = contract.FP32
    if fp16 and trt_major(trt) < 11 and from_fp32:
        config.set_flag(trt.BuilderFlag.FP16)
        pin_norm_fp32(trt, network, config, norm_nodes(graph))
        precision = contract.FP16
    elif fp16:
        precision = contract.FP16  # from the FP16 ONNX, strongly typed
    if precision == contract.FP32 and hasattr(trt.BuilderFlag, "TF32"):
        # TF32 convolutions (Ampere+) drift ~1e-3 from fp32; an fp32 engine should match ORT
        config.clear_flag(trt.BuilderFlag.TF32)
    return precision


def _load_timing_cache(trt, config, timing_cache) -> Path:
    """Give the builder the timing cache (an unreadable or foreign one: a fresh one); returns its path."""
    cache_path = Path(timing_cache) if timing_cache else default_timing_cache(trt)
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    try:
        cache = config.create_timing_cache(cache_bytes) if cache_bytes else None
    except Exception:  # a truncated cache file
        cache = None
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        # unreadable, or from another TensorRT/GPU: start afresh (it is overwritten after the build)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    return cache_path


def pin_norm_fp32(trt, network, config, norms: list[list[onnx.NodeProto]]) -> list[str]:
    """Keep every layer of each batch normalisation in fp32 under the FP16 flag (TensorRT 8.6/10, weakly typed).

    ``norms``: fp16.norm_nodes of the parsed ONNX. A layer belongs to a node when the ONNX
    parser named it after the node: onnx-tensorrt's registerLayer names the layer it makes for
    a node by the node's name, or ``name_N`` when that name is taken (8.6-GA and 10.x), and
    names the tensor a node outputs after the ONNX output. Layers of both kinds are pinned:
    precision and every output type fp32. NORMALIZATION and REDUCE layers are pinned by type as
    well, and a normalisation node without a layer is an error (its FP16 statistics would
    overflow or lose the variance silently). Returns the pinned layers' names.
    """
    names = {n.name for group in norms for n in group}
    outputs = {o: n.name for group in norms for n in group for o in n.output}
    by_type = {getattr(trt.LayerType, t) for t in ("NORMALIZATION", "REDUCE") if hasattr(trt.LayerType, t)}
    pinned, found = [], set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        base = layer.name if layer.name in names else re.sub(r"_\d+$", "", layer.name)
        tensors = [layer.get_output(j).name for j in range(layer.num_outputs)]
        owners = ({base} & names) | {outputs[t] for t in tensors if t in outputs}
        if owners or layer.type in by_type:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned.append(layer.name)
            found |= owners
    if names - found:
        raise ExportError(f"no TensorRT layer found for normalisation nodes {', '.join(sorted(names - found)[:4])}: "
                          "an FP16 engine would compute their statistics in fp16; build an fp32 engine "
                          "(leave out --fp16)")
    if pinned:  # obey where TensorRT has it: fp32 always has an implementation, so it cannot fail the build
        flag = getattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS", None) or getattr(
            trt.BuilderFlag, "PREFER_PRECISION_CONSTRAINTS", None)
        if flag is not None:
            config.set_flag(flag)
    return pinned


def _device_name() -> str | None:
    try:
        from cuda.bindings import runtime as cudart
        err, props = cudart.cudaGetDeviceProperties(0)
        return props.name.decode(errors="replace").strip("\x00") if int(err) == 0 else None
    except Exception:
        try:
            import torch
            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except Exception:
            return None
