"""Generator → one self-contained ONNX file that keeps ``p2p.runtime.contract``.

Inputs, output, mask shapes and metadata are the contract's; on top of it this file
guarantees: N, H and W dynamic; FP16 files keep fp32 inputs and outputs; no Dropout,
random or training-mode ops; the weights inside the file.

torch is imported only where a graph is built, so ``read_onnx_spec`` and
``check_graph`` need nothing but ``onnx``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
import warnings
from pathlib import Path

import onnx

from p2p.runtime import contract
from p2p.runtime.artifacts import read_onnx_metadata
from p2p.runtime.errors import UserError, first_line
from p2p.runtime.files import write_atomic
from p2p.runtime.integrity import ONNX_KEY, seal_onnx
from p2p.runtime.spec import ModelSpec, SpecError

OPSET = 18  # the lowest the dynamo exporter writes; TensorRT 10+ and ORT 1.14+ read it
OPSETS = (17, 18)  # 17: rewritten for TensorRT 8.6's parser (export/opset17.py)
FORBIDDEN_OPS = frozenset({"Dropout", "RandomUniform", "RandomUniformLike", "RandomNormal",
                           "RandomNormalLike", "Bernoulli", "Multinomial"})


class ExportError(UserError, RuntimeError):
    """Export or verification failed; the message says what and why."""


def export_onnx(generator, spec: ModelSpec, path, *, fp16: bool = False, norm: str | None = None,
                opset: int = OPSET) -> Path:
    """Write ``generator`` (left unchanged) to ``path`` as the contract above; returns the path.

    ``fp16`` stores weights and compute in float16 (inputs and outputs stay fp32).
    ``norm`` picks how batch statistics are written ("instance" or "reduce"; default: the faster).
    ``opset`` 17 writes the graph TensorRT 8.6 (JetPack 6.0) parses; 18 is the exporter's own.
    """
    model = build_onnx(generator, spec, norm=norm, opset=opset)
    if fp16:
        from .fp16 import to_fp16  # onnxconverter-common: only FP16 needs it
        model = to_fp16(model)
    return write_model(model, spec, contract.FP16 if fp16 else contract.FP32, path)


def write_model(model: onnx.ModelProto, spec: ModelSpec, precision: str, path) -> Path:
    """Stamp the contract's metadata on ``model``, check the graph keeps the contract, and save it."""
    set_metadata(model, spec, precision)
    check_graph(model, spec)
    return save_onnx(model, path)


def build_onnx(generator, spec: ModelSpec, *, norm: str | None = None, opset: int = OPSET) -> onnx.ModelProto:
    """The fp32 ModelProto (no metadata yet) at ``opset`` (one of OPSETS), traced from a copy of ``generator``."""
    if opset not in OPSETS:
        raise ExportError(f"opset {opset} is not one p2p writes ({', '.join(map(str, OPSETS))})")
    # torch only here: reading and checking ONNX files must not need it
    import torch
    from torch.export import Dim

    from .graph import DEFAULT_NORM, ExportGenerator

    wrapper = ExportGenerator(generator, spec, norm or DEFAULT_NORM)
    m = spec.multiple
    # Example sizes must not be 1 (torch.export specialises size-1 dims): batch 2, 2 blocks.
    batch, height, width = 2, 2 * m, 2 * m
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(batch, spec.in_channels, height, width, generator=gen) * 2 - 1
    masks = tuple(torch.ones(s) for s in contract.mask_shapes(spec, batch, height, width))

    # H = multiple·hb and W = multiple·wb; mask k is mask_scale(k) times smaller than the frame
    n, hb, wb = Dim("batch", min=1), Dim("hb", min=1), Dim("wb", min=1)
    image_dims = {0: n, 2: m * hb, 3: m * wb}
    mask_dims = tuple({0: n, 2: m // contract.mask_scale(spec, k) * hb, 3: m // contract.mask_scale(spec, k) * wb}
                      for k in range(spec.dropout_blocks))
    # matches forward(image, *masks); a model without dropout has no varargs entry at all
    dynamic = (image_dims, mask_dims) if mask_dims else (image_dims,)
    # torchvision-missing notices and progress lines are noise to a user
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), _quiet_stdout():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper, (image, *masks), dynamo=True, opset_version=OPSET, external_data=False,
                input_names=contract.input_names(spec), output_names=[contract.OUTPUT],
                dynamic_shapes=dynamic, verbose=False)
    except Exception as exc:
        root = exc
        while root.__cause__ is not None:  # the exporter wraps the informative error
            root = root.__cause__
        raise ExportError(f"torch.onnx.export failed ({type(root).__name__}): {first_line(root)}") from exc
    model = program.model_proto
    _name_dims(model, m)
    if opset == 17:
        from .opset17 import to_opset17
        model = to_opset17(model)
    return model


def set_metadata(model: onnx.ModelProto, spec: ModelSpec, precision: str) -> None:
    props = {p.key: p.value for p in model.metadata_props}
    props.update(contract.metadata(spec, precision))
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "p2p-export"


def read_onnx_spec(path) -> ModelSpec:
    """The model spec stored in an ONNX file's metadata (raises SpecError if absent or malformed)."""
    return read_onnx_metadata(path)[0]


def check_graph(model: onnx.ModelProto, spec: ModelSpec | None = None) -> None:
    """Raise ExportError if the graph breaks the contract (random/training ops, wrong inputs)."""
    problems = [f"forbidden op {op}" for op in sorted(forbidden_ops(model))]
    if spec is not None:
        try:
            contract.check_io(spec, [i.name for i in model.graph.input], [o.name for o in model.graph.output],
                              "the graph")
        except SpecError as exc:
            problems.append(str(exc))
    if problems:
        raise ExportError("exported graph breaks the p2p ONNX contract: " + "; ".join(problems))


def forbidden_ops(model: onnx.ModelProto) -> set[str]:
    """Random, Dropout and training-mode BatchNormalization ops anywhere in the graph (subgraphs too)."""
    found = set()
    for node in all_nodes(model.graph):
        if node.op_type in FORBIDDEN_OPS:
            found.add(node.op_type)
        elif node.op_type == "BatchNormalization":
            if any(a.name == "training_mode" and a.i for a in node.attribute) or len(node.output) > 1:
                found.add("BatchNormalization(training_mode=1)")
    for fn in model.functions:
        found |= {n.op_type for n in fn.node if n.op_type in FORBIDDEN_OPS}
    return found


def all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attr.g)
            for g in attr.graphs:
                yield from all_nodes(g)


def save_onnx(model: onnx.ModelProto, path) -> Path:
    """One self-contained file with its checksum (runtime.integrity), written atomically (temp file + rename)."""
    path = Path(path)
    if model.ByteSize() >= 2**31 - 1:
        raise ExportError("model is over protobuf's 2 GB limit; cannot write a single ONNX file")
    check_writable(path)
    stale = [p for p in model.metadata_props if p.key == ONNX_KEY]  # a model read back (int8) carries its old one
    for entry in stale:
        model.metadata_props.remove(entry)
    write_atomic(path, seal_onnx(model.SerializeToString()))
    return path


def check_writable(path) -> None:
    """Fail before any work if the file's folder cannot be created or written."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give a file name such as {path / 'model.onnx'}")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    try:  # really try: permission bits say nothing for root, read-only mounts or /proc
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ExportError(f"output folder {folder} is not writable ({exc.strerror or exc})") from None


def _name_dims(model: onnx.ModelProto, multiple: int) -> None:
    """Rename torch.export's symbols ("64*hb") to readable ones ("height", "height/32")."""
    pattern = re.compile(r"^(?:(\d+)\*)?([hw])b$")
    full = {"h": "height", "w": "width"}

    def rename(value_infos):
        for vi in value_infos:
            for dim in vi.type.tensor_type.shape.dim:
                match = pattern.match(dim.dim_param or "")
                if match:
                    coef = int(match.group(1) or 1)
                    name = full[match.group(2)]
                    if coef != multiple:  # coefficient divides the multiple for every tensor we name
                        name = f"{name}/{multiple // coef}" if multiple % coef == 0 else f"{name}*{coef}/{multiple}"
                    dim.dim_param = name

    g = model.graph
    rename(g.input)
    rename(g.output)
    rename(g.value_info)


def _quiet_stdout():
    """The dynamo exporter prints progress lines; a CLI should not."""
    return contextlib.redirect_stdout(io.StringIO())
