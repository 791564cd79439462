"""The warping error (Lai et al., *Learning Blind Video Temporal Consistency*, ECCV 2018): flicker, as a number.

For each pair of consecutive frames: compute the optical flow of the *input* frames, warp output
t−1 onto frame t with it, and average the squared difference to output t over the pixels that are
not occluded (forward–backward check, ``flow.consistent``):

    E_t = Σ_x M_t(x) · ‖O_t(x) − warp(O_{t−1})(x)‖² / Σ_x M_t(x)

with colours in [0, 1] and ‖·‖² summed over the three channels, as in Lai et al.'s evaluation code.
The clip's error is the mean of E_t over its frame pairs. The input clip's own error (the same with
O = the input frames) is the floor: what the scene itself changes after warping (lighting, motion
blur, flow errors). A translation that flickers scores far above it.

Fixed for comparability (whatever the clip's or the model's size): every frame, input and output, is
scaled to ``METRIC_WIDTH`` pixels wide (aspect kept; the shared clips become 320×240), and the flow is
OpenCV's DIS at its MEDIUM preset on gray frames at that size.
"""
from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np

from .flow import FlowEstimator, backward_motion, to_gray, warp

METRIC_WIDTH = 320
METRIC_FLOW = "dis-medium"
INPUT = "input"  # the name of the input clip's own series


def metric_size(height: int, width: int, target: int = METRIC_WIDTH) -> tuple[int, int]:
    """(width, height) frames are measured at: ``target`` wide, the frame's aspect ratio."""
    return target, max(1, round(height * target / width))


class WarpingError:
    """Feed a clip in order: ``step(input_frame, {name: output_frame, ...})`` per frame.

    Every named output stream (and the input itself, as ``"input"``) gets one error per frame pair in
    ``series``; ``summary()`` averages them. Streaming: memory does not grow with the clip.
    """

    def __init__(self, width: int = METRIC_WIDTH, method: str = METRIC_FLOW):
        self.width = width
        self.flow = FlowEstimator(method)
        self.method = method
        self.series: dict[str, list[float]] = {}
        self.kept: list[float] = []  # fraction of pixels that passed the occlusion check, per pair
        self.frames = 0
        self._size: tuple[int, int] | None = None
        self._prev_gray: np.ndarray | None = None
        self._prev: dict[str, np.ndarray] = {}

    def _image(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape[:2] != (self._size[1], self._size[0]):
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        return frame.astype(np.float32) * np.float32(1 / 255)

    def step(self, frame: np.ndarray, outputs: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        """Add the next frame of the clip and its outputs; returns this pair's errors ({} for the first frame)."""
        streams = {INPUT: frame, **(outputs or {})}
        self.frames += 1
        if self._size is None:
            self._size = metric_size(*frame.shape[:2], self.width)
        gray = to_gray(frame, self._size)
        images = {name: self._image(img) for name, img in streams.items()}
        errors: dict[str, float] = {}
        if self._prev_gray is not None:
            backward, points, mask = backward_motion(self.flow, gray, self._prev_gray)
            self.kept.append(float(mask.mean()))
            for name, img in images.items():
                if name not in self._prev:
                    continue  # a stream that started late: from its second frame on
                diff = img - warp(self._prev[name], backward, points)
                err = (diff * diff).sum(axis=2)
                errors[name] = float(err[mask].mean()) if mask.any() else math.nan
                self.series.setdefault(name, []).append(errors[name])
        self._prev_gray, self._prev = gray, images
        return errors

    def summary(self) -> dict[str, float]:
        """The clip's warping error per stream: the mean over its frame pairs (NaN pairs left out)."""
        return {name: _nanmean(values) for name, values in self.series.items()}


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def read_clip(path, max_frames: int | None = None):
    """The decoded pictures of a video file, in order (each once: repeated frames would only add zeros)."""
    cap = cv2.VideoCapture(str(path))
    try:
        n = 0
        while max_frames is None or n < max_frames:
            ok, frame = cap.read()
            if not ok or frame is None:
                return
            n += 1
            yield frame
    finally:
        cap.release()


def measure(frames, streams: dict[str, Callable[[np.ndarray], np.ndarray]], *,
            on_frame: Callable[[int, np.ndarray, dict], None] | None = None) -> WarpingError:
    """Translate each frame by every stream (name → function, e.g. a Translator's ``translate``) and feed
    the meter; ``on_frame(n, frame, outputs)`` after each frame (n from 1). Returns the meter."""
    meter = WarpingError()
    for n, frame in enumerate(frames, 1):
        outputs = {name: fn(frame) for name, fn in streams.items()}
        meter.step(frame, outputs)
        if on_frame is not None:
            on_frame(n, frame, outputs)
    return meter
