"""What a training run is built from, as functions of the configuration (and the iteration, for the schedule)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from p2p.runtime.errors import UserError
from p2p.runtime.pairs import InputDataset, PairDataset, resolve_split
from p2p.runtime.spec import ModelSpec

from .config import TrainConfig
from .data import TrainingSet
from .distributed import convert_sync_batchnorm
from .models import Discriminator, Generator, init_weights
from .multiscale import build_discriminator
from .objective import Objective


class TrainError(UserError, RuntimeError):
    """A run that cannot go on; the message says what to do."""


# --- pure functions of the configuration and the iteration ------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda asked for, but this PyTorch sees no CUDA GPU "
                         "(CPU build, or no driver): use --device cpu, or install a CUDA build of torch")
    return torch.device(name)


def lr_factor(epoch: int, epochs: int, epochs_decay: int) -> float:
    """Constant for `epochs`, then linear decay to zero over `epochs_decay` (the widely used port's rule)."""
    return 1.0 - max(0, epoch + 1 - epochs) / float(epochs_decay + 1)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """The batches of one epoch, a pure function of (seed, epoch): the key to exact resume.

    With several ranks each takes every world-th batch of the same global order, so a
    global step over world ranks sees world·batch_size images.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    steps = len(batches) // world  # every rank takes the same number of steps
    return [batches[s * world + rank] for s in range(steps)]


# --- builders ------------------------------------------------------------------------------
def build_datasets(cfg: TrainConfig, spec: ModelSpec) -> tuple[TrainingSet, PairDataset | None]:
    """The training set (with the paper's jitter, and --extra-inputs) and the validation split (val/ or test/)."""
    root = Path(cfg.data)
    train_dir = resolve_split(root, "train")
    pairs = PairDataset(train_dir, spec, cfg.layout, jitter=True, seed=cfg.seed, preprocess=cfg.preprocess)
    extras = (InputDataset(Path(cfg.extra_inputs), spec, jitter=True, seed=cfg.seed, preprocess=cfg.preprocess)
              if cfg.extra_inputs else None)
    train = TrainingSet(pairs, extras)
    for name in ("val", "test"):
        if (root / name).is_dir() and root / name != train_dir:
            return train, PairDataset(root / name, spec, cfg.layout, jitter=False, seed=cfg.seed,
                                      preprocess=cfg.preprocess)
    return train, None


def build_models(cfg: TrainConfig, spec: ModelSpec, objective: Objective,
                 device: torch.device) -> tuple[Generator, Discriminator | None]:
    """G and (unless the objective is L1 alone) D, with the paper's initialisation.

    With --sync-bn their BatchNorms are converted here, before any optimiser sees the
    parameters: the CPU conversion makes new Parameters, which an optimiser built
    earlier would never update.
    """
    G = Generator(spec)
    init_weights(G)
    D = None
    if objective.uses_gan:
        D = build_discriminator(spec.out_channels + (spec.in_channels if objective.conditional else 0), cfg.ndf,
                                cfg.patch, cfg.num_d)  # --num-d > 1: multi-scale (training/multiscale.py)
        init_weights(D)
    if cfg.sync_bn:  # the converted layers keep BatchNorm2d's state-dict keys: checkpoints load either way
        for net in (G, D):
            if net is not None:
                convert_sync_batchnorm(net, device)
    return G, D


def build_optimizer(net: nn.Module | None, cfg: TrainConfig) -> torch.optim.Adam | None:
    return torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999)) if net is not None else None


def amp_dtype_for(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16 (with a grad scaler); None (fp32) on the CPU or with --no-amp."""
    if not (cfg.amp and device.type == "cuda"):
        return None
    # emulated bf16 (pre-Ampere GPUs) is slow: those get fp16 with a grad scaler
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def restore_rng(rng: dict, device: torch.device) -> None:
    """Set the torch (and CUDA) RNG from a checkpoint's ``rng`` entry.

    Both setters take only CPU byte tensors ("RNG state must be a torch.ByteTensor"), and a
    checkpoint loaded with ``map_location="cuda"`` holds CUDA ones: copy them back first.
    """
    torch.set_rng_state(rng["torch"].cpu())
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"].cpu(), device)
