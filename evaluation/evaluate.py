"""How good is a model? Metrics over a data split, a segmentation score, an HTML page.

A model is a run folder, a checkpoint, or an exported artifact (.onnx, .engine).
Every model is a runtime Backend: artifacts run on the runtime's own backends, so the
numbers describe exactly what ships, and need no torch; checkpoints run the PyTorch
generator (training.torch_backend, imported only then). Both see the same inputs (the runtime's paired-data reader, no
jitter) and the same dropout masks (drawn by the runtime's MaskSampler from ``seed``),
so with equal weights they agree. Images are translated one at a time: batch
statistics at batch size 1, the paper's instance normalisation.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from p2p.runtime.artifacts import MODEL_SUFFIXES, ArtifactError
from p2p.runtime.backends import Backend, open_backend
from p2p.runtime.errors import BackendUnavailable, UserError, first_line
from p2p.runtime.files import output_error, write_atomic
from p2p.runtime.images import ImageError, input_to_bgr, output_to_bgr, read_image, target_to_bgr
from p2p.runtime.masks import MaskSampler
from p2p.runtime.pairs import DataError, PairDataset, resolve_split
from p2p.runtime.sizes import canonical_size, squared, width_height
from p2p.runtime.spec import ModelSpec, SpecError

from . import metrics as M
from .html_report import std_heatmap, write_report


class EvalError(UserError, ValueError):
    """An evaluation that cannot run; the message says what to fix."""


# --- models: the runtime's Backend, for checkpoints (training.torch_backend) and shipped artifacts alike ------
def model_kind(model: Backend) -> str:
    """"checkpoint", "onnx" or "engine", for reports."""
    return getattr(model, "kind", None) or Path(model.path).suffix.lstrip(".").lower()


def open_model(path: Path, backend: str = "auto") -> Backend:
    """A run folder or checkpoint → TorchBackend; .onnx/.engine → the runtime's backend. Errors as EvalError."""
    path = Path(path)
    if path.suffix.lower() in MODEL_SUFFIXES and not path.is_dir():
        try:
            return open_backend(path, backend)
        except (ArtifactError, BackendUnavailable, SpecError) as exc:
            raise EvalError(str(exc)) from None
        except Exception as exc:  # onnxruntime raises its own types for corrupt files
            raise EvalError(f"{path}: cannot open this model ({first_line(exc, 200)})") from None
    if backend != "auto":
        raise EvalError(f"--backend {backend} is for .onnx/.engine files; {path} is a checkpoint")
    from p2p.training.checkpoint import CheckpointError  # torch: only a checkpoint brings it in
    from p2p.training.torch_backend import TorchBackend
    try:
        return TorchBackend(path)
    except CheckpointError as exc:
        raise EvalError(str(exc)) from None


# --- the evaluation ------------------------------------------------------------------
def evaluate(model: Backend, data: Path, *, split: str = "val", direction: str | None = None, size=None,
             layout: str = "auto", noise: str = "per-frame", samples: int = 4, seed: int = 0,
             limit: int | None = None, rows: int = 8, segmenter: bool = False, seg_config: dict | None = None,
             cache: Path | None = None, progress: bool = False, log=None) -> tuple[dict, list[dict]]:
    """Score ``model`` on ``data``/``split``; returns (results for metrics.json, rows for the page)."""
    spec = model.spec
    size = width_height(size) if size else (spec.width, spec.height)  # N, (W, H) or the model's own
    direction = direction or spec.direction
    ds = _pairs(spec, data, split, size, direction, layout)
    if model.limits is not None:  # a TensorRT engine runs the sizes it was built for
        try:
            model.limits.check(1, size[1], size[0], f"TensorRT engine {Path(model.path).name}")
        except SpecError as exc:
            raise EvalError(str(exc)) from None
    warnings = data_fit_warnings(spec, ds)
    for line in warnings:
        if log:
            log(f"warning: {line}")
    if noise != "per-frame":
        samples = 1  # fixed or no masks: every sample would be the same image
    seg = _SegmentationScore(spec, data, direction, seg_config or {}, cache, log) if segmenter else None
    scores = _Scores(model, spec, MaskSampler(spec, noise, seed), size, samples, seg, rows)
    t0 = time.perf_counter()
    n = min(len(ds), limit) if limit else len(ds)
    for i in tqdm(range(n), disable=not progress, unit="img", dynamic_ncols=True, file=sys.stderr):
        try:
            x, y = ds[i]
        except DataError as exc:
            raise EvalError(str(exc)) from None
        scores.add(ds.pairs[i].a.name, x, y)
    results = {
        "model": str(model.path), "kind": model_kind(model), "backend": model.name,
        "data": str(data), "split": split, "direction": direction, "size": canonical_size(size), "noise": noise,
        "samples": samples, "seed": seed, "spec": spec.to_dict(), "metrics": scores.summary(),
        "seconds": round(time.perf_counter() - t0, 2), "warnings": warnings,
    }
    if seg is not None:
        results["segmentation"] = seg.result()
    results["per_image"] = scores.per_image
    return results, scores.page


def _pairs(spec: ModelSpec, data: Path, split: str, size: tuple[int, int], direction: str,
           layout: str) -> PairDataset:
    """The split's pairs at the evaluation size (W, H), read in the data's direction; EvalError if they cannot be."""
    try:
        # the same spec with the evaluation size and the data's direction: drives PairDataset only
        data_spec = replace(spec.at_size(*size), direction=direction)
        return PairDataset(resolve_split(Path(data), split), data_spec, layout, jitter=False)
    except (SpecError, DataError) as exc:
        raise EvalError(str(exc)) from None


class _Scores:
    """Per-image metrics (and dropout samples) of each translated pair, their summary, and the page's rows."""

    def __init__(self, model: Backend, spec: ModelSpec, sampler: MaskSampler, size: tuple[int, int], samples: int,
                 seg, rows: int):
        self.model, self.spec, self.sampler, self.size, self.samples = model, spec, sampler, size, samples
        self.seg, self.rows = seg, rows
        self.running = M.Running()
        self.colour = spec.task == "colorize"
        self.out_imgs, self.target_imgs, self.page, self.per_image = [], [], [], []

    def add(self, name: str, x: np.ndarray, y: np.ndarray) -> None:
        spec, (width, height) = self.spec, self.size
        # copies: a backend may reuse its output buffer on the next run
        outs = [self.model.run(x[None], self.sampler(1, height, width))[0].copy()
                for _ in range(max(self.samples, 1))]
        out = outs[0]
        out_img, target_img = output_to_bgr(out, spec, x), target_to_bgr(y, spec, x)
        sample_imgs = np.stack([output_to_bgr(o, spec, x) for o in outs]) if len(outs) > 1 else None
        row = {"name": name, **self.running.add(out, y, out_img, target_img, sample_imgs)}
        self.per_image.append(row)
        if self.colour:
            self.out_imgs.append(out_img)
            self.target_imgs.append(target_img)
        if self.seg is not None:
            self.seg.add(x, out, y)
        if len(self.page) < self.rows:
            std = None
            if sample_imgs is not None:
                std = std_heatmap((sample_imgs.astype(np.float32) / 255.0).std(axis=0).mean(axis=2))
            self.page.append({**row, "input": input_to_bgr(x, spec), "output": out_img, "target": target_img,
                              "std": std})

    def summary(self) -> dict:
        summary = self.running.summary()
        if self.colour:
            summary["histogram_intersection"] = M.histogram_intersection(self.out_imgs, self.target_imgs)
        return summary


class _SegmentationScore:
    """Accumulates the confusion matrices of generated and of real photos against the input labels."""

    def __init__(self, spec, data: Path, direction: str, settings: dict, cache, log):
        from . import segmenter as S  # torch: only --segmenter trains and runs a network

        if spec.task != "paired" or spec.in_channels != 3 or spec.out_channels != 3:
            raise EvalError("--segmenter scores labels→photo models (facades, --task paired); "
                            f"this model's task is {spec.task}")
        self.S = S
        self.spec = spec
        self.cfg = S.SegConfig(**settings)  # overrides of the segmenter's defaults (size, width, iters, ...)
        try:
            self.net = S.train_segmenter(data, direction, self.cfg, cache, log)
        except S.SegmenterError as exc:
            raise EvalError(f"--segmenter: {exc}") from None
        self.conf_fake = np.zeros((S.N_CLASSES, S.N_CLASSES), np.int64)
        self.conf_real = np.zeros_like(self.conf_fake)

    def add(self, x: np.ndarray, out: np.ndarray, y: np.ndarray) -> None:
        S, size = self.S, self.cfg.size
        ids, dist = S.label_ids(S.tensor_to_rgb(x, self.spec))
        if dist > S.MAX_LABEL_DISTANCE:
            raise EvalError(f"--segmenter: the model's input is not a CMP label map (mean distance {dist:.0f} "
                            "to the palette): it scores facades labels→photo models only (check --direction)")
        ids = S.resize_ids(ids, size)
        fake, real = S.tensor_to_rgb(np.clip(out, -1, 1), self.spec), S.tensor_to_rgb(y, self.spec)
        pred = S.predict(self.net, np.stack([fake, real]), size)
        self.conf_fake += S.confusion(pred[0], ids)
        self.conf_real += S.confusion(pred[1], ids)

    def result(self) -> dict:
        S = self.S
        return {"generated": S.scores(self.conf_fake), "real": S.scores(self.conf_real),
                "majority_baseline": S.majority_baseline(self.conf_real),
                "chance_per_class_acc": 1.0 / S.N_CLASSES, "segmenter": asdict(self.cfg)}


TASK_WORDS = {"edges": "edges→photo", "colorize": "grey→colour"}


def data_fit_warnings(spec: ModelSpec, ds: PairDataset, probe: int = 8) -> list[str]:
    """Why the data may not suit the model (its scores would then mean little); empty if nothing is seen."""
    if spec.task not in TASK_WORDS or ds.layout != "photos":
        return []  # paired data that does not fit is refused by the reader (wrong width, A/B names)
    sizes = []
    for src in ds.pairs[:probe]:
        try:
            h, w = read_image(src.a).shape[:2]
        except ImageError:
            continue  # the evaluation itself names a bad file
        sizes.append(w == 2 * h)
    if sizes and sum(sizes) > len(sizes) / 2:
        return [f"{ds.folder} looks like aligned A|B pairs (images twice as wide as high), but this model is "
                f"{TASK_WORDS[spec.task]} (trained on single photos): each pair is scored as one photo, so these "
                "numbers say little; use a model trained on this data"]
    return []


def default_report_dir(model: Path, data: Path, split: str) -> Path:
    """Named after the model and the data: RUN/eval-DATA-SPLIT, or MODEL-eval-DATA-SPLIT beside a model file."""
    model = Path(model)
    tag = f"eval-{Path(data).resolve().name}-{split}"
    if model.is_dir():
        return model / tag
    return model.parent / f"{model.stem}-{tag}"


def earlier_report(folder: Path) -> str | None:
    """What an existing report in ``folder`` scored, in words; None if there is none."""
    try:
        old = json.loads((Path(folder) / "metrics.json").read_text())
        return f"{old['model']} on {old['data']} [{old['split']}]"
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return "an unreadable report"


def finite(value):
    """NaN/inf → null: metrics.json stays strict JSON (a flat target makes the sharpness ratio undefined)."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def write_outputs(folder: Path, results: dict, page: list[dict]) -> Path:
    """metrics.json and index.html in ``folder``; returns the page's path (OutputError if it cannot be written)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "metrics.json", json.dumps(finite(results), indent=1))
        return write_report(folder, results, page)
    except OSError as exc:  # each file is written whole or not at all (runtime.files)
        raise output_error(exc, folder) from exc


def summary_lines(results: dict) -> list[str]:
    m = results["metrics"]
    lines = [f"{results['model_name']} on {results['split']} ({m['images']} images, {squared(results['size'])}, "
             f"noise {results['noise']}):",
             f"  L1 {m['l1']:.4f}  PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f}  sharpness {m['sharpness']:.3f}"
             + (f"  dropout std {m['dropout_std']:.4f}" if m.get("dropout_std") is not None else "")]
    if "histogram_intersection" in m:
        hi = m["histogram_intersection"]
        lines.append(f"  histogram intersection a {hi['a']:.3f}  b {hi['b']:.3f}")
    if "segmentation" in results:
        s = results["segmentation"]
        for name in ("generated", "real"):
            v = s[name]
            lines.append(f"  segmentation ({name:9s}) per-pixel {v['per_pixel_acc']:.3f}  "
                         f"per-class {v['per_class_acc']:.3f}  IoU {v['class_iou']:.3f}")
    return lines
