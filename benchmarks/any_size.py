"""Training at any size and aspect, measured on CPU (writes benchmarks/any_size.md and any_size_samples.jpg).

(a) native aspect vs squash: edges→photo on the landscape (3:2, 481x321) BSDS photos of
    ../shared/data/photos, the same iterations and seed: trained at 384x256 vs at 320x320 (about
    the same pixels), the square model run on 384x256 frames the way p2p-translate runs it
    (squashed in, stretched back). Scored on the landscape val photos at 384x256: L1 (in the
    model's [-1, 1]) and SSIM, noise per-frame seed 0 (p2p-eval's default).
(b) 1, 2, 3 discriminator scales at 512x256 (--num-d; scale-width-crop of the same photos):
    the same scores, and seconds per iteration.
(c) peak memory (ru_maxrss of each p2p-train process, from os.wait4: the whole process,
    torch and Python included; CPU torch keeps no allocator statistics) and seconds per
    iteration at 256², 512x256, 512², 1024x512, batch 1, the paper's ngf = ndf = 64.

Every run goes through the shipping CLI (p2p-train) with OMP_NUM_THREADS=1, one process at a time.

    python benchmarks/any_size.py                      # the committed run (see any_size.md)
    python benchmarks/any_size.py --tiny --out /tmp/as # seconds: a smoke run, not a measurement
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
MEMORY_SIZES = ("256", "512x256", "512", "1024x512")


def landscape_photos(out: Path, limit_val: int) -> Path:
    """A dataset folder of links to the landscape (481x321) photos: train/ and val/."""
    data = out / "landscape"
    for split in ("train", "val"):
        (data / split).mkdir(parents=True, exist_ok=True)
        kept = [p for p in sorted((PHOTOS / split).glob("*.jpg")) if _is_landscape(p)]
        for p in kept[:limit_val] if split == "val" else kept:
            link = data / split / p.name
            if not link.exists():
                link.symlink_to(p)
    return data


def _is_landscape(path: Path) -> bool:
    h, w = cv2.imread(str(path)).shape[:2]
    return w > h


def train(run: Path, data: Path, iters: int, *flags: str) -> tuple[float, int]:
    """One p2p-train run (reused if it reached ``iters``); returns (seconds per iteration, peak RSS in bytes)."""
    done = run / "done.json"
    if done.exists():
        record = json.loads(done.read_text())
        if record["iters"] == iters:
            return record["s_per_it"], record["maxrss"]
    cmd = [sys.executable, "-m", "p2p.training", "--data", str(data), "--task", "edges", "--out", str(run),
           "--iters", str(iters), "--no-progress", "--sample-every", str(10 ** 6), "--save-every", str(10 ** 6),
           "--log-every", "1", "--device", "cpu", "--overwrite", *flags]
    print(" ".join(cmd[3:]), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    stderr = proc.stderr.read()
    if status != 0:
        raise SystemExit(f"p2p-train failed: {stderr[-2000:]}")
    rates = [r["img_per_s"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "img_per_s" in r]
    s_per_it = statistics.median(1 / r for r in rates[1:] or rates)  # the first iteration warms up
    maxrss = usage.ru_maxrss * 1024  # Linux: KiB
    done.write_text(json.dumps({"iters": iters, "s_per_it": s_per_it, "maxrss": maxrss}))
    return s_per_it, maxrss


def side_by_side(data: Path, variants: dict[str, dict], rounds: int) -> dict[str, float]:
    """Seconds per training step (D and G, batch 1) of each variant, measured in one process with the
    steps interleaved (round after round), so that the load of this shared machine hits all alike;
    the median over ``rounds``. The runs' own logs are timed at different moments and are not comparable."""
    import torch

    from p2p.training.trainer import TrainConfig, Trainer

    torch.set_num_threads(1)
    trainers, batches = {}, {}
    for name, flags in variants.items():
        cfg = TrainConfig(data=str(data), out=str(data.parent / f"timing-{len(trainers)}"), task="edges",
                          progress=False, **flags)
        cfg.validate()
        trainers[name] = Trainer(cfg)
        x, y, _ = next(iter(trainers[name].loader(0)))
        batches[name] = (x, y)
    times = {name: [] for name in variants}
    for _ in range(rounds + 1):  # the first round warms up
        for name, trainer in trainers.items():
            start = time.perf_counter()
            trainer.step(*batches[name])
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t[1:]) for name, t in times.items()}


def score(run: Path, frames: list[np.ndarray]) -> tuple[dict, list[np.ndarray]]:
    """L1 and SSIM of the run's generator on edges of ``frames`` at their own size (the Translator fits them)."""
    from p2p.evaluation import metrics as M
    from p2p.runtime.translator import Translator
    from p2p.training.torch_backend import TorchBackend

    tr = Translator(TorchBackend(run / "checkpoint.pt"), noise="per-frame", seed=0)
    outs = [tr.translate(f) for f in frames]
    l1 = np.mean([M.l1(o / 127.5 - 1, f / 127.5 - 1) for o, f in zip(outs, frames)])
    ssim = np.mean([M.ssim(o, f) for o, f in zip(outs, frames)])
    return {"l1": float(l1), "ssim": float(ssim)}, outs


def val_frames(data: Path, width: int, height: int, mode: str) -> list[np.ndarray]:
    """The val photos as the target frames: resized to WxH (a), or width-scaled and centre-cropped (b)."""
    from p2p.runtime.preprocess import apply_crop, draw_crop

    frames = []
    for p in sorted((data / "val").glob("*.jpg")):
        image = cv2.imread(str(p))
        h, w = image.shape[:2]
        frames.append(np.ascontiguousarray(apply_crop(image, draw_crop(None, mode, w, h, width, height, False),
                                                      width, height)))
    return frames


def edges_of(frame: np.ndarray) -> np.ndarray:
    from p2p.runtime.spec import ModelSpec

    spec = ModelSpec.for_task("edges", 256)
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(cv2.Canny(gray, spec.canny_low, spec.canny_high), cv2.COLOR_GRAY2BGR)


def grid(rows: list[list[np.ndarray]], labels: list[str], height: int = 160) -> np.ndarray:
    """Rows of images scaled to one height, a label above each column."""
    scaled = [[cv2.resize(im, (round(im.shape[1] * height / im.shape[0]), height), interpolation=cv2.INTER_AREA)
               for im in row] for row in rows]
    widths = [im.shape[1] for im in scaled[0]]
    head = np.full((24, sum(widths), 3), 255, np.uint8)
    x = 0
    for label, w in zip(labels, widths):
        cv2.putText(head, label, (x + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        x += w
    return np.vstack([head, *[np.hstack(row) for row in scaled]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "p2p-any-size")
    ap.add_argument("--iters", type=int, default=300, help="(a) and (b): iterations per run")
    ap.add_argument("--ngf", type=int, default=32, help="(a) and (b): ngf = ndf")
    ap.add_argument("--memory-iters", type=int, default=5, help="(c): iterations per size")
    ap.add_argument("--val", type=int, default=30, help="landscape val photos scored")
    ap.add_argument("--timing-rounds", type=int, default=6, help="(a) and (b): interleaved steps timed per variant")
    ap.add_argument("--tiny", action="store_true", help="seconds: a smoke run, not a measurement")
    ap.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "any_size.md")
    args = ap.parse_args()
    memory_sizes, memory_ngf = MEMORY_SIZES, 64
    if args.tiny:
        args.iters, args.ngf, args.memory_iters, args.val, memory_sizes, memory_ngf = 2, 4, 2, 2, ("64", "64x32"), 4
        args.timing_rounds = 1
        args.report = args.out / "any_size.md"
    args.out.mkdir(parents=True, exist_ok=True)
    data = landscape_photos(args.out, args.val)
    net = ["--ngf", str(args.ngf), "--ndf", str(args.ngf), "--seed", "0"]
    started = time.perf_counter()

    # (a) native 3:2 vs squashed into a square
    frames_a = val_frames(data, 384, 256, "resize-crop") if not args.tiny else val_frames(data, 96, 64, "resize-crop")
    native_size, square_size = ("384x256", "320") if not args.tiny else ("96x64", "64")
    rows_a, outs_a = [], {}
    variants_a = {"native 384x256": native_size, "squashed 320x320": square_size}
    steps_a = side_by_side(data, {name: {"size": size, "ngf": args.ngf, "ndf": args.ngf}
                                  for name, size in variants_a.items()}, args.timing_rounds)
    for name, size in variants_a.items():
        run = args.out / f"a-{size}"
        s_it, _ = train(run, data, args.iters, "--size", size, *net)
        scores, outs_a[name] = score(run, frames_a)
        rows_a.append(f"| {name} (`--size {size}`) | {scores['l1']:.4f} | {scores['ssim']:.4f} | {steps_a[name]:.2f} "
                      f"| {s_it:.2f} |")

    # (b) 1, 2, 3 discriminator scales at 512x256
    size_b = "512x256" if not args.tiny else "64x32"
    wb, hb = map(int, size_b.split("x"))
    frames_b = val_frames(data, wb, hb, "scale-width-crop")
    rows_b, outs_b = [], {}
    patch_b = {num_d: 16 if args.tiny and num_d > 1 else 70 for num_d in (1, 2, 3)}
    steps_b = side_by_side(data, {num_d: {"size": size_b, "preprocess": "scale-width-crop", "num_d": num_d,
                                          "patch": patch_b[num_d], "ngf": args.ngf, "ndf": args.ngf}
                                  for num_d in (1, 2, 3)}, args.timing_rounds)
    for num_d in (1, 2, 3):
        run = args.out / f"b-d{num_d}"
        s_it, _ = train(run, data, args.iters, "--size", size_b, "--preprocess", "scale-width-crop",
                        "--num-d", str(num_d), "--patch", str(patch_b[num_d]), *net)
        scores, outs_b[num_d] = score(run, frames_b)
        rows_b.append(f"| {num_d} | {scores['l1']:.4f} | {scores['ssim']:.4f} | {steps_b[num_d]:.2f} "
                      f"({steps_b[num_d] / steps_b[1]:.2f}x) | {s_it:.2f} |")

    # (c) memory and speed by size, the paper's width
    rows_c = []
    for size in memory_sizes:
        run = args.out / f"c-{size}"
        s_it, rss = train(run, data, args.memory_iters, "--size", size, "--ngf", str(memory_ngf),
                          "--ndf", str(memory_ngf))
        rows_c.append(f"| {size if 'x' in size else size + '²'} | {rss / 2 ** 20:.0f} | {s_it:.2f} |")
    minutes = (time.perf_counter() - started) / 60
    # the runs' own wall time (they are reused when a later invocation finds them done): config.json is
    # written as a run starts, done.json as it ends
    run_minutes = sum((r / "done.json").stat().st_mtime - (r / "config.json").stat().st_mtime
                      for r in args.out.iterdir() if (r / "done.json").exists()) / 60

    # samples: (a) edges | native | squashed | photo, (b) edges | 1 | 2 | 3 scales | photo
    pick = range(min(3, len(frames_a)))
    sample_a = grid([[edges_of(frames_a[i]), outs_a["native 384x256"][i], outs_a["squashed 320x320"][i],
                      frames_a[i]] for i in pick], ["edges", "native 384x256", "squashed 320x320", "photo"])
    sample_b = grid([[edges_of(frames_b[i]), *[outs_b[d][i] for d in (1, 2, 3)], frames_b[i]] for i in pick],
                    ["edges", "--num-d 1", "--num-d 2", "--num-d 3", "photo"])
    width = max(sample_a.shape[1], sample_b.shape[1])
    pad = lambda im: cv2.copyMakeBorder(im, 0, 8, 0, width - im.shape[1], cv2.BORDER_CONSTANT,  # noqa: E731
                                        value=(255, 255, 255))
    image_path = args.report.with_name("any_size_samples.jpg")
    cv2.imwrite(str(image_path), np.vstack([pad(sample_a), pad(sample_b)]), [cv2.IMWRITE_JPEG_QUALITY, 85])

    command = "OMP_NUM_THREADS=1 python benchmarks/any_size.py" + (" --tiny" if args.tiny else "")
    report = [
        "# Training at any size and aspect (CPU)", "",
        f"Produced by `{command}` on this shared 2-core machine, one process at a time, one thread each: "
        f"{run_minutes:.0f} min of training runs, {minutes:.0f} min for this invocation (which reuses runs already "
        "trained to the budget, and times and scores them). Data: the landscape (481x321, 3:2) BSDS photos of `../shared/data/photos`, "
        f"edges→photo; {len(list((data / 'train').glob('*.jpg')))} landscape training photos, {len(frames_a)} landscape val photos scored. Small networks and budgets "
        f"(ngf = ndf = {args.ngf}, {args.iters} iterations, batch 1, seed 0): the numbers compare the "
        "settings with each other, they are not converged models. Scores: L1 in the model's [-1, 1] "
        "(lower is better) and SSIM (higher is better) against the photo, noise per-frame seed 0. "
        "Speed: s/step side by side is the median of {rounds} training steps (D and G, batch 1) of the variants "
        "interleaved in one process, which is what compares them on a shared machine; s/iteration of its run is "
        "the median from the run's log (data loading included, timed at another moment, under another load).".format(
            rounds=args.timing_rounds), "",
        "## (a) Native aspect vs squashing to a square", "",
        "Same data, iterations and seed. The square model sees every 3:2 photo squashed into 320x320 (about "
        "the pixels of 384x256) and its output is stretched back to 384x256, as `p2p-translate` does with "
        "a square model (`--fit resize`).", "",
        "| training | val L1 | val SSIM | s/step, side by side | s/iteration, its run |", "|---|---|---|---|---|",
        *rows_a, "",
        "## (b) Discriminator scales at 512x256 (`--num-d`)", "",
        "`--preprocess scale-width-crop` (width scaled to 572, random 512x256 crop); val: width 512, centre "
        "crop. Patch 70 at every scale, no feature matching.", "",
        "| --num-d | val L1 | val SSIM | s/step, side by side | s/iteration, its run |", "|---|---|---|---|---|",
        *rows_b, "",
        f"## (c) Peak memory and speed by size (ngf = ndf = {memory_ngf}, batch 1, CPU)", "",
        f"{args.memory_iters} iterations per size. Memory: `ru_maxrss` of the whole p2p-train process (from "
        "`os.wait4`), which includes torch's libraries and the validation pass; CPU PyTorch keeps no allocator "
        "statistics and tracemalloc does not see its tensors.", "",
        "| size | peak RSS (MiB) | s/iteration |", "|---|---|---|", *rows_c, "",
        f"Samples (`{image_path.name}`): top (a), rows of edges | native | squashed | photo; bottom (b), "
        "edges | 1 | 2 | 3 scales | photo.", "",
        f"![samples]({image_path.name})", "",
    ]
    args.report.write_text("\n".join(report))
    print("\n".join(report))


if __name__ == "__main__":
    main()
