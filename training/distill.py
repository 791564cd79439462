"""Distillation: a narrow student generator learns from a trained teacher (GAN Compression, Li et al., CVPR 2020).

The student is an ordinary p2p generator (its spec records its width), trained with the
paper's objective (cGAN + λ·L1 to the ground truth) plus two distillation terms:

- ``lambda_teacher`` · L1(G_s(x), G_t(x)): the student copies the teacher's translation;
- ``lambda_feat`` · mean over the last FEATURE_BLOCKS decoder blocks of MSE(A_k(f_s), f_t):
  decoder features, mapped from the student's channels onto the teacher's by learned 1×1
  convolutions A_k (trained with the student, kept in the checkpoint, never exported).

The teacher is frozen: no gradients, batch statistics as always, its dropout noise as
``teacher_noise`` says ("off": masks of ones, its deterministic translation; "per-frame":
its own random masks), and it is never written. Images without targets (--extra-inputs)
get the teacher's translation as their target.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from p2p.runtime import contract
from p2p.runtime.errors import UserError
from p2p.runtime.files import file_sha256
from p2p.runtime.spec import ModelSpec

from .checkpoint import CheckpointError, checkpoint_path, load_generator

FEATURE_BLOCKS = 3  # decoder blocks whose outputs are distilled: the last ones, at 1/8, 1/4 and 1/2 of the frame
TEACHER_NOISE = ("off", "per-frame")
# spec fields a student must share with its teacher (its width, ngf, is its own)
SHARED_FIELDS = ("generator", "task", "direction", "image_size", "image_width", "image_height", "in_channels",
                 "out_channels", "channel_order", "canny_low", "canny_high", "dropout_blocks")


class TeacherError(UserError, ValueError):
    """A teacher that cannot teach this student; the message says why."""


def load_teacher(source: Path, device: torch.device) -> tuple[nn.Module, ModelSpec, dict, dict | None]:
    """The teacher's generator (frozen, on ``device``), its spec, its fingerprint for the student's
    checkpoint, and its discriminator's weights (a student's D may start from them)."""
    try:
        path = checkpoint_path(source)
        generator, spec, state = load_generator(path)
    except CheckpointError as exc:
        raise TeacherError(f"--teacher: {exc}") from None
    generator.to(device).train()  # batch statistics, as every p2p generator translates
    generator.requires_grad_(False)
    info = {"path": str(path), "sha256": file_sha256(path), "spec": spec.to_dict()}
    return generator, spec, info, state.get("discriminator")


def check_pair(teacher: ModelSpec, student: ModelSpec) -> None:
    """TeacherError unless the student translates the same thing the same way as the teacher."""
    diff = [f"{k}: teacher {getattr(teacher, k)!r}, student {getattr(student, k)!r}"
            for k in SHARED_FIELDS if getattr(teacher, k) != getattr(student, k)]
    if diff:
        raise TeacherError("--teacher translates something else than this run would (" + "; ".join(diff) +
                           "): leave --task/--direction/--size/--generator out to take the teacher's")


class Student(nn.Module):
    """The student generator with its feature adapters: what the training step runs (and DDP wraps)."""

    def __init__(self, generator: nn.Module, teacher_spec: ModelSpec):
        super().__init__()
        self.generator = generator
        spec = generator.spec
        blocks = range(spec.depth - 1 - FEATURE_BLOCKS, spec.depth - 1)  # the last decoder blocks
        self.adapters = nn.ModuleList(nn.Conv2d(contract.decoder_channels(spec, k),
                                                contract.decoder_channels(teacher_spec, k), 1) for k in blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out, decoded = self.generator(x, decoder_features=True)
        return out, [a(f) for a, f in zip(self.adapters, decoded[-FEATURE_BLOCKS:])]


class Teacher:
    """The frozen teacher: its translation and its last decoder features, without gradients."""

    def __init__(self, generator: nn.Module, noise: str):
        if noise not in TEACHER_NOISE:
            raise TeacherError(f"--teacher-noise must be one of {TEACHER_NOISE}, not {noise!r}")
        self.generator, self.noise = generator, noise

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        masks = None
        if self.noise == "off":
            n, _, h, w = x.shape
            masks = [torch.ones(s, device=x.device, dtype=x.dtype)
                     for s in contract.mask_shapes(self.generator.spec, n, h, w)]
        out, decoded = self.generator(x, masks, decoder_features=True)
        return out, decoded[-FEATURE_BLOCKS:]


def feature_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([nn.functional.mse_loss(s.float(), t.float()) for s, t in zip(student, teacher)]).mean()
