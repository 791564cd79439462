"""The paper's ablations (Isola et al. 2017, §4.2–4.4) at CPU scale, on facades labels→photo.

Trains every variant with one fixed iteration budget and seed through the
shipping CLI (``p2p-train``), then scores each on the val split with the same
code as ``p2p-eval`` (L1, PSNR, SSIM, sharpness, and the FCN-style
segmentation score), and prints a Markdown table plus the paper's orderings.

    python benchmarks/ablation.py                    # the committed run (see ablation.md)
    python benchmarks/ablation.py --iters 400        # a reduced budget
    python benchmarks/ablation.py --tiny --out /tmp/abl   # seconds: what the test runs

Runs already trained to the budget are reused, so an interrupted run continues
where it stopped. Each training process gets one thread; ``--jobs`` of them run
side by side (2 cores: ``--jobs 2``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from p2p.runtime.files import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "facades"


@dataclass(frozen=True)
class Variant:
    name: str
    group: str            # which of the paper's tables it belongs to
    objective: str = "l1+cgan"
    generator: str = "unet"
    patch: int = 70


# The L1+cGAN / U-Net / 70×70 run is the baseline shared by all three groups.
VARIANTS = [
    Variant("L1", "objective", objective="l1"),
    Variant("cGAN", "objective", objective="cgan"),
    Variant("L1+GAN", "objective", objective="l1+gan"),
    Variant("L1+cGAN", "objective"),
    Variant("encoder-decoder", "generator", generator="encdec"),
    Variant("PatchGAN 1", "patch", patch=1),
    Variant("PatchGAN 16", "patch", patch=16),
    Variant("PatchGAN 286", "patch", patch=286),
]


def run_dir(out: Path, v: Variant) -> Path:
    return out / v.name.replace(" ", "_").replace("+", "_plus_")


def train_command(v: Variant, args) -> list[str]:
    return [sys.executable, "-m", "p2p.training", "--data", str(args.data), "--direction", "BtoA",
            "--out", str(run_dir(args.out, v)), "--size", str(args.size), "--ngf", str(args.ngf),
            "--ndf", str(args.ngf), "--iters", str(args.iters), "--seed", str(args.seed),
            "--objective", v.objective, "--generator", v.generator, "--patch", str(v.patch),
            "--device", "cpu", "--save-every", str(args.iters), "--sample-every", str(max(args.iters // 4, 1)),
            "--no-progress"]


def trained_iterations(path: Path) -> int:
    """Iterations of the run's last log record (0 when there is none): decides whether to (re)train."""
    if not (path / "checkpoint.pt").exists():
        return 0
    records, _ = read_jsonl(path / "log.jsonl")  # a torn last line (a killed run) is dropped
    return max((r.get("iter", 0) for r in records), default=0)


def train(v: Variant, args) -> float:
    """Train one variant in its own one-thread process; returns seconds spent (0 if reused)."""
    return run_training(run_dir(args.out, v), train_command(v, args), args.iters, v.name)


def run_training(path: Path, command: list[str], iters: int, label: str, threads: int = 1) -> float:
    """Run a p2p-train command for the run folder ``path`` (log beside it); seconds spent, 0 if already done."""
    if trained_iterations(path) >= iters:
        return 0.0
    if path.exists():  # a run cut short: start it again (resume would need the same flags anyway)
        import shutil
        shutil.rmtree(path)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    path.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.train.log", "w") as log:
        proc = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"training {label} failed (exit {proc.returncode}); see {path.parent / (path.name + '.train.log')}")
    seconds = time.perf_counter() - t0
    print(f"trained {label:16s} {iters} iterations in {seconds:.0f} s", file=sys.stderr, flush=True)
    return seconds


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="facades folder with train/ and val/")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation", help="where runs are written")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--ngf", type=int, default=32, help="generator and discriminator width (paper: 64)")
    p.add_argument("--iters", type=int, default=1500, help="the fixed iteration budget of every variant")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="training processes side by side (one thread each)")
    p.add_argument("--val", type=int, default=None, help="evaluate on the first N val images (default all)")
    p.add_argument("--samples", type=int, default=4, help="dropout samples per image for the diversity metric")
    p.add_argument("--cache", type=Path, default=None, help="segmenter cache folder (default ~/.cache/p2p)")
    p.add_argument("--seg-iters", type=int, default=None, help="segmenter training iterations")
    p.add_argument("--variants", default=None,
                   help="comma-separated subset of: " + ", ".join(v.name for v in VARIANTS))
    p.add_argument("--train-only", action="store_true", help="train the runs, skip evaluation")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke version: 64², ngf 8, few iterations")
    p.add_argument("--markdown", type=Path, default=None, help="also write the results table here")
    args = p.parse_args(argv)
    if args.tiny:  # 128², not 64²: the 286×286 PatchGAN needs at least 128² (its last BatchNorm sees 1×1 at 64²)
        args.size, args.ngf, args.iters, args.samples = 128, 8, 2, 2
        args.val = args.val or 4
        args.seg_iters = args.seg_iters or 20
    args.data, args.out = args.data.resolve(), args.out.resolve()
    names = {v.name: v for v in VARIANTS}
    if args.variants:
        wanted = [n.strip() for n in args.variants.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            p.error(f"unknown variant(s) {unknown}; choose from {list(names)}")
        args.selected = [names[n] for n in wanted]
    else:
        args.selected = list(VARIANTS)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if not (args.data / "train").is_dir() or not (args.data / "val").is_dir():
        raise SystemExit(f"{args.data} needs train/ and val/ (the facades set from ../shared/data)")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max(args.jobs, 1)) as pool:
        train_seconds = dict(zip([v.name for v in args.selected], pool.map(lambda v: train(v, args), args.selected)))
    train_wall = time.perf_counter() - t0
    times = args.out / "train_times.json"
    if times.exists():  # runs reused from an earlier invocation keep the time they took then
        before = json.loads(times.read_text())
        reused_all = not any(train_seconds.values())
        for k, sec in before.get("per_run_s", {}).items():
            train_seconds[k] = train_seconds.get(k) or sec
        if reused_all:
            train_wall = before.get("wall_s", train_wall)
    times.write_text(json.dumps(
        {"wall_s": round(train_wall, 1), "per_run_s": {k: round(s, 1) for k, s in train_seconds.items()}}, indent=1))
    args.train_seconds = train_seconds
    if args.train_only:
        return 0
    return evaluate_all(args, train_wall)


# --- evaluation -------------------------------------------------------------------------
def evaluate_all(args, train_wall: float) -> int:
    """Score every run on val with p2p-eval's code; print and (optionally) write the Markdown."""
    import torch

    torch.set_num_threads(1)
    from p2p.evaluation.evaluate import evaluate, write_outputs
    from p2p.training.torch_backend import TorchBackend

    seg_cfg = {}
    if args.tiny:
        seg_cfg = {"size": 64, "width": 8, "iters": args.seg_iters}
    elif args.seg_iters:
        seg_cfg = {"iters": args.seg_iters}
    t0 = time.perf_counter()
    results, pages = {}, {}
    for v in args.selected:
        model = TorchBackend(run_dir(args.out, v))
        res, page = evaluate(model, args.data, split="val", noise="per-frame", samples=args.samples, seed=args.seed,
                             limit=args.val, rows=4, segmenter=True, seg_config=seg_cfg, cache=args.cache,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
        res["model_name"] = v.name
        write_outputs(run_dir(args.out, v) / "eval-val", res, page)
        results[v.name], pages[v.name] = res, page
        m, s = res["metrics"], res["segmentation"]["generated"]
        print(f"evaluated {v.name:16s} L1 {m['l1']:.4f} sharpness {m['sharpness']:.3f} "
              f"seg per-pixel {s['per_pixel_acc']:.3f}", file=sys.stderr, flush=True)
    eval_wall = time.perf_counter() - t0
    grid = args.out / "ablation_samples.jpg"
    write_grid(grid, pages)
    if args.markdown:  # the grid travels beside the Markdown that shows it
        import shutil
        shutil.copy(grid, args.markdown.parent / grid.name)
        grid = Path(grid.name)
    text = markdown(args, results, train_wall, eval_wall, grid)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


def write_grid(path: Path, pages: dict) -> None:
    """Rows of val images: labels | every run's output | real photo (``pages``: run name → evaluate()'s rows)."""
    import cv2
    import numpy as np

    names = list(pages)
    rows = []
    for i in range(min(len(p) for p in pages.values())):
        first = pages[names[0]][i]
        rows.append(np.concatenate([first["input"]] + [pages[n][i]["output"] for n in names] + [first["target"]], 1))
    grid = np.concatenate(rows, 0)
    header = np.full((22, grid.shape[1], 3), 255, np.uint8)
    w = first["input"].shape[1]
    for k, name in enumerate(["labels"] + names + ["real"]):
        cv2.putText(header, name[:14], (k * w + 3, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * w / 128, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), np.concatenate([header, grid], 0), [cv2.IMWRITE_JPEG_QUALITY, 90])


def orderings(results: dict) -> list[tuple[str, bool, str]]:
    """The paper's claims, checked on these numbers: (claim, holds, the numbers behind it).

    Claims whose variants were not run (``--variants``) are left out.
    """
    m = {k: r["metrics"] for k, r in results.items()}
    seg = {k: r["segmentation"]["generated"] for k, r in results.items()}
    quantities = ("per_pixel_acc", "per_class_acc", "class_iou")

    def seg_claim(a, b):  # a at least as good as b on at least two of the three segmentation numbers
        ok = sum(seg[a][q] >= seg[b][q] for q in quantities) >= 2
        return ok, " vs ".join("/".join(f"{seg[k][q]:.3f}" for q in quantities) for k in (a, b))

    def sharper(a, b):
        return m[a]["sharpness"] > m[b]["sharpness"], f"{m[a]['sharpness']:.3f} vs {m[b]['sharpness']:.3f}"

    def lower_l1(a, b):
        return m[a]["l1"] < m[b]["l1"], f"{m[a]['l1']:.4f} vs {m[b]['l1']:.4f}"

    base = "L1+cGAN"
    claims = [("L1+cGAN is sharper than L1 (sharpness ratio)", sharper, "L1"),
              ("L1+cGAN beats L1 on the segmentation score", seg_claim, "L1"),
              ("L1+cGAN beats cGAN alone on the segmentation score", seg_claim, "cGAN"),
              ("L1+cGAN beats L1+GAN (unconditional D) on the segmentation score", seg_claim, "L1+GAN"),
              ("U-Net beats encoder-decoder on L1", lower_l1, "encoder-decoder"),
              ("U-Net beats encoder-decoder on the segmentation score", seg_claim, "encoder-decoder"),
              ("PatchGAN 70 >= 1 on the segmentation score", seg_claim, "PatchGAN 1"),
              ("PatchGAN 70 >= 286 on the segmentation score", seg_claim, "PatchGAN 286")]
    return [(text, *check(base, other)) for text, check, other in claims if base in results and other in results]


def markdown(args, results: dict, train_wall: float, eval_wall: float, grid: Path) -> str:
    first = next(iter(results.values()))
    real = first["segmentation"]["real"]
    lines = [f"Facades labels→photo (BtoA), {args.size}², ngf = ndf = {args.ngf}, {args.iters} iterations "
             f"(batch 1), seed {args.seed}; val: {first['metrics']['images']} images, noise per-frame, "
             f"K = {args.samples} dropout samples. Training wall time {train_wall / 60:.1f} min "
             f"({args.jobs} jobs), evaluation {eval_wall / 60:.1f} min.", "",
             "| variant | L1 ↓ | PSNR ↑ | SSIM ↑ | sharpness (→1) | dropout std | seg. per-pixel ↑ | per-class ↑ | class IoU ↑ |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v in args.selected:
        r = results[v.name]
        m, s = r["metrics"], r["segmentation"]["generated"]
        label = v.name + (" (U-Net, 70×70: the baseline)" if v.name == "L1+cGAN" else "")
        lines.append(f"| {label} | {m['l1']:.4f} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['sharpness']:.3f} | "
                     f"{(m['dropout_std'] or 0):.4f} | {s['per_pixel_acc']:.3f} | {s['per_class_acc']:.3f} | {s['class_iou']:.3f} |")
    lines.append(f"| real photos (upper bound) | 0 | ∞ | 1 | 1 | – | {real['per_pixel_acc']:.3f} | "
                 f"{real['per_class_acc']:.3f} | {real['class_iou']:.3f} |")
    per_run = getattr(args, "train_seconds", {})
    if per_run:
        lines += ["", "Training time per run (one thread each, sharing the machine): " + ", ".join(
            f"{k} {v / 60:.1f} min" for k, v in per_run.items() if v) + "."]
    lines += ["", f"Majority-class per-pixel accuracy (chance): {first['segmentation']['majority_baseline']:.3f}; "
              f"chance per-class accuracy 1/12 = {1 / 12:.3f}.", "", "| the paper's claim | holds here? | numbers |",
              "|---|---|---|"]
    for claim, ok, nums in orderings(results):
        lines.append(f"| {claim} | {'yes' if ok else '**no**'} | {nums} |")
    lines += ["", "Val images, one row each: labels | " + " | ".join(results) + " | real photo:", "",
              f"![sample grid]({grid})"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
