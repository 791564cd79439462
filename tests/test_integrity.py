"""Every file carries a checksum that every loader checks (docs/promises.md): real flipped bytes in a
checkpoint's tensor data, in model.onnx, in an engine and its description are refused in one line, naming
the file; files from before checksums still load.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch
from conftest import TINY, flip_byte, invoke, one_line_error, tensor_data_offset
from test_runtime import export_tiny

from p2p.evaluation.cli import main as eval_main
from p2p.export.cli import main as export_main
from p2p.export.onnx_export import save_onnx
from p2p.runtime.artifacts import demo_model
from p2p.runtime.errors import BackendUnavailable
from p2p.runtime.integrity import ONNX_KEY, CorruptArtifact, check_onnx_file, seal_engine_meta
from p2p.runtime.translator import Translator
from p2p.training.checkpoint import CHECKPOINT_FORMAT, CheckpointError, CorruptCheckpoint, load_checkpoint
from p2p.training.cli import main as train_main
from p2p.training.config import default_data_dir
from p2p.video.cli import translate_main


def damaged_copy(run: Path, where: Path, previous_too: bool = False) -> Path:
    """A copy of the run whose checkpoint.pt has one flipped bit in its largest tensor's data."""
    shutil.copytree(run, where)
    for name in ("checkpoint.pt",) + (("checkpoint.prev.pt",) if previous_too else ()):
        flip_byte(where / name, tensor_data_offset(where / name))
    return where


# --- checkpoints --------------------------------------------------------------------------------------------
def test_a_flipped_byte_in_a_checkpoint_is_refused_by_every_loader(tiny_run, tmp_path):
    bad = damaged_copy(tiny_run, tmp_path / "bad")
    torch.load(bad / "checkpoint.pt", weights_only=True)  # torch itself reads it without a word
    with pytest.raises(CorruptCheckpoint):
        load_checkpoint(bad)
    data = default_data_dir()
    for command, args in ((eval_main, [bad, "--data", data, "--limit", "1", "--no-progress"]),
                          (export_main, [bad, "-o", tmp_path / "m.onnx"]),
                          (train_main, ["--out", tmp_path / "student", "--teacher", bad, *TINY, "--iters", "1"])):
        line = one_line_error(invoke(command, *args))
        assert f"{bad / 'checkpoint.pt'} is corrupt" in line, line
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "student" / "checkpoint.pt").exists()


def test_resume_of_a_damaged_checkpoint_names_the_intact_previous_one(tiny_run, tmp_path):
    bad = damaged_copy(tiny_run, tmp_path / "bad")
    line = one_line_error(invoke(train_main, "--out", bad, "--resume", "--iters", "6"))
    assert "checkpoint.pt is corrupt" in line and "checkpoint.prev.pt (iteration 2) is intact" in line, line
    (bad / "checkpoint.prev.pt").replace(bad / "checkpoint.pt")  # what the line says to do
    r = invoke(train_main, "--out", bad, "--resume", "--iters", "3", "--no-progress")
    assert r.exit_code == 0, r.output
    assert load_checkpoint(bad)["iteration"] == 3

    both = damaged_copy(tiny_run, tmp_path / "both", previous_too=True)
    line = one_line_error(invoke(train_main, "--out", both, "--resume", "--iters", "6"))
    assert "is damaged too" in line and "--overwrite" in line, line


def test_a_save_after_a_kill_between_link_and_write_leaves_no_temporary(tmp_path):
    """A run killed after checkpoint.prev.pt became a second name of checkpoint.pt, before the new checkpoint was
    written: the next save must not leave its temporary link behind (rename(2) of two links to one file does
    nothing)."""
    import os

    from p2p.training.checkpoint import PREVIOUS_NAME, save_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"spec": {}, "iteration": 1}, path)
    os.link(path, tmp_path / PREVIOUS_NAME)  # the state the kill left
    save_checkpoint({"spec": {}, "iteration": 2}, path, keep_previous=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREVIOUS_NAME, "checkpoint.pt"]


def test_checkpoints_from_before_checksums_still_load(tiny_run, tmp_path):
    state = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    del state["sha256"]
    torch.save(state, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")["iteration"] == 4
    assert state["format"] == CHECKPOINT_FORMAT  # old readers read new files too: only a key was added


def test_a_checkpoint_refused_by_weights_only_says_why_in_one_line(tmp_path):
    torch.save({"kind": "p2p-checkpoint", "payload": shutil.copy}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match=r"refuses \(such as shutil.copy\): p2p never unpickles"):
        load_checkpoint(tmp_path / "pickled.pt")
    line = one_line_error(invoke(export_main, tmp_path / "pickled.pt", "-o", tmp_path / "m.onnx"))
    assert "shutil.copy" in line and "WeightsUnpickler" not in line and len(line) < 300, line


# --- model.onnx ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    return export_tiny("paired", tmp_path_factory.mktemp("onnx"))[0]


def test_an_exported_model_carries_its_checksum_as_metadata(onnx_model):
    assert check_onnx_file(onnx_model)
    keys = [p.key for p in onnx.load(str(onnx_model), load_external_data=False).metadata_props]
    assert keys.count(ONNX_KEY) == 1
    Translator(onnx_model)  # ONNX Runtime reads it as ordinary metadata


def test_a_flipped_byte_in_model_onnx_is_refused(onnx_model, tmp_path):
    bad = tmp_path / "model.onnx"
    shutil.copy(onnx_model, bad)
    flip_byte(bad, bad.stat().st_size // 2)  # inside the weights
    with pytest.raises(CorruptArtifact):
        Translator(bad)
    image = tmp_path / "in.png"
    import cv2
    import numpy as np
    cv2.imwrite(str(image), np.full((64, 64, 3), 128, np.uint8))
    line = one_line_error(invoke(translate_main, bad, image, "-o", tmp_path / "out"))
    assert f"{bad} is corrupt" in line, line
    line = one_line_error(invoke(eval_main, bad, "--data", default_data_dir(), "--limit", "1", "--no-progress"))
    assert f"{bad} is corrupt" in line, line


def test_models_from_before_checksums_or_re_saved_by_other_tools_still_load(onnx_model, tmp_path):
    demo = demo_model()
    if demo is not None:  # shipped before checksums existed
        assert not check_onnx_file(demo)
        Translator(demo)
    model = onnx.load(str(onnx_model))
    onnx.save(model, str(tmp_path / "same.onnx"))  # protobuf writes the same bytes back: still verified
    assert check_onnx_file(tmp_path / "same.onnx")
    model.doc_string = "edited by another tool"
    onnx.save(model, str(tmp_path / "edited.onnx"))  # the checksum no longer describes it: not judged
    assert not check_onnx_file(tmp_path / "edited.onnx")
    Translator(tmp_path / "edited.onnx")
    save_onnx(model, tmp_path / "again.onnx")  # p2p-export re-saving a model read back (int8): a fresh checksum
    assert check_onnx_file(tmp_path / "again.onnx")
    keys = [p.key for p in onnx.load(str(tmp_path / "again.onnx")).metadata_props]
    assert keys.count(ONNX_KEY) == 1


def test_a_spec_that_disagrees_with_the_graph_is_one_line(onnx_model, tmp_path):
    model = onnx.load(str(onnx_model))
    for p in model.metadata_props:
        if p.key == "p2p.spec":
            spec = json.loads(p.value)
            spec["ngf"] *= 2  # metadata of another model
            p.value = json.dumps(spec)
    bad = save_onnx(model, tmp_path / "mixed.onnx")
    image = tmp_path / "in.png"
    import cv2
    import numpy as np
    cv2.imwrite(str(image), np.full((64, 64, 3), 128, np.uint8))
    line = one_line_error(invoke(translate_main, bad, image, "-o", tmp_path / "out"))
    assert "disagrees with its graph" in line and "dropout_mask_0" in line, line


# --- TensorRT engines ------------------------------------------------------------------------------------------
def test_a_damaged_engine_or_description_is_refused_before_tensorrt_reads_it(onnx_model, tmp_path):
    engine = tmp_path / "model.engine"
    payload = bytes(range(256)) * 64
    engine.write_bytes(payload)
    spec = Translator(onnx_model).spec
    meta = seal_engine_meta({"spec": spec.to_dict(), "shapes": {"min": [1, 64, 64], "opt": [1, 64, 64],
                                                                 "max": [1, 64, 64]}, "precision": "fp32"}, payload)
    (tmp_path / "model.engine.json").write_text(json.dumps(meta))
    with pytest.raises(BackendUnavailable):  # intact: it gets as far as TensorRT (absent here)
        Translator(engine)
    flip_byte(engine, 1000)
    with pytest.raises(CorruptArtifact, match="model.engine is corrupt"):
        Translator(engine)
    engine.write_bytes(payload)
    meta["precision"] = "fp16"  # a changed description
    (tmp_path / "model.engine.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptArtifact, match="model.engine.json is corrupt"):
        Translator(engine)
