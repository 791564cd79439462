"""Image decoding, the task adapters, and frame ⇄ tensor conversion (numpy + OpenCV).

Training and serving both call these functions, so a frame is preprocessed the
same way in both: train/serve skew cannot happen by construction.
Tensors here are float32 NCHW in [-1, 1]; frames are uint8 BGR HxWx3.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from .errors import UserError
from .files import write_atomic
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


# libjpeg's warnings (jerror.h) about damaged data: it decodes such a file anyway, grey where data is
# missing, and prints the warning on stderr without a file name. p2p refuses the file and names it.
JPEG_DAMAGE = re.compile(r"^(Corrupt JPEG data.*|Premature end of JPEG file.*|Invalid SOS parameters.*)$", re.M)
_STDERR = threading.Lock()  # fd 2 is one per process: one capture at a time


@contextmanager
def _stderr_captured(out: list):
    """What C libraries write to fd 2 meanwhile goes to a memory file, appended to ``out`` at the end."""
    with _STDERR:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            buf = os.memfd_create("p2p-stderr") if hasattr(os, "memfd_create") else \
                os.dup(tempfile.TemporaryFile().fileno())
        except OSError:
            os.close(saved)
            yield
            return
        os.dup2(buf, 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.lseek(buf, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(buf, 1 << 16):
                chunks.append(chunk)
            os.close(buf)
            out.append(b"".join(chunks).decode(errors="replace"))


def _decode(data: np.ndarray, path: Path) -> np.ndarray | None:
    """cv2.imdecode, with a JPEG's damage warnings turned into an ImageError naming ``path``."""
    if data[:2].tobytes() != b"\xff\xd8":  # not a JPEG
        return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    said: list[str] = []
    with _stderr_captured(said):
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    text = "".join(said)
    damage = JPEG_DAMAGE.findall(text)
    rest = JPEG_DAMAGE.sub("", text).strip()
    if rest:  # anything else written meanwhile (another thread's output) goes where it was going
        os.write(2, (rest + "\n").encode())
    if damage:
        raise ImageError(f"{path}: damaged JPEG data (libjpeg: {damage[0].strip()}); p2p does not use damaged "
                         "images: re-save or remove it")
    return image


def read_image(path: Path) -> np.ndarray:
    """Decode an image file as uint8 BGR, or raise ImageError saying what is wrong with it (naming the file)."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
    if data.size == 0:
        raise ImageError(f"{path}: empty file")
    try:
        image = _decode(data, path)
    except cv2.error as exc:  # OpenCV 5 raises where 4 returned None, e.g. above its pixel limit
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise ImageError(f"{path}: too many pixels for OpenCV (over its limit of CV_IO_MAX_IMAGE_PIXELS; if "
                             "the image is genuine, raise it with the environment variable "
                             "OPENCV_IO_MAX_IMAGE_PIXELS)") from None
        raise ImageError(f"{path}: OpenCV cannot decode it ({_cv_reason(exc)})") from None
    if image is None or image.size == 0:
        raise ImageError(f"{path}: not a decodable image (corrupt or truncated?)")
    return to_bgr8(image, str(path))


def write_image(path: Path, image: np.ndarray) -> None:
    """Encode by the file's suffix and write atomically (runtime.files): OutputError says why it could not be."""
    path = Path(path)
    try:
        ok, data = cv2.imencode(path.suffix or ".png", image)
    except cv2.error as exc:
        raise ImageError(f"cannot encode {path}: {_cv_reason(exc)}") from None
    if not ok:
        raise ImageError(f"cannot encode {path}: OpenCV has no encoder for {path.suffix!r}")
    write_atomic(path, data.tobytes())


def _cv_reason(exc: Exception) -> str:
    """The informative part of a cv2.error ("OpenCV(5.1.0) /path/file.cpp:80: error: (-215:...) X in function f")."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(" error: ", 1)[-1][:200]


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
