"""FP16 ONNX: weights and compute in float16, inputs and outputs still float32.

TensorRT 11 is strongly typed and takes its precision from the ONNX file, so an
FP16 engine there starts from this file; ONNX Runtime's CUDA/TensorRT providers
run it directly. Batch statistics stay in fp32: a mean and variance over N·H·W
values (65 536 at 256²) lose too much in float16 and the error is visible, and in
the ReduceMean variant the centred values' squares overflow float16 (max 65 504)
once activations reach a few hundred; so the whole statistics chain stays fp32.
"""
from __future__ import annotations

import warnings

import onnx

# Checked in tests/test_export.py and by --verify: fp16 vs the PyTorch fp32 generator
# on outputs in [-1, 1]. Measured ≈ 2e-3 on the paper's unet_256 (DEPLOYMENT-FACTS.md).
FP16_TOLERANCE = 2e-2

# Normalisation ops (both variants of graph.BatchStatsNorm) kept in float32 by type, besides the nodes by name.
NORM_OPS = ["InstanceNormalization", "ReduceMean"]


def to_fp16(model: onnx.ModelProto, *, keep_norm_fp32: bool = True) -> onnx.ModelProto:
    """An FP16 copy of ``model`` with float32 inputs and outputs (``model`` is left as it is)."""
    from onnxconverter_common import float16  # here: finding the normalisations (TensorRT builds) needs only onnx

    block = list(float16.DEFAULT_OP_BLOCK_LIST) + (NORM_OPS if keep_norm_fp32 else [])
    nodes = [n.name for group in norm_nodes(model) for n in group] if keep_norm_fp32 else []
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the converter edits in place; callers keep their fp32 model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "values truncated to fp16" notices for tiny weights
        return float16.convert_float_to_float16(copy, keep_io_types=True, op_block_list=block, node_block_list=nodes)


def norm_nodes(model: onnx.ModelProto) -> list[list[onnx.NodeProto]]:
    """Every batch-statistics normalisation in the graph (graph.BatchStatsNorm), each as its nodes.

    "instance": the InstanceNormalization node (the transposes and reshapes around it only move data).
    "reduce": m = ReduceMean(x); d = Sub(x, m); ReduceMean(Mul(d, d)) → Add(eps) → Sqrt → Reciprocal →
    Mul(d, ·): all eight, from the first ReduceMean to that last Mul. The FP16 ONNX keeps them in
    float32 (to_fp16) and so does a TensorRT FP16 engine (tensorrt_build pins their layers).
    """
    nodes = list(model.graph.node)
    made_by = {out: n for n in nodes for out in n.output}
    users: dict[str, list] = {}
    for n in nodes:
        for name in n.input:
            users.setdefault(name, []).append(n)
    groups = [[n] for n in nodes if n.op_type == "InstanceNormalization"]
    for sub in nodes:
        mean = made_by.get(sub.input[1]) if sub.op_type == "Sub" and len(sub.input) == 2 else None
        if mean is None or mean.op_type != "ReduceMean" or mean.input[0] != sub.input[0]:
            continue
        d = sub.output[0]
        square = next((u for u in users.get(d, []) if u.op_type == "Mul" and list(u.input) == [d, d]), None)
        if square is None:
            continue
        chain, frontier = [mean, sub, square], [square]
        while frontier:  # forward from the square to the Mul that uses d again (at most a handful of nodes)
            node = frontier.pop()
            for user in users.get(node.output[0], []):
                if user not in chain:
                    chain.append(user)
                    if d not in user.input:
                        frontier.append(user)
            if len(chain) > 12:  # not the pattern after all
                break
        else:
            groups.append(chain)
    return groups
