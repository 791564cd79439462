"""Image decoding, the task adapters, and frame ⇄ tensor conversion (numpy + OpenCV).

Training and serving both call these functions, so a frame is preprocessed the
same way in both: train/serve skew cannot happen by construction.
Tensors here are float32 NCHW in [-1, 1]; frames are uint8 BGR HxWx3.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import UserError
from .spec import ModelSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# Lab scaling for colorisation: L in [0, 100] → [-1, 1]; a, b in about [-110, 110] → [-1, 1].
L_SCALE, AB_SCALE = 50.0, 110.0


class ImageError(UserError, ValueError):
    """An image that cannot be used: unreadable, corrupt, or of the wrong shape."""


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def to_bgr8(image: np.ndarray, where: str = "image") -> np.ndarray:
    """Any decoded image (gray, gray+alpha, BGR, BGRA; 8, 16 bit or float) as uint8 BGR."""
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"{where}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if channels == 2:  # gray + alpha
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if channels == 3:
        return image
    raise ImageError(f"{where}: unsupported number of channels {channels}")


def read_image(path: Path) -> np.ndarray:
    """Decode an image file as uint8 BGR, or raise ImageError saying what is wrong with it."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
    if data.size == 0:
        raise ImageError(f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageError(f"{path}: not a decodable image (corrupt or truncated?)")
    return to_bgr8(image, str(path))


def split_aligned(image: np.ndarray, where: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """The pix2pix dataset layout: one image, A on the left, B on the right."""
    h, w = image.shape[:2]
    if w != 2 * h:
        raise ImageError(
            f"{where}: {w}x{h} is not an aligned A|B pair (width must be twice the height); "
            "use --layout folders for A/ and B/ folders, or a --task that derives pairs from photos")
    return image[:, : w // 2], image[:, w // 2:]


# --- task adapters: photo → (input, target) and model output → photo ---------
def canny_edges(bgr: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Input adapter of the edges task: black Canny edges on white, 1 channel uint8."""
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return 255 - cv2.Canny(gray, spec.canny_low, spec.canny_high)


def bgr_to_lab(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)


def input_tensor(bgr: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """One frame (already at model size) → the generator's input, CHW float32 in [-1, 1]."""
    if spec.task == "edges":
        return (canny_edges(bgr, spec).astype(np.float32) / 127.5 - 1.0)[None]
    if spec.task == "colorize":
        return (bgr_to_lab(bgr)[:, :, 0] / L_SCALE - 1.0)[None]
    return image_to_chw(bgr, spec)


def target_tensor(bgr: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The training target for a photo, CHW float32 in [-1, 1]."""
    if spec.task == "colorize":
        return np.ascontiguousarray(bgr_to_lab(bgr)[:, :, 1:].transpose(2, 0, 1) / AB_SCALE)
    return image_to_chw(bgr, spec)


def image_to_chw(bgr: np.ndarray, spec: ModelSpec) -> np.ndarray:
    img = bgr[:, :, ::-1] if spec.channel_order == "RGB" else bgr
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / 127.5 - 1.0


def output_to_bgr(output: np.ndarray, spec: ModelSpec, model_input: np.ndarray | None = None) -> np.ndarray:
    """One generator output (CHW, [-1, 1]) → a uint8 BGR frame.

    Colorisation needs the input's L channel (``model_input``, CHW) to merge with the predicted ab.
    """
    if spec.task == "colorize":
        if model_input is None:
            raise ValueError("colorisation output needs the input's L channel")
        lab = np.empty(output.shape[1:] + (3,), np.float32)
        lab[:, :, 0] = (model_input[0] + 1.0) * L_SCALE
        lab[:, :, 1:] = output.transpose(1, 2, 0) * AB_SCALE
        bgr = cv2.cvtColor(lab, cv2.COLOR_Lab2BGR)
        return np.clip(bgr * 255.0 + 0.5, 0, 255).astype(np.uint8)
    # per plane with OpenCV (scale, round, saturate in one pass), then interleaved as bytes: ~5× faster
    # than the same arithmetic in numpy on float HWC, which is most of a compact model's frame time
    planes = [cv2.addWeighted(p, 127.5, p, 0.0, 127.5, dtype=cv2.CV_8U) for p in output]
    if len(planes) == 1:
        return cv2.cvtColor(planes[0], cv2.COLOR_GRAY2BGR)
    return cv2.merge(planes[::-1] if spec.channel_order == "RGB" else planes)


def input_to_bgr(model_input: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The generator's input (CHW, [-1, 1]) shown as a BGR frame: for sample grids and side-by-sides."""
    if model_input.shape[0] == 1:
        gray = np.clip((model_input[0] + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    return output_to_bgr(model_input, ModelSpec(**{**spec.to_dict(), "task": "paired"}))


def target_to_bgr(target: np.ndarray, spec: ModelSpec, model_input: np.ndarray) -> np.ndarray:
    return output_to_bgr(target, spec, model_input)
