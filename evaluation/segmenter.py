"""The paper's "FCN-score" for facades: segment generated photos with a net trained on real ones.

If a labels→photo model is good, an off-the-shelf segmenter recovers the input
labels from its output about as well as from the real photo (the paper's
"ground truth" row is the upper bound). We have no pretrained facade FCN, so
``train_segmenter`` trains a small fully convolutional net once on the real
training photos of the dataset and caches it (~/.cache/p2p by default), keyed by
the data and the settings, so every model is judged by the same segmenter.

Class ids come from the CMP label colours by nearest palette colour: the label
maps went through JPEG, so exact colours are rare.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from p2p.runtime.errors import UserError
from p2p.runtime.files import atomic_write
from p2p.runtime.labels import CMP_CLASSES, CMP_PALETTE
from p2p.runtime.pairs import PairDataset, resolve_split
from p2p.runtime.spec import ModelSpec

# CMP facade palette, RGB, in class-id order (1 background ... 12 shop; index 0 here = id 1).
CMP_PALETTE_RGB = np.array(CMP_PALETTE, np.float32)
N_CLASSES = len(CMP_CLASSES)
SEGMENTER_VERSION = 2  # 2: weights initialised from cfg.seed (1 used the global RNG)
# Mean distance (0-255 RGB units) to the nearest palette colour above which an image is
# not a CMP label map: JPEG'd labels measure 6-38 (more at small sizes), photos 110+.
MAX_LABEL_DISTANCE = 70.0


class SegmenterError(UserError, ValueError):
    """The segmentation score cannot be computed here; the message says why."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "p2p"


def label_ids(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """H×W×3 RGB label map (uint8 or float) → (class ids 0..11, mean distance to the palette)."""
    px = rgb.reshape(-1, 3).astype(np.float32)
    d2 = ((px[:, None, :] - CMP_PALETTE_RGB[None]) ** 2).sum(-1)
    ids = d2.argmin(1)
    dist = float(np.sqrt(d2[np.arange(len(px)), ids]).mean())
    return ids.reshape(rgb.shape[:2]).astype(np.int64), dist


def tensor_to_rgb(chw: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """A 3-channel CHW tensor in [-1, 1] → H×W×3 RGB float in 0..255 (whatever the spec's order)."""
    img = (np.asarray(chw, np.float32).transpose(1, 2, 0) + 1.0) * 127.5
    return img if spec.channel_order == "RGB" else img[:, :, ::-1]


class SegNet(nn.Module):
    """A small encoder–decoder with skips (a mini U-Net): enough to tell windows from walls."""

    def __init__(self, width: int = 24, classes: int = N_CLASSES):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        w = [width, width * 2, width * 4, width * 8]
        self.enc = nn.ModuleList([block(3, w[0]), block(w[0], w[1]), block(w[1], w[2]), block(w[2], w[3])])
        self.dec = nn.ModuleList([block(w[3] + w[2], w[2]), block(w[2] + w[1], w[1]), block(w[1] + w[0], w[0])])
        self.head = nn.Conv2d(w[0], classes, 1)

    def forward(self, x):
        feats = []
        for i, enc in enumerate(self.enc):
            x = enc(x if i == 0 else F.max_pool2d(x, 2))
            feats.append(x)
        for dec, skip in zip(self.dec, reversed(feats[:-1])):
            x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
            x = dec(torch.cat([x, skip], 1))
        return self.head(x)


@dataclass(frozen=True)
class SegConfig:
    size: int = 128          # photos are segmented at size×size
    width: int = 16
    iters: int = 1000        # 10 epochs of the 400 facades: ~5 min on one core
    batch: int = 4
    lr: float = 2e-3
    seed: int = 0


def _data_fingerprint(folder: Path) -> str:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}:{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def _normalise(rgb: np.ndarray) -> np.ndarray:
    """H×W×3 RGB 0..255 (or N×H×W×3) → float tensor layout N×3×H×W in [-1, 1]."""
    x = np.asarray(rgb, np.float32) / 127.5 - 1.0
    if x.ndim == 3:
        x = x[None]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def load_pairs(folder: Path, direction: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(photos N×H×W×3 RGB float, class ids N×H×W) from an A|B facades split, labels on the input side."""
    spec = ModelSpec.for_task("paired", size, direction=direction)
    ds = PairDataset(folder, spec, jitter=False)
    photos, ids = [], []
    for i in range(len(ds)):
        x, y = ds[i]
        lab, dist = label_ids(tensor_to_rgb(x, spec))
        if dist > MAX_LABEL_DISTANCE:
            raise SegmenterError(
                f"{ds.pairs[i].a.name}: the input side (direction {direction}) is not a CMP label map "
                f"(mean distance {dist:.0f} to the palette): the segmenter needs facades labels→photo data")
        photos.append(tensor_to_rgb(y, spec))
        ids.append(lab)
    return np.stack(photos), np.stack(ids)


def train_segmenter(data: Path, direction: str = "BtoA", cfg: SegConfig = SegConfig(),
                    cache: Path | None = None, log=None) -> SegNet:
    """The segmenter for ``data``/train, trained now or loaded from the cache."""
    train_dir = resolve_split(Path(data), "train")
    key = hashlib.sha256(json.dumps({"v": SEGMENTER_VERSION, "data": _data_fingerprint(train_dir),
                                     "direction": direction, **asdict(cfg)}, sort_keys=True).encode()).hexdigest()[:16]
    cache = Path(cache) if cache else default_cache_dir()
    path = cache / f"segmenter-{key}.pt"
    torch.manual_seed(cfg.seed)  # the initial weights too: the same data and settings give the same segmenter
    net = SegNet(cfg.width)
    if path.exists():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state["weights"])
            net.eval()
            return net
        except Exception:  # a corrupt cache entry is retrained, not fatal
            path.unlink(missing_ok=True)
    photos, ids = load_pairs(train_dir, direction, cfg.size)
    if log:
        log(f"training the facade segmenter on {len(photos)} real photos ({cfg.iters} iterations; cached in {cache})")
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(cfg.seed)
    x_all, y_all = torch.from_numpy(_normalise(photos)), torch.from_numpy(ids)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.iters, pct_start=0.1)
    net.train()
    for _ in range(cfg.iters):
        idx = torch.randint(len(x_all), (cfg.batch,), generator=g)
        x, y = x_all[idx], y_all[idx]
        if torch.rand((), generator=g) < 0.5:  # mirror: facades are left-right symmetric
            x, y = x.flip(3), y.flip(2)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with atomic_write(path) as f:
        torch.save({"weights": net.state_dict(), "config": asdict(cfg), "seconds": time.perf_counter() - t0}, f)
    return net


@torch.no_grad()
def predict(net: SegNet, photos_rgb: np.ndarray, size: int, batch: int = 16) -> np.ndarray:
    """N×H×W×3 RGB 0..255 photos → N×size×size class ids.

    BatchNorm uses running statistics here (eval mode): the segmenter, unlike the
    generator, must score each photo the same whatever else is in the batch.
    """
    net.eval()
    out = []
    for i in range(0, len(photos_rgb), batch):
        chunk = [cv2.resize(np.asarray(p, np.float32), (size, size), interpolation=cv2.INTER_AREA)
                 if p.shape[:2] != (size, size) else p for p in photos_rgb[i:i + batch]]
        out.append(net(torch.from_numpy(_normalise(np.stack(chunk)))).argmax(1).numpy())
    return np.concatenate(out)


def resize_ids(ids: np.ndarray, size: int) -> np.ndarray:
    if ids.shape == (size, size):
        return ids
    return cv2.resize(ids.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(np.int64)


def confusion(pred: np.ndarray, truth: np.ndarray, classes: int = N_CLASSES) -> np.ndarray:
    return np.bincount(truth.ravel() * classes + pred.ravel(), minlength=classes * classes).reshape(classes, classes)


def scores(conf: np.ndarray) -> dict:
    """The paper's three numbers from a confusion matrix (rows truth, columns prediction).

    Per-class accuracy and IoU are means over the classes present in the truth.
    """
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    truth, pred = conf.sum(1), conf.sum(0)
    present = truth > 0
    return {"per_pixel_acc": float(tp.sum() / max(conf.sum(), 1)),
            "per_class_acc": float((tp[present] / truth[present]).mean()),
            "class_iou": float((tp[present] / (truth + pred - tp)[present]).mean())}


def majority_baseline(conf: np.ndarray) -> float:
    """Per-pixel accuracy of always answering the most common class: what "chance" means here."""
    truth = conf.sum(1)
    return float(truth.max() / max(truth.sum(), 1))
