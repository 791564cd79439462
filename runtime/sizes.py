"""Training sizes: which WxH the U-Net can take, and the depth it gets there. Torch-free.

The rule (the same for squares, where it gives today's depths: 8 at 256², 9 at 512²):

- the depth follows from the shorter side S: as many stride-2 halvings as take S down to 1
  (log2 of the largest power of two ≤ S), lowered until both sides still halve evenly, since
  the U-Net's skips need every level's width and height whole: every side must be a multiple
  of 2^depth;
- the bottleneck (W/2^depth × H/2^depth) may be at most MAX_BOTTLENECK pixels on its shorter
  side, and the depth at least MIN_DEPTH: the innermost units then see most of the frame, as
  the paper's 1×1 bottleneck does at 256².

So 384x256 (3:2) gets depth 7 and a 3×2 bottleneck, 512x256 depth 8 (2×1), 512x288 (16:9)
depth 5 (16×9), 256x192 (4:3) depth 6 (4×3); 300x200 is refused (its sides are not multiples
of 8), and so is 264x256 (depth 3, a 33×32 bottleneck).
"""
from __future__ import annotations

from .cli_options import parse_size

MIN_DEPTH = 3           # 8×8 is the smallest square (as before: powers of two ≥ 8)
MAX_BOTTLENECK = 9      # shorter side of the bottleneck: 1 for powers of two, 2 at 3:2, 3 at 4:3, 9 at 16:9


def twos(n: int) -> int:
    """How many times n halves evenly."""
    return (n & -n).bit_length() - 1


def depth_for(width: int, height: int) -> int | None:
    """The U-Net depth for a WxH training size, or None if the network cannot take it."""
    if width <= 0 or height <= 0:
        return None
    depth = min((min(width, height)).bit_length() - 1, twos(width), twos(height))
    if depth < MIN_DEPTH or min(width, height) >> depth > MAX_BOTTLENECK:
        return None
    return depth


def nearest_sizes(width: int, height: int, count: int = 3) -> list[tuple[int, int]]:
    """The sizes the network can take closest to WxH: those of (about) the same aspect first, then by the
    total change of the sides."""
    step, aspect = 8, width / max(height, 1)
    found = []
    for w in range(step, 2 * max(width, step) + step, step):
        for h in range(step, 2 * max(height, step) + step, step):
            if depth_for(w, h) is not None:
                off = abs(w / h / aspect - 1)
                found.append((off > 0.02, abs(w - width) + abs(h - height), off, w, h))
    return [(w, h) for *_, w, h in sorted(found)[:count]]


def size_text(width: int, height: int) -> str:
    """"256" for a square, "384x256" otherwise: what --size takes."""
    return str(width) if width == height else f"{width}x{height}"


def size_problem(width: int, height: int) -> str | None:
    """None if the network can take WxH, else one line: why not and which sizes to pass instead."""
    if depth_for(width, height) is not None:
        return None
    near = " or ".join(f"--size {size_text(w, h)}" for w, h in nearest_sizes(width, height))
    return (f"--size {size_text(width, height)} does not suit the U-Net: its depth follows from the shorter side, "
            f"every side must be a multiple of 2^depth (depth ≥ {MIN_DEPTH}) and the bottleneck at most "
            f"{MAX_BOTTLENECK} pixels on its shorter side; the nearest sizes it takes: {near}")


def width_height(size) -> tuple[int, int]:
    """(width, height) of a size as --size gives it: N, "N", "WxH" or (W, H) (--size's grammar, cli_options)."""
    return parse_size(size)


def canonical_size(size) -> int | str:
    """A training size as a run's config.json keeps it: N for a square (as before), "WxH" for a rectangle."""
    width, height = width_height(size)
    return width if width == height else f"{width}x{height}"


def squared(size) -> str:
    """A size for people: "256²" for a square, "384x256" otherwise."""
    return f"{size}²" if "x" not in str(size) else str(size)
