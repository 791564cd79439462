"""Image-quality metrics for p2p-eval: what "good" means for a pix2pix model.

Inputs are uint8 BGR images (what a user sees) unless a name says otherwise.
PSNR and SSIM come from scikit-image (maintained, widely checked) rather than
our own code. The others are the paper's arguments made measurable:

- sharpness ratio: high-frequency energy (mean squared Laplacian) of outputs over
  that of targets. L1 alone gives blurry results (ratio well below 1); a GAN term
  should bring it towards 1.
- dropout std: pix2pix's only noise is test-time dropout; the mean per-pixel
  standard deviation over K samples says how stochastic the outputs really are
  (the paper notes it is small).
- a/b histogram intersection: the paper's colourfulness measure for colorisation.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

# PSNR of identical images is infinite; JSON has no inf, so report this cap instead.
PSNR_CAP = 100.0
AB_RANGE = (-110.0, 110.0)   # OpenCV float Lab: a and b lie within about ±110
AB_BINS = 64


def l1(output: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute difference of two tensors (the model's [-1, 1] space, as training's val L1)."""
    return float(np.abs(output.astype(np.float64) - target.astype(np.float64)).mean())


def psnr(output: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB of uint8 images, capped at PSNR_CAP (identical images)."""
    if np.array_equal(output, target):
        return PSNR_CAP
    return float(min(peak_signal_noise_ratio(target, output, data_range=255), PSNR_CAP))


def ssim(output: np.ndarray, target: np.ndarray) -> float:
    """SSIM of uint8 colour images (mean over channels; 1 for identical images)."""
    win = min(7, *output.shape[:2])
    win -= 1 - win % 2  # odd, and no larger than the image
    return float(structural_similarity(target, output, data_range=255, channel_axis=2, win_size=win))


def laplacian_energy(image: np.ndarray) -> float:
    """Mean squared Laplacian of the gray image: high-frequency content."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32) if image.ndim == 3 else image.astype(np.float32)
    return float(np.mean(cv2.Laplacian(gray, cv2.CV_32F, ksize=3) ** 2))


def dropout_std(samples: np.ndarray) -> float:
    """Mean per-pixel standard deviation over K samples of one input (K×H×W×C uint8), in [0, 1] units."""
    if len(samples) < 2:
        return 0.0
    return float(samples.astype(np.float64).std(axis=0).mean() / 255.0)  # on the integers: exact 0 when equal


def ab_histograms(images) -> np.ndarray:
    """Normalised histograms of the a and b channels over a set of BGR images: shape (2, AB_BINS)."""
    hist = np.zeros((2, AB_BINS), np.float64)
    for img in images:
        lab = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
        for c in (0, 1):
            h, _ = np.histogram(lab[:, :, c + 1], bins=AB_BINS, range=AB_RANGE)
            hist[c] += h
    total = hist.sum(axis=1, keepdims=True)
    return hist / np.maximum(total, 1)


def histogram_intersection(outputs, targets) -> dict:
    """The paper's colorisation measure: Σ min(h_out, h_target) per channel, 1 = same colour distribution."""
    ho, ht = ab_histograms(outputs), ab_histograms(targets)
    inter = np.minimum(ho, ht).sum(axis=1)
    return {"a": float(inter[0]), "b": float(inter[1])}


class Running:
    """Accumulates per-image metrics; ``summary()`` gives means (and the set-level ratios)."""

    def __init__(self):
        self.per_image: list[dict] = []
        self.hf_out = 0.0
        self.hf_target = 0.0
        self.stds: list[float] = []

    def add(self, out_tensor, target_tensor, out_img, target_img, samples=None) -> dict:
        row = {"l1": l1(out_tensor, target_tensor), "psnr": psnr(out_img, target_img),
               "ssim": ssim(out_img, target_img)}
        self.hf_out += laplacian_energy(out_img)
        self.hf_target += laplacian_energy(target_img)
        if samples is not None and len(samples) > 1:
            row["dropout_std"] = dropout_std(samples)
            self.stds.append(row["dropout_std"])
        self.per_image.append(row)
        return row

    def summary(self) -> dict:
        n = len(self.per_image)
        out = {"images": n}
        for k in ("l1", "psnr", "ssim"):
            out[k] = float(np.mean([r[k] for r in self.per_image])) if n else math.nan
        out["sharpness"] = self.hf_out / self.hf_target if self.hf_target > 0 else math.nan
        out["dropout_std"] = float(np.mean(self.stds)) if self.stds else None
        return out
