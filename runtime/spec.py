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
from .sizes import depth_for, size_problem

# Format 2 added ``block``, format 3 ``image_width`` and ``image_height`` (rectangular training sizes).
# A spec that needs nothing newer is written as the oldest format that holds it (without the newer
# fields), so files of the paper's generator stay readable by p2p versions that predate them.
SPEC_FORMAT = 3
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
    image_size: int = 256            # size it was trained at (the shorter side, for a rectangle)
    task: str = "paired"             # "paired", "edges" (Canny → photo), "colorize" (L → ab)
    direction: str = "AtoB"
    in_channels: int = 3
    out_channels: int = 3
    channel_order: str = "RGB"       # of 3-channel tensors (frames arrive as BGR)
    canny_low: int = 100
    canny_high: int = 200
    block: str = "conv"              # the layers of each level: "conv" (the paper's) or "separable"
    # a rectangular training size (None: image_size², a square); image_size is then the shorter side
    image_width: int | None = None
    image_height: int | None = None
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
        if (self.image_width is None) != (self.image_height is None) or (
                self.image_width is not None and self.image_size != min(self.image_width, self.image_height)):
            raise SpecError(f"image_width {self.image_width} and image_height {self.image_height} must come together, "
                            f"with image_size {self.image_size} their shorter side")
        if self.image_width is not None and self.image_width == self.image_height:  # a square: one way to say it
            object.__setattr__(self, "image_width", None)
            object.__setattr__(self, "image_height", None)
        if self.depth < 2 or self.width % (2 ** self.depth) or self.height % (2 ** self.depth):
            raise SpecError(f"image size {self.width}x{self.height} is not a multiple of 2^depth = {2 ** self.depth}")
        if not 0 <= self.dropout_blocks <= self.depth - 1:
            raise SpecError(f"dropout_blocks {self.dropout_blocks} does not fit depth {self.depth}")

    @classmethod
    def for_task(cls, task: str, image_size: int | tuple[int, int], **kw) -> "ModelSpec":
        """The spec the paper prescribes for a task at a size (N or (W, H)): depth from the size (8 for 256²;
        runtime/sizes.py has the rule for rectangles)."""
        width, height = (image_size, image_size) if isinstance(image_size, int) else image_size
        depth = depth_for_size(width, height)
        cin, cout = TASK_CHANNELS[task]
        kw.setdefault("dropout_blocks", min(3, depth - 1))
        rect = {"image_width": width, "image_height": height} if width != height else {}
        return cls(task=task, image_size=min(width, height), depth=depth,
                   in_channels=cin, out_channels=cout, **rect, **kw)

    @property
    def width(self) -> int:
        """Training width."""
        return self.image_width or self.image_size

    @property
    def height(self) -> int:
        """Training height."""
        return self.image_height or self.image_size

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

    def at_size(self, width: int, height: int) -> "ModelSpec":
        """The same generator described as if trained at WxH (e.g. to read data at another size)."""
        self.check_size(height, width)
        rect = (width, height) if width != height else (None, None)
        return dataclasses.replace(self, image_size=min(width, height), image_width=rect[0], image_height=rect[1])

    # --- serialisation -------------------------------------------------------
    def to_dict(self) -> dict:
        """The fields, with ``format`` the oldest spec format that can express them."""
        data = dataclasses.asdict(self)
        if self.block == "conv":  # format 1 had no `block`: readers from before it still open the file
            del data["block"]
        if self.image_width is None:  # nor had formats 1 and 2 the rectangle
            del data["image_width"], data["image_height"]
        data["format"] = 3 if self.image_width is not None else 1 if self.block == "conv" else 2
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


def depth_for_size(width: int, height: int | None = None) -> int:
    """8 downsamplings for 256², 7 for 128², ... (the bottleneck is 1×1); 7 for 384x256 (3×2): runtime/sizes.py."""
    height = width if height is None else height
    depth = depth_for(width, height)
    if depth is None:
        raise SpecError(size_problem(width, height))
    return depth
