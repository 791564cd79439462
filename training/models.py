"""pix2pix networks, as the paper and its original (Lua) implementation define them.

Generator: U-Net (encoder layer i concatenated onto decoder layer n−i) or the
plain encoder–decoder, Conv–BatchNorm–(Leaky)ReLU blocks, dropout in the first
decoder blocks after the bottleneck. Discriminator: PatchGAN whose receptive
field is N×N. Where the widely used PyTorch port differs (it moves dropout one
block outwards, to 4×4, 8×8, 16×16 at 256²) we follow the paper.
"""
from __future__ import annotations

import torch
from torch import nn

from p2p.runtime import contract
from p2p.runtime.spec import ModelSpec

from . import separable
from .config import PATCH_SIZES


def batch_norm(channels: int) -> nn.BatchNorm2d:
    # Statistics always come from the batch being processed, in training and at
    # test time (the paper's choice; instance norm at batch size 1). Running
    # averages would never be used, so none are kept: .eval() cannot silently
    # switch the generator to other statistics, and export has nothing to get wrong.
    return nn.BatchNorm2d(channels, track_running_stats=False)


class MaskDropout(nn.Module):
    """Dropout that is always on (pix2pix's noise) and can take its mask from outside.

    ``mask`` holds 0 or 1/(1−p); given the same mask, PyTorch, ONNX Runtime and
    TensorRT compute the same function. Without one, a mask is drawn here, from the
    global torch RNG on the activation's device, by the contract's rule.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = contract.keep_mask(torch.rand(x.shape, device=x.device), self.p).to(x.dtype)
        return x * mask


def encoder_layer(block: str, cin: int, cout: int, norm: bool) -> nn.Sequential:
    """Encoder level i ≥ 1: halves the resolution."""
    if block == "separable":
        return separable.down(cin, cout, batch_norm(cout) if norm else None)
    layers = [nn.LeakyReLU(0.2), nn.Conv2d(cin, cout, 4, 2, 1, bias=False)]
    return nn.Sequential(*layers, *([batch_norm(cout)] if norm else []))


def decoder_layer(block: str, cin: int, cout: int) -> nn.Sequential:
    """Decoder block body: doubles the resolution."""
    if block == "separable":
        return separable.up(cin, cout, batch_norm(cout))
    return nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), batch_norm(cout))


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dropout_p: float | None, block: str = "conv"):
        super().__init__()
        self.up = decoder_layer(block, cin, cout)
        self.dropout = MaskDropout(dropout_p) if dropout_p else None

    def forward(self, x, mask=None):
        x = self.up(x)
        return self.dropout(x, mask) if self.dropout is not None else x


class Generator(nn.Module):
    """U-Net (``spec.generator == "unet"``) or encoder–decoder ("encdec"), of ``spec.block`` layers."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        enc = spec.encoder_channels()
        d = spec.depth
        self.skips = spec.generator == "unet"
        downs = [nn.Conv2d(spec.in_channels, enc[0], 4, 2, 1, bias=False)]  # no norm on the first layer
        for i in range(1, d):  # the innermost (1×1 at training size) has no norm
            downs.append(encoder_layer(spec.block, enc[i - 1], enc[i], norm=i < d - 1))
        self.downs = nn.ModuleList(downs)
        ups = []
        for k in range(d - 1):  # k = 0 is the block right after the bottleneck
            cin = enc[d - 1 - k] * (2 if self.skips and k > 0 else 1)
            p = spec.dropout_p if k < spec.dropout_blocks else None
            ups.append(DecoderBlock(cin, enc[d - 2 - k], p, spec.block))
        self.ups = nn.ModuleList(ups)
        self.out = nn.Sequential(
            nn.ReLU(), nn.ConvTranspose2d(enc[0] * (2 if self.skips else 1), spec.out_channels, 4, 2, 1), nn.Tanh())

    def forward(self, x: torch.Tensor, masks: list[torch.Tensor] | None = None, decoder_features: bool = False):
        """The translation; with ``decoder_features`` also each decoder block's output (for distillation)."""
        if masks is not None and len(masks) != self.spec.dropout_blocks:
            raise ValueError(f"expected {self.spec.dropout_blocks} dropout masks, got {len(masks)}")
        features, decoded = [], []
        for down in self.downs:
            x = down(x)
            features.append(x)
        for k, up in enumerate(self.ups):
            if k > 0 and self.skips:
                x = torch.cat([x, features[-1 - k]], 1)
            x = up(x, masks[k] if masks is not None and k < len(masks) else None)
            decoded.append(x)
        if self.skips:
            x = torch.cat([x, features[0]], 1)
        out = self.out(x)
        return (out, decoded) if decoder_features else out


class Discriminator(nn.Module):
    """PatchGAN: classifies each N×N patch as real or fake, N in {1, 16, 70, 286}.

    ``in_channels`` is input+output channels for the conditional D, output only
    for the unconditional one. Returns logits, one per patch.
    """

    def __init__(self, in_channels: int, ndf: int = 64, patch: int = 70):
        super().__init__()
        if patch not in PATCH_SIZES:
            raise ValueError(f"patch size must be one of {PATCH_SIZES}, got {patch}")
        self.patch = patch
        if patch == 1:  # PixelGAN: 1×1 convolutions
            layers = [nn.Conv2d(in_channels, ndf, 1), nn.LeakyReLU(0.2),
                      nn.Conv2d(ndf, ndf * 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2),
                      nn.Conv2d(ndf * 2, 1, 1)]
        else:
            # receptive field of k4s2 ×n_layers, then two k4s1: 16, 70, 286 for n = 1, 3, 5
            n_layers = {16: 1, 70: 3, 286: 5}[patch]
            layers = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
            mult = 1
            for n in range(1, n_layers + 1):
                prev, mult = mult, min(2 ** n, 8)
                stride = 2 if n < n_layers else 1
                layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False),
                           nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, std: float = 0.02) -> None:
    """The paper's initialisation: N(0, 0.02) for convolutions, N(1, 0.02) for norm scales."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
