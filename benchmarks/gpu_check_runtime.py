"""gpu_check's TensorRT, ONNX Runtime, CUDA driver and install checks (see gpu_check.py for what each proves)."""
from __future__ import annotations

import numpy as np
from gpu_check_harness import EXPORT, GPU_TOLERANCE, Context, Skip, cpu_reference, inputs, registry, tensorrt_opset

CHECKS: list = []
check = registry(CHECKS)


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
