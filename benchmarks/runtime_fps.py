"""Frames per second at 256² (unet, ngf 64): PyTorch eager (train mode, the reference) against the
torch-free runtime on every backend present here, and the whole p2p-video pipeline.

    python benchmarks/runtime_fps.py --threads 2 --markdown benchmarks/runtime_fps.md

The generator is randomly initialised (speed does not depend on the weights) and exported
with p2p.export. Measurements are interleaved in rounds and the median round is reported,
so a busy machine slows every row alike instead of whichever ran during the busy spell.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "video" / "vtest_first10s.mp4"


def timed(fn, n: int) -> float:
    """Frames per second of ``fn`` (one frame per call) over n calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_clip(path: Path, size: int, frames: int) -> Path:
    """The first frames of the real street clip, at the model's size (so no resize is timed)."""
    cap = cv2.VideoCapture(str(CLIP))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (size, size))
    for _ in range(frames):
        ok, frame = cap.read()
        if not ok:
            cap.release()
            cap = cv2.VideoCapture(str(CLIP))
            ok, frame = cap.read()
        writer.write(cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA))
    writer.release()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="threads for PyTorch and ONNX Runtime alike")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=8, help="frames per round for each runtime row")
    ap.add_argument("--clip-frames", type=int, default=40, help="frames of the p2p-video pipeline clip")
    ap.add_argument("--int8", action="store_true",
                    help="also time an INT8 model (p2p-export --int8, calibrated on 8 clip frames)")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    from p2p.export.onnx_export import export_onnx
    from p2p.runtime import Translator, available_backends, contract
    from p2p.runtime.spec import ModelSpec
    from p2p.training.models import Generator, init_weights
    from p2p.video.pipeline import translate_video

    torch.set_num_threads(args.threads)
    spec = ModelSpec.for_task("paired", args.size, ngf=args.ngf)
    torch.manual_seed(0)
    gen = Generator(spec)
    init_weights(gen)
    gen.train()  # pix2pix runs the generator in train mode at test time (dropout, batch statistics)

    work = Path(tempfile.mkdtemp(prefix="p2p-bench-"))
    print(f"exporting unet ngf {args.ngf} at {args.size}² ...", flush=True)
    model = export_onnx(gen, spec, work / "model.onnx")
    clip = make_clip(work / "clip.mp4", args.size, args.clip_frames)
    rng = np.random.default_rng(0)
    frame = cv2.resize(cv2.VideoCapture(str(CLIP)).read()[1], (args.size, args.size))
    x_np = rng.uniform(-1, 1, (1, spec.in_channels, args.size, args.size)).astype(np.float32)
    x = torch.from_numpy(x_np)

    load_before = f"{os.getloadavg()[0]:.1f}"
    rows: dict[str, list[float]] = {}
    runners = {}

    def torch_eager():
        with torch.no_grad():
            gen(x)  # masks drawn inside, as in training

    runners["PyTorch eager, train mode (reference)"] = torch_eager

    # ONNX Runtime as most people first call it: default session options, session.run.
    plain_opts = ort.SessionOptions()
    plain_opts.intra_op_num_threads = args.threads
    plain = ort.InferenceSession(str(model), plain_opts, providers=["CPUExecutionProvider"])
    feeds = contract.feeds(spec, x_np, contract.ones_masks(spec, 1, args.size, args.size))
    runners["onnxruntime, default session options (untuned)"] = lambda: plain.run(None, feeds)

    translators = {}
    if "ort-cpu" in available_backends():  # the settings ort_tuning picks for this model here (measured now)
        os.environ["P2P_ORT_TUNE"] = "again"
        tuned = Translator(model, backend="ort-cpu", noise="per-frame", seed=0)
        os.environ["P2P_ORT_TUNE"] = "off"
        runners[f"p2p runtime, ort-cpu, tuned settings ({tuned.backend.settings.threads or 'default'} threads): "
                "frame → frame"] = lambda: tuned.translate(frame)
    for backend in available_backends():
        tr = Translator(model, backend=backend, noise="per-frame", seed=0, threads=args.threads)
        translators[backend] = tr
        runners[f"p2p runtime, {backend}: model only (Translator.run)"] = lambda tr=tr: tr.run(x_np, copy=False)
        runners[f"p2p runtime, {backend}: frame → frame"] = lambda tr=tr: tr.translate(frame)

    notes_int8 = []
    if args.int8:
        from p2p.export.int8 import kernel_counts, quantize_int8

        calib = work / "calib"
        calib.mkdir()
        cap = cv2.VideoCapture(str(CLIP))
        for i in range(8):
            cv2.imwrite(str(calib / f"{i}.png"), cap.read()[1])
        int8_path, _ = quantize_int8(model, work / "model.int8.onnx", calib, limit=8)
        int8 = Translator(int8_path, backend="ort-cpu", noise="off", threads=args.threads)
        runners["p2p runtime, ort-cpu, INT8 model (p2p-export --int8): model only"] = lambda: int8.run(x_np, copy=False)
        runners["p2p runtime, ort-cpu, INT8 model: frame → frame"] = lambda: int8.translate(frame)
        fp32_out = translators["ort-cpu"].run(x_np, int8.sampler(1, args.size, args.size))
        diff = np.abs(int8.run(x_np) - fp32_out)
        kernels = kernel_counts(int8_path)
        notes_int8.append(f"INT8 (QDQ, every convolution an integer QLinearConv: {kernels.get('QLinearConv', 0)} of "
                          f"them, {kernels.get('Conv', 0) + kernels.get('ConvTranspose', 0)} left in float; "
                          f"calibrated on 8 street frames) differs from fp32 by up to {diff.max():.3f} (mean "
                          f"{diff.mean():.4f}) on [-1, 1] outputs, noise off, random weights: a different model "
                          "numerically (its quality on a trained model: benchmarks/compact.md).")

    pipeline_tr = translators.get("ort-cpu") or next(iter(translators.values()))
    pipeline_name = f"p2p-video pipeline ({pipeline_tr.backend_name}: decode → translate → encode)"

    def pipeline_round() -> float:
        stats = translate_video(pipeline_tr, clip, work / "out.mp4")
        return stats.throughput

    for fn in runners.values():  # warm-up: first runs allocate and pick kernels
        fn()
    for r in range(args.rounds):
        for name, fn in runners.items():
            n = max(2, args.frames // 2) if name.startswith("PyTorch") else args.frames
            rows.setdefault(name, []).append(timed(fn, n))
        rows.setdefault(pipeline_name, []).append(pipeline_round())
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    ref = statistics.median(rows["PyTorch eager, train mode (reference)"])
    runtime_key = f"p2p runtime, {pipeline_tr.backend_name}: frame → frame"
    table = ["| what | frames/s | ms/frame | × PyTorch eager |", "|---|---:|---:|---:|"]
    for name, values in rows.items():
        fps = statistics.median(values)
        table.append(f"| {name} | {fps:.2f} | {1000 / fps:.1f} | {fps / ref:.2f}× |")
    pipe = statistics.median(rows[pipeline_name]) / statistics.median(rows[runtime_key])
    machine = (f"{cpu_name()} ({os.cpu_count()} CPUs, load average {load_before} before, "
               f"{os.getloadavg()[0]:.1f} after), {args.threads} threads; torch {torch.__version__}, "
               f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())}), OpenCV {cv2.__version__}")
    notes = [
        f"unet, ngf {args.ngf}, {args.size}×{args.size}, batch 1, fp32; median of {args.rounds} interleaved rounds.",
        f"Pipeline: {args.clip_frames} frames of the real street clip at {args.size}² (mp4v in, mp4v out); "
        f"it reaches {100 * pipe:.0f}% of the runtime's own frames/s.",
        f"Machine: {machine}.",
        *notes_int8,
    ]
    text = "\n".join(table + [""] + [f"- {n}" for n in notes])
    print()
    print(text)
    if args.markdown:
        command = "python benchmarks/runtime_fps.py " + " ".join(
            f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
            for k, v in vars(args).items() if k != "markdown" and v not in (None, False))
        args.markdown.write_text(
            "# Runtime frames/s (CPU)\n\n"
            f"Command (from the repository root, venv active):\n\n```\n{command} --markdown {args.markdown}\n```\n\n"
            + text + "\n")


if __name__ == "__main__":
    main()
