"""The pix2pix objective: L_cGAN(G, D) + λ·L_L1(G), and the paper's comparison variants."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import OBJECTIVES


@dataclass(frozen=True)
class Objective:
    name: str = "l1+cgan"
    lambda_l1: float = 100.0
    unconditional: bool = False  # --unconditional: D sees only y, even for a "cgan" objective

    def __post_init__(self):
        if self.name not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.name!r}; expected one of {OBJECTIVES}")

    @property
    def uses_gan(self) -> bool:
        return self.name != "l1"

    @property
    def uses_l1(self) -> bool:
        return self.name.startswith("l1")

    @property
    def conditional(self) -> bool:
        return "cgan" in self.name and not self.unconditional

    def d_input(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What D sees: the pair (x, y) for the conditional GAN, y alone otherwise."""
        return torch.cat([x, y], 1) if self.conditional else y


def gan_loss(logits: torch.Tensor | list[torch.Tensor], real: bool) -> torch.Tensor:
    if isinstance(logits, (list, tuple)):  # a multi-scale discriminator (--num-d): the scales' losses summed
        return sum(gan_loss(scale, real) for scale in logits)
    # In fp32 whatever the autocast dtype: GAN losses in reduced precision are fragile.
    logits = logits.float()
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def l1_loss(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(fake.float(), target.float())
