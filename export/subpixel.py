"""ConvTranspose(4×4, stride 2, pad 1) rewritten as Conv(3×3, pad 1, 4× the channels) + DepthToSpace(2).

The two compute the same function (to float rounding): output pixel (2i+a, 2j+b) of the
transposed convolution sums input pixels i−1..i+1, j−1..j+1 with four of the sixteen kernel
taps, which one depends on the phase (a, b). So one ordinary convolution at the input's
resolution whose 4·C_out output channels are the four phases (the taps a phase does not use
are zero), followed by DepthToSpace (CRD: channel c·4 + 2a + b → pixel (2i+a, 2j+b)),
is the same layer. It costs 9/4 the multiply-adds, so in float it is slower than ONNX Runtime's
ConvTranspose; its point is INT8: ONNX Runtime's CPU provider has integer kernels for Conv
(QLinearConv, VNNI where the CPU has it) but runs a quantised ConvTranspose in float with its
weights dequantised on every frame, which made INT8 p2p models slower than fp32. After this
rewrite every convolution of a p2p generator runs as an integer one.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

# (output phase, input offset) → kernel index of a stride-2, pad-1, 4-tap transposed convolution:
# phase 0 reads inputs i−1 (tap 3) and i (tap 1), phase 1 reads i (tap 2) and i+1 (tap 0)
TAP = {(0, -1): 3, (0, 0): 1, (1, 0): 2, (1, 1): 0}


def phase_weights(weight: np.ndarray) -> np.ndarray:
    """ConvTranspose weights (C_in, C_out, 4, 4) → Conv weights (4·C_out, C_in, 3, 3), channel = c·4 + 2a + b."""
    cin, cout = weight.shape[:2]
    out = np.zeros((cout, 2, 2, cin, 3, 3), weight.dtype)
    for (a, dy), ky in TAP.items():
        for (b, dx), kx in TAP.items():
            out[:, a, b, :, dy + 1, dx + 1] = weight[:, :, ky, kx].T
    return out.reshape(cout * 4, cin, 3, 3)


def _rewritable(node: onnx.NodeProto, initializers: dict) -> bool:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    weight = initializers.get(node.input[1])
    return (weight is not None and len(weight.dims) == 4 and list(weight.dims[2:]) == [4, 4]
            and list(attrs.get("strides", [])) == [2, 2] and list(attrs.get("pads", [])) == [1, 1, 1, 1]
            and attrs.get("group", 1) == 1 and list(attrs.get("dilations", [1, 1])) == [1, 1]
            and not any(attrs.get("output_padding", [])) and not attrs.get("output_shape")
            and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))


def convtranspose_as_conv(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every 4×4 stride-2 pad-1 ConvTranspose of the main graph rewritten; and how many."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    nodes, rewritten = [], 0
    for node in graph.node:
        if node.op_type != "ConvTranspose" or not _rewritable(node, initializers):
            nodes.append(node)
            continue
        name = node.name or node.output[0]
        weight = numpy_helper.to_array(initializers[node.input[1]])
        inputs = [node.input[0], f"{name}.phase_weight"]
        graph.initializer.append(numpy_helper.from_array(phase_weights(weight), inputs[1]))
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(initializers[node.input[2]])
            inputs.append(f"{name}.phase_bias")
            graph.initializer.append(numpy_helper.from_array(np.repeat(bias, 4), inputs[2]))
        phases = f"{name}.phases"
        nodes.append(helper.make_node("Conv", inputs, [phases], name=f"{name}.phase_conv", kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("DepthToSpace", [phases], list(node.output), name=f"{name}.interleave",
                                      blocksize=2, mode="CRD"))
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model, rewritten
