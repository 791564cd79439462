"""Which main job shows p2p best in about 10 minutes on 2 cores? Candidates at equal time, compared.

    python benchmarks/main_job.py --markdown benchmarks/main_job.md

README's command (a) trains edges→photo on the embedded clips. Each candidate (size, ngf,
ndf, iterations) gets about the same training time on this machine: its seconds per
iteration are measured first, all candidates interleaved, and its iterations are the
budget divided by that. Each is then scored with p2p-eval's code on the embedded
validation frames (held out, later in each clip) and its last sample grid is kept.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import ROOT, run_training  # noqa: E402

# (size, ngf, ndf): the generator width is the lever on a CPU (ngf 32 trains ~4x faster than 64)
CANDIDATES = [(128, 64, 64), (128, 32, 32), (128, 16, 16), (256, 16, 16)]


def seconds_per_iteration(candidates, threads: int, steps: int = 6) -> dict:
    """Median s/iter of each candidate's full D+G step, measured round by round (load hits all alike)."""
    import torch

    from p2p.training.config import TrainConfig, default_data_dir
    from p2p.training.trainer import Trainer

    torch.set_num_threads(threads)
    trainers, batches, times = {}, {}, {c: [] for c in candidates}
    for c in candidates:
        size, ngf, ndf = c
        t = Trainer(TrainConfig(data=str(default_data_dir()), out=tempfile.mkdtemp(), task="edges", size=size,
                                ngf=ngf, ndf=ndf, progress=False))
        trainers[c], batches[c] = t, next(iter(t.loader(0, 0)))
        t.step(*batches[c])  # warm-up
    for _ in range(steps):
        for c, t in trainers.items():
            start = time.perf_counter()
            t.step(*batches[c])
            times[c].append(time.perf_counter() - start)
    return {c: float(np.median(v)) for c, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=7.5, help="training budget per candidate (install comes on top)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "main_job")
    ap.add_argument("--candidates", default=None, help="SIZE:NGF:NDF,... (default: the built-in list)")
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)
    candidates = CANDIDATES if not args.candidates else [
        tuple(int(v) for v in c.split(":")) for c in args.candidates.split(",")]
    pace = seconds_per_iteration(candidates, args.threads)
    from p2p.evaluation.evaluate import evaluate
    from p2p.training.config import default_data_dir
    from p2p.training.torch_backend import TorchBackend

    rows = []
    for c in candidates:
        size, ngf, ndf = c
        iters = int(args.minutes * 60 / pace[c]) // 50 * 50
        name = f"s{size}_g{ngf}_d{ndf}"
        path = args.out / name
        seconds = run_training(path, [sys.executable, "-m", "p2p.training", "--out", str(path), "--size", str(size),
                                      "--ngf", str(ngf), "--ndf", str(ndf), "--iters", str(iters),
                                      "--epochs", str(iters // 50 // 2), "--epochs-decay", str(iters // 50 // 2),
                                      "--sample-every", str(iters // 5), "--no-progress"],
                               iters, name, threads=args.threads)
        res, _ = evaluate(TorchBackend(path), default_data_dir(), split="val", noise="per-frame", samples=1, seed=0)
        grid = sorted((path / "samples").glob("iter_*.png"))[-1]
        rows.append({"size": size, "ngf": ngf, "ndf": ndf, "s_per_iter": pace[c], "iters": iters,
                     "train_min": seconds / 60 if seconds else None, "grid": grid, **res["metrics"],
                     "mb": (path / "checkpoint.pt").stat().st_size / 1e6})
        print(f"{name}: {iters} iterations, L1 {res['metrics']['l1']:.4f}, SSIM {res['metrics']['ssim']:.3f}, "
              f"sharpness {res['metrics']['sharpness']:.3f}", file=sys.stderr, flush=True)
    lines = [f"Edges→photo on the embedded clips (50 training frames; 8 validation frames from later in each clip). "
             f"Each candidate gets about {args.minutes:g} min of training on this machine ({args.threads} threads): "
             "its s/iter was measured first, all candidates interleaved. Scores: p2p-eval's code on the validation "
             "frames, per-frame noise, seed 0 (as training validates).", "",
             "| size | ngf | ndf | s/iter | iterations | train min | L1 ↓ | SSIM ↑ | sharpness (→1) | checkpoint MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['ngf']} | {r['ndf']} | {r['s_per_iter']:.3f} | {r['iters']} | "
                     f"{r['train_min'] or 0:.1f} | {r['l1']:.4f} | {r['ssim']:.3f} | {r['sharpness']:.3f} | "
                     f"{r['mb']:.0f} |")
    if args.markdown:
        for r in rows:  # the last sample grid of each, beside the Markdown
            target = args.markdown.parent / f"main_job_s{r['size']}_g{r['ngf']}.png"
            shutil.copy(r["grid"], target)
            lines += ["", f"size {r['size']}, ngf {r['ngf']} (input | output | target):", "", f"![grid]({target.name})"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    (args.out / "results.json").write_text(json.dumps([{k: (str(v) if isinstance(v, Path) else v)
                                                        for k, v in r.items()} for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
