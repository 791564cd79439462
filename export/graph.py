"""The generator as it is exported: masks as inputs, batch statistics spelled out.

``ExportGenerator`` wraps a *copy* of a trained generator so that

- each dropout mask is a graph input (``dropout_mask_k``: 0 or 1/(1−p)), never
  an in-graph random op (ONNX Runtime deletes Dropout, TensorRT ignores seeds);
- every BatchNorm computes its statistics from the batch in plain ops that any
  exporter writes the same way (the dynamo exporter silently writes train-mode
  BatchNorm with *running* statistics; TensorRT rejects training_mode=1).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from p2p.runtime.spec import ModelSpec

# "reduce": ReduceMean over (N, H, W); "instance": transpose the batch into the
# spatial axes and use InstanceNormalization (native in TensorRT and ORT).
NORMS = ("reduce", "instance")
DEFAULT_NORM = "instance"


class BatchStatsNorm(nn.Module):
    """BatchNorm2d with statistics from the batch, always (as pix2pix uses it at test time)."""

    def __init__(self, bn: nn.BatchNorm2d, variant: str = DEFAULT_NORM):
        super().__init__()
        if variant not in NORMS:
            raise ValueError(f"unknown normalisation variant {variant!r}; expected one of {NORMS}")
        self.variant, self.eps = variant, bn.eps
        # affine parameters are shared with the (already copied) generator
        self.weight, self.bias = bn.weight, bn.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant == "reduce":
            mean = x.mean(dim=(0, 2, 3), keepdim=True)
            d = x - mean
            var = (d * d).mean(dim=(0, 2, 3), keepdim=True)  # biased, as BatchNorm normalises
            y = d * torch.rsqrt(var + self.eps)
            if self.weight is not None:
                y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
            return y
        # (N, C, H, W) → (1, C, N·H·W): one "instance" whose spatial extent is the batch
        n, c, h, w = x.shape
        y = x.transpose(0, 1).reshape(1, c, -1)
        y = F.instance_norm(y, weight=self.weight, bias=self.bias, eps=self.eps)
        return y.reshape(c, n, h, w).transpose(0, 1)


class ExportGenerator(nn.Module):
    """``forward(image, *masks)`` over a deep copy of ``generator``; the original is never touched."""

    def __init__(self, generator: nn.Module, spec: ModelSpec, norm: str = DEFAULT_NORM):
        super().__init__()
        self.spec = spec
        self.net = copy.deepcopy(generator).cpu().float()
        for module in list(self.net.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.BatchNorm2d):
                    setattr(module, name, BatchStatsNorm(child, norm))
        self.net.train()  # the paper's test-time behaviour; nothing here keeps running stats
        for p in self.net.parameters():
            p.requires_grad_(False)

    def forward(self, image: torch.Tensor, *masks: torch.Tensor) -> torch.Tensor:
        return self.net(image, list(masks))
