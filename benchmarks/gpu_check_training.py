"""gpu_check's training and export checks (see gpu_check.py for what each proves)."""
from __future__ import annotations

import os
import socket

import numpy as np
from gpu_check_harness import EXPORT, FP16, GPU_TOLERANCE, Context, Skip, cpu_reference, inputs, registry, same_state

CHECKS: list = []
check = registry(CHECKS)


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
