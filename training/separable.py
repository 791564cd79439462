"""The "separable" generator blocks: a U-Net made for CPU speed (``spec.block == "separable"``).

Same U-Net as the paper's (skips i ↔ n−i, batch-statistics norm, dropout in the first three
decoder blocks after the bottleneck, same widths ngf·min(2^i, 8)), with cheaper layers:

- down (encoder level i ≥ 1): depthwise 4×4 stride-2 convolution (the paper's geometry) then a
  pointwise 1×1 one, as MobileNets and GAN Compression's students factor a convolution;
- up (decoder): pointwise 1×1 at the low resolution, nearest ×2 resize, depthwise 3×3: a
  resize-convolution (no checkerboard) whose dense part runs on a quarter of the pixels;
- the first encoder layer (3 input channels) and the output layer stay the paper's dense
  convolutions: they are cheap and the output layer's transposed convolution gives each
  of the four output pixels its own filter, i.e. full-resolution detail.

The ops (Conv with group, Resize nearest) are ones ONNX Runtime runs in its blocked-layout
kernels and TensorRT parses natively. At ngf 16 a 256² frame costs ~0.07 GMAC, 1/6 of the
plain ngf-16 U-Net's (benchmarks/compact.md).
"""
from __future__ import annotations

from torch import nn


def down(cin: int, cout: int, norm: nn.Module | None) -> nn.Sequential:
    """LeakyReLU → depthwise 4×4 stride 2 → pointwise 1×1 [→ norm]."""
    layers = [nn.LeakyReLU(0.2), nn.Conv2d(cin, cin, 4, 2, 1, groups=cin, bias=False),
              nn.Conv2d(cin, cout, 1, bias=False)]
    return nn.Sequential(*layers, *([norm] if norm is not None else []))


def up(cin: int, cout: int, norm: nn.Module) -> nn.Sequential:
    """ReLU → pointwise 1×1 → nearest ×2 → depthwise 3×3 → norm."""
    return nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(cout, cout, 3, 1, 1, groups=cout, bias=False), norm)
