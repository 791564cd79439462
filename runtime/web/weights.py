"""Half the download: an ONNX file whose weights are stored as float16 and computed in float32.

Each float32 weight becomes a float16 initializer followed by a Cast back to float32; ONNX Runtime folds
the casts when the session starts, so the model runs exactly as fast and in float32, only the weights
are rounded to float16 (about 3 decimal digits). Inputs, outputs and metadata (the p2p spec) stay as
they are. Unlike p2p-export --fp16, nothing is computed in float16.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

MIN_ELEMENTS = 16  # scalars and tiny constants (shapes, epsilons) stay float32: they cost nothing


def fp16_weights(src: Path, dst: Path) -> Path:
    """Write ``src`` with float16-stored weights to ``dst``; returns ``dst``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    casts, kept = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < MIN_ELEMENTS:
            kept.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{init.name}__fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}__to_fp32"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(dst))
    return Path(dst)
