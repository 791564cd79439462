"""Model files: what kind an artifact is, its engine metadata, and where the default model is.

Artifacts (written by p2p-export):
- ``model.onnx``: spec in ``metadata_props`` (``p2p.spec``, ``p2p.precision``);
- ``model.engine`` + ``model.engine.json``: {"spec": ..., "shapes": {"min"|"opt"|"max": [N, H, W]},
  "precision": ...}; the engine is GPU- and TensorRT-version-specific.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from . import contract
from .errors import UserError, first_line
from .integrity import CorruptArtifact, check_engine_meta
from .spec import ModelSpec, SpecError

MODEL_SUFFIXES = (".onnx", ".engine")
DEMO_MODEL = "demo/demo.onnx"  # package data of p2p.runtime


class ArtifactError(UserError, ValueError):
    """A model file that cannot be used: missing, of an unknown kind, corrupt, or not from p2p-export."""


class ShapeError(SpecError):
    """A frame size (or batch) that the artifact cannot run: e.g. outside a TensorRT engine's built shapes."""


@dataclass(frozen=True)
class ShapeLimits:
    """The (N, H, W) range a TensorRT engine was built for, and its optimum."""
    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]

    def covers(self, n: int, h: int, w: int) -> bool:
        return all(lo <= v <= hi for lo, v, hi in zip(self.min, (n, h, w), self.max))

    def check(self, n: int, h: int, w: int, where: str) -> None:
        if not self.covers(n, h, w):
            raise ShapeError(
                f"{where} was built for batch {self.min[0]}..{self.max[0]} and frames from "
                f"{self.min[2]}x{self.min[1]} to {self.max[2]}x{self.max[1]}, but this run needs batch {n} at "
                f"{w}x{h}: pass --size {self.opt[2]}x{self.opt[1]} (or a size in range), or rebuild the "
                f"engine with p2p-export for this size")


def model_kind(path: Path) -> str:
    """"onnx" or "engine" from the file name, after checking the file exists."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path} is a folder: pass the model file in it (model.onnx or model.engine)")
    if not path.is_file():
        raise ArtifactError(f"model {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise ArtifactError(f"{path}: unknown model type {suffix or '(no suffix)'}; expected a .onnx or "
                            ".engine file written by p2p-export (a checkpoint.pt must be exported first)")
    return suffix[1:]


@dataclass(frozen=True)
class EngineMeta:
    spec: ModelSpec
    shapes: ShapeLimits
    precision: str
    tensorrt_version: str | None = None  # of the builder: engines load only on the same version
    sha256: str | None = None  # of the engine file (runtime.integrity), checked when it is loaded


engine_meta_path = contract.engine_meta_path


def read_engine_meta(engine: Path) -> EngineMeta:
    """The JSON beside a TensorRT engine: its spec and the shapes it was built for."""
    meta = engine_meta_path(engine)
    if not meta.is_file():
        raise ArtifactError(f"{engine} has no {meta.name} beside it (spec and built shapes); "
                            "keep the pair that p2p-export wrote together")
    try:
        data = json.loads(meta.read_text())
        check_engine_meta(data, str(meta))
        spec, shapes, precision, version, sha256 = contract.parse_engine_meta(data)
        return EngineMeta(spec, ShapeLimits(*shapes), precision, version, sha256)
    except CorruptArtifact:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:  # SpecError is a ValueError
        raise ArtifactError(f"{meta}: not a valid p2p engine description ({exc})") from None


def read_onnx_metadata(path) -> tuple[ModelSpec, str]:
    """(spec, precision) from an ONNX file written by p2p-export, without running it; SpecError otherwise.

    Needs the ``onnx`` package (ImportError without it): export always has it, a lean runtime
    install may not, and only uses this where it can do without.
    """
    import onnx  # optional on the runtime side (see above)

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)  # weights are not needed for the metadata
    except Exception as exc:
        raise SpecError(f"{path} is not a readable ONNX file: {first_line(exc, 200)}") from None
    return contract.read_metadata({p.key: p.value for p in model.metadata_props}, str(path))


def demo_model() -> Path | None:
    """The small demo model shipped in the package, or None if this install lacks it."""
    path = Path(str(resources.files("p2p.runtime").joinpath(DEMO_MODEL)))
    return path if path.is_file() else None


def find_models(root: Path) -> list[Path]:
    """Every exported model under ``root`` (recursively), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for suffix in MODEL_SUFFIXES for p in root.rglob(f"*{suffix}") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def default_model(runs: Path = Path("runs"), allow_engine: bool = False) -> Path:
    """The newest model exported under ./runs, else the shipped demo; ArtifactError if neither.

    Engines count only when ``allow_engine`` (native TensorRT present): without it a
    newer engine is skipped in favour of the newest ONNX file.
    """
    for path in find_models(runs):
        if path.suffix.lower() == ".onnx" or (allow_engine and engine_meta_path(path).is_file()):
            return path
    demo = demo_model()
    if demo is not None:
        return demo
    raise ArtifactError(
        f"no MODEL given, none exported under {Path(runs).resolve()}, and this install has no demo model "
        f"(p2p/runtime/{DEMO_MODEL}): pass a model, e.g. p2p-live runs/facades/model.onnx "
        "(p2p-export writes one from a p2p-train checkpoint)")
