"""p2p-eval --video: how much a model flickers on a clip (the warping error), per noise mode.

The metric itself is ``p2p.runtime.warping_error`` (torch-free); this runs the clip through
the runtime's Translator once per variant (checkpoints too, as its backend) and writes the
report: metrics.json with the per-frame series, index.html, warping_error.png.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from p2p.runtime.backends import Backend
from p2p.runtime.files import output_error, write_atomic
from p2p.runtime.masks import NOISE_MODES
from p2p.runtime.translator import Translator
from p2p.runtime.warping_error import INPUT, METRIC_FLOW, METRIC_WIDTH, measure, read_clip

from .evaluate import EvalError, finite, model_kind
from .html_report import warping_plot_png, write_video_report


def evaluate_video(model: Backend, clip: Path, *, size: int | None = None, seed: int = 0, temporal=(),
                   max_frames: int | None = None, progress: bool = False) -> tuple[dict, dict]:
    """Warping error of ``clip`` translated by ``model`` for each noise mode (and fixed + each ``temporal``
    strength), beside the input's own; returns (results for metrics.json, sample frames for the page)."""
    backend = model
    variants = {mode: Translator(backend, noise=mode, seed=seed, size=size) for mode in NOISE_MODES}
    for strength in temporal:
        variants[f"fixed + temporal {strength:g}"] = Translator(backend, noise="fixed", seed=seed, size=size,
                                                               temporal=strength)
    cap = cv2.VideoCapture(str(clip))
    declared, readable = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None, cap.isOpened()
    cap.release()
    if not readable:
        raise EvalError(f"--video {clip}: not a video OpenCV can read")
    expected = min(declared, max_frames) if declared and max_frames else (declared or max_frames)
    sample, t0 = {}, time.perf_counter()
    bar = tqdm(total=expected, disable=not progress, unit="frame", dynamic_ncols=True, file=sys.stderr)

    def on_frame(n: int, frame: np.ndarray, outputs: dict) -> None:
        if n <= max(1, (expected or 0) // 2) or not sample:  # the middle frame (the last if fewer decode)
            sample.update({INPUT: frame, **outputs})
        bar.update(1)

    try:
        streams = {name: tr.translate for name, tr in variants.items()}
        meter = measure(read_clip(clip, max_frames), streams, on_frame=on_frame)
    finally:
        bar.close()
    n = meter.frames
    if n < 2:
        raise EvalError(f"--video {clip}: {n} frame(s) could be decoded; the warping error needs at least 2")
    errors = meter.summary()
    box = variants["off"].box
    results = {
        "model": str(model.path), "kind": model_kind(model), "backend": model.name,
        "video": str(clip), "frames": n, "size": f"{box[0]}x{box[1]}", "seed": seed,
        "metric": {"name": "warping error (Lai et al., ECCV 2018)", "width": METRIC_WIDTH, "flow": METRIC_FLOW,
                   "units": "squared RGB difference in [0, 1], summed over channels, mean over non-occluded pixels"},
        "warping_error": errors,
        "vs_input": {k: v / errors[INPUT] if errors[INPUT] else None for k, v in errors.items()},
        "non_occluded": float(np.mean(meter.kept)),
        "per_frame": meter.series,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return results, sample


def default_video_report_dir(model: Path, clip: Path) -> Path:
    """RUN/eval-video-CLIP, or MODEL-eval-video-CLIP beside a model file."""
    model, tag = Path(model), f"eval-video-{Path(clip).stem}"
    return model / tag if model.is_dir() else model.parent / f"{model.stem}-{tag}"


def video_summary_lines(results: dict) -> list[str]:
    lines = [f"{results['model_name']} on {Path(results['video']).name} ({results['frames']} frames, "
             f"{results['size']}): warping error (input's own = floor)"]
    for name, value in results["warping_error"].items():
        ratio = results["vs_input"][name]
        lines.append(f"  {name:24s} {value:.5f}" + (f"  ({ratio:.1f}× input)" if ratio is not None else ""))
    return lines


def write_video_outputs(folder: Path, results: dict, sample: dict) -> Path:
    """metrics.json, warping_error.png and index.html in ``folder``; returns the page's path."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "metrics.json", json.dumps(finite(results), indent=1))
        plot = warping_plot_png(results["per_frame"], Path(results["video"]).name)
        write_atomic(folder / "warping_error.png", plot)
        return write_video_report(folder, results, plot, sample)
    except OSError as exc:  # each file is written whole or not at all (runtime.files)
        raise output_error(exc, folder) from exc
