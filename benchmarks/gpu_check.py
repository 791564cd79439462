"""GPU check for p2p-export: TensorRT engine vs ONNX Runtime on identical masks, and timings.

    python benchmarks/gpu_check.py [--size 256 --ngf 64 --batch 1 --runs 50] [--checkpoint RUN] [--out FILE.md]

Runs what the machine allows, in under five minutes on one GPU:

- always: export the generator (the paper's unet_256 with random weights, or
  --checkpoint) to fp32 and fp16 ONNX; ONNX Runtime CPU on the fp32 file is the
  reference output for one fixed image and one fixed set of dropout masks;
- CUDA torch: PyTorch CUDA (fp32 with TF32 off; fp16 autocast) timed, parity vs the reference;
- onnxruntime-gpu: ORT CUDA fp32/fp16 timed, parity;
- TensorRT + CUDA: fp32 and fp16 engines built with export/tensorrt_build.py, run on the
  same masks: fp32 must be within 1e-3 of the reference; fp16 is reported.

Without a GPU it says so and exits 0 after the CPU parity check. Exit 1 if a
required parity check fails. Prints a Markdown table (also written to --out).
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

FP32_GPU_TOLERANCE = 1e-3


def bootstrap_p2p() -> None:
    """Import p2p from this checkout even where the package is not pip-installed (a bare GPU box)."""
    try:
        import p2p.export  # noqa: F401
        return
    except ImportError:
        pass
    root = Path(__file__).resolve().parents[1]
    pkg = types.ModuleType("p2p")
    pkg.__path__ = []
    sys.modules["p2p"] = pkg
    for sub in ("runtime", "training", "export"):
        spec = importlib.util.spec_from_file_location(
            f"p2p.{sub}", root / sub / "__init__.py", submodule_search_locations=[str(root / sub)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"p2p.{sub}"] = module
        spec.loader.exec_module(module)
        setattr(pkg, sub, module)


class Report:
    def __init__(self):
        self.rows, self.notes, self.failures = [], [], []

    def row(self, backend, precision, ms=None, diff=None, limit=None):
        ok = "" if limit is None or diff is None else (" ✓" if diff <= limit else " ✗ FAIL")
        if limit is not None and diff is not None and diff > limit:
            self.failures.append(f"{backend} {precision}: max diff {diff:.2e} > {limit:.0e}")
        self.rows.append((backend, precision, "—" if ms is None else f"{ms:.2f}",
                          "—" if ms is None else f"{1000 / ms:.1f}",
                          "—" if diff is None else f"{diff:.2e}{ok}"))
        print(f"  {backend:<28} {precision:<5} "
              f"{'' if ms is None else f'{ms:8.2f} ms/frame'}  {'' if diff is None else f'max diff {diff:.2e}{ok}'}",
              flush=True)

    def note(self, text):
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def markdown(self, header: str) -> str:
        lines = [header, "", "| backend | precision | ms/frame | frames/s | max abs diff vs ORT CPU fp32 |",
                 "|---|---|---|---|---|"]
        lines += [f"| {' | '.join(r)} |" for r in self.rows]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        if self.failures:
            lines += ["", "**FAILED:** " + "; ".join(self.failures)]
        return "\n".join(lines) + "\n"


def timed(fn, runs: int, sync=lambda: None) -> float:
    """Median wall time of fn() in ms, after warm-up, synchronising each run."""
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--checkpoint", help="p2p-train run folder or checkpoint (default: random paper weights)")
    ap.add_argument("--no-fp16", action="store_true", help="skip the fp16 variants")
    ap.add_argument("--out", help="also write the Markdown table here")
    args = ap.parse_args(argv)

    bootstrap_p2p()
    import onnxruntime as ort
    import torch

    from p2p.export.fp16 import to_fp16
    from p2p.export.onnx_export import build_onnx, write_model
    from p2p.runtime import contract
    from p2p.runtime.spec import ModelSpec
    from p2p.training.models import Generator, init_weights

    report = Report()
    if args.checkpoint:
        from p2p.training.checkpoint import load_generator
        gen, spec, _ = load_generator(args.checkpoint)
        size = args.size if args.size % spec.multiple == 0 else spec.image_size
    else:
        torch.manual_seed(0)
        spec = ModelSpec.for_task("paired", args.size, ngf=args.ngf)
        gen = Generator(spec)
        init_weights(gen)
        size = args.size
    n = args.batch
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    header = (f"## p2p gpu_check: {device}\n\n{spec.generator} depth {spec.depth} ngf {spec.ngf}, batch {n}, "
              f"{size}x{size}, {args.runs} runs (median); torch {torch.__version__}, onnxruntime {ort.__version__}")
    print(header.replace("## ", ""), flush=True)

    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (n, spec.in_channels, size, size)).astype(np.float32)
    masks = contract.draw_masks(spec, np.random.default_rng(1), n, size, size)
    feed = contract.feeds(spec, image, masks)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        model32 = build_onnx(gen, spec)
        onnx32 = write_model(model32, spec, "fp32", tmp / "model.onnx")
        onnx16 = None if args.no_fp16 else write_model(to_fp16(model32), spec, "fp16", tmp / "model.fp16.onnx")
        report.note(f"ONNX export took {time.perf_counter() - t:.0f} s")

        # the reference: ORT CPU on the fp32 file
        cpu = ort.InferenceSession(str(onnx32), providers=["CPUExecutionProvider"])
        ref = cpu.run([contract.OUTPUT], feed)[0]
        report.row("ONNX Runtime CPU", "fp32", timed(lambda: cpu.run([contract.OUTPUT], feed), min(args.runs, 10)) / n, 0.0)
        net = gen.float().train()
        with torch.no_grad():
            torch_cpu = net(torch.from_numpy(image), [torch.from_numpy(m) for m in masks]).numpy()
        report.row("PyTorch CPU (reference check)", "fp32", None, float(np.abs(torch_cpu - ref).max()), 1e-4)

        if cuda:
            check_torch_cuda(report, net, image, masks, ref, args, n)
        else:
            report.note("no CUDA GPU (torch.cuda.is_available() is False): PyTorch CUDA, ORT CUDA and TensorRT "
                        "checks skipped; run this on a GPU machine")
        check_ort_gpu(report, ort, onnx32, onnx16, feed, ref, args, n)
        check_tensorrt(report, onnx32, onnx16, spec, feed, ref, args, n, size, cuda, tmp)

    text = report.markdown(header)
    print("\n" + text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    if report.failures:
        print("FAILED: " + "; ".join(report.failures), file=sys.stderr)
        return 1
    return 0


def check_torch_cuda(report, net, image, masks, ref, args, n):
    import torch

    # TF32 would move fp32 convolutions ~1e-3 away from the CPU reference; time and check true fp32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    gpu = net.cuda()
    x = torch.from_numpy(image).cuda()
    ms = [torch.from_numpy(m).cuda() for m in masks]
    with torch.no_grad():
        out = gpu(x, ms)
        report.row("PyTorch CUDA eager", "fp32", timed(lambda: gpu(x, ms), args.runs, torch.cuda.synchronize) / n,
                   float(np.abs(out.cpu().numpy() - ref).max()), FP32_GPU_TOLERANCE)
        if not args.no_fp16:
            def half():
                with torch.autocast("cuda", dtype=torch.float16):
                    return gpu(x, ms)
            out = half().float()
            report.row("PyTorch CUDA eager autocast", "fp16", timed(half, args.runs, torch.cuda.synchronize) / n,
                       float(np.abs(out.cpu().numpy() - ref).max()))
    net.cpu()


def check_ort_gpu(report, ort, onnx32, onnx16, feed, ref, args, n):
    from p2p.runtime import contract

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        report.note(f"onnxruntime has no CUDAExecutionProvider ({', '.join(ort.get_available_providers())}): "
                    f"ORT GPU skipped (install onnxruntime-gpu instead of onnxruntime)")
        return
    for path, precision in ((onnx32, "fp32"), (onnx16, "fp16")):
        if path is None:
            continue
        try:
            sess = ort.InferenceSession(str(path), providers=[
                ("CUDAExecutionProvider", {"cudnn_conv_use_max_workspace": "1"}), "CPUExecutionProvider"])
            out = sess.run([contract.OUTPUT], feed)[0]
            ms = timed(lambda: sess.run([contract.OUTPUT], feed), args.runs) / n
        except Exception as exc:  # a broken CUDA/cuDNN install should not hide the other checks
            report.note(f"ORT CUDA {precision} failed: {str(exc).splitlines()[0][:200]}")
            continue
        report.row("ONNX Runtime CUDA (host IO)", precision, ms, float(np.abs(out - ref).max()),
                   FP32_GPU_TOLERANCE if precision == "fp32" else None)


def check_tensorrt(report, onnx32, onnx16, spec, feed, ref, args, n, size, cuda, tmp):
    from p2p.export.tensorrt_build import Shapes, TensorRTUnavailable, build_engine, import_tensorrt

    try:
        trt, logger, _ = import_tensorrt()
    except TensorRTUnavailable as exc:
        report.note(f"TensorRT check skipped: {exc}")
        return
    try:
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError("torch without CUDA")
    except Exception as exc:
        report.note(f"TensorRT found but this check allocates GPU buffers with CUDA torch ({exc}): skipped")
        return
    shapes = Shapes.single(spec, n, size, size)
    cache = tmp / "timing.cache"
    for precision in ("fp32", "fp16"):
        if precision == "fp16" and onnx16 is None:
            continue
        engine_path = tmp / f"model.{precision}.engine"
        t = time.perf_counter()
        try:
            build_engine(onnx32, engine_path, shapes=shapes, fp16=precision == "fp16",
                         fp16_onnx_path=onnx16, timing_cache=cache, log=lambda m: print("  " + m, flush=True))
        except Exception as exc:
            report.failures.append(f"TensorRT {precision} build failed: {str(exc).splitlines()[0][:300]}")
            report.note(f"TensorRT {precision} build failed: {exc}")
            continue
        report.note(f"TensorRT {trt.__version__} {precision} engine built in {time.perf_counter() - t:.0f} s")
        run, out = trt_runner(trt, logger, engine_path.read_bytes(), feed)
        ms = timed(run, args.runs, torch.cuda.synchronize) / n
        run()
        torch.cuda.synchronize()
        diff = float(np.abs(out.float().cpu().numpy() - ref).max())
        report.row(f"TensorRT {trt.__version__}", precision, ms, diff,
                   FP32_GPU_TOLERANCE if precision == "fp32" else None)


def trt_runner(trt, logger, engine_bytes, feed):
    """A closure that runs the engine once on CUDA torch buffers, and its output tensor."""
    import torch
    from p2p.runtime import contract

    dtypes = {trt.float32: torch.float32, trt.float16: torch.float16}
    engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
    context = engine.create_execution_context()
    buffers = {}
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    for name in names:
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            t = torch.from_numpy(feed[name]).cuda().to(dtypes[engine.get_tensor_dtype(name)]).contiguous()
            context.set_input_shape(name, tuple(t.shape))
            buffers[name] = t
    for name in names:
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            shape = tuple(context.get_tensor_shape(name))
            buffers[name] = torch.empty(shape, dtype=dtypes[engine.get_tensor_dtype(name)], device="cuda")
    for name, t in buffers.items():
        context.set_tensor_address(name, t.data_ptr())
    torch.cuda.synchronize()  # the copies above ran on the default stream
    stream = torch.cuda.Stream()

    def run():
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        stream.synchronize()

    return run, buffers[contract.OUTPUT]


if __name__ == "__main__":
    sys.exit(main())
