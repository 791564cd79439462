"""Checkpoint → ONNX (dropout masks as inputs, spec in metadata) → TensorRT engine.

Importing ``p2p.export`` needs nothing: ``export_onnx`` and ``read_onnx_spec`` load ``onnx``
on first use, torch is loaded when a graph is actually built, and onnxconverter-common only
for FP16 (benchmarks/gpu_check.py runs where some of them are missing).
"""
from __future__ import annotations

import importlib

_LAZY = {"ExportError": "onnx_export", "export_onnx": "onnx_export", "read_onnx_spec": "onnx_export"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
