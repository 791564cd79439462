"""The contract between an exported generator and everything that runs it.

p2p-export writes it, and every stage reads it from here alone (training's validation,
export, --verify, INT8 calibration, the TensorRT profile, the ONNX Runtime and TensorRT
backends, the runtime's mask sampler): a contract written twice drifts.

- Inputs: ``image`` float32 (N, in_channels, H, W) in [-1, 1], H and W multiples of
  ``spec.multiple``; then one ``dropout_mask_k`` per dropout layer, float32
  ``mask_shapes(spec, N, H, W)[k]``, holding 0 or 1/(1−p) (all ones: noise off).
- Output: ``output`` float32 (N, out_channels, H, W). N, H and W are dynamic.
- Metadata (ONNX ``metadata_props``): ``p2p.spec`` (the model spec as JSON) and
  ``p2p.precision`` (fp32, fp16 or int8).
- Masks are inverted dropout, as PyTorch's train-mode dropout: keep where a uniform
  draw in [0, 1) is ≥ p, and scale the kept values by 1/(1−p).
- A TensorRT engine's side file ``model.engine.json``: ``engine_meta`` writes it, ``parse_engine_meta``
  reads it (the spec, the (N, H, W) range it was built for, the precision, the builder's version).
- Two outputs of the same inputs agree when ``compare_outputs``' largest difference is within a
  tolerance: --verify, the INT8 check and benchmarks/gpu_check.py all compare this way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .spec import ModelSpec, SpecError

INPUT = "image"
OUTPUT = "output"
MASK_PREFIX = "dropout_mask_"
META_SPEC = "p2p.spec"
META_PRECISION = "p2p.precision"
FP32, FP16, INT8 = "fp32", "fp16", "int8"  # the precisions an exported model (or engine) computes in
PRECISIONS = (FP32, FP16, INT8)


# --- names and shapes ---------------------------------------------------------------
def mask_names(spec: ModelSpec) -> list[str]:
    return [f"{MASK_PREFIX}{k}" for k in range(spec.dropout_blocks)]


def input_names(spec: ModelSpec) -> list[str]:
    """The graph's inputs, in order: the image, then the masks."""
    return [INPUT, *mask_names(spec)]


def mask_scale(spec: ModelSpec, k: int) -> int:
    """How many times smaller than the frame mask k is, in height and width.

    Decoder block k after the bottleneck outputs the channels of encoder layer
    depth−2−k at 2^(k+1) times the bottleneck's resolution (1/2^(depth−1−k) of the frame).
    """
    return 2 ** (spec.depth - 1 - k)


def decoder_channels(spec: ModelSpec, k: int) -> int:
    """Channels decoder block k (0: right after the bottleneck) outputs: those of encoder layer depth−2−k.
    Its dropout mask has them, and distillation maps a student's onto a teacher's by them."""
    return spec.encoder_channels()[spec.depth - 2 - k]


def mask_shapes(spec: ModelSpec, batch: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """Shapes of the dropout masks for a batch of frames of this size, in input order."""
    spec.check_size(height, width)
    return [(batch, decoder_channels(spec, k), height // mask_scale(spec, k), width // mask_scale(spec, k))
            for k in range(spec.dropout_blocks)]


def input_shapes(spec: ModelSpec, batch: int, height: int, width: int) -> dict[str, tuple[int, ...]]:
    """Every input's shape for a batch of frames of this size (e.g. for a TensorRT profile)."""
    return dict(zip(input_names(spec),
                    [(batch, spec.in_channels, height, width), *mask_shapes(spec, batch, height, width)]))


def output_shape(spec: ModelSpec, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
    return batch, spec.out_channels, height, width


def signature(spec: ModelSpec) -> list[str]:
    """The inputs in words, for messages: ``image (N,3,H,W)``, ``dropout_mask_0 (N,512,H/128,W/128)``, ..."""
    masks = [f"{name} (N,{decoder_channels(spec, k)},H/{mask_scale(spec, k)},W/{mask_scale(spec, k)})"
             for k, name in enumerate(mask_names(spec))]
    return [f"{INPUT} (N,{spec.in_channels},H,W)", *masks]


def feeds(spec: ModelSpec, image: np.ndarray, masks) -> dict[str, np.ndarray]:
    """Name → contiguous float32 array, for ``InferenceSession.run``."""
    arrays = [image, *masks]
    return {name: np.ascontiguousarray(a, np.float32) for name, a in zip(input_names(spec), arrays)}


# --- masks -------------------------------------------------------------------------------
def keep_mask(uniform, p: float):
    """A dropout mask from uniform draws in [0, 1): 0 where the draw is < p, 1/(1−p) elsewhere.

    numpy arrays give float32 masks; torch tensors (training draws on its own device) give
    masks of their default float type. Both multiply by the same float32 scale.
    """
    keep = uniform >= p
    scale = 1.0 / (1.0 - p)
    if isinstance(keep, np.ndarray):
        return keep.astype(np.float32) * np.float32(scale)
    return keep.float() * scale


def draw_masks(spec: ModelSpec, rng: np.random.Generator, batch: int, height: int,
               width: int) -> list[np.ndarray]:
    """One draw of every mask for a batch of frames of this size."""
    return [keep_mask(rng.random(s, dtype=np.float32), spec.dropout_p) for s in mask_shapes(spec, batch, height, width)]


def ones_masks(spec: ModelSpec, batch: int, height: int, width: int) -> list[np.ndarray]:
    """Masks of ones: dropout off (deterministic output)."""
    return [np.ones(s, np.float32) for s in mask_shapes(spec, batch, height, width)]


# --- metadata ------------------------------------------------------------------------------
def metadata(spec: ModelSpec, precision: str) -> dict[str, str]:
    """What p2p-export writes into ``metadata_props``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    return {META_SPEC: spec.to_json(), META_PRECISION: precision}


def read_metadata(props: dict[str, str], where: str) -> tuple[ModelSpec, str]:
    """(spec, precision) from ``metadata_props`` as a dict; SpecError says what is missing or wrong."""
    if META_SPEC not in props:
        raise SpecError(f"{where} is a model but not a p2p one (no '{META_SPEC}' metadata): "
                        "export the checkpoint with p2p-export")
    try:
        spec = ModelSpec.from_json(props[META_SPEC])
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    return spec, props.get(META_PRECISION, "fp32")


def check_io(spec: ModelSpec, inputs: list[str], outputs: list[str], where: str, ordered: bool = True) -> None:
    """SpecError unless a graph's (or engine's) inputs and outputs are the contract's for ``spec``."""
    want = input_names(spec)
    same = inputs == want if ordered else sorted(inputs) == sorted(want)
    if not same or list(outputs) != [OUTPUT]:
        raise SpecError(f"{where}: inputs {list(inputs)} / outputs {list(outputs)} do not match its spec "
                        f"(expected {want} / ['{OUTPUT}']): re-export it with p2p-export")


def check_channels(spec: ModelSpec, declared: dict[str, list], where: str) -> None:
    """SpecError unless the channel counts a graph declares (name → shape, symbolic dims as str) are its spec's.

    Names alone do not catch metadata that belongs to another model (e.g. another --ngf): its
    masks would only fail deep inside the runtime, on the first frame.
    """
    want = {INPUT: spec.in_channels, OUTPUT: spec.out_channels,
            **{name: shape[1] for name, shape in zip(mask_names(spec), mask_shapes(spec, 1, spec.multiple,
                                                                                      spec.multiple))}}
    wrong = [f"{name} has {shape[1]} channels, its spec says {want[name]}" for name, shape in declared.items()
             if name in want and len(shape or ()) == 4 and isinstance(shape[1], int) and shape[1] != want[name]]
    if wrong:
        raise SpecError(f"{where}: the spec in its metadata disagrees with its graph ({'; '.join(wrong)}): it was "
                        "not written by p2p-export as it is; export the checkpoint again")


# --- for other languages ------------------------------------------------------------------------
def mask_rule(spec: ModelSpec) -> list[dict]:
    """Each mask input as data (name, channels, how many times smaller than the frame): for code that
    cannot call ``mask_shapes`` (the web page: shape = (N, channels, H/scale, W/scale))."""
    return [{"name": name, "channels": decoder_channels(spec, k), "scale": mask_scale(spec, k)}
            for k, name in enumerate(mask_names(spec))]


# --- comparing outputs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputDiff:
    """How far one output is from a reference output of the same inputs (absolute, in [-1, 1] units)."""
    max: float
    mean: float


def compare_outputs(output, reference) -> OutputDiff:
    """The one comparison of outputs (arrays of the same shape; lists of them are compared pairwise)."""
    pairs = list(zip(output, reference)) if isinstance(output, (list, tuple)) else [(output, reference)]
    diffs = [np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) for a, b in pairs]
    return OutputDiff(float(max(d.max() for d in diffs)), float(np.mean([d.mean() for d in diffs])))


# --- the TensorRT engine's side file ------------------------------------------------------------------------
ENGINE_META_SUFFIX = ".json"  # model.engine → model.engine.json


def engine_meta_path(engine) -> Path:
    return Path(str(engine) + ENGINE_META_SUFFIX)


def engine_meta(spec: ModelSpec, shapes: dict, precision: str, *, tensorrt_version: str, device: str | None,
                onnx: str) -> dict:
    """model.engine.json's content (before runtime.integrity seals it): ``shapes`` {"min"|"opt"|"max": [N, H, W]}."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    return {"spec": spec.to_dict(), "shapes": {k: list(shapes[k]) for k in ("min", "opt", "max")},
            "precision": precision, "tensorrt_version": tensorrt_version, "device": device, "onnx": onnx}


def parse_engine_meta(data: dict) -> tuple[ModelSpec, tuple, str, str | None, str | None]:
    """(spec, (min, opt, max) as (N, H, W) tuples, precision, TensorRT version, engine SHA-256) of
    model.engine.json's content; ValueError, KeyError or TypeError when it is not one."""
    spec = ModelSpec.from_dict(data["spec"])
    shapes = tuple(tuple(int(v) for v in data["shapes"][k]) for k in ("min", "opt", "max"))
    if any(len(s) != 3 for s in shapes):
        raise ValueError("shapes must be [N, H, W]")
    precision = str(data.get("precision", "fp32"))
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}")
    version = data.get("tensorrt_version")
    return spec, shapes, precision, str(version) if version else None, data.get("engine_sha256")
