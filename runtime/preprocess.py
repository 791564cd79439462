"""How an image becomes a WxH training crop (--preprocess), with the paper's jitter. Torch-free.

- ``resize-crop`` (the paper's, the default): resize to the load size (286/256 of the training
  size, each side) whatever the image's aspect, random crop WxH, random mirror. Validation:
  resize to WxH.
- ``scale-width-crop``: scale the width to the load size keeping the aspect, random crop WxH,
  random mirror; for data whose aspect already matches (or is taller). Validation: width to W,
  centre crop.
- ``crop``: no resize: random WxH crops of the images at their own resolution, random mirror.
  Validation: the centre crop.

The crop and mirror are drawn once per pair (A and B get the same ones), from a generator the
caller seeds per (seed, epoch, item): that is what makes a resumed run exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PREPROCESS = ("resize-crop", "scale-width-crop", "crop")
LOAD_RATIO = 286 / 256  # the paper's jitter: resize 256² to 286², then crop 256²


@dataclass(frozen=True)
class Crop:
    """Scale the image to (sw, sh), take the WxH window at (x, y), mirror or not."""
    sw: int
    sh: int
    x: int
    y: int
    mirror: bool


def scaled_size(mode: str, image_w: int, image_h: int, width: int, height: int, jitter: bool) -> tuple[int, int]:
    """The size the image is scaled to before cropping."""
    if mode == "crop":
        return image_w, image_h
    load_w = int(round(width * LOAD_RATIO)) if jitter else width
    if mode == "scale-width-crop":
        return load_w, int(round(image_h * load_w / image_w))
    return load_w, int(round(height * LOAD_RATIO)) if jitter else height


def fit_problem(mode: str, image_w: int, image_h: int, width: int, height: int) -> str | None:
    """None if an image of this size gives WxH crops in ``mode``, else what to pass instead (the end of a line)."""
    sw, sh = scaled_size(mode, image_w, image_h, width, height, jitter=False)
    if sw >= width and sh >= height:
        return None
    if mode == "crop":
        return (f"is {image_w}x{image_h}, smaller than the {width}x{height} crops of --preprocess crop: pass a --size "
                f"that fits in {image_w}x{image_h}, or --preprocess resize-crop (which resizes first)")
    return (f"is {image_w}x{image_h}: scaled to width {width} it is only {sh} high, less than the {height} of "
            f"--size {width}x{height}: pass --preprocess resize-crop, or a --size of a wider aspect")


def draw_crop(rng: np.random.Generator, mode: str, image_w: int, image_h: int, width: int, height: int,
              jitter: bool) -> Crop:
    """The crop of one pair: random with ``jitter`` (training), else the centre (top left for resize-crop)."""
    sw, sh = scaled_size(mode, image_w, image_h, width, height, jitter)
    if not jitter:
        return Crop(sw, sh, (sw - width) // 2, (sh - height) // 2, False)
    # the draws in the order the square jitter always made them: x, y, mirror
    x = int(rng.integers(0, sw - width + 1))
    y = int(rng.integers(0, sh - height + 1))
    return Crop(sw, sh, x, y, bool(rng.random() < 0.5))


def apply_crop(img: np.ndarray, crop: Crop, width: int, height: int) -> np.ndarray:
    h, w = img.shape[:2]
    if (w, h) != (crop.sw, crop.sh):
        # area when shrinking, cubic when enlarging (as the runtime resizes frames)
        interp = cv2.INTER_AREA if h >= crop.sh and w >= crop.sw else cv2.INTER_CUBIC
        img = cv2.resize(img, (crop.sw, crop.sh), interpolation=interp)
    img = img[crop.y:crop.y + height, crop.x:crop.x + width]
    return img[:, ::-1] if crop.mirror else img
