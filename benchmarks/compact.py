"""Real time on a CPU: the teacher against plain and separable students, fp32 and INT8, in one table.

    python benchmarks/compact.py train                                   # train (or reuse) every run; hours on 2 cores
    python benchmarks/compact.py measure --markdown benchmarks/compact.md   # export, score (cached), time
    python benchmarks/compact.py time --markdown benchmarks/compact.md      # timings again, on a quiet machine
    python benchmarks/compact.py all --tiny --out /tmp/compact              # a minutes-long smoke run

Facades labels→photo (BtoA) at 128², as benchmarks/distill.py: a teacher (ngf 64, the paper's
blocks), then every student distilled from it (p2p-train --teacher) with the same iteration
budget: the paper's blocks at ngf 16, 12, 8, and the separable blocks (--block separable) at
two widths, the ones in the goal row with two seeds. ``train`` trains one run at a time and
reuses finished runs. ``measure`` exports each run to ONNX and INT8 (calibrated on training
inputs), scores both with p2p-eval's code on val (per-frame noise, facade segmentation score,
sharpness, L1; cached in each run folder) and times them: frame→frame through the runtime,
all models interleaved round by round, median of --rounds, at 256² and for a 640×480 frame at
its own resolution (--fit pad: the model runs at 640×512). ``time`` redoes only the timings
from the cached scores. The load average is recorded with every table: on a shared machine the
large teacher slows more than a small student, so compare on a quiet one.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import ROOT, run_training, write_grid  # noqa: E402
from distill import macs_per_frame  # noqa: E402
from runtime_fps import cpu_name  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "facades"
SAMPLE_ROWS = 4
SIZES = {"256²": (256, 256, "resize"), "640×480": (640, 480, "pad")}  # frame (w, h) and how it is fitted


@dataclass(frozen=True)
class Run:
    label: str       # the model, e.g. "separable 32"
    ngf: int
    block: str = "conv"
    seed: int = 0

    @property
    def folder(self) -> str:
        return "teacher" if self.label == "teacher" else f"{self.block}{self.ngf}_seed{self.seed}"


def runs_for(args) -> list[Run]:
    runs = [Run("teacher", 64)]
    for block, widths in (("conv", args.plain), ("separable", args.separable)):
        for w in widths:
            label = f"{'plain' if block == 'conv' else 'separable'} {w}"
            seeds = args.seeds if label in args.two_seeds else args.seeds[:1]
            runs += [Run(label, w, block, s) for s in seeds]
    return runs


# --- training ----------------------------------------------------------------------------------
def train(args) -> None:
    teacher = args.out / "teacher"
    runs = runs_for(args)  # the teacher, then the new blocks first (the seed-0 runs before the second seeds)
    for run in sorted(runs, key=lambda r: (r.label != "teacher", r.block != "separable", r.seed)):
        iters = args.teacher_iters if run.label == "teacher" else args.student_iters
        # constant LR for 3/5 of the budget, then linear decay to zero (400 facades per epoch)
        epochs = max(round(iters * 3 / 5 / 400), 1)
        decay = max(round(iters / 400) - epochs, 1)
        cmd = [sys.executable, "-m", "p2p.training", "--data", str(args.data), "--direction", "BtoA",
               "--out", str(args.out / run.folder), "--size", str(args.size), "--ngf", str(run.ngf), "--ndf", "64",
               "--block", run.block, "--epochs", str(epochs), "--epochs-decay", str(decay), "--iters", str(iters),
               "--seed", str(run.seed), "--device", "cpu", "--workers", "0", "--save-every", str(iters),
               "--sample-every", str(max(iters // 4, 1)), "--no-progress"]
        if run.label != "teacher":
            cmd += ["--teacher", str(teacher)]
        run_training(args.out / run.folder, cmd, iters, f"{run.label} (seed {run.seed})", threads=args.threads)


# --- export and quality ------------------------------------------------------------------------
def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def export(args, run: Run) -> dict:
    """model.onnx and model.int8.onnx of a run (reused when newer than its checkpoint), and their sizes."""
    from p2p.export.int8 import kernel_counts, quantize_int8
    from p2p.export.onnx_export import export_onnx
    from p2p.training.checkpoint import load_generator
    from p2p.training.models import count_parameters

    folder = args.out / run.folder
    gen, spec, _ = load_generator(folder)
    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    fresh = lambda p: p.exists() and p.stat().st_mtime > (folder / "checkpoint.pt").stat().st_mtime  # noqa: E731
    if not fresh(fp32):
        export_onnx(gen, spec, fp32)
    if not fresh(int8):
        quantize_int8(fp32, int8, args.data / "train", limit=args.calib)  # calibrated on training inputs
    kernels = kernel_counts(int8)
    return {"fp32": fp32, "int8": int8, "params": count_parameters(gen), "gmac": macs_per_frame(gen, 256),
            "mb": {"fp32": fp32.stat().st_size / 1e6, "int8": int8.stat().st_size / 1e6},
            "int8_kernels": {k: kernels.get(k, 0) for k in ("QLinearConv", "Conv", "ConvTranspose")}}


def quality(args, run: Run, precision: str, path: Path) -> dict:
    """p2p-eval's scores of an exported model on val through the runtime, cached beside it (with its
    first val images: ``samples()``)."""
    cache = path.with_suffix(".quality.json")
    key = {"model": digest(path), "val": args.val, "seed": 0, "seg": not args.tiny}
    if cache.exists() and path.with_suffix(".samples.npz").exists():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            return stored["scores"]
    import numpy as np

    from p2p.evaluation.evaluate import evaluate
    from p2p.runtime.backends import open_backend

    seg = {"size": 64, "width": 8, "iters": 20} if args.tiny else {}
    model = open_backend(path, "ort-cpu")
    res, page = evaluate(model, args.data, split="val", noise="per-frame", samples=1, seed=0, limit=args.val,
                         rows=SAMPLE_ROWS, segmenter=True, seg_config=seg, cache=args.cache,
                         log=lambda m: print(m, file=sys.stderr, flush=True))
    np.savez_compressed(path.with_suffix(".samples.npz"),
                        **{k: np.stack([row[k] for row in page]) for k in ("input", "output", "target")})
    model.close()
    scores = {"l1": res["metrics"]["l1"], "sharpness": res["metrics"]["sharpness"],
              "seg": res["segmentation"]["generated"]["per_pixel_acc"],
              "seg_real": res["segmentation"]["real"]["per_pixel_acc"], "images": res["metrics"]["images"]}
    cache.write_text(json.dumps({"key": key, "scores": scores}, indent=1))
    print(f"scored {run.label} seed {run.seed} {precision}: {scores}", file=sys.stderr, flush=True)
    return scores


def samples(path: Path) -> list[dict]:
    """The val rows ``quality`` kept for a model: [{"input", "output", "target"}, ...] (BGR uint8)."""
    import numpy as np
    data = np.load(path.with_suffix(".samples.npz"))
    return [{k: data[k][i] for k in ("input", "output", "target")} for i in range(len(data["output"]))]


# --- timing ------------------------------------------------------------------------------------------
def time_models(paths: dict[str, Path], threads: int, rounds: int, tuned: bool = False) -> dict:
    """ms frame→frame per (name, size) through the runtime; all models interleaved, round by round.

    ``tuned``: each model with the ONNX Runtime settings ort_tuning picks (threads not forced).
    """
    import numpy as np

    from p2p.runtime import Translator

    rng = np.random.default_rng(0)
    results = {}
    for size, (w, h, fit) in SIZES.items():
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        options = {} if tuned else {"threads": threads}
        translators = {k: Translator(p, backend="ort-cpu", noise="fixed", seed=0, size=f"{w}x{h}" if fit == "pad"
                                     else w, fit=fit, **options) for k, p in paths.items()}
        times = {k: [] for k in paths}
        for tr in translators.values():  # warm-up
            tr(frame), tr(frame)
        for _ in range(rounds):
            for k, tr in translators.items():
                tr(frame)  # untimed: the previous model's ORT workers may still be spinning
                t = time.perf_counter()
                tr(frame)
                times[k].append((time.perf_counter() - t) * 1e3)
        for k, tr in translators.items():
            results[(k, size)] = statistics.median(times[k])
            results[(k, "settings")] = tr.backend.settings
            tr.close()
    return results


# --- the table ---------------------------------------------------------------------------------------
def mean(values):
    return sum(values) / len(values)


def markdown(args, runs, info, scores, timed, tuned, load) -> str:
    labels = list(dict.fromkeys(r.label for r in runs))
    by_label = {lab: [r for r in runs if r.label == lab] for lab in labels}
    t = "teacher"
    ref = {k: mean([scores[(r.folder, "fp32")][k] for r in by_label[t]]) for k in ("seg", "sharpness", "l1")}
    ms_t = timed[(f"{t} fp32", "256²")]
    lines = [f"Facades labels→photo (BtoA), {args.size}²; teacher ngf 64 trained {args.teacher_iters} iterations, every "
             f"student distilled from it for {args.student_iters} (batch 1, D ndf 64); scores on val "
             f"({scores[(runs[0].folder, 'fp32')]['images']} images, per-frame noise) through ONNX Runtime. Ratios "
             "are to the teacher's fp32 (seg.: per-pixel accuracy of the facade segmenter; sharpness: Laplacian "
             "variance ratio to the real photo; L1: lower is better, so its ratio is teacher/model). Two seeds: "
             "`seed 0 / seed 1`. Timings: frame→frame through the p2p runtime (uint8 BGR in and out), ONNX Runtime "
             f"CPU, {args.threads} threads, all models interleaved, median of {args.rounds}; 640×480 runs at its own "
             f"resolution (--fit pad; model input 640×512). Load average {load[0]:.1f} before, {load[1]:.1f} after; "
             f"{cpu_name()}, {os.cpu_count()} CPUs.", "",
             "| model | prec. | params | GMAC/256² | MB | ms 256² | fps 256² | fps 640×480 | × teacher 256² | "
             "seg. | × | sharpness | × | L1 | × |", "|" + "---|" * 15]
    for lab in labels:
        for prec in ("fp32", "int8"):
            rs = by_label[lab]
            i = info[rs[0].folder]
            sc = [scores[(r.folder, prec)] for r in rs]
            name = f"{lab} {prec}"
            ms, ms640 = timed[(name, "256²")], timed[(name, "640×480")]
            fmt = lambda k, d=3: " / ".join(f"{s[k]:.{d}f}" for s in sc)  # noqa: E731
            ratio = lambda k: mean([s[k] for s in sc]) / ref[k]  # noqa: E731
            lines.append(
                f"| {lab} | {prec} | {i['params'] / 1e6:.2f} M | {i['gmac']:.3f} | {i['mb'][prec]:.1f} | {ms:.2f} | "
                f"{1e3 / ms:.0f} | {1e3 / ms640:.1f} | {ms_t / ms:.1f}× | {fmt('seg')} | {ratio('seg'):.2f} | "
                f"{fmt('sharpness')} | {ratio('sharpness'):.2f} | {fmt('l1', 4)} | {1 / ratio('l1'):.2f} |")
    lines.append(f"| real photos | | | | | | | | | {scores[(runs[0].folder, 'fp32')]['seg_real']:.3f} | | 1 | | 0 | |")
    lines += ["", "Goal: a model ≥ 8× faster than the teacher frame→frame at 256² with ≥ 0.9× its segmentation "
              "score and ≥ 0.8× its sharpness (fp32 rows; mean of the seeds):", ""]
    for lab in labels[1:]:
        rs = by_label[lab]
        speed = ms_t / timed[(f"{lab} fp32", "256²")]
        seg = mean([scores[(r.folder, "fp32")]["seg"] for r in rs]) / ref["seg"]
        sharp = mean([scores[(r.folder, "fp32")]["sharpness"] for r in rs]) / ref["sharpness"]
        ok = speed >= 8 and seg >= 0.9 and sharp >= 0.8
        lines.append(f"- {lab}: {speed:.1f}× faster, segmentation {seg:.2f}×, sharpness {sharp:.2f}× — "
                     f"{'**meets the goal**' if ok else 'not met'}")
    lines += ["", "INT8 (`p2p-export --int8`: QDQ, per-channel s8 weights, u8 activations, calibrated on "
              f"{args.calib} training inputs; every ConvTranspose rewritten as Conv + DepthToSpace): which "
              "convolutions ONNX Runtime runs as integer kernels, and INT8's speed against fp32 of the same model:", "",
              "| model | integer convs (QLinearConv) | float Conv / ConvTranspose | int8 ÷ fp32 time, 256² | 640×480 |",
              "|---|---|---|---|---|"]
    for lab in labels:
        k = info[by_label[lab][0].folder]["int8_kernels"]
        r256 = timed[(f"{lab} int8", "256²")] / timed[(f"{lab} fp32", "256²")]
        r640 = timed[(f"{lab} int8", "640×480")] / timed[(f"{lab} fp32", "640×480")]
        lines.append(f"| {lab} | {k['QLinearConv']} | {k['Conv']} / {k['ConvTranspose']} | {r256:.2f} | {r640:.2f} |")
    if tuned:
        lines += ["", f"Session settings (runtime/ort_tuning.py, measured once per model and machine, then stored): "
                  f"fp32 frame→frame with the tuned settings against {args.threads} fixed threads, interleaved, "
                  f"median of {args.rounds}:", "",
                  "| model | tuned settings (256²) | ms fixed | ms tuned | gain 256² | gain 640×480 |", "|---|---|---|---|---|---|"]
        for lab in labels:
            name = f"{lab} fp32"
            s = tuned[(name, "settings")]
            g256 = timed[(name, "256²")] / tuned[(name, "256²")]
            g640 = timed[(name, "640×480")] / tuned[(name, "640×480")]
            from p2p.runtime.ort_tuning import SessionSettings
            desc = SessionSettings(s.threads, s.optimization, s.arena, s.shape).describe()
            lines.append(f"| {lab} | {desc} | {timed[(name, '256²')]:.2f} | {tuned[(name, '256²')]:.2f} | "
                         f"{g256:.2f}× | {g640:.2f}× |")
    return "\n".join(lines) + "\n"


def measure(args, timings_only: bool) -> str:
    runs = runs_for(args)
    missing = [r.folder for r in runs if not (args.out / r.folder / "checkpoint.pt").exists()]
    if missing:
        raise SystemExit(f"not trained yet: {', '.join(missing)} (python benchmarks/compact.py train first)")
    info = {r.folder: export(args, r) for r in runs}
    scores = {}
    for r in runs:
        for prec in ("fp32", "int8"):
            path = info[r.folder][prec]
            if timings_only:
                cached = path.with_suffix(".quality.json")
                if not cached.exists():
                    raise SystemExit(f"{cached} is missing: run `measure` once before `time`")
                scores[(r.folder, prec)] = json.loads(cached.read_text())["scores"]
            else:
                scores[(r.folder, prec)] = quality(args, r, prec, path)
    first = {}  # one model file per label and precision for the timings (seed 0)
    for r in runs:
        for prec in ("fp32", "int8"):
            first.setdefault(f"{r.label} {prec}", info[r.folder][prec])
    load_before = os.getloadavg()[0]
    timed = time_models(first, args.threads, args.rounds)
    fp32 = {k: v for k, v in first.items() if k.endswith("fp32")}
    tuned = None
    if not args.no_tuning:
        os.environ["P2P_ORT_TUNE"] = "again"  # measure the settings now, on this machine, in this load
        tuned = time_models(fp32, args.threads, args.rounds, tuned=True)
        retimed = time_models(fp32, args.threads, args.rounds)  # fixed threads again, right after: same load
        for k in fp32:
            for size in SIZES:
                timed[(k, size)] = statistics.median([timed[(k, size)], retimed[(k, size)]])
    text = markdown(args, runs, info, scores, timed, tuned, (load_before, os.getloadavg()[0]))
    (args.out / "timings.json").write_text(json.dumps(
        {f"{k[0]} @ {k[1]}": v for k, v in timed.items() if isinstance(v, float)}, indent=1))
    return text


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["train", "measure", "time", "all"])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "compact")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--plain", default="16,12,8", help="widths of the students with the paper's blocks")
    p.add_argument("--separable", default="32,16", help="widths of the separable students")
    p.add_argument("--seeds", default="0,1", help="the seeds of the runs in --two-seeds (the others: the first)")
    p.add_argument("--two-seeds", default="separable 32,separable 16,plain 16",
                   help="models trained with every seed (the candidates for the goal row)")
    p.add_argument("--teacher-iters", type=int, default=2000)
    p.add_argument("--student-iters", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2, help="training threads, and ONNX Runtime threads for the timings")
    p.add_argument("--rounds", type=int, default=30, help="timed frames per model and size")
    p.add_argument("--calib", type=int, default=32, help="training inputs INT8 is calibrated on")
    p.add_argument("--val", type=int, default=None, help="score on the first N val images (default all)")
    p.add_argument("--cache", type=Path, default=None, help="segmenter cache (default ~/.cache/p2p)")
    p.add_argument("--no-tuning", action="store_true", help="skip the tuned-settings table")
    p.add_argument("--tiny", action="store_true", help="smoke run: few iterations, a tiny segmenter")
    p.add_argument("--markdown", type=Path, default=None)
    args = p.parse_args(argv)
    args.plain = [int(w) for w in args.plain.split(",") if w]
    args.separable = [int(w) for w in args.separable.split(",") if w]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.two_seeds = {s.strip() for s in args.two_seeds.split(",")}
    if args.tiny:
        args.teacher_iters, args.student_iters, args.rounds, args.val, args.calib = 2, 2, 2, args.val or 4, 4
    args.data, args.out = args.data.resolve(), args.out.resolve()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step in ("train", "all"):
        train(args)
    if args.step in ("measure", "time", "all"):
        text = measure(args, timings_only=args.step == "time")
        grid = (args.markdown.parent if args.markdown else args.out) / "compact_samples.jpg"
        shown = {}
        for r in runs_for(args):  # seed 0 of each model in fp32, and the INT8 teacher and widest separable one
            if r.seed == args.seeds[0]:
                shown[f"{r.label}"] = samples(args.out / r.folder / "model.onnx")
        for label in ("teacher", f"separable {max(args.separable)}" if args.separable else None):
            run = next((r for r in runs_for(args) if r.label == label), None)
            if run is not None:
                shown[f"{label} int8"] = samples(args.out / run.folder / "model.int8.onnx")
        write_grid(grid, shown)
        text += ("\nVal images (the first " + str(SAMPLE_ROWS) + ", per-frame noise, seed 0): labels | "
                 + " | ".join(shown) + f" | real photo:\n\n![samples]({grid.name})\n")
        print(text)
        if args.markdown:
            import shlex
            command = "python benchmarks/compact.py " + shlex.join(sys.argv[1:] if argv is None else argv)
            args.markdown.write_text(f"# Compact students: speed and quality\n\nCommand: `{command}`\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
