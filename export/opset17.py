"""An opset-17 graph that TensorRT 8.6's ONNX parser (JetPack 6.0) reads as it is meant.

The dynamo exporter writes opset 18 and up. TensorRT 8.6's parser (onnx-tensorrt 8.6-GA)
supports operators up to opset 17 and, worse, misreads two opset-18 forms without an error:

- ``Shape`` with ``start``/``end`` (opset 15+): its importer adds a shape layer over the whole
  input and ignores both attributes, so the nine sliced Shape nodes of the default graph give
  wrong shapes;
- ``ReduceMean`` (and the other Reduce ops) with ``axes`` as an input (opset 18): its importer
  reads only the ``axes`` attribute and otherwise reduces over every axis.

``Resize`` (the separable blocks' upsampling) gained ``antialias``, ``axes`` and
``keep_aspect_ratio_policy`` at opset 18; written at their defaults they are dropped.

``to_opset17`` rewrites them (Shape + Slice with constant bounds; the constant axes as the
attribute), checks that no other op changed meaning at opset 18, and stamps opset 17.
``tensorrt8_problems`` lists everything in a graph that TensorRT 8.6's parser rejects or
misreads, read from its importers and its supported-operators table (docs/operators.md).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .onnx_export import ExportError, all_nodes

OPSET_TENSORRT8 = 17  # "TensorRT 8.6 supports operators up to Opset 17" (onnx-tensorrt 8.6-GA)
IR_VERSION_OPSET17 = 8  # the IR of onnx 1.13, the onnx that TensorRT 8.6's parser is built with

REDUCE_OPS = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
              "ReduceProd", "ReduceSumSquare"}  # axes became an input at opset 18 (ReduceSum already at 13)

# Ops a p2p graph can hold (every export variant, fp16's Casts, opset 17's Slices) that onnx-tensorrt
# 8.6-GA's docs/operators.md marks supported. Anything else is reported rather than assumed to work.
TENSORRT8_OPS = frozenset({
    "Add", "Cast", "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Div", "Equal", "Expand",
    "Gather", "Identity", "InstanceNormalization", "LeakyRelu", "Max", "Min", "Mul", "Pad", "Pow", "Range",
    "Reciprocal", "ReduceMean", "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Slice", "Split", "Sqrt",
    "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze", "Where"})
# inputs the 8.6 importers take only as initializers/constants ("must be an initializer")
CONSTANT_INPUTS = {"Squeeze": 1, "Unsqueeze": 1, "Slice": 3}


def to_opset17(model: onnx.ModelProto) -> onnx.ModelProto:
    """An opset-17 copy of ``model`` (left as it is) with the same outputs; ExportError if it has no such form."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    constants = _constants(graph)
    names = {v for n in graph.node for v in (*n.input, *n.output)} | {i.name for i in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type == "Shape" and _attr(node, "start", "end"):
            nodes += _shape_then_slice(node, graph, names)
        elif node.op_type in REDUCE_OPS and len(node.input) > 1 and node.input[1]:
            _axes_to_attribute(node, constants)
            nodes.append(node)
        elif node.op_type == "Resize":
            _resize_as_13(node)
            nodes.append(node)
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in all_nodes(graph) for name in node.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in used]  # the axes now in attributes
    del graph.initializer[:]
    graph.initializer.extend(kept)
    changed = sorted({n.op_type for n in graph.node  # the Reduce ops and Resize are in their opset-17 form now
                      if n.domain in ("", "ai.onnx") and n.op_type not in REDUCE_OPS | {"Resize"}
                      and _new_at_18(n.op_type)})
    if changed:
        raise ExportError(f"cannot write opset {OPSET_TENSORRT8}: the graph uses {', '.join(changed)} in the form "
                          "that opset 18 introduced")
    for opset in out.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = OPSET_TENSORRT8
    out.ir_version = min(out.ir_version, IR_VERSION_OPSET17)
    for node in all_nodes(graph):
        del node.metadata_props[:]  # IR 10's per-node metadata (the exporter's stack traces)
    onnx.checker.check_model(out)
    return out


def tensorrt8_problems(model: onnx.ModelProto) -> list[str]:
    """What TensorRT 8.6's ONNX parser rejects or misreads in ``model``, one line each (empty: none)."""
    problems = []
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opsets.get("ai.onnx", 0) > OPSET_TENSORRT8:
        problems.append(f"opset {opsets['ai.onnx']} (TensorRT 8.6 reads up to {OPSET_TENSORRT8})")
    if model.functions:
        problems.append("local functions " + ", ".join(sorted({f.name for f in model.functions})))
    constants = _constants(model.graph)
    for node in all_nodes(model.graph):
        where = f"{node.op_type} {node.name or node.output[0]}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: domain {node.domain}")
        elif node.op_type not in TENSORRT8_OPS:
            problems.append(f"{where}: not an operator TensorRT 8.6 supports")
        if node.op_type == "Shape" and _attr(node, "start", "end"):
            problems.append(f"{where}: start/end (ignored by TensorRT 8.6: wrong shapes)")
        if node.op_type in REDUCE_OPS and len(node.input) > 1 and node.input[1]:
            problems.append(f"{where}: axes as an input (ignored by TensorRT 8.6: reduces every axis)")
        if node.op_type == "Split" and _attr(node, "num_outputs"):
            problems.append(f"{where}: num_outputs (opset 18)")
        if node.op_type == "Pad" and len(node.input) > 3 and node.input[3]:
            problems.append(f"{where}: axes input (opset 18)")
        if node.op_type == "Resize" and _attr(node, "antialias", "axes", "keep_aspect_ratio_policy"):
            problems.append(f"{where}: opset-18 attributes")
        first = CONSTANT_INPUTS.get(node.op_type)
        if first is not None and any(name and name not in constants for name in node.input[first:]):
            problems.append(f"{where}: computed axes/steps (TensorRT 8.6 wants initializers)")
    return problems


def _shape_then_slice(node, graph, names: set[str]) -> list:
    """Shape(x, start, end) → Shape(x) then Slice(·, [start], [end], [0]): what opset 17 parsers read right."""
    start, end = (_attr(node, a).get(a) for a in ("start", "end"))
    full = _fresh(f"{node.output[0]}_full", names)
    bounds = []
    for role, value in (("starts", start or 0), ("ends", end if end is not None else 2**63 - 1), ("axes", 0)):
        name = _fresh(f"{node.output[0]}_{role}", names)
        graph.initializer.append(numpy_helper.from_array(_int64([value]), name))
        bounds.append(name)
    shape = helper.make_node("Shape", list(node.input), [full], name=node.name)
    piece = helper.make_node("Slice", [full, *bounds], list(node.output), name=f"{node.name}_slice")
    return [shape, piece]


def _axes_to_attribute(node, constants: dict) -> None:
    axes = constants.get(node.input[1])
    if axes is None:
        raise ExportError(f"cannot write opset {OPSET_TENSORRT8}: {node.op_type} {node.name} has computed axes")
    noop = _attr(node, "noop_with_empty_axes").get("noop_with_empty_axes", 0)
    if noop and axes.size == 0:
        raise ExportError(f"cannot write opset {OPSET_TENSORRT8}: {node.op_type} {node.name} reduces nothing")
    del node.input[1:]
    kept = [a for a in node.attribute if a.name != "noop_with_empty_axes"]  # no such attribute before 18
    del node.attribute[:]
    node.attribute.extend(kept)
    if axes.size:  # empty axes (noop off) means every axis: no attribute, as in opset 17
        node.attribute.append(helper.make_attribute("axes", [int(a) for a in axes.reshape(-1)]))


RESIZE_18_DEFAULTS = {"antialias": 0, "keep_aspect_ratio_policy": b"stretch"}


def _resize_as_13(node) -> None:
    """Drop Resize's opset-18 attributes where they hold their defaults (the same op at opset 13)."""
    extra = _attr(node, "antialias", "axes", "keep_aspect_ratio_policy")
    if any(RESIZE_18_DEFAULTS.get(k, object()) != v for k, v in extra.items()):
        raise ExportError(f"cannot write opset {OPSET_TENSORRT8}: Resize {node.name} uses {sorted(extra)} "
                          "(opset 18) away from their defaults")
    kept = [a for a in node.attribute if a.name not in extra]
    del node.attribute[:]
    node.attribute.extend(kept)


def _constants(graph) -> dict:
    """Initializers and Constant outputs of the top graph, as arrays."""
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _new_at_18(op_type: str) -> bool:
    """Whether the op's opset-18 definition differs from its opset-17 one."""
    try:
        return onnx.defs.get_schema(op_type, 18).since_version == 18
    except onnx.defs.SchemaError:
        return False


def _attr(node, *names: str) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name in names}


def _fresh(base: str, names: set[str]) -> str:
    name, k = base, 0
    while name in names:
        k += 1
        name = f"{base}_{k}"
    names.add(name)
    return name


def _int64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)
