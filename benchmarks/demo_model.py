"""The shipped demo model against candidates: quality on the embedded clips' held-out frames, and speed.

    python benchmarks/demo_model.py runs/demo-separable --markdown runs/demo_model.md

Each model (the shipped runtime/demo/demo.onnx first, then each candidate run folder, exported
to ONNX if it has no model.onnx) is scored with p2p-eval's code on the validation frames of
the embedded clips (later in each clip than any training frame; per-frame noise, seed 0) and
timed frame→frame through the runtime at 256² on --threads threads, all models interleaved,
median of --rounds, with the load average recorded.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from importlib import resources
from pathlib import Path


def onnx_of(source: Path) -> Path:
    if source.suffix == ".onnx":
        return source
    path = source / "model.onnx"
    if not path.exists():
        from p2p.export.onnx_export import export_onnx
        from p2p.training.checkpoint import load_generator
        gen, spec, _ = load_generator(source)
        export_onnx(gen, spec, path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("candidates", nargs="+", type=Path, help="run folders (or .onnx files) to compare")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)

    import numpy as np

    from p2p.evaluation.evaluate import evaluate
    from p2p.runtime import Translator
    from p2p.runtime.backends import open_backend
    from p2p.training.config import default_data_dir

    models = {"shipped demo.onnx": Path(str(resources.files("p2p.runtime") / "demo" / "demo.onnx"))}
    models.update({str(c): onnx_of(c) for c in args.candidates})
    rows = {}
    for name, path in models.items():
        model = open_backend(path, "ort-cpu")
        res, _ = evaluate(model, default_data_dir(), split="val", noise="per-frame", samples=1, seed=0, rows=0)
        model.close()
        spec = model.spec
        rows[name] = {**res["metrics"], "spec": f"{spec.block} ngf {spec.ngf}", "mb": path.stat().st_size / 1e6}
    frame = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    load = os.getloadavg()[0]
    trs = {n: Translator(p, backend="ort-cpu", noise="fixed", seed=0, size=256, threads=args.threads)
           for n, p in models.items()}
    times = {n: [] for n in trs}
    for tr in trs.values():
        tr(frame), tr(frame)
    for _ in range(args.rounds):
        for n, tr in trs.items():
            tr(frame)
            t = time.perf_counter()
            tr(frame)
            times[n].append((time.perf_counter() - t) * 1e3)
    lines = [f"Edges→photo, the embedded clips' {rows[next(iter(rows))]['images']} validation frames (per-frame "
             f"noise, seed 0); frame→frame at 256² through the runtime, ONNX Runtime CPU, {args.threads} threads, "
             f"interleaved, median of {args.rounds}; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after.",
             "", "| model | blocks | MB | L1 ↓ | SSIM ↑ | sharpness (→1) | ms 256² | fps |", "|---|---|---|---|---|---|---|---|"]
    for n, r in rows.items():
        ms = statistics.median(times[n])
        lines.append(f"| {n} | {r['spec']} | {r['mb']:.1f} | {r['l1']:.4f} | {r['ssim']:.3f} | {r['sharpness']:.3f} | "
                     f"{ms:.2f} | {1e3 / ms:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
