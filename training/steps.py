"""One training iteration as an object the loop calls: the paper's objective, or distillation on top of it.

``PaperStep``: a D step (real pairs → 1, generated → 0, halved, as in the paper; none for L1 alone), then
a G step on the non-saturating GAN loss plus λ·L1 (or the variant ``Objective`` names).
``DistillStep``: the same, with a frozen teacher: images without a target get its translation, and
the G loss adds λ_teacher·L1(student, teacher) + λ_feat·(decoder features).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .distill import Teacher, feature_loss
from .distributed import flagged_ranks
from .multiscale import feature_matching, with_features
from .objective import Objective, gan_loss, l1_loss


class NonFiniteLoss(Exception):
    """A loss became NaN or infinite on some rank; raised on every rank before any weight changes."""

    def __init__(self, name: str, ranks: list[int], world: int):
        self.name = name
        self.where = f" on rank {', '.join(map(str, ranks))}" if world > 1 else ""


@dataclass
class PaperStep:
    objective: Objective
    G: torch.nn.Module            # what runs the generator (its DDP wrapper on several ranks)
    D: torch.nn.Module | None     # the discriminator's step model (DDP-wrapped on several ranks), None for L1
    D_bare: torch.nn.Module | None  # the discriminator itself: frozen inside G's step, no gradients to wait for
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    scaler: torch.amp.GradScaler
    autocast: Callable
    device: torch.device
    world: int = 1
    lambda_fm: float = 0.0        # --lambda-fm: pix2pixHD's discriminator feature matching (training/multiscale.py)

    uses_unpaired = False  # whether batches carry images without targets (has_target)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, has_target: torch.Tensor | None = None) -> dict:
        y = self.targets(x, y, has_target)
        with self.autocast():
            fake = self.generate(x)
        losses = {}
        if self.D is not None:
            losses["d"] = self.d_step(x, y, fake)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g = self.g_loss(x, y, fake, losses)
        self.finite("G", loss_g)
        self.scaler.scale(loss_g).backward()
        self.scaler.step(self.opt_g)
        self.scaler.update()
        if self.D is not None:
            self.D.requires_grad_(True)
        return losses

    # --- what a variant changes ---------------------------------------------------------
    def targets(self, x, y, has_target):
        return y

    def generate(self, x):
        return self.G(x)

    def g_loss(self, x, y, fake, losses: dict) -> torch.Tensor:
        """Non-saturating GAN loss (maximise log D(x, G(x))) plus λ·L1; the terms go into ``losses``."""
        loss_g = torch.zeros((), device=x.device)
        if self.D is not None and self.lambda_fm:
            loss_fm, pred = self.feature_matching(x, y, fake)
            loss_g = loss_g + self.lambda_fm * loss_fm
            losses["g_fm"] = loss_fm.item()
        if self.D is not None:
            if not self.lambda_fm:
                with self.autocast():
                    pred = self.D_bare(self.objective.d_input(x, fake))
            loss_gan = gan_loss(pred, True)
            loss_g = loss_g + loss_gan
            losses["g_gan"] = loss_gan.item()
        if self.objective.uses_l1:
            loss_l1 = l1_loss(fake, y)
            loss_g = loss_g + self.objective.lambda_l1 * loss_l1
            losses["g_l1"] = loss_l1.item()
        return loss_g

    # --- shared pieces --------------------------------------------------------------------
    def feature_matching(self, x, y, fake):
        """(the feature-matching loss, D's logits on the generated pair), with the bare D as the GAN term."""
        with self.autocast():
            pred, fake_features = with_features(self.D_bare, self.objective.d_input(x, fake))
            with torch.no_grad():
                _, real_features = with_features(self.D_bare, self.objective.d_input(x, y))
        return feature_matching(fake_features, real_features), pred

    def d_step(self, x, y, fake) -> float:
        self.D.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        with self.autocast():
            pred_fake = self.D(self.objective.d_input(x, fake.detach()))
            pred_real = self.D(self.objective.d_input(x, y))
        loss_d = 0.5 * (gan_loss(pred_fake, False) + gan_loss(pred_real, True))
        value = self.finite("D", loss_d)
        self.scaler.scale(loss_d).backward()
        self.scaler.step(self.opt_d)
        self.D.requires_grad_(False)
        return value

    def finite(self, name: str, loss: torch.Tensor) -> float:
        """The loss's value; NonFiniteLoss on every rank (before any backward or step) if it is not finite on any."""
        value = loss.item()
        bad = not math.isfinite(value)
        ranks = flagged_ranks(bad, self.device)
        if ranks:
            raise NonFiniteLoss(name, ranks, self.world)
        return value


@dataclass
class DistillStep(PaperStep):
    teacher: Teacher | None = None
    lambda_teacher: float = 100.0
    lambda_feat: float = 1.0

    uses_unpaired = True

    def targets(self, x, y, has_target):
        with self.autocast():
            self._t_out, self._t_features = self.teacher(x)
        if has_target is not None:  # images without a target: the teacher's translation is their target
            y = torch.where(has_target.view(-1, 1, 1, 1) > 0, y, self._t_out.to(y.dtype))
        return y

    def generate(self, x):
        fake, self._s_features = self.G(x)
        return fake

    def g_loss(self, x, y, fake, losses: dict) -> torch.Tensor:
        loss_g = super().g_loss(x, y, fake, losses)
        loss_teacher, loss_feat = l1_loss(fake, self._t_out), feature_loss(self._s_features, self._t_features)
        loss_g = loss_g + self.lambda_teacher * loss_teacher + self.lambda_feat * loss_feat
        losses["g_teacher"], losses["g_feat"] = loss_teacher.item(), loss_feat.item()
        return loss_g
