"""pix2pixHD's multi-scale discriminator and its feature-matching loss (Wang et al., CVPR 2018).

A 70-pixel PatchGAN sees a small corner of a 1024-wide image. ``--num-d 2|3`` runs the same
PatchGAN (each scale its own weights) on the pair at full, 1/2 and 1/4 resolution, the
downsampling an average pool as in pix2pixHD; the GAN losses of the scales are summed.
``--lambda-fm`` adds L1 between the discriminators' intermediate features of the generated and
the real pair (real ones detached): averaged over the scales, summed over the layers, as pix2pixHD.

With one scale the discriminator stays the plain ``Discriminator``: checkpoints of the paper's
setup keep their keys, so old ones load and new ones load in older code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .models import Discriminator


class MultiScaleDiscriminator(nn.Module):
    """``num_d`` PatchGANs; forward returns their logits, finest first."""

    def __init__(self, in_channels: int, ndf: int, patch: int, num_d: int):
        super().__init__()
        self.scales = nn.ModuleList(Discriminator(in_channels, ndf, patch) for _ in range(num_d))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [d(x) for d, x in zip(self.scales, pyramid(x, len(self.scales)))]


def pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """x at full, 1/2, 1/4 ... resolution (pix2pixHD's 3×3 stride-2 average pool, padding not counted)."""
    out = [x]
    for _ in range(levels - 1):
        out.append(F.avg_pool2d(out[-1], 3, stride=2, padding=1, count_include_pad=False))
    return out


def build_discriminator(in_channels: int, ndf: int, patch: int, num_d: int) -> nn.Module:
    """The paper's PatchGAN for ``num_d`` 1, else the multi-scale one."""
    return Discriminator(in_channels, ndf, patch) if num_d == 1 else MultiScaleDiscriminator(in_channels, ndf,
                                                                                            patch, num_d)


def num_scales(state: dict | None) -> int:
    """How many scales a discriminator's state dict holds (1 for the plain PatchGAN)."""
    scales = {key.split(".")[1] for key in (state or {}) if key.startswith("scales.")}
    return len(scales) or 1


def _layer_features(d: Discriminator, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A PatchGAN's logits and the output of each of its LeakyReLUs."""
    features = []
    for layer in d.model:
        x = layer(x)
        if isinstance(layer, nn.LeakyReLU):
            features.append(x)
    return x, features


def with_features(D: nn.Module, x: torch.Tensor):
    """(logits as D(x) gives them, [features of each scale]) in one pass."""
    if isinstance(D, MultiScaleDiscriminator):
        pairs = [_layer_features(d, level) for d, level in zip(D.scales, pyramid(x, len(D.scales)))]
        return [p for p, _ in pairs], [f for _, f in pairs]
    logits, features = _layer_features(D, x)
    return logits, [features]


def feature_matching(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]]) -> torch.Tensor:
    """Mean over scales of the summed L1 between each layer's features (real ones detached), in fp32."""
    total = sum(sum(F.l1_loss(f.float(), r.detach().float()) for f, r in zip(fs, rs)) for fs, rs in zip(fake, real))
    return total / len(fake)
