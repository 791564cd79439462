"""gpu_check's harness: the check registry, SKIP, the shared context and the reference helpers.

The checks live in gpu_check_training.py (training and export) and gpu_check_runtime.py
(TensorRT, ONNX Runtime, the driver and the install); gpu_check.py runs them.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

GPU_TOLERANCE = 1e-3  # fp32 on both sides, TF32 off: cuDNN/TensorRT kernels sum in other orders
EXPORT = ("onnx", "onnxscript", "onnxruntime")  # what writing and checking an ONNX file needs
FP16 = ("onnxconverter_common",)


class Skip(Exception):
    """This check cannot run here; the message says what is missing."""


def need(*modules: str) -> None:
    missing = [m for m in modules if not installed(m)]
    if missing:
        raise Skip(f"{', '.join(missing)} not installed")


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a stand-in module
        return False


def registry(checks: list):
    """A decorator that adds checks to ``checks``: ``check = registry(CHECKS)``, then ``@check("name", ...)``.

    A check SKIPs, with the reason, without a CUDA GPU (``gpu``) or one of ``needs``.
    """
    def check(name: str, *, needs: tuple[str, ...] = (), gpu: bool = False):
        def register(fn):
            def run(ctx):
                if gpu and not ctx.cuda:
                    raise Skip("no CUDA GPU")
                need(*needs)
                return fn(ctx)
            checks.append((name, run))
            return fn
        return register
    return check


class Context:
    def __init__(self, device: str, tmp: Path):
        import torch

        self.torch, self.device, self.tmp = torch, torch.device(device), tmp
        self.cuda = self.device.type == "cuda"
        self.cache: dict = {}

    def trainer(self, name: str, amp_dtype=None, resume: dict | None = None, world=None, **overrides):
        """A tiny Trainer on the embedded clips, with the AMP dtype forced (on the CPU too)."""
        torch = self.torch
        from p2p.training.config import TrainConfig, World, default_data_dir
        from p2p.training.trainer import Trainer

        cfg = TrainConfig(data=str(default_data_dir()), out=str(self.tmp / name), task="edges", size=64, ngf=8, ndf=8,
                          batch_size=2, device=str(self.device), progress=False, **overrides)
        t = Trainer(cfg, resume=resume, world=world or World())
        t.amp_dtype = amp_dtype
        t.scaler = torch.amp.GradScaler(self.device.type, enabled=amp_dtype == torch.float16)
        if resume is not None and resume["scaler"] and t.scaler.is_enabled():
            t.scaler.load_state_dict(resume["scaler"])
        return t

    def steps(self, trainer, n: int = 3) -> dict:
        batches = trainer.batches(trainer.iteration)  # where the run is: a resumed run continues its epoch
        for _ in range(n):
            x, y = (t.to(self.device) for t in next(batches)[:2])
            if trainer.cfg.channels_last:
                x, y = (t.contiguous(memory_format=self.torch.channels_last) for t in (x, y))
            losses = trainer.step(x, y)
            trainer.iteration += 1
        assert all(np.isfinite(v) for v in losses.values()), f"non-finite losses {losses}"
        assert all(p.dtype == self.torch.float32 for p in trainer.G.parameters()), "weights left fp32"
        return losses

    def generator(self, size: int, ngf: int, seed: int = 0):
        """The paper's U-Net with random weights, and its spec."""
        from p2p.runtime.spec import ModelSpec
        from p2p.training.models import Generator, init_weights

        self.torch.manual_seed(seed)
        spec = ModelSpec.for_task("paired", size, ngf=ngf)
        gen = Generator(spec)
        init_weights(gen)
        return gen, spec

    def onnx_file(self, size: int, ngf: int, *, norm: str = "instance", opset: int = 18, fp16: bool = False):
        """A p2p ONNX file of a random-weight U-Net, and its spec: one trace per (size, ngf, norm)."""
        from p2p.export.onnx_export import build_onnx, write_model
        from p2p.export.opset17 import to_opset17

        if (size, ngf, norm) not in self.cache:
            gen, spec = self.generator(size, ngf)
            self.cache[size, ngf, norm] = build_onnx(gen, spec, norm=norm), spec
        model, spec = self.cache[size, ngf, norm]
        model = to_opset17(model) if opset == 17 else model
        if fp16:
            from p2p.export.fp16 import to_fp16
            model = to_fp16(model)
        path = self.tmp / f"u{size}-{ngf}-{norm}-{opset}{'-fp16' if fp16 else ''}.onnx"
        return (path if path.exists() else write_model(model, spec, "fp16" if fp16 else "fp32", path)), spec


def tensorrt_opset() -> int:
    """The opset the installed TensorRT parses (p2p-export picks it the same way)."""
    from p2p.export.tensorrt_build import installed_tensorrt, version_tuple

    version = installed_tensorrt()
    return 17 if version and version_tuple(version) < (10,) else 18


def cpu_reference(path, spec, image, masks) -> np.ndarray:
    import onnxruntime as ort

    from p2p.runtime import contract

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run([contract.OUTPUT], contract.feeds(spec, image, masks))[0]


def inputs(spec, size: int, seed: int = 0, batch: int = 1):
    from p2p.runtime import contract

    rng = np.random.default_rng(seed)
    image = rng.uniform(-1, 1, (batch, spec.in_channels, size, size)).astype(np.float32)
    return image, contract.draw_masks(spec, rng, batch, size, size)


def same_state(a: dict, b: dict) -> bool:
    torch = sys.modules["torch"]
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)
