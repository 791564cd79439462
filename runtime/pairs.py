"""Paired data on disk: the pix2pix A|B layout, A/ and B/ folders, or photos with a task adapter.

Torch-free, so that training and evaluation (which scores exported models on a Jetson
without torch) read datasets with the same code. Decoding and the task adapters come
from ``images`` (the same code serves frames at run time). Jitter is the paper's by
default: resize to 286/256 of the size, random crop back to the size, random mirror; the
same crop and flip for A and B (``preprocess`` has it and the other --preprocess modes).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import UserError
from .images import ImageError, input_tensor, list_images, read_image, split_aligned, target_tensor
from .preprocess import apply_crop, draw_crop, fit_problem
from .spec import ModelSpec

LAYOUTS = ("auto", "aligned", "folders", "photos")


class DataError(UserError, ValueError):
    """A dataset that cannot be trained on; the message says what to fix."""


@dataclass
class PairSource:
    """Where one training pair comes from: an aligned image, two files, or one photo."""
    a: Path
    b: Path | None = None


def resolve_split(root: Path, split: str) -> Path:
    """DIR/split when it exists, else DIR itself (for train); None-like errors otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    sub = root / split
    if sub.is_dir():
        return sub
    if split == "train":
        return root
    raise DataError(f"{root} has no {split}/ folder")


def detect_layout(folder: Path, task: str) -> str:
    if task != "paired":
        return "photos"
    if (folder / "A").is_dir() and (folder / "B").is_dir():
        return "folders"
    return "aligned"


def find_pairs(folder: Path, layout: str) -> list[PairSource]:
    if layout == "folders":
        a_dir, b_dir = folder / "A", folder / "B"
        if not (a_dir.is_dir() and b_dir.is_dir()):
            raise DataError(f"{folder} needs A/ and B/ folders for --layout folders")
        a_files = {p.stem: p for p in list_images(a_dir)}
        b_files = {p.stem: p for p in list_images(b_dir)}
        only_a, only_b = sorted(set(a_files) - set(b_files)), sorted(set(b_files) - set(a_files))
        if only_a or only_b:
            raise DataError(
                f"A/ and B/ in {folder} do not match: {len(only_a)} names only in A/ "
                f"(e.g. {only_a[:3]}), {len(only_b)} only in B/ (e.g. {only_b[:3]}); every A/name needs a B/name")
        pairs = [PairSource(a_files[k], b_files[k]) for k in sorted(a_files)]
    else:
        pairs = [PairSource(p) for p in list_images(folder)]
    if not pairs:
        raise DataError(f"no images in {folder} (looked for .jpg, .png, .bmp, .tif, .webp)")
    return pairs


def load_pair(src: PairSource, layout: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode one source as (A, B) BGR images; B is None for photos (the task derives the pair)."""
    if layout == "folders":
        a, b = read_image(src.a), read_image(src.b)
        if a.shape[:2] != b.shape[:2]:
            b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
        return a, b
    image = read_image(src.a)
    if layout == "aligned":
        return split_aligned(image, str(src.a))
    return image, None


class PairDataset:
    """(input, target) float32 CHW arrays in [-1, 1] for a spec's task and direction.

    A map-style dataset: torch's DataLoader batches it into tensors. The jitter of item i
    in epoch e comes from a generator seeded with (seed, e, i), so a resumed run sees
    exactly the images an uninterrupted one would.
    """

    def __init__(self, folder: Path, spec: ModelSpec, layout: str = "auto", jitter: bool = True, seed: int = 0,
                 preprocess: str = "resize-crop"):
        self.folder = Path(folder)
        self.spec = spec
        self.preprocess = preprocess
        self.layout = detect_layout(self.folder, spec.task) if layout == "auto" else layout
        if spec.task != "paired" and self.layout != "photos":
            raise DataError(f"--task {spec.task} derives pairs from plain photos; --layout must be photos or auto")
        self.pairs = find_pairs(self.folder, self.layout)
        self.jitter = jitter
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def check_all(self, progress=None) -> None:
        """Decode every image once, so a corrupt file stops the run before training starts."""
        small = []
        for src in (progress(self.pairs) if progress else self.pairs):
            try:
                a, _ = load_pair(src, self.layout)
            except ImageError as exc:
                raise DataError(f"{exc}; fix or remove it") from None
            h, w = a.shape[:2]
            problem = fit_problem(self.preprocess, w, h, self.spec.width, self.spec.height)
            if problem:
                raise DataError(f"{src.a} {problem}")
            if h < self.spec.height or w < self.spec.width:
                small.append(src.a.name)
        if small:
            warnings.warn(
                f"{len(small)} image(s) are smaller than --size {self.spec.width}x{self.spec.height} "
                f"(e.g. {small[0]}); they are upscaled, which blurs them: consider a smaller --size", stacklevel=2)

    def __getitem__(self, index: int):
        src = self.pairs[index]
        try:
            a, b = load_pair(src, self.layout)
        except ImageError as exc:
            raise DataError(str(exc)) from None
        rng = np.random.default_rng([self.seed, self.epoch, index])
        a, crop = self._crop(a, rng, src)
        if b is None:  # a photo: the task adapter derives the pair from it
            x, y = input_tensor(a, self.spec), target_tensor(a, self.spec)
        else:
            b = apply_crop(b, crop, self.spec.width, self.spec.height)
            src_img, dst_img = (a, b) if self.spec.direction == "AtoB" else (b, a)
            x, y = input_tensor(src_img, self.spec), target_tensor(dst_img, self.spec)
        return x, y

    def _crop(self, image: np.ndarray, rng: np.random.Generator, src: PairSource):
        """The image's training (or validation) crop, and the crop, for its partner."""
        h, w = image.shape[:2]
        width, height = self.spec.width, self.spec.height
        problem = fit_problem(self.preprocess, w, h, width, height)
        if problem:
            raise DataError(f"{src.a} {problem}")
        crop = draw_crop(rng, self.preprocess, w, h, width, height, self.jitter)
        return apply_crop(image, crop, width, height), crop


class InputDataset:
    """Images without targets (e.g. for distillation): the generator's input side only, same jitter as pairs.

    For --task edges and colorize any photos (the adapter derives the input); for paired data,
    images of the input domain (label maps for labels→photo).
    """

    def __init__(self, folder: Path, spec: ModelSpec, jitter: bool = True, seed: int = 0,
                 preprocess: str = "resize-crop"):
        self.folder = Path(folder)
        self.preprocess = preprocess
        if not self.folder.is_dir():
            raise DataError(f"--extra-inputs {self.folder} is not a folder")
        self.spec = spec
        self.pairs = find_pairs(self.folder, "photos")
        self.jitter, self.seed, self.epoch = jitter, seed, 0

    def __len__(self) -> int:
        return len(self.pairs)

    def check_all(self) -> None:
        for src in self.pairs:
            try:
                h, w = read_image(src.a).shape[:2]
            except ImageError as exc:
                raise DataError(f"{exc}; fix or remove it") from None
            problem = fit_problem(self.preprocess, w, h, self.spec.width, self.spec.height)
            if problem:
                raise DataError(f"{src.a} {problem}")

    def __getitem__(self, index: int) -> np.ndarray:
        src = self.pairs[index]
        try:
            image = read_image(src.a)
        except ImageError as exc:
            raise DataError(str(exc)) from None
        # a seed of its own: these images do not share their jitter with the paired image of the same index
        rng = np.random.default_rng([self.seed, 1, self.epoch, index])
        image, _ = PairDataset._crop(self, image, rng, src)
        return input_tensor(image, self.spec)
