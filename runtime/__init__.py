"""p2p.runtime: the model spec, image ops, and the torch-free Translator.

``from p2p.runtime import Translator`` loads ONNX Runtime on first use only, so that
training, which imports ``p2p.runtime.spec`` and ``p2p.runtime.images``, does not pay for it.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "Translator": "translator", "parse_size": "translator", "FIT_MODES": "translator",
    "MaskSampler": "masks", "NOISE_MODES": "masks",
    "ModelSpec": "spec", "SpecError": "spec",
    "ArtifactError": "artifacts", "ShapeError": "artifacts", "default_model": "artifacts",
    "BackendUnavailable": "errors", "available_backends": "backends",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
