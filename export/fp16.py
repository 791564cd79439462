"""FP16 ONNX: weights and compute in float16, inputs and outputs still float32.

TensorRT 11 is strongly typed and takes its precision from the ONNX file, so an
FP16 engine there starts from this file; ONNX Runtime's CUDA/TensorRT providers
run it directly. Batch statistics stay in fp32: a mean and variance over N·H·W
values (65 536 at 256²) lose too much in float16 and the error is visible.
"""
from __future__ import annotations

import warnings

import onnx
from onnxconverter_common import float16

# Checked in tests/test_export.py and by --verify: fp16 vs the PyTorch fp32 generator
# on outputs in [-1, 1]. Measured ≈ 2e-3 on the paper's unet_256 (DEPLOYMENT-FACTS.md).
FP16_TOLERANCE = 2e-2

# Normalisation ops (both variants of graph.BatchStatsNorm) kept in float32.
NORM_OPS = ["InstanceNormalization", "ReduceMean"]


def to_fp16(model: onnx.ModelProto, *, keep_norm_fp32: bool = True) -> onnx.ModelProto:
    """An FP16 copy of ``model`` with float32 inputs and outputs (``model`` is left as it is)."""
    block = list(float16.DEFAULT_OP_BLOCK_LIST) + (NORM_OPS if keep_norm_fp32 else [])
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the converter edits in place; callers keep their fp32 model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "values truncated to fp16" notices for tiny weights
        return float16.convert_float_to_float16(copy, keep_io_types=True, op_block_list=block)
