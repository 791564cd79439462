"""Optical flow between input frames, warping along it, and where to trust it (OpenCV only, no torch).

Shared by the warping-error metric (``warping_error``) and the stabiliser (``temporal``).

Conventions: flow is computed on gray uint8 frames; a flow field is H×W×2 float32 in pixels (dx, dy).
``flow(a, b)`` maps each pixel x of ``a`` to where it is in ``b``: a(x) ≈ b(x + flow(x)). So with
``backward = flow(current, previous)``, ``warp(previous_image, backward)`` lays the previous image
over the current frame, which is how output t−1 is compared with (or blended into) output t.
"""
from __future__ import annotations

import cv2
import numpy as np

DIS_PRESETS = {"dis-ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "dis-fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "dis-medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
FLOW_METHODS = (*DIS_PRESETS, "farneback")


class FlowEstimator:
    """Dense optical flow on gray uint8 frames: DIS (Kroeger et al., ECCV 2016) or Farneback.

    One instance per thread: OpenCV's DIS object keeps scratch buffers between calls.
    """

    def __init__(self, method: str = "dis-medium"):
        if method not in FLOW_METHODS:
            raise ValueError(f"unknown flow method {method!r}; expected one of {', '.join(FLOW_METHODS)}")
        self.method = method
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[method]) if method in DIS_PRESETS else None

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The flow from ``a`` to ``b`` (a(x) ≈ b(x + flow(x)))."""
        if self._dis is not None:
            return self._dis.calc(a, b, None)
        return cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=4, winsize=15, iterations=3,
                                            poly_n=5, poly_sigma=1.2, flags=0)


def backward_motion(flow: FlowEstimator, current: np.ndarray, previous: np.ndarray):
    """(backward flow current → previous, its sample points, the non-occluded mask): what both the
    warping error and the stabiliser need to lay the previous frame over the current one."""
    backward = flow(current, previous)
    points = sample_points(backward)
    return backward, points, consistent(backward, flow(previous, current), points)


def to_gray(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A BGR (or gray) uint8 frame as gray at ``size`` (width, height): what flow is computed on."""
    if (frame.shape[1], frame.shape[0]) != tuple(size):
        # shrinking: area averaging, so fine texture does not alias into false motion
        frame = cv2.resize(frame, tuple(size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(xs, ys): each pixel's own coordinates, float32 H×W (cached per size; treat as read-only)."""
    if (h, w) not in _GRIDS:
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        _GRIDS[(h, w)] = (xs, ys)
    return _GRIDS[(h, w)]


def sample_points(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel lands under ``flow``: (x + dx, y + dy)."""
    xs, ys = pixel_grid(*flow.shape[:2])
    return xs + flow[..., 0], ys + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray, points=None) -> np.ndarray:
    """``image`` sampled at x + flow(x) (bilinear, edges repeated): e.g. the previous output laid over
    the current frame. ``points`` (from ``sample_points``) saves recomputing them for several images."""
    mx, my = points if points is not None else sample_points(flow)
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def consistent(backward: np.ndarray, forward: np.ndarray, points=None) -> np.ndarray:
    """Pixels of the current frame that are not occluded (bool H×W): the forward–backward check of
    Sundaram et al. (ECCV 2010) with the thresholds of Ruder et al. (GCPR 2016), which Lai et al.
    (ECCV 2018) use for the warping error: going back by ``backward`` and forward again by
    ``forward`` must return to the start, |b + f'|² < 0.01 (|b|² + |f'|²) + 0.5; and the pixel must
    come from inside the previous frame."""
    mx, my = points if points is not None else sample_points(backward)
    h, w = backward.shape[:2]
    there = cv2.remap(forward, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    (bx, by), (tx, ty) = cv2.split(backward), cv2.split(there)  # per-channel planes: 10× faster than axis sums
    lx, ly = bx + tx, by + ty
    ok = lx * lx + ly * ly < 0.01 * (bx * bx + by * by + tx * tx + ty * ty) + 0.5
    return ok & (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
