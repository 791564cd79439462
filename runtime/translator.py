"""Translator: BGR uint8 frames in, BGR uint8 frames out, on the best backend present.

Per frame: resize (or scale and pad) to a size the model accepts → the task's input
adapter and normalisation (``images.input_tensor``, exactly as in training) → run with
dropout masks → denormalise and output adapter (``images.output_to_bgr``) → crop the
padding → back to the frame's size. For colorisation the predicted ab is upscaled
and merged with the frame's own full-resolution L, so no detail is lost.

Batches: the generator normalises with the statistics of the batch it is given (as in
training), so a batch of N frames is not the same as N single frames unless they are
identical; translate video frame by frame for the paper's behaviour (instance norm).

Streams: with ``temporal`` > 0 (see ``temporal``), ``translate`` treats successive calls as one
video stream and blends each output with the previous one along the input's motion. One
Translator per stream; ``reset_temporal()`` when the stream jumps (pause, seek, new source).
``translate_batch`` treats its frames as unrelated stills: it never blends, nor touches that state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from . import cli_options, contract
from .artifacts import ShapeError, ShapeLimits
from .backends import open_backend
from .images import input_tensor, output_to_bgr, to_bgr8
from .masks import NOISE_MODES, MaskSampler
from .spec import ModelSpec
from .temporal import Motion, Stabilizer

FIT_MODES = cli_options.FIT_MODES


def parse_size(text: str | int | tuple | None) -> tuple[int, int] | None:
    """A size box: "256" or 256 (a square), "512x288" or (512, 288) (width x height) → (width, height);
    None: the model's own size. The grammar is --size's, from cli_options."""
    return None if text is None else cli_options.parse_size(text)


@dataclass(frozen=True)
class Placement:
    """Where a frame of size (h, w) sits in the model's input of size (mh, mw)."""
    h: int
    w: int
    mh: int
    mw: int
    top: int = 0
    left: int = 0
    ch: int = 0  # content size (the scaled frame) inside the model input
    cw: int = 0


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    if img.shape[1] == w and img.shape[0] == h:
        return img
    # as in training (training/data.py): area when shrinking, cubic when enlarging
    shrink = w <= img.shape[1] and h <= img.shape[0]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def fit_box(spec: ModelSpec, size, fit: str, limits: ShapeLimits | None) -> tuple[int, int]:
    """The (width, height) box frames are fitted into: ``size`` (N or (W, H)), else the model's own."""
    if size is None:
        if limits is not None and not limits.covers(1, spec.height, spec.width):
            return limits.opt[2], limits.opt[1]  # an engine built for another size: use its optimum
        return spec.width, spec.height
    bw, bh = parse_size(size)
    m = spec.multiple
    if fit == "resize" and (bw % m or bh % m):
        raise ShapeError(f"--size {bw}x{bh} does not suit this model: with --fit resize width and height "
                         f"must be multiples of {m} (e.g. --size {max(m, round(bw / m) * m)}x"
                         f"{max(m, round(bh / m) * m)}), or use --fit pad")
    if bw < m or bh < m:
        raise ShapeError(f"--size {bw}x{bh} is too small for this model: at least {m}x{m}")
    return bw, bh


def frame_range(spec: ModelSpec, box: tuple[int, int], fit: str) -> ShapeLimits:
    """The (N, H, W) range of model inputs for frames fitted into ``box``, one frame at a time.

    resize: exactly the box; pad: any multiple of ``spec.multiple`` up to the box rounded up.
    """
    bw, bh = box
    if fit == "resize":
        return ShapeLimits((1, bh, bw), (1, bh, bw), (1, bh, bw))
    m = spec.multiple
    top = (1, math.ceil(bh / m) * m, math.ceil(bw / m) * m)
    return ShapeLimits((1, m, m), top, top)


def _is_backend(model) -> bool:
    """An already open backend (spec, name, limits, run) rather than a model file."""
    return hasattr(model, "run") and hasattr(model, "spec")


class Translator:
    """Open a p2p model (``.onnx`` or ``.engine``) and translate frames with it.

    fit: "resize" stretches the frame to the box (``size``; default the model's training
    size, or a TensorRT engine's optimum); "pad" keeps the aspect ratio: scales the frame
    into the box and pads (mirror) to the next multiple of ``spec.multiple``.
    noise: "per-frame", "fixed" or "off" (see ``masks``); ``seed`` makes either reproducible.
    temporal: stabilisation strength for ``translate`` on a stream, 0 (off) to 1 (see ``temporal``).
    ``model`` may also be an already open backend (``spec``, ``name``, ``limits``, ``run(x, masks)``),
    e.g. p2p-eval's PyTorch generator, to reuse the frame handling with it.
    """

    def __init__(self, model, *, backend: str = "auto", noise: str = "per-frame",
                 seed: int | None = None, fit: str = "resize", size=None, temporal: float = 0.0,
                 **backend_options):
        if fit not in FIT_MODES:
            raise ValueError(f"unknown fit {fit!r}; expected one of {', '.join(FIT_MODES)}")
        self.fit = fit
        size = parse_size(size)
        if _is_backend(model):
            self.path, self.backend = Path(getattr(model, "path", "") or model.name), model
        else:
            self.path = Path(model)
            # the frame sizes this translator will run, for backends that prepare for a range (TensorRT provider)
            profile = lambda spec: frame_range(spec, fit_box(spec, size, fit, None), fit)  # noqa: E731
            self.backend = open_backend(self.path, backend, profile=profile, **backend_options)
        self.spec: ModelSpec = self.backend.spec
        self.sampler = MaskSampler(self.spec, noise, seed)
        self.box = fit_box(self.spec, size, fit, self.backend.limits)
        self.last_masks: list[np.ndarray] = []
        self._plans: dict[tuple[int, int], Placement] = {}
        self.stabilizer = Stabilizer(temporal)

    # --- settings --------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def noise(self) -> str:
        return self.sampler.mode

    @noise.setter
    def noise(self, mode: str) -> None:
        self.sampler.mode = mode

    @property
    def seed(self) -> int:
        return self.sampler.seed

    @property
    def temporal(self) -> float:
        """Stabilisation strength, 0 (off) to 1; setting 0 also forgets the stream."""
        return self.stabilizer.strength

    @temporal.setter
    def temporal(self, strength: float) -> None:
        self.stabilizer.strength = strength

    def toggle_temporal(self, strength: float = 0.8) -> float:
        """Off ↔ on at ``strength`` (e.g. the live window's key); returns the new strength."""
        self.temporal = 0.0 if self.temporal else strength
        return self.temporal

    def reset_temporal(self) -> None:
        """The stream jumped (pause/resume, seek, another source): the next frame is not blended."""
        self.stabilizer.reset()

    def describe(self) -> str:
        text = f"{self.backend_name} | noise {self.noise}"
        return text + (f" | temporal {self.temporal:g}" if self.temporal else "")

    def placement(self, h: int, w: int) -> Placement:
        """How a frame of h×w maps onto the model input (cached per frame size)."""
        key = (h, w)
        if key not in self._plans:
            bw, bh = self.box
            if self.fit == "resize":
                plan = Placement(h, w, bh, bw, 0, 0, bh, bw)
            else:
                m = self.spec.multiple
                scale = min(bw / w, bh / h)
                cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
                mw, mh = math.ceil(cw / m) * m, math.ceil(ch / m) * m
                plan = Placement(h, w, mh, mw, (mh - ch) // 2, (mw - cw) // 2, ch, cw)
            self._plans[key] = plan
        return self._plans[key]

    # --- frames ------------------------------------------------------------------
    def _fit(self, frame: np.ndarray) -> tuple[np.ndarray, Placement]:
        """A frame as the model sees it: BGR uint8, resized (and padded) to the model input's size."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            frame = to_bgr8(frame, "frame")
        p = self.placement(*frame.shape[:2])
        img = _resize(frame, p.cw, p.ch)
        if (p.mh, p.mw) != (p.ch, p.cw):
            # mirror padding: the network sees plausible content, not a hard black edge
            img = cv2.copyMakeBorder(img, p.top, p.mh - p.ch - p.top, p.left, p.mw - p.cw - p.left,
                                     cv2.BORDER_REFLECT_101)
        return img, p

    def preprocess(self, frame: np.ndarray) -> tuple[np.ndarray, Placement]:
        """A BGR frame → (the generator's CHW input, its placement)."""
        img, p = self._fit(frame)
        return input_tensor(img, self.spec), p

    def prepare(self, frame: np.ndarray) -> tuple[np.ndarray, Placement, Motion | None]:
        """``preprocess`` for the next frame of a stream, plus the input's motion since the previous one
        (None when temporal is off), for ``postprocess(..., motion)``. Once per frame, in stream order;
        it may run on another thread than the model (p2p-video's decoder does)."""
        img, p = self._fit(frame)
        motion = None
        if self.temporal:  # the flow on the fitted frame: at the model's size, whatever the video's
            motion = self.stabilizer.track(img[p.top:p.top + p.ch, p.left:p.left + p.cw])
        return input_tensor(img, self.spec), p, motion

    def postprocess(self, output: np.ndarray, p: Placement, frame: np.ndarray,
                    motion: Motion | None = None) -> np.ndarray:
        """One CHW output → a BGR frame of the original frame's size; with ``motion`` (from ``prepare``)
        stabilised, which advances the stream (once per frame, in order). Without it: plain."""
        out = output[:, p.top:p.top + p.ch, p.left:p.left + p.cw]
        out = self.stabilizer.blend(out, motion)
        if self.spec.task == "colorize":
            ab = _resize(np.ascontiguousarray(out.transpose(1, 2, 0)), p.w, p.h)
            light = input_tensor(frame, self.spec)  # the frame's own L, at full resolution
            return output_to_bgr(ab.transpose(2, 0, 1), self.spec, light)
        return _resize(output_to_bgr(out, self.spec), p.w, p.h)

    def translate(self, frame: np.ndarray) -> np.ndarray:
        """One BGR uint8 frame (H×W×3) → its translation, same size. With ``temporal`` on, the next
        frame of a stream: blended with the previous call's output."""
        if not self.temporal:
            return self.translate_batch([frame])[0]
        x, p, motion = self.prepare(frame)
        return self.postprocess(self.run(x[None], copy=False)[0], p, frame, motion)

    def translate_batch(self, frames) -> list[np.ndarray]:
        """Frames of one size, run as one batch (batch statistics: see the module doc); never stabilised."""
        frames = list(frames)
        if not frames:
            return []
        if len({f.shape[:2] for f in frames}) > 1:
            raise ValueError("frames of one batch must share a size; translate them one by one instead")
        prepared = [self.preprocess(f) for f in frames]
        x = np.stack([t for t, _ in prepared])
        out = self.run(x, copy=False)
        return [self.postprocess(out[i], prepared[i][1], frames[i]) for i in range(len(frames))]

    def __call__(self, frames):
        """A frame (H×W×3) → a frame; a batch (N×H×W×3 array or a list) → a list of frames."""
        if isinstance(frames, np.ndarray) and frames.ndim in (2, 3):
            return self.translate(frames)
        return self.translate_batch(frames)

    # --- tensors -------------------------------------------------------------------
    def run(self, x: np.ndarray, masks: list[np.ndarray] | None = None, *, copy: bool = True) -> np.ndarray:
        """The generator on NCHW float32 in [-1, 1]; masks drawn by the noise mode unless given."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        n, c, h, w = x.shape
        if c != self.spec.in_channels:
            raise ShapeError(f"input has {c} channels; this model takes {self.spec.in_channels}")
        self.spec.check_size(h, w)
        if self.backend.limits is not None:
            self.backend.limits.check(n, h, w, f"TensorRT engine {self.path.name}")
        if masks is None:
            masks = self.sampler(n, h, w)
        else:
            masks = [np.ascontiguousarray(m, dtype=np.float32) for m in masks]
            want = contract.mask_shapes(self.spec, n, h, w)
            if [m.shape for m in masks] != want:
                raise ShapeError(f"masks of shapes {[m.shape for m in masks]} given; this input needs {want}")
        self.last_masks = masks
        out = self.backend.run(x, masks)
        return out.copy() if copy else out

    def close(self) -> None:
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["Translator", "FIT_MODES", "NOISE_MODES", "parse_size", "Placement"]
