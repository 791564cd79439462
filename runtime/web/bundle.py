"""A self-contained static folder that translates with a p2p model in the browser.

    DIR/index.html, app.js, masks.js, adapters.js, onnx-meta.js, style.css   the page (package data)
    DIR/model.onnx                                                           the exported model, as it is
    DIR/model.json                                                           its contract, for the page
    DIR/ort/...                                                              onnxruntime-web (pinned) + LICENSE

Nothing is fetched from another origin: the page loads only files of this folder. ``model.json`` is
generated from ``runtime/contract.py`` (the spec, input/output names, the rule for the mask shapes),
because onnxruntime-web does not expose an ONNX file's ``metadata_props``; the page still reads
``p2p.spec`` from the model's own bytes and refuses a model that is not a p2p one, or not this one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from .. import contract
from ..artifacts import ArtifactError, read_onnx_metadata
from ..errors import OutputError, UserError
from ..labels import CMP_CLASSES, CMP_PALETTE
from ..spec import ModelSpec
from . import ortweb
from .weights import fp16_weights

PAGE_FILES = ("index.html", "app.js", "masks.js", "adapters.js", "onnx-meta.js", "style.css")
MODEL_FILE = "model.onnx"
CONTRACT_FILE = "model.json"
RUNTIME_DIR = "ort"
MARKER = "p2p-web"  # model.json's "made_by": a folder p2p may replace


class WebFolderError(UserError, ValueError):
    """A web folder that cannot be written or served; the message says why and what to do."""


def training_size(spec: ModelSpec) -> tuple[int, int]:
    """(width, height) the model was trained at: the page's default size (rectangular specs: their own)."""
    return spec.width, spec.height


def palette(spec: ModelSpec) -> list[dict]:
    """Pen colours offered for drawing. A paired model with a colour input may be a labels→photo one
    (facades): offer the CMP label colours. The spec records no palette, so this is a suggestion."""
    if spec.task != "paired" or spec.in_channels != 3:
        return []
    return [{"name": name, "rgb": list(rgb)} for name, rgb in zip(CMP_CLASSES, CMP_PALETTE)]


def web_contract(spec: ModelSpec, precision: str, model_name: str, weights: str = "as computed") -> dict:
    """What the page needs to run the model, from the one contract (runtime/contract.py)."""
    width, height = training_size(spec)
    return {
        "made_by": MARKER,
        "name": model_name,
        "model": MODEL_FILE,
        "spec": spec.to_dict(),
        "spec_key": contract.META_SPEC,
        "precision": precision,
        "weights": weights,  # "fp16": stored as float16, computed in float32 (weights.fp16_weights)
        "input": contract.INPUT,
        "output": contract.OUTPUT,
        "masks": contract.mask_rule(spec),   # shape (1, channels, H/scale, W/scale)
        "multiple": spec.multiple,
        "width": width,
        "height": height,
        "palette": palette(spec),
        "onnxruntime_web": {"version": ortweb.VERSION, "wasm": list(ortweb.WASM_FILES),
                            "webgpu": list(ortweb.WEBGPU_FILES), "license": ortweb.LICENSE},
    }


def read_model(model: Path) -> tuple[ModelSpec, str]:
    """(spec, precision) of an exported p2p model; one-line errors for anything else."""
    model = Path(model)
    if not model.is_file():
        raise ArtifactError(f"model {model} does not exist")
    if model.suffix.lower() != ".onnx":
        raise ArtifactError(f"{model}: the web page runs ONNX models; pass the .onnx file p2p-export wrote")
    spec, precision = read_onnx_metadata(model)
    return spec, precision


def is_web_folder(folder: Path) -> bool:
    try:
        return json.loads((Path(folder) / CONTRACT_FILE).read_text()).get("made_by") == MARKER
    except (OSError, ValueError, AttributeError):
        return False


def check_target(folder: Path) -> None:
    """WebFolderError unless ``folder`` may be written: absent, empty, or made by p2p before."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise WebFolderError(f"{folder} is a file: --web takes a folder to write")
    if folder.is_dir() and any(folder.iterdir()) and not is_web_folder(folder):
        raise WebFolderError(f"{folder} exists and is not a web folder p2p made: pick a new or empty folder")


def check_web_target(folder: Path, runtime: Path | None = None) -> None:
    """Everything ``build_web_folder`` needs besides the model: onnxruntime-web's files and a writable target."""
    ortweb.runtime_files(runtime)
    check_target(folder)


def build_web_folder(model: Path, folder: Path, *, runtime: Path | None = None, link: bool = False,
                     name: str | None = None, fp16: bool = False) -> Path:
    """Write the static folder for ``model`` into ``folder`` (replacing one p2p made before); returns it.

    ``link``: symlink the model and onnxruntime-web instead of copying them (a throwaway folder that
    ``p2p-web MODEL.onnx`` serves; a folder to publish is a copy). ``fp16``: the folder's model stores
    its weights as float16 (half the download; see ``weights``). The folder appears whole or not at all.
    """
    model, folder = Path(model), Path(folder)
    spec, precision = read_model(model)
    check_web_target(folder, runtime)
    runtime = ortweb.runtime_files(runtime)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        page = resources.files(__package__).joinpath("page")
        for file in PAGE_FILES:
            (tmp / file).write_bytes(page.joinpath(file).read_bytes())
        place = _link if link else shutil.copyfile
        if fp16:
            fp16_weights(model, tmp / MODEL_FILE)
        else:
            place(model, tmp / MODEL_FILE)
        (tmp / RUNTIME_DIR).mkdir()
        for file in (*ortweb.FILES, ortweb.LICENSE):
            place(runtime / file, tmp / RUNTIME_DIR / file)
        meta = web_contract(spec, precision, name or model.stem, "fp16" if fp16 else "as computed")
        (tmp / CONTRACT_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700: a folder to publish is world-readable
        _replace(tmp, folder)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"{folder}: cannot write the web folder ({exc.strerror or exc})") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _link(src: Path, dst: Path) -> None:
    os.symlink(Path(src).resolve(), dst)


def _replace(new: Path, folder: Path) -> None:
    """Put ``new`` where ``folder`` is: the old folder (p2p's own, or empty) goes only once the new one is whole."""
    if not folder.exists():
        os.replace(new, folder)
        return
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def folder_size(folder: Path) -> int:
    """Bytes a visitor's browser may download from the folder (symlinks followed)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
