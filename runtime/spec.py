"""The model spec: the one contract between training, export and serving.

A small, torch-free, JSON-serialisable description of a generator and of the
frames it expects. It travels inside the checkpoint, inside the ONNX file's
metadata_props and beside a TensorRT engine, so nobody repeats a training flag
at export or run time. What an exported graph's inputs are called and shaped
(the dropout masks) follows from it in ``contract``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .errors import UserError

# Format 2 added ``block``. A spec that needs nothing newer is written as format 1 (without the
# field), so files of the paper's generator stay readable by p2p versions that predate it.
SPEC_FORMAT = 2
GENERATORS = ("unet", "encdec")
# "conv": the paper's Conv/ConvTranspose blocks; "separable": depthwise-separable blocks with
# resize-convolution upsampling, made for CPU speed (training/separable.py).
BLOCKS = ("conv", "separable")
TASKS = ("paired", "edges", "colorize")
DIRECTIONS = ("AtoB", "BtoA")


class SpecError(UserError, ValueError):
    """A spec that is malformed, from a newer format, or does not fit a frame."""


# Channels of the generator's input and output for each task.
TASK_CHANNELS = {"paired": (3, 3), "edges": (1, 3), "colorize": (1, 2)}


@dataclass(frozen=True)
class ModelSpec:
    generator: str = "unet"          # "unet" (skips) or "encdec" (no skips)
    depth: int = 8                   # number of stride-2 downsamplings
    ngf: int = 64                    # filters of the first encoder layer
    dropout_p: float = 0.5
    dropout_blocks: int = 3          # decoder blocks right after the bottleneck
    image_size: int = 256            # size it was trained at
    task: str = "paired"             # "paired", "edges" (Canny → photo), "colorize" (L → ab)
    direction: str = "AtoB"
    in_channels: int = 3
    out_channels: int = 3
    channel_order: str = "RGB"       # of 3-channel tensors (frames arrive as BGR)
    canny_low: int = 100
    canny_high: int = 200
    block: str = "conv"              # the layers of each level: "conv" (the paper's) or "separable"
    # the newest format this code reads; not part of a spec's identity (see to_dict)
    format: int = dataclasses.field(default=SPEC_FORMAT, compare=False)

    def __post_init__(self):
        if self.format > SPEC_FORMAT:
            raise SpecError(
                f"model spec format {self.format} is newer than this p2p understands "
                f"({SPEC_FORMAT}); upgrade p2p")
        if self.block not in BLOCKS:
            raise SpecError(f"unknown block type {self.block!r}; expected one of {BLOCKS}")
        if self.generator not in GENERATORS:
            raise SpecError(f"unknown generator {self.generator!r}; expected one of {GENERATORS}")
        if self.task not in TASKS:
            raise SpecError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.direction not in DIRECTIONS:
            raise SpecError(f"unknown direction {self.direction!r}; expected one of {DIRECTIONS}")
        if self.depth < 2 or self.image_size % (2 ** self.depth):
            raise SpecError(f"image size {self.image_size} is not a multiple of 2^depth = {2 ** self.depth}")
        if not 0 <= self.dropout_blocks <= self.depth - 1:
            raise SpecError(f"dropout_blocks {self.dropout_blocks} does not fit depth {self.depth}")

    @classmethod
    def for_task(cls, task: str, image_size: int, **kw) -> "ModelSpec":
        """The spec the paper prescribes for a task at a size: depth from the size (8 for 256²)."""
        depth = depth_for_size(image_size)
        cin, cout = TASK_CHANNELS[task]
        kw.setdefault("dropout_blocks", min(3, depth - 1))
        return cls(task=task, image_size=image_size, depth=depth,
                   in_channels=cin, out_channels=cout, **kw)

    # --- shapes -------------------------------------------------------------
    @property
    def multiple(self) -> int:
        """Height and width must be multiples of this."""
        return 2 ** self.depth

    def encoder_channels(self) -> list[int]:
        """Output channels of encoder layer i (i = 0 is the outermost)."""
        return [self.ngf * min(2 ** i, 8) for i in range(self.depth)]

    def check_size(self, height: int, width: int) -> None:
        m = self.multiple
        if height <= 0 or width <= 0 or height % m or width % m:
            raise SpecError(
                f"frame size {width}x{height} is not accepted: height and width must be "
                f"positive multiples of {m} (2^depth, depth {self.depth})")

    # --- serialisation -------------------------------------------------------
    def to_dict(self) -> dict:
        """The fields, with ``format`` the oldest spec format that can express them."""
        data = dataclasses.asdict(self)
        if self.block == "conv":  # format 1 had no `block`: readers from before it still open the file
            del data["block"]
        data["format"] = 1 if self.block == "conv" else 2
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        if not isinstance(data, dict):
            raise SpecError("model spec is not a JSON object")
        if int(data.get("format", SPEC_FORMAT)) > SPEC_FORMAT:
            raise SpecError(
                f"model spec format {data.get('format')} is newer than this p2p understands "
                f"({SPEC_FORMAT}); upgrade p2p")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise SpecError(f"model spec has unknown fields {sorted(unknown)}")
        try:
            return cls(**{k: v for k, v in data.items() if k != "format"})
        except TypeError as exc:
            raise SpecError(f"malformed model spec: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"model spec is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def depth_for_size(image_size: int) -> int:
    """8 downsamplings for 256², 7 for 128², ...: the bottleneck is 1×1 at the training size."""
    depth = image_size.bit_length() - 1
    if image_size != 2 ** depth or depth < 3:
        raise SpecError(f"--size must be a power of two ≥ 8 (the U-Net halves it down to 1×1); got {image_size}")
    return depth
