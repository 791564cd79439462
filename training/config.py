"""p2p-train's configuration, torch-free: the CLI checks flags and answers --help without loading torch."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from p2p.runtime.cli_options import DEFAULT_DEVICE, DEFAULT_SEED
from p2p.runtime.errors import UserError
from p2p.runtime.preprocess import PREPROCESS
from p2p.runtime.sizes import canonical_size, size_problem, size_text, width_height
from p2p.runtime.spec import ModelSpec

OBJECTIVES = ("l1+cgan", "l1+gan", "cgan", "gan", "l1")
PATCH_SIZES = (1, 16, 70, 286)  # PatchGAN receptive fields: PixelGAN, 16, the paper's 70, ImageGAN


# What --resume may change: schedule, bookkeeping and how the steps run. Everything else
# (data, model, objective, batch size, seed) defines the run and is refused if it differs.
RESUME_CHANGEABLE = frozenset({"lr", "epochs", "epochs_decay", "iters", "save_every", "sample_every", "log_every",
                               "val_images", "workers", "progress", "device", "amp", "channels_last", "deterministic",
                               "tensorboard"})


class ConfigError(UserError, ValueError):
    """Flags that cannot train together; the message says which and what to use instead."""


def default_data_dir() -> Path:
    """Small real data shipped inside the package: frames of OpenCV's sample clips (see its LICENSE)."""
    return Path(str(resources.files("p2p.training") / "default_data"))


def patch_norm_size(image_size: int, patch: int) -> int:
    """Side of the map that the PatchGAN's last BatchNorm normalises, for a square input."""
    if patch == 1:
        return image_size
    n_layers = {16: 1, 70: 3, 286: 5}[patch]
    return image_size // 2 ** n_layers - 1  # n stride-2 k4 convs halve; the k4 stride-1 conv takes one


@dataclass
class TrainConfig:
    data: str
    out: str
    task: str = "paired"
    direction: str = "AtoB"
    layout: str = "auto"
    size: int | str = 256            # N (a square) or "WxH": runtime/sizes.py says which the U-Net takes
    preprocess: str = "resize-crop"  # how images become training crops (runtime/preprocess.py)
    batch_size: int = 1
    epochs: int = 100
    epochs_decay: int = 100
    iters: int | None = None
    ngf: int = 64
    ndf: int = 64
    generator: str = "unet"
    block: str = "conv"              # the generator's layers: "conv" (the paper's) or "separable" (for CPU speed)
    patch: int = 70
    objective: str = "l1+cgan"
    lambda_l1: float = 100.0
    unconditional: bool = False
    num_d: int = 1                   # PatchGANs at full, 1/2 and 1/4 resolution (pix2pixHD); 1 is the paper's
    lambda_fm: float = 0.0           # discriminator feature matching (pix2pixHD); 0 is the paper's
    lr: float = 2e-4
    beta1: float = 0.5
    device: str = DEFAULT_DEVICE
    amp: bool = True
    channels_last: bool = False
    deterministic: bool = False      # deterministic algorithms: exact resume on CUDA too, at some speed
    sync_bn: bool = False
    tensorboard: bool = False        # also write OUT/tensorboard event files
    # distillation (training/distill.py): a narrow student learns from a trained teacher
    teacher: str | None = None       # run folder or checkpoint of the teacher
    teacher_noise: str = "off"       # the teacher's dropout while it teaches: "off" or "per-frame"
    lambda_teacher: float = 100.0    # L1 of the student's output to the teacher's
    lambda_feat: float = 1.0         # MSE of the mapped decoder features to the teacher's
    teacher_d: bool = True           # the student's D starts from the teacher's D (when their shapes match)
    extra_inputs: str | None = None  # images without targets: the teacher translates them
    seed: int = DEFAULT_SEED
    workers: int = 0
    save_every: int = 500
    sample_every: int = 200
    log_every: int = 10
    val_images: int = 8
    progress: bool = True

    def validate(self) -> None:
        """Combinations that cannot train, as one clear ConfigError each."""
        try:
            width, height = width_height(self.size)
        except ValueError as exc:
            raise ConfigError(f"--size: {exc}") from None
        problem = size_problem(width, height)
        if problem:
            raise ConfigError(problem)
        self.size = canonical_size(self.size)
        if self.preprocess not in PREPROCESS:
            raise ConfigError(f"--preprocess must be one of {', '.join(PREPROCESS)}, not {self.preprocess!r}")
        if self.num_d not in (1, 2, 3):
            raise ConfigError(f"--num-d must be 1, 2 or 3, not {self.num_d}")
        if self.lambda_fm < 0 or (self.lambda_fm and self.objective == "l1"):
            raise ConfigError("--lambda-fm must be ≥ 0, and needs a discriminator (not --objective l1)")
        self.spec()
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; expected one of {OBJECTIVES}")
        if self.patch not in PATCH_SIZES:
            raise ConfigError(f"--patch must be one of {PATCH_SIZES}, got {self.patch}")
        if self.teacher is None and (self.extra_inputs or self.teacher_noise != "off"):
            raise ConfigError("--extra-inputs and --teacher-noise need a --teacher (images without targets get "
                              "the teacher's translation)")
        if self.teacher_noise not in ("off", "per-frame"):
            raise ConfigError(f"--teacher-noise must be off or per-frame, not {self.teacher_noise!r}")
        if min(self.lambda_teacher, self.lambda_feat) < 0:
            raise ConfigError("--lambda-teacher and --lambda-feat must be ≥ 0")
        smallest = min(width, height) // 2 ** (self.num_d - 1)  # what the coarsest discriminator sees
        side = patch_norm_size(smallest, self.patch)
        if self.objective != "l1" and side < 2:  # its last 4x4 convolution needs a 2x2 map at least
            scale = (f" (--num-d {self.num_d}: the coarsest sees 1/{2 ** (self.num_d - 1)} of it)"
                     if self.num_d > 1 else "")
            larger = size_text(2 * width, 2 * height)
            raise ConfigError(f"--patch {self.patch} at --size {self.size}{scale} leaves the discriminator a map too "
                              f"small for its last 4x4 convolution; use --size {larger} or more, a smaller --patch"
                              + (" or a smaller --num-d" if self.num_d > 1 else ""))

    def spec(self) -> ModelSpec:
        return ModelSpec.for_task(self.task, width_height(self.size), ngf=self.ngf, generator=self.generator,
                                  direction=self.direction, block=self.block)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class World:
    """Where this process sits in a torchrun launch (one process, rank 0, when not launched by torchrun)."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))
