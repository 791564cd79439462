"""A checkpoint's generator as a runtime Backend: what p2p-eval (and anything that takes a backend) runs it with.

The runtime's Backend protocol (runtime/backends.py) is the one model interface: ONNX Runtime, TensorRT and,
here, PyTorch. It lives outside runtime/ because it imports torch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from p2p.runtime import contract

from .checkpoint import load_generator


class TorchBackend:
    """The generator of a run folder or checkpoint.pt, run by PyTorch (train mode: the paper's test-time
    dropout and batch statistics) on ``device``."""

    kind = "checkpoint"
    precision = contract.FP32
    limits = None  # any multiple of spec.multiple works

    def __init__(self, path: Path, device: str = "cpu", *, generator=None):
        """``generator``: one already in memory (its ``spec`` says what it is, and it runs in the mode it is in)
        instead of loading ``path``."""
        self.path = Path(path)
        if generator is None:
            generator, self.spec, _ = load_generator(path, map_location=device)
            generator.eval()  # changes nothing for p2p-train's generators (no running stats), kept for clarity
        else:
            self.spec = generator.spec
        self.generator = generator.to(device)
        self.device = device
        self.name = f"pytorch-{device}"

    def run(self, image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
            ms = [torch.from_numpy(m).to(self.device) for m in masks]
            return self.generator(x, ms).float().cpu().numpy()

    def close(self) -> None:
        pass
