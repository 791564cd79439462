"""Data-parallel training on torch.distributed: DDP, torchrun's environment, synchronised BatchNorm.

torchrun (or `p2p-train --nproc N`, which launches it) sets RANK, WORLD_SIZE and
LOCAL_RANK; each process trains on its share of every epoch's batches and DDP
averages gradients. Backends: nccl on CUDA, gloo on CPU.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .config import World, world_from_env  # noqa: F401  (torch-free; re-exported for callers)


def init_process_group(world: World, device: torch.device) -> None:
    """Join torchrun's process group: nccl on CUDA (each rank on its own GPU), gloo on CPU."""
    if not world.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        # first: NCCL collectives (all_gather_object in save() too) run on the *current* device,
        # which is GPU 0 on every rank unless each rank selects its own
        torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def close_process_group() -> None:
    """Leave the process group: a rank that exits with it open can abort in the backend's threads."""
    if dist.is_initialized():
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: every rank's output depends on every rank's input,
    so the gradient of an input is the sum of all ranks' output gradients."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def differentiable_all_reduce(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(x)


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the global batch of all ranks, for CPU (gloo).

    PyTorch's nn.SyncBatchNorm runs only on GPUs; this computes the same
    statistics with a differentiable all-reduce of per-channel sums, so gradients
    flow through the global mean and variance exactly as in one big batch.
    State-dict keys are BatchNorm2d's: checkpoints load in a single process.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        count = torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count])
        stats = differentiable_all_reduce(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
                self.num_batches_tracked.add_(1)
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """nn.SyncBatchNorm on GPUs; AllReduceBatchNorm2d (same maths) on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, AllReduceBatchNorm2d):
            new = AllReduceBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return module


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def flagged_ranks(flag: bool, device: torch.device) -> list[int]:
    """The ranks on which ``flag`` is true, the same list on every rank (one all-reduce)."""
    if not dist.is_initialized():
        return [0] if flag else []
    t = torch.zeros(dist.get_world_size(), device=device)
    t[dist.get_rank()] = 1.0 if flag else 0.0
    dist.all_reduce(t)
    return [r for r, v in enumerate(t.tolist()) if v > 0]


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any: ranks must agree to stop at the same step."""
    return bool(flagged_ranks(flag, device))


def any_ranks(flags, device: torch.device) -> tuple[bool, ...]:
    """Each flag true on every rank if it is true on any (one all-reduce for all of them)."""
    if not dist.is_initialized():
        return tuple(bool(f) for f in flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(v > 0 for v in t.tolist())


def gather_objects(obj) -> list:
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
