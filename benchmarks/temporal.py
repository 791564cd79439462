"""Flicker and its cure: warping error and frames/s of plain and stabilised translation, on both real clips.

    python benchmarks/temporal.py --markdown benchmarks/temporal.md --strip benchmarks/temporal_strip.jpg

For two models, the shipped demo (runtime/demo/demo.onnx) and one this script trains itself
(p2p-train on the embedded clips, edges→photo, 128², ngf 32; cached in --work), and for both clips
in ../shared/data/video, at 256²:

- the warping error (p2p.runtime.warping_error; Lai et al., ECCV 2018) of the input clip itself (the
  floor), and of the translation with noise per-frame, fixed, off, and fixed + stabilisation
  (p2p.runtime.temporal) at two strengths;
- frames/s of each, frame → frame through Translator.translate (the p2p-live path) and the model
  alone (Translator.run), and of the p2p-video pipeline (decode → translate → encode), plain and
  stabilised; interleaved rounds, median;
- a strip of consecutive frames around a moving person: input, plain (fixed noise), stabilised, and
  how much the stabilised frame differs from the plain one (a ghost trail would show there).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from p2p.runtime import temporal
from p2p.runtime.temporal import Stabilizer
from p2p.runtime.translator import Translator
from p2p.runtime.warping_error import INPUT, METRIC_FLOW, METRIC_WIDTH, measure, read_clip
from p2p.video.pipeline import translate_video

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_fps import cpu_name  # noqa: E402  (one CPU probe for the benchmarks)

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT.parent / "shared" / "data" / "video"
CLIPS = ("vtest_first10s.mp4", "tree.avi")
DEMO = ROOT / "runtime" / "demo" / "demo.onnx"
SIZE = 256


def train_own(work: Path, iters: int) -> tuple[Path, float]:
    """The benchmark's own model: p2p-train edges→photo on the embedded clips, exported; reused if present."""
    onnx = work / f"own-{iters}.onnx"
    if onnx.exists():
        return onnx, 0.0
    run, bin_dir = work / f"own-{iters}", Path(sys.executable).parent
    t0 = time.perf_counter()
    train = [str(bin_dir / "p2p-train"), "--out", str(run), "--task", "edges", "--size", "128", "--ngf", "32",
             "--ndf", "32", "--batch-size", "4", "--iters", str(iters), "--epochs", "1000", "--seed", "0",
             "--save-every", str(iters), "--sample-every", str(iters), "--no-progress",
             "--overwrite"]  # a run left without its export (interrupted) is trained again
    subprocess.run(train, check=True, cwd=work, stdout=subprocess.DEVNULL)
    subprocess.run([str(bin_dir / "p2p-export"), str(run), "-o", str(onnx)], check=True, cwd=work,
                   stdout=subprocess.DEVNULL)
    return onnx, time.perf_counter() - t0


def make_variants(model: Path, strengths, threads: int) -> dict[str, Translator]:
    """One ONNX Runtime session, one Translator (noise sampler, stream state) per variant."""
    base = Translator(model, noise="off", seed=0, size=SIZE, threads=threads)
    variants = {mode: Translator(base.backend, noise=mode, seed=0, size=SIZE) for mode in ("per-frame", "fixed")}
    variants["off"] = base
    for s in strengths:
        variants[f"fixed + temporal {s:g}"] = Translator(base.backend, noise="fixed", seed=0, size=SIZE, temporal=s)
    return variants


def warping_errors(variants: dict[str, Translator], clip: Path) -> tuple[dict[str, float], dict[str, int]]:
    for tr in variants.values():
        tr.reset_temporal()
    cuts0 = {name: tr.stabilizer.cuts for name, tr in variants.items()}
    meter = measure(read_clip(clip), {name: tr.translate for name, tr in variants.items()})
    cuts = {name: tr.stabilizer.cuts - cuts0[name] for name, tr in variants.items() if tr.temporal}
    return meter.summary(), cuts


def frame_timings(variants: dict[str, Translator], frames: list[np.ndarray], rounds: int) -> dict[str, list[float]]:
    """Seconds per call, frame → frame, for the model alone and every variant. Interleaved call by call (the
    order rotating each frame) so a busy spell on the shared machine hits every row alike; each variant still
    sees its frames in order, as a stream."""
    x, _ = variants["fixed"].preprocess(frames[0])
    x = x[None]
    model = variants["fixed"]
    runners = {"model alone (Translator.run)": lambda frame: model.run(x, copy=False)}
    runners.update({f"{name}: frame → frame": tr.translate for name, tr in variants.items()})
    names, times = list(runners), {name: [] for name in runners}
    for fn in runners.values():  # warm-up
        fn(frames[0])
    for r in range(rounds):
        for tr in variants.values():
            tr.reset_temporal()
        for i, frame in enumerate(frames):
            k = i % len(names)
            for name in names[k:] + names[:k]:
                t0 = time.perf_counter()
                runners[name](frame)
                times[name].append(time.perf_counter() - t0)
        print(f"  frame timings, round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return times


def pipeline_timings(variants: dict[str, Translator], names: list[str], clips: dict[str, Path], frames: int,
                     rounds: int, work: Path) -> dict[str, list[tuple[float, float]]]:
    """(p2p-video frames/s, the model's own frames/s measured just before) per round, for each variant and clip."""
    model = variants["fixed"]
    x, _ = model.preprocess(next(read_clip(next(iter(clips.values())), 1)))
    x = x[None]
    rows: dict[str, list[tuple[float, float]]] = {}
    for r in range(rounds):
        for clip_name, clip in clips.items():
            for name in (names if r % 2 == 0 else names[::-1]):
                t0 = time.perf_counter()
                for _ in range(frames):
                    model.run(x, copy=False)
                alone = frames / (time.perf_counter() - t0)
                stats = translate_video(variants[name], clip, work / "out.mp4", max_frames=frames)
                rows.setdefault(f"p2p-video pipeline, {name}, {clip_name}", []).append((stats.throughput, alone))
        print(f"  pipeline, round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return rows


SETTINGS = ((temporal.FLOW_METHOD, temporal.FLOW_SIDE), ("dis-ultrafast", 128), ("dis-fast", 128), ("dis-fast", 96))


def stabiliser_settings(model: Path, strength: float, frames: list[np.ndarray], threads: int) -> list[dict]:
    """The flow preset and size behind the stabiliser: its own cost per frame (track + blend, median) and the
    warping error it leaves on both clips, for the shipped default and alternatives."""
    base = Translator(model, noise="fixed", seed=0, size=SIZE, threads=threads)
    rows = []
    for method, side in SETTINGS:
        tr = Translator(base.backend, noise="fixed", seed=0, size=SIZE, temporal=strength)
        tr.stabilizer = Stabilizer(strength, flow_side=side, method=method)
        row = {"method": method, "side": side}
        for clip in CLIPS:
            plain = Translator(base.backend, noise="fixed", seed=0, size=SIZE)
            tr.reset_temporal()
            errors = measure(read_clip(VIDEO / clip), {"plain": plain.translate, "stab": tr.translate}).summary()
            row[clip] = 1 - errors["stab"] / errors["plain"]
        x, p, _ = tr.prepare(frames[0])
        out = tr.run(x[None])[0]
        fitted = [tr._fit(f)[0] for f in frames]  # noqa: SLF001 (the stabiliser's own input, as prepare() makes it)
        spent = []
        for _ in range(5):
            tr.reset_temporal()
            for img in fitted:
                t0 = time.perf_counter()
                tr.stabilizer.blend(out, tr.stabilizer.track(img))
                spent.append(time.perf_counter() - t0)
        row["ms"] = 1000 * statistics.median(spent)
        rows.append(row)
    return rows


def small_clip(path: Path, frames: list[np.ndarray], size: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (size, size))
    for f in frames:
        writer.write(cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA))
    writer.release()
    return path


# --- the strip --------------------------------------------------------------------------------------
def moving_crop(frames: list[np.ndarray], side: int) -> tuple[int, int]:
    """Top-left of the side×side window with the most frame-to-frame change (a walking person)."""
    motion = sum(cv2.absdiff(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), cv2.cvtColor(b, cv2.COLOR_BGR2GRAY)).astype(np.float32)
                 for a, b in zip(frames, frames[1:]))
    score = cv2.boxFilter(motion, -1, (side, side), normalize=False, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    h, w = motion.shape
    score = score[: h - side + 1, : w - side + 1]
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(x), int(y)


def label(img: np.ndarray, text: str, width: int = 150) -> np.ndarray:
    pad = np.full((img.shape[0], width, 3), 255, np.uint8)
    for i, line in enumerate(text.split("\n")):
        cv2.putText(pad, line, (6, 22 + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.hstack([pad, img])


def strip(models: dict[str, dict[str, Translator]], strength_name: str, clip: Path, start: int, count: int,
          side: int, scale: float) -> np.ndarray:
    frames = list(read_clip(clip, start + count))
    x, y = moving_crop(frames[start:], side)
    crop = lambda img: cv2.resize(img[y:y + side, x:x + side], None, fx=scale, fy=scale,  # noqa: E731
                                  interpolation=cv2.INTER_NEAREST)
    rows = [label(np.hstack([crop(f) for f in frames[start:]]), f"input\nframes {start}-{start + count - 1}")]
    for model_name, variants in models.items():
        plain, stab = variants["fixed"], variants[strength_name]
        stab.reset_temporal()
        outs_plain, outs_stab = [], []
        for f in frames:  # the stream from frame 0, so the blend has history when the strip starts
            outs_plain.append(plain.translate(f))
            outs_stab.append(stab.translate(f))
        diff = [cv2.applyColorMap(np.clip(cv2.absdiff(a, b).max(axis=2).astype(np.float32) * 4, 0, 255)
                                  .astype(np.uint8), cv2.COLORMAP_INFERNO) for a, b in zip(outs_plain, outs_stab)]
        rows.append(label(np.hstack([crop(o) for o in outs_plain[start:]]), f"{model_name}\nfixed noise"))
        rows.append(label(np.hstack([crop(o) for o in outs_stab[start:]]), f"{model_name}\n{strength_name}"))
        rows.append(label(np.hstack([crop(d) for d in diff[start:]]), f"{model_name}\n|stab - plain| x4"))
    sep = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    return np.vstack([r for row in rows for r in (row, sep)][:-1])


# --- the report ---------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strengths", default="0.5,0.8", help="two (or more) stabilisation strengths")
    ap.add_argument("--iters", type=int, default=240, help="training iterations of the benchmark's own model")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "p2p-temporal-bench",
                    help="where the own model is trained (reused when present)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of frame → frame timings")
    ap.add_argument("--pipeline-rounds", type=int, default=5)
    ap.add_argument("--pipeline-frames", type=int, default=100,
                    help="street-clip frames per p2p-video run (many: a run's start and drain cost stays small)")
    ap.add_argument("--fps-frames", type=int, default=40, help="street-clip frames per timing round")
    ap.add_argument("--strip-start", type=int, default=60)
    ap.add_argument("--strip-frames", type=int, default=6)
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--strip", type=Path, default=None, help="write the strip image here (.jpg)")
    args = ap.parse_args(argv)
    strengths = [float(s) for s in args.strengths.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]

    own, train_seconds = train_own(args.work, args.iters)
    print(f"own model {own} ({'trained in %.0f s' % train_seconds if train_seconds else 'reused'})", file=sys.stderr)
    models = {"demo": make_variants(DEMO, strengths, args.threads),
              "own": make_variants(own, strengths, args.threads)}
    strong = f"fixed + temporal {strengths[-1]:g}"

    errors: dict[tuple[str, str], dict[str, float]] = {}
    cuts: dict[tuple[str, str], dict[str, int]] = {}
    frames_of = {}
    for clip in CLIPS:
        frames_of[clip] = sum(1 for _ in read_clip(VIDEO / clip))
        for model_name, variants in models.items():
            t0 = time.perf_counter()
            errors[(model_name, clip)], cuts[(model_name, clip)] = warping_errors(variants, VIDEO / clip)
            print(f"warping error {model_name} {clip}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    street = list(read_clip(VIDEO / CLIPS[0], max(args.fps_frames, args.pipeline_frames)))
    clips = {"street 768×576": VIDEO / CLIPS[0],
             f"street at {SIZE}²": small_clip(args.work / "street256.mp4", street[:args.pipeline_frames], SIZE)}
    street = street[:args.fps_frames]
    timings, pipelines = {}, {}
    for model_name, variants in models.items():
        print(f"timing {model_name}", file=sys.stderr, flush=True)
        timings[model_name] = frame_timings(variants, street, args.rounds)
        pipelines[model_name] = pipeline_timings(variants, ["fixed", strong], clips, args.pipeline_frames,
                                                 args.pipeline_rounds, args.work)

    print("stabiliser settings", file=sys.stderr, flush=True)
    settings = stabiliser_settings(DEMO, strengths[-1], street, args.threads)

    picture = strip(models, strong, VIDEO / CLIPS[0], args.strip_start, args.strip_frames, side=200, scale=1.0)
    if args.strip:
        cv2.imwrite(str(args.strip), picture, [cv2.IMWRITE_JPEG_QUALITY, 88])

    names = list(next(iter(models.values())))
    lines = ["## Warping error (lower = steadier; the input's own is the floor)", "",
             "| model | clip | frames | input | " + " | ".join(names) + " | stabilised vs fixed |",
             "|---|---|---:|---:|" + "---:|" * len(names) + "---|"]
    for (model_name, clip), e in errors.items():
        gains = ", ".join(f"{s:g}: {100 * (1 - e[f'fixed + temporal {s:g}'] / e['fixed']):.0f}% lower" for s in strengths)
        lines.append(f"| {model_name} | {clip} | {frames_of[clip]} | {e[INPUT]:.5f} | "
                     + " | ".join(f"{e[n]:.5f}" for n in names) + f" | {gains} |")
    lines += ["", "Restarts of the blend (scene cut or jump detected): "
              + "; ".join(f"{m} {c}: {', '.join(f'{k.split()[-1]} → {v}' for k, v in cc.items())}"
                          for (m, c), cc in cuts.items()), ""]
    timing_lines, goals = _timing_lines(timings, pipelines, strengths, args)
    lines += timing_lines
    for (model_name, clip), e in errors.items():
        goals.insert(0, f"{model_name}, {clip}: warping error {100 * (1 - e[strong] / e['fixed']):.0f}% below fixed "
                        f"at {strong}")
    lines += [f"## The stabiliser's flow (demo model, strength {strengths[-1]:g})", "",
              "| flow | flow image | track + blend, ms/frame (median) | "
              + " | ".join(f"warping error vs fixed, {c}" for c in CLIPS) + " |", "|---|---:|---:|" + "---:|" * len(CLIPS)]
    for row in settings:
        shipped = " (shipped)" if (row["method"], row["side"]) == SETTINGS[0] else ""
        lines.append(f"| {row['method']}{shipped} | {row['side']} px | {row['ms']:.2f} | "
                     + " | ".join(f"{100 * row[c]:.0f}% lower" for c in CLIPS) + " |")
    lines.append("")
    lines += ["## Against the goals (computed)", ""] + [f"- {g}" for g in goals] + [""]
    machine = (f"{cpu_name()}, {os.cpu_count()} CPUs, load average {load_before:.1f} before and "
               f"{os.getloadavg()[0]:.1f} after; OpenCV {cv2.__version__}")
    notes = [f"Models at {SIZE}² (`--size {SIZE}`, fit resize), seed 0. Demo: runtime/demo/demo.onnx (edges→photo, "
             f"ngf 12, trained at 128²). Own: p2p-train --task edges --size 128 --ngf 32 --ndf 32 --batch-size 4 "
             f"--iters {args.iters} on the embedded clips" + (f" ({train_seconds / 60:.1f} min)" if train_seconds else "")
             + ", exported with p2p-export.",
             f"Warping error: frames scaled to {METRIC_WIDTH} px wide, flow {METRIC_FLOW} on the input frames, "
             "occlusions by the forward–backward check; squared RGB difference in [0, 1] summed over channels, mean "
             "over non-occluded pixels and frame pairs. All decoded pictures of each clip (tree.avi: its 68 distinct "
             "pictures, ~0.45 s apart; see the README).",
             f"Frame → frame: the first {args.fps_frames} frames of the street clip (768×576, in memory) through "
             f"Translator.translate, every row called in turn on each frame (rotating order), {args.rounds} rounds; "
             "frames/s = 1 / median time per call. The model alone: Translator.run on one prepared 256² input.",
             f"p2p-video: the first {args.pipeline_frames} frames from the original file and from a {SIZE}² mp4v copy (no "
             f"resize cost), mp4v out; {args.pipeline_rounds} rounds alternating plain and stabilised; medians.",
             f"Strip (`{args.strip.name if args.strip else 'not written'}`): street clip frames {args.strip_start}–"
             f"{args.strip_start + args.strip_frames - 1}, the 200×200 window (of 768×576) with the most motion, at full resolution.",
             f"Machine: {machine}."]
    text = "\n".join(lines + [f"- {n}" for n in notes])
    print(text)
    if args.markdown:
        command = (f"python benchmarks/temporal.py --strengths {args.strengths} --iters {args.iters} "
                   f"--rounds {args.rounds} --pipeline-rounds {args.pipeline_rounds} --pipeline-frames {args.pipeline_frames} "
                   f"--markdown {args.markdown}"
                   + (f" --strip {args.strip}" if args.strip else ""))
        args.markdown.write_text("# Temporal consistency: warping error and the cost of stabilisation\n\n"
                                 f"Command (from the repository root, venv active):\n\n```\n{command}\n```\n\n"
                                 + text + "\n")
    return 0


def _timing_lines(timings, pipelines, strengths, args) -> tuple[list[str], list[str]]:
    """The frames/s tables of each model, and the goal lines they give."""
    lines, goals = [], []
    for model_name, times in timings.items():
        fps = {k: 1 / statistics.median(v) for k, v in times.items()}
        base = fps["fixed: frame → frame"]
        lines += [f"## Frames/s at {SIZE}², {model_name} model ({args.threads} threads): frame → frame", "",
                  "| what | frames/s | ms/frame (median) | × fixed |", "|---|---:|---:|---:|"]
        for k, v in fps.items():
            lines.append(f"| {k} | {v:.1f} | {1000 / v:.2f} | {v / base:.2f}× |")
        for s_ in strengths:
            cost = 1 - fps[f"fixed + temporal {s_:g}: frame → frame"] / base
            goals.append(f"{model_name}: stabilisation {s_:g} costs {100 * cost:.1f}% of the frame rate (frame → frame)")
        lines += ["", f"p2p-video pipeline, {model_name} model (decode → translate → encode, {args.pipeline_frames} frames; "
                  "the model alone timed right before each run):", "",
                  "| what | frames/s | model alone, frames/s | pipeline / model alone |", "|---|---:|---:|---:|"]
        for k, pairs in pipelines[model_name].items():
            ratio = statistics.median(p / m for p, m in pairs)
            lines.append(f"| {k} | {statistics.median(p for p, _ in pairs):.1f} | "
                         f"{statistics.median(m for _, m in pairs):.1f} | {ratio:.2f} |")
            goals.append(f"{model_name}: {k} at {ratio:.2f}× the model's own frames/s")
        lines.append("")
    return lines, goals


if __name__ == "__main__":
    sys.exit(main())
