"""Checkpoint → ONNX (dropout masks as inputs, spec in metadata) → TensorRT engine.

``export_onnx`` and ``read_onnx_spec`` need only ``onnx`` to import; torch is
loaded when a graph is actually built.
"""
from .onnx_export import ExportError, export_onnx, read_onnx_spec

__all__ = ["ExportError", "export_onnx", "read_onnx_spec"]
