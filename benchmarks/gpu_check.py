"""The one command for a GPU machine: do p2p's CUDA paths work here? PASS/FAIL/SKIP lines, under 5 minutes.

    python benchmarks/gpu_check.py [--out benchmarks/gpu_check.md]
    python benchmarks/gpu_check.py --cpu-dry-run        # the same checks on the CPU (the test suite runs this)

Checks, each on a tiny model unless said otherwise:

- amp-bf16, amp-fp16: training steps under autocast (fp16 with a GradScaler) give finite
  losses and keep fp32 weights;
- channels-last: a training step in channels_last memory format;
- resume-across-amp: a checkpoint from one precision resumes under the other, both ways;
- process-group-save: a 1-rank NCCL process group (gloo on the CPU), each rank on its own
  GPU, through the collectives save() uses and save() itself;
- parity: the paper's generator on CUDA vs the CPU, TF32 off, same masks;
- tensorrt-backend: a TensorRT engine built by p2p-export's builder, run by the native
  backend at two frame sizes (its buffers grow), against ONNX Runtime on the CPU;
- ort-cuda: ONNX Runtime's CUDA provider, asserted to be the one that ran, TF32 off.

A check whose packages or hardware are missing says SKIP and why; exit 1 if any FAILs.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import socket
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

import numpy as np

GPU_TOLERANCE = 1e-3  # fp32 on both sides, TF32 off: cuDNN/TensorRT kernels sum in other orders


class Skip(Exception):
    """This check cannot run here; the message says what is missing."""


def bootstrap_p2p() -> None:
    """Import p2p from this checkout even where the package is not pip-installed (a bare GPU box)."""
    try:
        import p2p.training  # noqa: F401
        return
    except ImportError:
        pass
    root = Path(__file__).resolve().parents[1]
    pkg = types.ModuleType("p2p")
    pkg.__path__ = []
    sys.modules["p2p"] = pkg
    for sub in ("runtime", "training", "export", "evaluation", "video"):
        spec = importlib.util.spec_from_file_location(
            f"p2p.{sub}", root / sub / "__init__.py", submodule_search_locations=[str(root / sub)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"p2p.{sub}"] = module
        spec.loader.exec_module(module)
        setattr(pkg, sub, module)


def need(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise Skip(f"{', '.join(missing)} not installed")


class Context:
    def __init__(self, device: str, tmp: Path):
        import torch

        self.torch, self.device, self.tmp = torch, torch.device(device), tmp
        self.cuda = self.device.type == "cuda"

    def trainer(self, name: str, amp_dtype=None, resume: dict | None = None, **overrides):
        """A tiny Trainer on the embedded clips, with the AMP dtype forced (on the CPU too)."""
        torch = self.torch
        from p2p.training.config import TrainConfig, default_data_dir
        from p2p.training.trainer import Trainer

        cfg = TrainConfig(data=str(default_data_dir()), out=str(self.tmp / name), task="edges", size=64, ngf=8, ndf=8,
                          batch_size=2, device=str(self.device), progress=False, **overrides)
        t = Trainer(cfg, resume=resume)
        t.amp_dtype = amp_dtype
        t.scaler = torch.amp.GradScaler(self.device.type, enabled=amp_dtype == torch.float16)
        if resume is not None and resume["scaler"] and t.scaler.is_enabled():
            t.scaler.load_state_dict(resume["scaler"])
        return t

    def steps(self, trainer, n: int = 3) -> dict:
        loader = iter(trainer.loader(0, 0))
        for _ in range(n):
            x, y = (t.to(self.device) for t in next(loader)[:2])
            if trainer.cfg.channels_last:
                x, y = (t.contiguous(memory_format=self.torch.channels_last) for t in (x, y))
            losses = trainer.step(x, y)
            trainer.iteration += 1
        assert all(np.isfinite(v) for v in losses.values()), f"non-finite losses {losses}"
        assert all(p.dtype == self.torch.float32 for p in trainer.G.parameters()), "weights left fp32"
        return losses


# --- the checks ------------------------------------------------------------------------------
def check_amp_bf16(ctx: Context) -> str:
    torch = ctx.torch
    if ctx.cuda and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise Skip("this GPU has no native bf16 (pre-Ampere): p2p-train uses fp16 + GradScaler here")
    losses = ctx.steps(ctx.trainer("bf16", torch.bfloat16))
    return "losses " + ", ".join(f"{k} {v:.3f}" for k, v in losses.items())


def check_amp_fp16(ctx: Context) -> str:
    t = ctx.trainer("fp16", ctx.torch.float16)
    losses = ctx.steps(t)
    return f"losses finite, grad scale {t.scaler.get_scale():g}"


def check_channels_last(ctx: Context) -> str:
    torch = ctx.torch
    t = ctx.trainer("cl", None, channels_last=True)
    ctx.steps(t, 2)
    conv = next(p for p in t.G.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last), "G's weights are not channels_last"
    return "weights channels_last, losses finite"


def check_resume_across_amp(ctx: Context) -> str:
    torch = ctx.torch
    from p2p.training.checkpoint import load_checkpoint

    first = torch.bfloat16 if not ctx.cuda or torch.cuda.is_bf16_supported(including_emulation=False) else None
    first_name = "bf16" if first else "fp32"
    t = ctx.trainer("resume", first)
    ctx.steps(t, 2)
    t.save()
    state = load_checkpoint(ctx.tmp / "resume", map_location=ctx.device)
    t = ctx.trainer("resume", torch.float16, resume=state)  # a run without a scaler continues with one
    ctx.steps(t, 2)
    t.save()
    state = load_checkpoint(ctx.tmp / "resume", map_location=ctx.device)
    assert state["scaler"], "the fp16 run saved no grad scaler state"
    t = ctx.trainer("resume", first, resume=state)  # and back
    ctx.steps(t, 1)
    return f"{first_name} → fp16 → {first_name}, iteration {t.iteration}"


def check_process_group_save(ctx: Context) -> str:
    torch = ctx.torch
    import torch.distributed as dist
    from p2p.training.config import World
    from p2p.training.distributed import close_process_group, flagged_ranks, gather_objects, init_process_group

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    # World(size=2) only to take the multi-process path; the process group itself has one rank
    init_process_group(World(0, 2, 0), ctx.device)
    try:
        backend = dist.get_backend()
        if ctx.cuda:
            assert torch.cuda.current_device() == 0, "set_device did not run before the process group"
        t = ctx.trainer("pg", None)
        ctx.steps(t, 1)
        gathered = gather_objects(t.checkpoint_state()["rng"])  # what save() gathers on several ranks
        assert len(gathered) == 1 and flagged_ranks(True, ctx.device) == [0] and flagged_ranks(False, ctx.device) == []
        t.world = 2  # save() as rank 0 of a multi-rank run: gathers, then writes
        t.save()
        t.world = 1
    finally:
        close_process_group()
    assert not dist.is_initialized()
    return f"{backend}: all_gather_object, all_reduce, save(), destroy"


def check_parity(ctx: Context) -> str:
    torch = ctx.torch
    from p2p.runtime import contract
    from p2p.runtime.spec import ModelSpec
    from p2p.training.models import Generator, init_weights

    size, ngf = (256, 64) if ctx.cuda else (64, 8)
    torch.manual_seed(0)
    spec = ModelSpec.for_task("paired", size, ngf=ngf)
    gen = Generator(spec)
    init_weights(gen)
    x = torch.rand(1, 3, size, size) * 2 - 1
    masks = [torch.from_numpy(m) for m in contract.draw_masks(spec, np.random.default_rng(1), 1, size, size)]
    with torch.no_grad():
        ref = gen.train()(x, masks).numpy()
        torch.backends.cudnn.allow_tf32 = False  # TF32 would move fp32 convolutions ~1e-3 away
        torch.backends.cuda.matmul.allow_tf32 = False
        g = gen.to(ctx.device)
        out = g(x.to(ctx.device), [m.to(ctx.device) for m in masks]).cpu().numpy()
    diff = float(np.abs(out - ref).max())
    assert diff <= GPU_TOLERANCE, f"max diff {diff:.2e} > {GPU_TOLERANCE:.0e}"
    return f"{size}² ngf {ngf}: max diff {diff:.2e} ({ctx.device} vs CPU, TF32 off)"


def _onnx_model(ctx: Context, size: int, ngf: int):
    """A p2p ONNX file of the paper's U-Net (random weights) and its spec."""
    need("onnx", "onnxscript", "onnxruntime")
    torch = ctx.torch
    from p2p.export.onnx_export import export_onnx
    from p2p.runtime.spec import ModelSpec
    from p2p.training.models import Generator, init_weights

    torch.manual_seed(0)
    spec = ModelSpec.for_task("paired", size, ngf=ngf)
    gen = Generator(spec)
    init_weights(gen)
    return export_onnx(gen, spec, ctx.tmp / f"u{size}-{ngf}.onnx"), spec


def _cpu_reference(path, spec, image, masks) -> np.ndarray:
    import onnxruntime as ort
    from p2p.runtime import contract

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run([contract.OUTPUT], contract.feeds(spec, image, masks))[0]


def check_tensorrt_backend(ctx: Context) -> str:
    if not ctx.cuda:
        raise Skip("no CUDA GPU")
    need("tensorrt")
    if importlib.util.find_spec("cuda") is None:
        raise Skip("cuda-python not installed")
    from p2p.export.tensorrt_build import Shapes, build_engine
    from p2p.runtime import contract
    from p2p.runtime.trt_backend import TensorRTBackend

    path, spec = _onnx_model(ctx, 256, 32)
    engine = build_engine(path, ctx.tmp / "u.engine", shapes=Shapes((1, 256, 256), (1, 256, 256), (1, 512, 512)),
                          timing_cache=ctx.tmp / "timing.cache", log=lambda m: None)
    backend = TensorRTBackend(engine)
    rng = np.random.default_rng(0)
    diffs = []
    for size in (256, 512, 256):  # a larger frame re-binds bigger buffers; a smaller one reuses them
        image = rng.uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
        masks = contract.draw_masks(spec, rng, 1, size, size)
        out = backend.run(image, masks).copy()
        diffs.append(float(np.abs(out - _cpu_reference(path, spec, image, masks)).max()))
    backend.close()
    assert max(diffs) <= GPU_TOLERANCE, f"max diffs {diffs} > {GPU_TOLERANCE:.0e}"
    return f"fp32 engine at 256², 512², 256²: max diff {max(diffs):.2e} vs ORT CPU"


def check_ort_cuda(ctx: Context) -> str:
    need("onnxruntime")
    import onnxruntime as ort
    from p2p.runtime import contract
    from p2p.runtime.ort_backend import OrtBackend

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise Skip(f"onnxruntime {ort.__version__} has no CUDA provider (install onnxruntime-gpu)")
    path, spec = _onnx_model(ctx, 256, 32)
    backend = OrtBackend(path, "ort-cuda")  # raises if the session would not really run on CUDA
    assert backend.session.get_providers()[0] == "CUDAExecutionProvider"
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (1, 3, 256, 256)).astype(np.float32)
    masks = contract.draw_masks(spec, rng, 1, 256, 256)
    diff = float(np.abs(backend.run(image, masks) - _cpu_reference(path, spec, image, masks)).max())
    assert diff <= GPU_TOLERANCE, f"max diff {diff:.2e} > {GPU_TOLERANCE:.0e}"
    return f"ran on CUDAExecutionProvider (TF32 off): max diff {diff:.2e} vs ORT CPU"


CHECKS = [("amp-bf16", check_amp_bf16), ("amp-fp16", check_amp_fp16), ("channels-last", check_channels_last),
          ("resume-across-amp", check_resume_across_amp), ("process-group-save", check_process_group_save),
          ("parity", check_parity), ("tensorrt-backend", check_tensorrt_backend), ("ort-cuda", check_ort_cuda)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-dry-run", action="store_true", help="run the checks on the CPU (no GPU needed)")
    ap.add_argument("--only", help="comma-separated check names")
    ap.add_argument("--out", help="also write the results as Markdown here")
    args = ap.parse_args(argv)

    bootstrap_p2p()
    import torch

    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("FAIL cuda: torch.cuda.is_available() is False (use --cpu-dry-run on a machine without a GPU)")
        return 1
    device = "cpu" if args.cpu_dry_run else "cuda"
    where = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.machine()}), dry run"
    header = f"p2p gpu_check on {where}: torch {torch.__version__}, python {platform.python_version()}"
    print(header, flush=True)
    wanted = set(args.only.split(",")) if args.only else None
    rows, failed, start = [], 0, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(device, Path(tmp))
        for name, check in CHECKS:
            if wanted and name not in wanted:
                continue
            t = time.perf_counter()
            try:
                verdict, detail = "PASS", check(ctx)
            except Skip as exc:
                verdict, detail = "SKIP", str(exc)
            except Exception as exc:  # a failed check must not hide the others
                verdict, detail = "FAIL", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                failed += 1
                traceback.print_exc(limit=3)
            rows.append((verdict, name, detail, time.perf_counter() - t))
            print(f"{verdict} {name}: {detail} ({rows[-1][3]:.1f} s)", flush=True)
    total = time.perf_counter() - start
    print(f"{'FAILED' if failed else 'OK'}: {failed} failed, {sum(r[0] == 'PASS' for r in rows)} passed, "
          f"{sum(r[0] == 'SKIP' for r in rows)} skipped in {total:.0f} s")
    if args.out:
        lines = [f"## {header}", "", "| check | result | detail | seconds |", "|---|---|---|---|"]
        lines += [f"| {name} | {verdict} | {detail} | {sec:.1f} |" for verdict, name, detail, sec in rows]
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
