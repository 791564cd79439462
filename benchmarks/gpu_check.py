"""The one command for a GPU machine: do p2p's CUDA paths work here? PASS/FAIL/SKIP lines, under 5 minutes.

    python benchmarks/gpu_check.py [--out benchmarks/gpu_check.md]
    python benchmarks/gpu_check.py --cpu-dry-run        # the same checks on the CPU (the test suite runs this)

It runs with whatever is installed: nothing optional is imported before a check that needs
it, and a check whose packages or hardware are missing says SKIP and why (a GPU image with
torch alone still runs every torch check). Each check on a tiny model unless said otherwise;
the issue-19 item it proves on real hardware in brackets:

- amp-bf16, amp-fp16: training steps under autocast (fp16 with a GradScaler) give finite
  losses and keep fp32 weights; channels-last: a training step in channels_last memory format;
- resume-across-amp: a checkpoint loaded with map_location=<the GPU> resumes under the other
  precision, both ways [1];
- resume-exact: with --deterministic, 2 steps + save + load onto the GPU + 2 steps equal 4
  steps bit for bit, weights and RNG [1];
- ddp-1-rank: a 1-rank NCCL process group (gloo on the CPU), DistributedDataParallel-wrapped
  nets with SyncBatchNorm, their collectives and save();
- parity: the paper's generator on CUDA vs the CPU, TF32 off, same masks;
- export-from-gpu: p2p-export's pipeline on a checkpoint trained on the GPU, its ONNX output on
  ONNX Runtime CPU against the generator on the CPU;
- opset17: the opset-17 graph holds nothing TensorRT 8.6 rejects and computes what opset 18
  does [3]; tensorrt-opset17: TensorRT here builds it and matches ONNX Runtime CPU [3];
- fp16-norm-onnx: the FP16 ONNX keeps every normalisation node fp32 and stays within the FP16
  tolerance [4]; tensorrt-fp16-norm: an FP16 engine of the reduce form, pre-norm activations
  in the hundreds, stays within the FP16 tolerance [4];
- tensorrt-backend: an fp32 engine built by p2p-export's builder, run by the native backend at
  two frame sizes (its buffers grow), against ONNX Runtime on the CPU;
- ort-cuda, ort-tensorrt: ONNX Runtime's CUDA / TensorRT provider, asserted to be the one that
  ran, against ONNX Runtime CPU [5]; ort-fallback: the installed onnxruntime is driven without
  a silent fallback (enable_fallback from 1.23, the caught retry before) [6];
- cuda-driver: cuda-python sees the driver, or says in one line what is missing [7];
- install-name: p2p is installed as p2p-pix2pix, and PyPI's unrelated p2p is not here [2].

Exit 1 if any FAILs. --out also writes the results as Markdown, with the date, GPU and versions.
"""
from __future__ import annotations

import argparse
import datetime
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
EXPORT = ("onnx", "onnxscript", "onnxruntime")  # what writing and checking an ONNX file needs
FP16 = ("onnxconverter_common",)
VERSIONS = ("torch", "onnx", "onnxscript", "onnxconverter_common", "onnxruntime", "tensorrt", "cuda")


class Skip(Exception):
    """This check cannot run here; the message says what is missing."""


def bootstrap_p2p() -> None:
    """Import p2p from this checkout even where the package is not pip-installed (a bare GPU box).

    Each subpackage's __init__ imports nothing optional (p2p.export's names load lazily), so
    nothing optional is imported before a check asks for it.
    """
    try:
        import p2p.runtime.spec  # noqa: F401  (torch-free: p2p is installed)
        return
    except ImportError:  # not installed (or PyPI's unrelated p2p is): this checkout's folders
        for name in [n for n in sys.modules if n == "p2p" or n.startswith("p2p.")]:
            del sys.modules[name]
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
    missing = [m for m in modules if not installed(m)]
    if missing:
        raise Skip(f"{', '.join(missing)} not installed")


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a stand-in module
        return False


CHECKS: list[tuple[str, object]] = []


def check(name: str, *, needs: tuple[str, ...] = (), gpu: bool = False):
    """Register a check: it SKIPs, with the reason, without a CUDA GPU (``gpu``) or one of ``needs``."""
    def register(fn):
        def run(ctx):
            if gpu and not ctx.cuda:
                raise Skip("no CUDA GPU")
            need(*needs)
            return fn(ctx)
        CHECKS.append((name, run))
        return fn
    return register


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


# --- training on the device -------------------------------------------------------------------------
@check("amp-bf16", needs=("torch",))
def check_amp_bf16(ctx: Context) -> str:
    torch = ctx.torch
    if ctx.cuda and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise Skip("this GPU has no native bf16 (pre-Ampere): p2p-train uses fp16 + GradScaler here")
    losses = ctx.steps(ctx.trainer("bf16", torch.bfloat16))
    return "losses " + ", ".join(f"{k} {v:.3f}" for k, v in losses.items())


@check("amp-fp16", needs=("torch",))
def check_amp_fp16(ctx: Context) -> str:
    t = ctx.trainer("fp16", ctx.torch.float16)
    ctx.steps(t)
    return f"losses finite, grad scale {t.scaler.get_scale():g}"


@check("channels-last", needs=("torch",))
def check_channels_last(ctx: Context) -> str:
    torch = ctx.torch
    t = ctx.trainer("cl", None, channels_last=True)
    ctx.steps(t, 2)
    conv = next(p for p in t.G.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last), "G's weights are not channels_last"
    return "weights channels_last, losses finite"


@check("resume-across-amp", needs=("torch",))
def check_resume_across_amp(ctx: Context) -> str:
    torch = ctx.torch
    from p2p.training.checkpoint import load_checkpoint

    first = torch.bfloat16 if not ctx.cuda or torch.cuda.is_bf16_supported(including_emulation=False) else None
    first_name = "bf16" if first else "fp32"
    t = ctx.trainer("resume", first)
    ctx.steps(t, 2)
    t.save()
    # onto the device, RNG states included: resume must copy them back to the CPU (issue 19, item 1)
    state = load_checkpoint(ctx.tmp / "resume", map_location=ctx.device)
    t = ctx.trainer("resume", torch.float16, resume=state)  # a run without a scaler continues with one
    ctx.steps(t, 2)
    t.save()
    state = load_checkpoint(ctx.tmp / "resume", map_location=ctx.device)
    assert state["scaler"], "the fp16 run saved no grad scaler state"
    t = ctx.trainer("resume", first, resume=state)  # and back
    ctx.steps(t, 1)
    return f"{first_name} → fp16 → {first_name}, iteration {t.iteration}, loaded with map_location={ctx.device}"


@check("resume-exact", needs=("torch",))
def check_resume_exact(ctx: Context) -> str:
    torch = ctx.torch
    from p2p.training.checkpoint import load_checkpoint

    try:
        straight = ctx.trainer("exact-a", None, deterministic=True, amp=False)
        ctx.steps(straight, 4)
        rng = torch.get_rng_state()
        split = ctx.trainer("exact-b", None, deterministic=True, amp=False)
        ctx.steps(split, 2)
        split.save()
        state = load_checkpoint(ctx.tmp / "exact-b", map_location=ctx.device)  # RNG states onto the GPU too
        resumed = ctx.trainer("exact-b", None, resume=state, deterministic=True, amp=False)
        ctx.steps(resumed, 2)
    finally:  # --deterministic is process-wide: leave the other checks as they were
        torch.use_deterministic_algorithms(False)
    assert resumed.iteration == straight.iteration == 4
    for net in ("G", "D"):
        assert same_state(getattr(straight, net).state_dict(), getattr(resumed, net).state_dict()), f"{net} differs"
    assert torch.equal(torch.get_rng_state(), rng), "the dropout RNG went elsewhere after the resume"
    return f"2 steps + save + load onto {ctx.device} + 2 steps == 4 steps, weights and RNG bit for bit (--deterministic)"


@check("ddp-1-rank", needs=("torch",))
def check_ddp_1_rank(ctx: Context) -> str:
    import torch.distributed as dist

    from p2p.training.config import World
    from p2p.training.distributed import close_process_group, flagged_ranks, init_process_group

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    world = World(0, 2, 0)  # the multi-process path (DDP, SyncBN, gathers) over a 1-rank process group
    init_process_group(world, ctx.device)
    try:
        backend = dist.get_backend()
        if ctx.cuda:
            assert ctx.torch.cuda.current_device() == 0, "set_device did not run before the process group"
        t = ctx.trainer("ddp", None, world=world, sync_bn=True)
        assert type(t.G_step).__name__ == "DistributedDataParallel", type(t.G_step).__name__
        ctx.steps(t, 2)
        assert flagged_ranks(True, ctx.device) == [0] and flagged_ranks(False, ctx.device) == []
        t.save()  # gathers every rank's RNG state, then rank 0 writes
    finally:
        close_process_group()
    assert not dist.is_initialized()
    return f"{backend}: DDP + SyncBatchNorm steps, all_gather_object, all_reduce, save(), destroy"


@check("parity", needs=("torch",))
def check_parity(ctx: Context) -> str:
    torch = ctx.torch
    from p2p.runtime import contract

    size, ngf = (256, 64) if ctx.cuda else (64, 8)
    gen, spec = ctx.generator(size, ngf)
    x = torch.rand(1, 3, size, size) * 2 - 1
    masks = [torch.from_numpy(m) for m in contract.draw_masks(spec, np.random.default_rng(1), 1, size, size)]
    with torch.no_grad():
        ref = gen.train()(x, masks).numpy()
        torch.backends.cudnn.allow_tf32 = False  # TF32 would move fp32 convolutions ~1e-3 away
        torch.backends.cuda.matmul.allow_tf32 = False
        g = gen.to(ctx.device)
        out = g(x.to(ctx.device), [m.to(ctx.device) for m in masks]).cpu().numpy()
    diff = contract.compare_outputs(out, ref).max
    assert diff <= GPU_TOLERANCE, f"max diff {diff:.2e} > {GPU_TOLERANCE:.0e}"
    return f"{size}² ngf {ngf}: max diff {diff:.2e} ({ctx.device} vs CPU, TF32 off)"


# --- export -------------------------------------------------------------------------------------------
@check("export-from-gpu", needs=("torch", *EXPORT, *FP16))
def check_export_from_gpu(ctx: Context) -> str:
    from p2p.runtime import contract  # the one output comparator
    torch = ctx.torch
    from p2p.export.exporter import export_checkpoint
    from p2p.training.checkpoint import load_generator

    t = ctx.trainer("export", None)
    ctx.steps(t, 1)
    t.save()
    path = export_checkpoint(ctx.tmp / "export", ctx.tmp / "export" / "model.onnx", log=lambda m: None)
    gen, spec, _ = load_generator(ctx.tmp / "export")  # on the CPU
    import onnx
    ctx.cache.setdefault((spec.image_size, spec.ngf, "instance"), (onnx.load(str(path)), spec))  # one trace less
    image, masks = inputs(spec, spec.image_size, batch=2)
    with torch.no_grad():
        ref = gen.train()(torch.from_numpy(image), [torch.from_numpy(m) for m in masks]).numpy()
    diff = contract.compare_outputs(cpu_reference(path, spec, image, masks), ref).max
    assert diff <= 1e-4, f"max diff {diff:.2e} > 1e-4"
    return f"checkpoint trained on {ctx.device} → ONNX: ORT CPU vs PyTorch CPU max diff {diff:.1e} (batch 2)"


@check("opset17", needs=("torch", *EXPORT))
def check_opset17(ctx: Context) -> str:
    import onnx

    from p2p.export.opset17 import tensorrt8_problems
    from p2p.runtime import contract  # the one output comparator

    size = 64
    diffs = []
    for norm in ("instance", "reduce"):
        (old, spec), (new, _) = (ctx.onnx_file(size, 8, norm=norm, opset=o) for o in (18, 17))
        problems = tensorrt8_problems(onnx.load(str(new)))
        assert not problems, f"{norm}: {problems[:3]}"
        image, masks = inputs(spec, size * 2, batch=2)
        diffs.append(contract.compare_outputs(cpu_reference(old, spec, image, masks), cpu_reference(new, spec, image, masks)).max)
    assert max(diffs) <= 1e-6, f"max diffs {diffs}"
    return f"both norms: nothing TensorRT 8.6 rejects; = opset 18 on ORT CPU (max diff {max(diffs):.1e})"


@check("fp16-norm-onnx", needs=("torch", *EXPORT, *FP16))
def check_fp16_norm_onnx(ctx: Context) -> str:
    import onnx
    import onnxruntime as ort

    from p2p.export.fp16 import FP16_TOLERANCE, norm_nodes
    from p2p.runtime import contract

    provider = "CUDAExecutionProvider" if ctx.cuda and "CUDAExecutionProvider" in ort.get_available_providers() \
        else "CPUExecutionProvider"
    if provider == "CUDAExecutionProvider":
        from p2p.runtime.ort_providers import load_gpu_libraries
        load_gpu_libraries("ort-cuda")
    (path32, spec), (path16, _) = (ctx.onnx_file(64, 8, norm="reduce", fp16=f) for f in (False, True))
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path16)))
    types_ = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.output)}
    groups = norm_nodes(onnx.load(str(path32)))
    names = {n.name for g in groups for n in g}
    kept = [n for n in model.graph.node if n.name in names and all(types_.get(o) == onnx.TensorProto.FLOAT
                                                                     for o in n.output)]
    assert groups and len(kept) == len(names), f"{len(names) - len(kept)} normalisation nodes left fp16"
    image, masks = inputs(spec, 64)
    sess = ort.InferenceSession(str(path16), providers=[provider])
    out = sess.run([contract.OUTPUT], contract.feeds(spec, image, masks))[0]
    diff = contract.compare_outputs(out, cpu_reference(path32, spec, image, masks)).max
    assert diff <= FP16_TOLERANCE, f"max diff {diff:.2e} > {FP16_TOLERANCE}"
    return f"{len(groups)} normalisations, {len(names)} nodes fp32; {sess.get_providers()[0]} fp16 vs fp32 {diff:.1e}"


# --- TensorRT -----------------------------------------------------------------------------------------
def engine_vs_cpu(ctx: Context, onnx_path, spec, sizes, *, fp16: bool = False, name: str = "u") -> list[float]:
    """Build an engine for ``sizes`` with p2p-export's builder, run it natively, diff against ORT CPU."""
    from p2p.export.tensorrt_build import Shapes, build_engine
    from p2p.runtime import contract  # the one output comparator
    from p2p.runtime.trt_backend import TensorRTBackend

    lo, hi = min(sizes), max(sizes)
    engine = build_engine(onnx_path, ctx.tmp / f"{name}.engine", shapes=Shapes((1, lo, lo), (1, lo, lo), (1, hi, hi)),
                          fp16=fp16, timing_cache=ctx.tmp / "timing.cache", log=lambda m: None)
    backend = TensorRTBackend(engine)
    diffs = []
    try:
        for size in sizes:  # a larger frame re-binds bigger buffers; a smaller one reuses them
            image, masks = inputs(spec, size, seed=size)
            out = backend.run(image, masks).copy()
            assert np.isfinite(out).all(), "non-finite output"
            diffs.append(contract.compare_outputs(out, cpu_reference(onnx_path, spec, image, masks)).max)
    finally:
        backend.close()
    return diffs


@check("tensorrt-backend", needs=("torch", *EXPORT, "tensorrt", "cuda"), gpu=True)
def check_tensorrt_backend(ctx: Context) -> str:
    opset = tensorrt_opset()
    path, spec = ctx.onnx_file(256, 32, opset=opset)
    diffs = engine_vs_cpu(ctx, path, spec, (256, 512, 256))
    assert max(diffs) <= GPU_TOLERANCE, f"max diffs {diffs} > {GPU_TOLERANCE:.0e}"
    return f"fp32 engine (opset {opset}) at 256², 512², 256²: max diff {max(diffs):.2e} vs ORT CPU"


@check("tensorrt-opset17", needs=("torch", *EXPORT, "tensorrt", "cuda"), gpu=True)
def check_tensorrt_opset17(ctx: Context) -> str:
    import tensorrt

    worst = []
    for norm in ("instance", "reduce"):
        path, spec = ctx.onnx_file(256, 16, norm=norm, opset=17)
        worst.append(max(engine_vs_cpu(ctx, path, spec, (256, 512), name=f"o17-{norm}")))
    assert max(worst) <= GPU_TOLERANCE, f"max diffs {worst} > {GPU_TOLERANCE:.0e}"
    return f"TensorRT {tensorrt.__version__} parses the opset-17 graph (both norms): max diff {max(worst):.2e}"


@check("tensorrt-fp16-norm", needs=("torch", *EXPORT, "tensorrt", "cuda"), gpu=True)
def check_tensorrt_fp16_norm(ctx: Context) -> str:
    torch = ctx.torch
    import tensorrt

    from p2p.export.fp16 import FP16_TOLERANCE
    from p2p.export.onnx_export import export_onnx
    from p2p.export.tensorrt_build import installed_tensorrt, trt_major
    if trt_major(tensorrt) >= 11:
        raise Skip(f"TensorRT {installed_tensorrt()} is strongly typed: precision comes from the FP16 ONNX "
                   "(fp16-norm-onnx)")
    gen, spec = ctx.generator(256, 16, seed=3)
    with torch.no_grad():
        for p in gen.parameters():
            if p.dim() == 4:
                p.mul_(30)  # pre-norm activations in the hundreds: a 256² sum of squares overflows fp16
    path = export_onnx(gen, spec, ctx.tmp / "loud.onnx", norm="reduce", opset=tensorrt_opset())
    diffs = engine_vs_cpu(ctx, path, spec, (256,), fp16=True, name="loud")
    assert max(diffs) <= 5 * FP16_TOLERANCE, f"max diff {max(diffs):.2e}: statistics computed in fp16?"
    return f"FP16 engine, reduce form, loud activations: max diff {max(diffs):.2e} vs fp32 ORT CPU"


# --- ONNX Runtime -------------------------------------------------------------------------------------
def ort_provider_check(ctx: Context, backend_name: str, tolerance: float) -> str:
    import onnxruntime as ort

    from p2p.runtime import contract  # the one output comparator
    from p2p.runtime.ort_backend import OrtBackend
    from p2p.runtime.ort_providers import PROVIDERS, load_gpu_libraries

    provider = PROVIDERS[backend_name]
    if provider not in ort.get_available_providers():
        raise Skip(f"onnxruntime {ort.__version__} has no {provider} (install onnxruntime-gpu: P2P_GPU=cu12 ./install.sh)")
    path, spec = ctx.onnx_file(256, 32)
    backend = OrtBackend(path, backend_name, trt_cache=ctx.tmp / "ort-trt")  # raises if it would not really run
    assert backend.session.get_providers()[0] == provider
    image, masks = inputs(spec, 256)
    diff = contract.compare_outputs(backend.run(image, masks), cpu_reference(path, spec, image, masks)).max
    assert diff <= tolerance, f"max diff {diff:.2e} > {tolerance:.0e}"
    missing = load_gpu_libraries(backend_name)
    return f"ran on {provider}: max diff {diff:.2e} vs ORT CPU" + (f" (not loaded: {'; '.join(missing)})" if missing else "")


@check("ort-cuda", needs=("torch", *EXPORT), gpu=True)
def check_ort_cuda(ctx: Context) -> str:
    return ort_provider_check(ctx, "ort-cuda", GPU_TOLERANCE)  # TF32 off in its options


@check("ort-tensorrt", needs=("torch", *EXPORT), gpu=True)
def check_ort_tensorrt(ctx: Context) -> str:
    return ort_provider_check(ctx, "ort-tensorrt", 1e-2)  # TensorRT's own TF32 default


@check("ort-fallback", needs=("onnxruntime",))
def check_ort_fallback(ctx: Context) -> str:
    import onnxruntime as ort

    from p2p.runtime.ort_providers import can_disable_fallback
    from p2p.runtime.trt_backend import version_tuple

    takes_it = can_disable_fallback(ort.InferenceSession)
    assert takes_it == (version_tuple(ort.__version__) >= (1, 23)), f"onnxruntime {ort.__version__}: {takes_it}"
    how = "enable_fallback=0 passed" if takes_it else "no enable_fallback (< 1.23): its retry is caught"
    return f"onnxruntime {ort.__version__}: {how}"


# --- the CUDA driver and the install ------------------------------------------------------------------
@check("cuda-driver")
def check_cuda_driver(ctx: Context) -> str:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python before 12.6.2
        except ImportError:
            raise Skip("cuda-python not installed") from None
    from p2p.runtime.trt_backend import _cuda_version, _version, cuda_problem

    problem = cuda_problem(cudart)
    if ctx.cuda:
        assert problem is None, problem
    else:  # the dry run: no exception, one line that says what is missing
        assert problem is None or ("\n" not in problem and problem.startswith(("no NVIDIA driver", "no CUDA device",
                                                                               "the NVIDIA driver"))), problem
    driver, runtime = _version(cudart.cudaDriverGetVersion), _version(cudart.cudaRuntimeGetVersion)
    return f"driver CUDA {_cuda_version(driver)}, runtime {_cuda_version(runtime)}" + (f": {problem}" if problem else "")


@check("install-name")
def check_install_name(ctx: Context) -> str:
    from importlib import metadata

    from p2p.runtime.install_hints import DISTRIBUTION

    try:
        metadata.distribution("p2p")
    except metadata.PackageNotFoundError:
        pass
    else:
        raise AssertionError("a distribution named p2p is installed (PyPI's unrelated project, or this one under its "
                             "old name): pip uninstall p2p, then ./install.sh again")
    try:
        return f"{DISTRIBUTION} {metadata.version(DISTRIBUTION)}; no PyPI p2p"
    except metadata.PackageNotFoundError:
        raise Skip(f"{DISTRIBUTION} is not pip-installed here (p2p runs from the checkout)") from None


def versions() -> str:
    """What is installed, for the header: the package versions and onnxruntime's providers."""
    found = []
    for name in VERSIONS:
        if not installed(name):
            continue
        for module_name in (("cuda.bindings", "cuda") if name == "cuda" else (name,)):
            try:
                module = __import__(module_name, fromlist=["__version__"])
            except Exception as exc:  # missing part, or installed but broken: the checks will say more
                error = type(exc).__name__
                continue
            found.append(f"{'cuda-python' if name == 'cuda' else name} {getattr(module, '__version__', '?')}")
            break
        else:
            found.append(f"{name} (cannot import: {error})")
    if installed("onnxruntime"):
        try:
            import onnxruntime as ort
            found.append("ORT providers " + "/".join(p.removesuffix("ExecutionProvider")
                                                     for p in ort.get_available_providers()))
        except Exception:
            pass
    return ", ".join(found)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-dry-run", action="store_true", help="run the checks on the CPU (no GPU needed)")
    ap.add_argument("--only", help="comma-separated check names")
    ap.add_argument("--out", help="also write the results as Markdown here")
    args = ap.parse_args(argv)

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts: resume-exact's --deterministic
    bootstrap_p2p()
    if not installed("torch"):
        print("FAIL torch: not installed (install PyTorch for your CUDA first: see README, GPU machines)")
        return 1
    import torch

    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("FAIL cuda: torch.cuda.is_available() is False (use --cpu-dry-run on a machine without a GPU)")
        return 1
    device = "cpu" if args.cpu_dry_run else "cuda"
    where = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.machine()}), dry run"
    header = (f"p2p gpu_check on {where}, {datetime.date.today().isoformat()}: python {platform.python_version()}, "
              f"{versions()}")
    print(header, flush=True)
    wanted = set(args.only.split(",")) if args.only else None
    rows, failed, start = [], 0, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(device, Path(tmp))
        for name, run in CHECKS:
            if wanted and name not in wanted:
                continue
            t = time.perf_counter()
            try:
                verdict, detail = "PASS", run(ctx)
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
