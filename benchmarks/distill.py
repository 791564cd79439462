"""Is distillation worth it? A teacher, distilled students and the same students trained from scratch.

    python benchmarks/distill.py --markdown benchmarks/distill.md          # about 2 h on 2 cores
    python benchmarks/distill.py --tiny                                     # a seconds-long smoke run

Facades labels→photo (BtoA) at 128²: one teacher (ngf 64) trained for --teacher-iters, then
for each student width the student distilled from it (p2p-train --teacher) and the same
student trained from scratch (p2p-train alone), all for --student-iters; plus, at the
narrowest width, the alternatives the defaults were chosen from (the teacher's dropout
per-frame instead of off; no feature distillation). Every model is scored with p2p-eval's
code on val (per-frame noise, the facade segmentation score), exported to ONNX and timed
frame→frame through the runtime (ONNX Runtime CPU, --threads, all models interleaved in
one run) at 256² and 512². INT8 is timed for the narrowest student too.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import ROOT, run_training, write_grid  # noqa: E402  (one runner and grid for both benchmarks)

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "facades"


@dataclass(frozen=True)
class Run:
    name: str
    ngf: int
    teacher: bool = False             # distilled from the teacher
    flags: tuple[str, ...] = field(default=())
    note: str = ""


def runs_for(widths: list[int], alternatives_at: int) -> list[Run]:
    runs = []
    for w in widths:
        runs += [Run(f"student {w} distilled", w, True, note="the defaults"),
                 Run(f"student {w} scratch", w, note="p2p-train alone")]
    w = alternatives_at
    runs += [Run(f"student {w} teacher per-frame", w, True, ("--teacher-noise", "per-frame"),
                 note="the teacher's own random dropout while teaching"),
             Run(f"student {w} no features", w, True, ("--lambda-feat", "0"), note="output distillation only")]
    return runs


def folder(args, name: str) -> Path:
    return args.out / name.replace(" ", "_")


def command(args, name: str, ngf: int, iters: int, extra=()) -> list[str]:
    epochs = max(iters // 400 // 2, 1)  # constant then decaying LR, as p2p-train does (400 facades per epoch)
    return [sys.executable, "-m", "p2p.training", "--data", str(args.data), "--direction", "BtoA",
            "--out", str(folder(args, name)), "--size", str(args.size), "--ngf", str(ngf), "--ndf", "64",
            "--epochs", str(epochs), "--epochs-decay", str(epochs), "--iters", str(iters), "--seed", str(args.seed),
            "--device", "cpu", "--save-every", str(iters), "--sample-every", str(max(iters // 4, 1)), "--no-progress",
            *extra]


def train_all(args) -> dict[str, float]:
    seconds = {"teacher": run_training(folder(args, "teacher"), command(args, "teacher", 64, args.teacher_iters),
                                       args.teacher_iters, "teacher", threads=args.jobs)}

    def one(run: Run) -> float:
        extra = (("--teacher", str(folder(args, "teacher"))) if run.teacher else ()) + run.flags
        return run_training(folder(args, run.name), command(args, run.name, run.ngf, args.student_iters, extra),
                            args.student_iters, run.name)

    with ThreadPoolExecutor(args.jobs) as pool:
        seconds.update(zip([r.name for r in args.runs], pool.map(one, args.runs)))
    return seconds


def training_seconds(run: Path) -> float:
    """Seconds the run spent training, as its checkpoint records them (also for runs trained earlier)."""
    from p2p.training.checkpoint import load_checkpoint
    return float(load_checkpoint(run).get("seconds", 0.0))


def macs_per_frame(generator, size: int) -> float:
    """Multiply-accumulates of one size×size frame through the generator (convolutions only)."""
    import torch

    total = [0]

    def hook(module, inputs, output):
        k2 = module.kernel_size[0] * module.kernel_size[1]
        if isinstance(module, torch.nn.ConvTranspose2d):  # every input element feeds k² outputs of each channel
            total[0] += inputs[0].numel() * module.out_channels * k2
        else:  # every output element sums (C_in/groups)·k² products
            total[0] += output.numel() * module.in_channels // module.groups * k2

    handles = [m.register_forward_hook(hook) for m in generator.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with torch.no_grad():
        generator.train()(torch.zeros(1, generator.spec.in_channels, size, size))
    for h in handles:
        h.remove()
    return total[0] / 1e9


def time_models(models: dict[str, Path], sizes, threads: int, rounds: int) -> dict[tuple[str, int], float]:
    """Frame→frame ms through the runtime (fixed noise, as p2p-video), models interleaved round by round."""
    import numpy as np

    from p2p.runtime import Translator

    rng = np.random.default_rng(0)
    results = {}
    for size in sizes:
        frame = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        translators = {k: Translator(p, backend="ort-cpu", noise="fixed", seed=0, size=size, threads=threads)
                       for k, p in models.items()}
        times = {k: [] for k in models}
        for tr in translators.values():  # warm-up
            tr(frame)
            tr(frame)
        for _ in range(rounds):
            for k, tr in translators.items():
                tr(frame)  # untimed: the previous model's ORT workers may still be spinning for a while
                t = time.perf_counter()
                tr(frame)
                times[k].append((time.perf_counter() - t) * 1e3)
        for k in models:
            results[(k, size)] = float(np.median(times[k]))
        for tr in translators.values():
            tr.close()
    return results


def evaluate_all(args, names: list[str]) -> tuple[dict, dict]:
    from p2p.evaluation.evaluate import evaluate, write_outputs
    from p2p.training.torch_backend import TorchBackend

    seg = {"size": 64, "width": 8, "iters": 20} if args.tiny else {}
    results, pages = {}, {}
    for name in names:
        res, page = evaluate(TorchBackend(folder(args, name)), args.data, split="val", noise="per-frame", samples=1,
                             seed=args.seed, limit=args.val, rows=4, segmenter=True, seg_config=seg, cache=args.cache,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
        res["model_name"] = name
        write_outputs(folder(args, name) / "eval-facades-val", res, page)
        results[name], pages[name] = res, page
        s = res["segmentation"]["generated"]
        print(f"evaluated {name:32s} L1 {res['metrics']['l1']:.4f} sharpness {res['metrics']['sharpness']:.3f} "
              f"seg per-pixel {s['per_pixel_acc']:.3f}", file=sys.stderr, flush=True)
    return results, pages


def export_all(args, names: list[str]) -> dict[str, dict]:
    """model.onnx for each run, and its parameters, GMAC per 256² frame and file size."""
    from p2p.export.onnx_export import export_onnx
    from p2p.training.checkpoint import load_generator
    from p2p.training.models import count_parameters

    info = {}
    for name in names:
        gen, spec, _ = load_generator(folder(args, name))
        path = folder(args, name) / "model.onnx"
        if not path.exists():
            export_onnx(gen, spec, path)
        info[name] = {"onnx": path, "params": count_parameters(gen), "gmac": macs_per_frame(gen, 256),
                      "mb": path.stat().st_size / 1e6, "ngf": spec.ngf}
    return info


def int8_timing(args, name: str) -> dict:
    from p2p.export.int8 import compare, cpu_backend, quantize_int8

    onnx = folder(args, name) / "model.onnx"
    out = folder(args, name) / "model.int8.onnx"
    _, frames = quantize_int8(onnx, out, args.data / "val")
    with cpu_backend(onnx, args.threads) as fp32, cpu_backend(out, args.threads) as int8:
        r = compare(fp32, int8, frames, runs=args.rounds)
    return {"max_diff": r.max_diff, "ms_fp32": r.ms_reference, "ms_int8": r.ms_candidate}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "distill")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--widths", default="32,16,8", help="student ngf values")
    p.add_argument("--alternatives-at", type=int, default=16,
                   help="the width at which the teacher-noise and feature-loss alternatives are trained")
    p.add_argument("--teacher-iters", type=int, default=4000)
    p.add_argument("--student-iters", type=int, default=4000)
    p.add_argument("--jobs", type=int, default=2, help="student runs side by side (one thread each)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for the timings")
    p.add_argument("--rounds", type=int, default=20, help="timed frames per model and size")
    p.add_argument("--val", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=None, help="segmenter cache (default ~/.cache/p2p)")
    p.add_argument("--tiny", action="store_true", help="smoke run: 128², few iterations, tiny segmenter")
    p.add_argument("--markdown", type=Path, default=None)
    args = p.parse_args(argv)
    if args.tiny:
        args.teacher_iters, args.student_iters, args.rounds, args.val = 2, 2, 2, args.val or 4
    args.data, args.out = args.data.resolve(), args.out.resolve()
    args.runs = runs_for([int(w) for w in args.widths.split(",")], args.alternatives_at)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    train_all(args)
    seconds = {n: training_seconds(folder(args, n)) for n in ["teacher"] + [r.name for r in args.runs]}
    names = ["teacher"] + [r.name for r in args.runs]
    results, pages = evaluate_all(args, names)
    info = export_all(args, names)
    timed = time_models({n: info[n]["onnx"] for n in names}, (256, 512), args.threads, args.rounds)
    narrowest = f"student {min(int(w) for w in args.widths.split(','))} distilled"
    int8 = int8_timing(args, narrowest)
    grid = args.out / "distill_samples.jpg"
    shown = ["teacher"] + [n for n in names if n.endswith(("distilled", "scratch"))]
    write_grid(grid, {n: pages[n] for n in shown})
    if args.markdown:
        import shutil
        shutil.copy(grid, args.markdown.parent / grid.name)
        grid = Path(grid.name)
    text = markdown(args, names, results, info, timed, int8, seconds, grid, narrowest)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    (args.out / "results.json").write_text(json.dumps(
        {n: {"metrics": results[n]["metrics"], "segmentation": results[n]["segmentation"]["generated"],
             **{k: v for k, v in info[n].items() if k != "onnx"},
             "ms_256": timed[(n, 256)], "ms_512": timed[(n, 512)]} for n in names}, indent=1))
    return 0


def markdown(args, names, results, info, timed, int8, seconds, grid, narrowest) -> str:
    t = "teacher"
    seg = {n: results[n]["segmentation"]["generated"] for n in names}
    m = {n: results[n]["metrics"] for n in names}
    lines = [f"Facades labels→photo (BtoA), {args.size}², teacher ngf 64 trained {args.teacher_iters} iterations, "
             f"students {args.student_iters} iterations each (batch 1, D ndf 64, seed {args.seed}); val "
             f"{m[t]['images']} images, per-frame noise. Timings: frame→frame through the p2p runtime, ONNX Runtime "
             f"CPU, {args.threads} threads, all models interleaved (a warm-up frame before each timed one), median of "
             f"{args.rounds}.", "",
             "| model | params | GMAC/256² | ONNX MB | ms 256² | ms 512² | speed-up 256² | L1 ↓ | SSIM ↑ | "
             "sharpness (→1) | seg. per-pixel ↑ | per-class ↑ | class IoU ↑ |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in names:
        i = info[n]
        lines.append(f"| {n} | {i['params'] / 1e6:.2f} M | {i['gmac']:.2f} | {i['mb']:.1f} | {timed[(n, 256)]:.1f} | "
                     f"{timed[(n, 512)]:.1f} | {timed[(t, 256)] / timed[(n, 256)]:.1f}× | {m[n]['l1']:.4f} | "
                     f"{m[n]['ssim']:.4f} | {m[n]['sharpness']:.3f} | {seg[n]['per_pixel_acc']:.3f} | "
                     f"{seg[n]['per_class_acc']:.3f} | {seg[n]['class_iou']:.3f} |")
    real = results[t]["segmentation"]["real"]
    lines.append(f"| real photos (upper bound) | | | | | | | 0 | 1 | 1 | {real['per_pixel_acc']:.3f} | "
                 f"{real['per_class_acc']:.3f} | {real['class_iou']:.3f} |")
    lines += ["", "Goals (a student ≥ 8× faster than the teacher frame→frame, with ≥ 0.9× its per-pixel accuracy and "
              "≥ 0.8× its sharpness ratio; the distilled student beats the same width from scratch):", ""]
    for n in names[1:]:
        if not n.endswith("distilled"):
            continue
        speed = timed[(t, 256)] / timed[(n, 256)]
        acc = seg[n]["per_pixel_acc"] / seg[t]["per_pixel_acc"]
        sharp = m[n]["sharpness"] / m[t]["sharpness"]
        scratch = n.replace("distilled", "scratch")
        beats = seg[n]["per_pixel_acc"] > seg[scratch]["per_pixel_acc"]
        lines.append(f"- {n}: {speed:.1f}× faster ({'met' if speed >= 8 else 'not met'}), per-pixel accuracy "
                     f"{acc:.2f}× the teacher's ({'met' if acc >= 0.9 else 'not met'}), sharpness {sharp:.2f}× "
                     f"({'met' if sharp >= 0.8 else 'not met'}); beats its scratch twin on per-pixel accuracy: "
                     f"{'yes' if beats else 'no'} ({seg[n]['per_pixel_acc']:.3f} vs {seg[scratch]['per_pixel_acc']:.3f})")
    lines += ["", f"INT8 ({narrowest}, ONNX Runtime CPU, {args.threads} threads, static QDQ calibrated on val): "
              f"{int8['ms_fp32']:.1f} ms fp32 → {int8['ms_int8']:.1f} ms int8 at {args.size}², max abs diff "
              f"{int8['max_diff']:.3f}.", "",
              "Training time per run (from each checkpoint; the students ran two at a time, one thread each): "
              + ", ".join(f"{k} {v / 60:.0f} min" for k, v in seconds.items()) + ".",
              "", "Val images, one row each: labels | " + " | ".join(
                  ["teacher"] + [n for n in names if n.endswith(("distilled", "scratch"))]) + " | real photo:", "",
              f"![samples]({grid})", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
