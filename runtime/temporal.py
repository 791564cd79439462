"""Temporal stabilisation: each new output is blended with the previous one, warped along the input's motion.

pix2pix translates each frame on its own, so textures crawl from frame to frame even with fixed
dropout noise (each frame's own normalisation statistics, small input changes, Canny edges that
come and go). Where the *input* is the same scene point as in the previous frame, the output should
be the same too; so:

    result_t = out_t + w · (warp(result_{t−1}) − out_t),   w = strength · confidence

``warp`` follows the optical flow of the input frames (DIS, on a small gray copy: cheap), and the
per-pixel confidence is 0 where that flow cannot be trusted: pixels that fail the forward–backward
check (occluded or uncovered, e.g. behind a walking person) and pixels whose input changed after
warping (the warped previous input does not match the current one). So static regions stop
crawling, and moving ones are not smeared into ghost trails. When most of the frame fails the checks
(a scene cut, a camera that jumps) the blend starts over from the new output.

The work is split in two calls so a pipeline can overlap them with the model: ``track`` (the flow,
on the input frame as fitted to the model, e.g. in a decoder thread) and ``blend`` (on the model's
output, e.g. in an encoder thread). Each must be called once per frame, in stream order; state is
per stream. Both work at the model's resolution (flow at half of it or less), whatever the video's.
numpy + OpenCV only: runs wherever the runtime does (a Jetson included).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .flow import FlowEstimator, backward_motion, pixel_grid, to_gray, warp

FLOW_SIDE = 96              # the flow image's longer side (pixels): cost, not quality, sets it (benchmarks/temporal.md)
FLOW_METHOD = "dis-ultrafast"  # half the cost of dis-fast for a few points less calm (benchmarks/temporal.md)
PHOTO_TOLERANCE = 16.0      # gray levels (0–255) of input change after warping where confidence falls to 1/e
CUT_BELOW = 0.1             # a cut when fewer than this fraction of pixels are trusted


@dataclass(frozen=True)
class Motion:
    """How the current frame relates to the previous one (at flow resolution)."""
    flow: np.ndarray | None        # backward flow (current → previous), in flow-image pixels; None: nothing to blend
    confidence: np.ndarray | None  # 0–1 per flow pixel: how far to trust the warped previous output
    trusted: float = 0.0           # fraction of pixels with confidence > 0.5
    cut: bool = False              # scene cut / jump detected: the blend restarts

    @property
    def restart(self) -> bool:
        return self.flow is None or self.cut


def check_strength(strength: float) -> float:
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"temporal strength {strength:g} is out of range: use 0 (off) to 1 (strongest)")
    return strength


class Stabilizer:
    """Per-stream state of the temporal blend; ``strength`` 0 = off (outputs pass through untouched)."""

    def __init__(self, strength: float = 0.0, *, flow_side: int = FLOW_SIDE, method: str = FLOW_METHOD,
                 tolerance: float = PHOTO_TOLERANCE, cut_below: float = CUT_BELOW):
        self._strength = check_strength(strength)
        self.flow_side, self.tolerance, self.cut_below = flow_side, tolerance, cut_below
        self._flow = FlowEstimator(method)
        self._prev_gray: np.ndarray | None = None   # written by track() only
        self._prev_out: np.ndarray | None = None    # written by blend() only
        self.cuts = 0                               # restarts after a cut or jump (for reports)

    @property
    def strength(self) -> float:
        return self._strength

    @strength.setter
    def strength(self, value: float) -> None:
        self._strength = check_strength(value)
        if not self._strength:
            self.reset()

    def reset(self) -> None:
        """Forget the stream (the next frame starts afresh): e.g. after a pause, a seek or a new source."""
        self._prev_gray = self._prev_out = None

    def flow_size(self, width: int, height: int) -> tuple[int, int]:
        scale = min(1.0, self.flow_side / max(width, height))
        return max(8, round(width * scale)), max(8, round(height * scale))

    def track(self, image: np.ndarray) -> Motion | None:
        """The motion from the previous tracked image to ``image`` (BGR uint8 at the size of the outputs
        it will blend: the frame as fitted to the model, padding cropped); None when off."""
        if not self._strength:
            return None
        gray = to_gray(image, self.flow_size(image.shape[1], image.shape[0]))
        prev, self._prev_gray = self._prev_gray, gray
        if prev is None or prev.shape != gray.shape:
            return Motion(None, None)
        backward, points, fb_ok = backward_motion(self._flow, gray, prev)
        change = cv2.absdiff(gray, warp(prev, backward, points)).astype(np.float32) * np.float32(1 / self.tolerance)
        confidence = np.exp(-change * change) * fb_ok
        # distrust a pixel's neighbours too: motion edges are blurry at this resolution
        confidence = cv2.erode(confidence, np.ones((3, 3), np.uint8))
        trusted = float((confidence > 0.5).mean())
        return Motion(backward, confidence, trusted, cut=trusted < self.cut_below)

    def blend(self, output: np.ndarray, motion: Motion | None) -> np.ndarray:
        """``output`` (C×H×W float32, the model's output for the tracked frame) blended with the previous
        result warped onto it; returns C×H×W. ``motion`` None (off) returns ``output`` itself."""
        if motion is None or not self._strength:
            return output
        out = cv2.merge(list(output))  # C×H×W → H×W×C (cv2.merge: a fast copy)
        prev = self._prev_out
        if motion.restart or prev is None or prev.shape != out.shape:
            if motion.cut:
                self.cuts += 1
            self._prev_out = out
            return output
        h, w = out.shape[:2]
        fh, fw = motion.flow.shape[:2]
        xs, ys = pixel_grid(h, w)
        # the flow upsampled to the output and scaled to its pixels: where each output pixel was before
        fx, fy = cv2.split(motion.flow)
        map_x = cv2.scaleAdd(cv2.resize(fx, (w, h), interpolation=cv2.INTER_LINEAR), w / fw, xs)
        map_y = cv2.scaleAdd(cv2.resize(fy, (w, h), interpolation=cv2.INTER_LINEAR), h / fh, ys)
        warped = cv2.remap(prev, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        weight = cv2.resize(motion.confidence, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(self._strength)
        # weight · warped + (1 − weight) · out, per pixel, in one multi-threaded OpenCV pass
        result = cv2.blendLinear(warped, out, weight, 1.0 - weight)
        if result.ndim == 2:
            result = result[:, :, None]
        self._prev_out = result
        return result.transpose(2, 0, 1)
