"""p2p-export on CPU: mask inputs, graph contents, ORT vs PyTorch parity, metadata, bad input.

Tiny generators (ngf 8, 32–64 px) keep this fast; each dynamo export costs
several seconds, so the exported files are module-scoped fixtures.
"""
from __future__ import annotations

import hashlib
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from conftest import one_line_error
from onnx import TensorProto, helper

from p2p.export.cli import main as cli
from p2p.export.fp16 import FP16_TOLERANCE, to_fp16
from p2p.export.int8 import compare, cpu_backend, quantize_int8
from p2p.export.onnx_export import (
    ExportError,
    all_nodes,
    build_onnx,
    check_graph,
    check_writable,
    export_onnx,
    forbidden_ops,
    read_onnx_metadata,
    read_onnx_spec,
    write_model,
)
from p2p.export.opset17 import TENSORRT8_OPS, tensorrt8_problems, to_opset17
from p2p.export.tensorrt_build import (
    Shapes,
    TensorRTUnavailable,
    import_tensorrt,
    parse_nhw,
)
from p2p.export.verify import FP32_TOLERANCE, verify_onnx
from p2p.runtime import contract
from p2p.runtime.cli_options import SIZES
from p2p.runtime.spec import ModelSpec, SpecError
from p2p.training.checkpoint import load_checkpoint, save_checkpoint
from p2p.training.models import Generator, init_weights

torch.set_num_threads(1)


def make_generator(spec: ModelSpec, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    gen = Generator(spec)
    init_weights(gen)
    return gen


def snapshot(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_feed(spec, image, masks):
    return {"image": image, **dict(zip(contract.mask_names(spec), masks))}


def random_masks(spec, batch, height, width, seed):
    return contract.draw_masks(spec, np.random.default_rng(seed), batch, height, width)


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    """The paper's U-Net, tiny: depth 6 at 64² (H, W multiples of 64), 3 dropout masks, fp32 export."""
    spec = ModelSpec.for_task("paired", 64, ngf=8)
    gen = make_generator(spec)
    gen.eval()  # export must not depend on (or change) the caller's mode
    before = snapshot(gen)
    path = export_onnx(gen, spec, tmp_path_factory.mktemp("paired") / "model.onnx")
    return {"spec": spec, "gen": gen, "path": path, "before": before}


@pytest.fixture(scope="module")
def legacy_fp16(tmp_path_factory):
    """Encoder–decoder colouriser (1 → 2 channels) whose BatchNorms *keep running statistics*
    (as a model from another pix2pix port would), exported fp16 with the ReduceMean variant."""
    spec = ModelSpec.for_task("colorize", 32, ngf=8, generator="encdec", dropout_p=0.3, dropout_blocks=2)
    gen = make_generator(spec, seed=1)
    for module in list(gen.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.BatchNorm2d):
                bn = torch.nn.BatchNorm2d(child.num_features)  # track_running_stats=True
                bn.load_state_dict({**child.state_dict(), "running_mean": torch.randn(child.num_features),
                                    "running_var": torch.rand(child.num_features) + 0.5,
                                    "num_batches_tracked": torch.tensor(7)})
                setattr(module, name, bn)
    gen.train()
    before = snapshot(gen)
    path = export_onnx(gen, spec, tmp_path_factory.mktemp("legacy") / "model16.onnx", fp16=True, norm="reduce")
    return {"spec": spec, "gen": gen, "path": path, "before": before}


@pytest.fixture(scope="module")
def norm_forms(paired, tmp_path_factory):
    """The paired generator in both normalisation forms, at opset 18 and 17, fp32 and fp16: {(norm, opset, fp16): path}."""
    spec, folder = paired["spec"], tmp_path_factory.mktemp("forms")
    traced = {"instance": onnx.load(str(paired["path"])), "reduce": build_onnx(paired["gen"], spec, norm="reduce")}
    paths = {}
    for norm, model in traced.items():
        for opset, graph in ((18, model), (17, to_opset17(model))):
            for fp16 in (False, True):
                paths[norm, opset, fp16] = write_model(to_fp16(graph) if fp16 else graph, spec,
                                                       "fp16" if fp16 else "fp32", folder / f"{norm}{opset}{fp16:d}.onnx")
    return paths


@pytest.fixture()
def checkpoint(tmp_path):
    spec = ModelSpec.for_task("paired", 64, ngf=8)
    gen = make_generator(spec, seed=2)
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint({"spec": spec.to_dict(), "config": {}, "generator": gen.state_dict()}, path)
    return path


# --- the graph --------------------------------------------------------------------------------

def dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_inputs_outputs_and_dynamic_dims(paired):
    spec, model = paired["spec"], onnx.load(str(paired["path"]))
    inputs = {i.name: i for i in model.graph.input}
    assert list(inputs) == ["image", "dropout_mask_0", "dropout_mask_1", "dropout_mask_2"]
    assert [o.name for o in model.graph.output] == ["output"]
    assert all(i.type.tensor_type.elem_type == TensorProto.FLOAT for i in model.graph.input)
    assert dims(inputs["image"]) == ["batch", 3, "height", "width"]
    assert dims(model.graph.output[0]) == ["batch", 3, "height", "width"]
    # each mask's dims are named after H and W, with the scale its shape in the spec has
    for k, name in enumerate(contract.mask_names(spec)):
        n, c, h, w = contract.mask_shapes(spec, 1, spec.multiple, spec.multiple)[k]
        scale = spec.multiple // h
        assert dims(inputs[name]) == ["batch", c, f"height/{scale}", f"width/{scale}"]


@pytest.mark.parametrize("batch,height,width", [(1, 64, 64), (2, 128, 64), (3, 64, 192)])
def test_mask_inputs_shaped_by_spec(paired, batch, height, width):
    spec, sess = paired["spec"], session(paired["path"])
    image = np.random.default_rng(0).uniform(-1, 1, (batch, 3, height, width)).astype(np.float32)
    masks = random_masks(spec, batch, height, width, seed=0)
    assert [m.shape for m in masks] == contract.mask_shapes(spec, batch, height, width)
    out = sess.run(None, ort_feed(spec, image, masks))[0]
    assert out.shape == (batch, 3, height, width) and out.dtype == np.float32
    assert np.abs(out).max() <= 1.0  # tanh
    # masks for another frame size do not fit: the shapes are real constraints, not decoration
    wrong = random_masks(spec, batch, height * 2, width, seed=0)
    with pytest.raises(Exception):
        sess.run(None, ort_feed(spec, image, wrong))


def test_no_dropout_random_or_training_ops(paired, legacy_fp16):
    for fixture in (paired, legacy_fp16):
        model = onnx.load(str(fixture["path"]))
        ops = {n.op_type for n in model.graph.node}
        assert not ops & {"Dropout", "RandomUniform", "RandomUniformLike", "RandomNormal",
                          "RandomNormalLike", "Bernoulli", "BatchNormalization"}
        assert forbidden_ops(model) == set()
        check_graph(model, fixture["spec"])
    # the batch statistics are computed in the graph, in the variant asked for
    assert "InstanceNormalization" in {n.op_type for n in onnx.load(str(paired["path"])).graph.node}
    assert "ReduceMean" in {n.op_type for n in onnx.load(str(legacy_fp16["path"])).graph.node}


def tiny_model(node):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])
    return helper.make_model(helper.make_graph([node], "g", [x], [y]))


def test_forbidden_op_checker_catches_them():
    drop = tiny_model(helper.make_node("Dropout", ["x"], ["y"]))
    assert forbidden_ops(drop) == {"Dropout"}
    bn = tiny_model(helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], training_mode=1))
    assert forbidden_ops(bn) == {"BatchNormalization(training_mode=1)"}
    rnd = tiny_model(helper.make_node("RandomUniformLike", ["x"], ["y"]))
    with pytest.raises(ExportError, match="RandomUniformLike"):
        check_graph(rnd)


def test_single_self_contained_file(paired):
    folder = paired["path"].parent
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx"]  # no .onnx.data, no temp files
    model = onnx.load(str(paired["path"]), load_external_data=False)
    assert model.graph.initializer
    assert all(t.data_location != TensorProto.EXTERNAL for t in model.graph.initializer)
    umask = os.umask(0)
    os.umask(umask)
    assert paired["path"].stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


# --- parity with PyTorch ----------------------------------------------------------------------

def test_ort_matches_pytorch_fp32(paired):
    result = verify_onnx(paired["path"], paired["gen"], sizes=[(64, 64), (128, 192)], batches=(1, 2), threads=1)
    assert set(result.diffs) == {(1, 64, 64), (2, 64, 64), (1, 128, 192), (2, 128, 192)}
    assert result.max_diff <= FP32_TOLERANCE, result.lines()
    assert result.repeatable and result.masks_matter
    assert result.ok and result.check() is result


def test_masks_of_ones_turn_noise_off(paired):
    spec, gen = paired["spec"], paired["gen"]
    image = torch.rand(2, 3, 64, 128) * 2 - 1
    ones = [torch.ones(s) for s in contract.mask_shapes(spec, 2, 64, 128)]
    with torch.no_grad():
        ref = gen(image, ones).numpy()
    sess = session(paired["path"])
    out = sess.run(None, ort_feed(spec, image.numpy(), [m.numpy() for m in ones]))[0]
    assert np.abs(out - ref).max() <= FP32_TOLERANCE
    assert np.array_equal(out, sess.run(None, ort_feed(spec, image.numpy(), [m.numpy() for m in ones]))[0])


def test_batch_statistics_depend_on_the_batch(paired):
    """Normalisation uses the batch's own statistics: a frame's output depends on its batch-mates."""
    spec, sess = paired["spec"], session(paired["path"])
    rng = np.random.default_rng(3)
    a, b = (rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32) for _ in range(2))
    ones1 = [np.ones(s, np.float32) for s in contract.mask_shapes(spec, 1, 64, 64)]
    ones2 = [np.ones(s, np.float32) for s in contract.mask_shapes(spec, 2, 64, 64)]
    alone = sess.run(None, ort_feed(spec, a, ones1))[0]
    paired_out = sess.run(None, ort_feed(spec, np.concatenate([a, b]), ones2))[0]
    assert np.abs(paired_out[:1] - alone).max() > 1e-3


def test_verify_fails_for_another_generator(paired):
    other = make_generator(paired["spec"], seed=99)
    result = verify_onnx(paired["path"], other, batches=(1,), threads=1)
    assert not result.ok and result.max_diff > FP32_TOLERANCE
    with pytest.raises(ExportError, match="verification failed"):
        result.check()


def test_fp16_within_tolerance_and_fp32_io(legacy_fp16):
    path = legacy_fp16["path"]
    model = onnx.load(str(path))
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT
               for v in list(model.graph.input) + list(model.graph.output))
    assert any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)
    assert read_onnx_metadata(path)[1] == "fp16"
    result = verify_onnx(path, legacy_fp16["gen"], sizes=[(32, 32), (64, 32)], batches=(1, 2), threads=1)
    assert result.tolerance == FP16_TOLERANCE
    assert result.max_diff <= FP16_TOLERANCE, result.lines()
    assert result.max_diff > 0  # it really is fp16, not the fp32 graph relabelled
    assert result.repeatable and result.masks_matter


def write_frames(folder, count=3, size=64):
    import cv2
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):  # aligned A|B pairs, as in the pix2pix datasets
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (size, 2 * size, 3), dtype=np.uint8))
    return folder


@pytest.mark.slow
def test_fp16_reduce_norm_keeps_its_statistics_in_fp32(tmp_path):
    """Pre-norm activations near 1000: their centred squares overflow float16 (max 65504) unless the
    statistics chain stays fp32. ONNX's reference evaluator computes float16 ops in float16, as a GPU
    does (ORT CPU quietly computes them in fp32, so it cannot show this)."""
    from onnx.reference import ReferenceEvaluator

    spec = ModelSpec.for_task("paired", 32, ngf=4)
    gen = make_generator(spec, seed=3)
    with torch.no_grad():
        for p in gen.parameters():
            if p.dim() == 4:
                p.mul_(100)  # measured: pre-norm activations up to ~1100
    path = export_onnx(gen, spec, tmp_path / "m16.onnx", fp16=True, norm="reduce")
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    masks = contract.ones_masks(spec, 1, 32, 32)
    with np.errstate(all="ignore"):
        out = ReferenceEvaluator(onnx.load(str(path))).run(None, contract.feeds(spec, x, masks))[0]
    with torch.no_grad():
        ref = gen.train()(torch.from_numpy(x), [torch.from_numpy(m) for m in masks]).numpy()
    # fp16 convolutions at these magnitudes cost ~5e-2; an overflowed variance costs ~1
    assert np.isfinite(out).all() and np.abs(out - ref).max() < 0.1, np.abs(out - ref).max()


def test_int8_calibrated_on_frames(paired, tmp_path):
    calib = write_frames(tmp_path / "calib")
    out, frames = quantize_int8(paired["path"], tmp_path / "model.int8.onnx", calib)
    assert len(frames) == 3 and frames[0][0].shape == (1, 3, 64, 64)  # the A half, at the spec's size
    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and forbidden_ops(model) == set()
    check_graph(model, paired["spec"])  # same inputs: masks survive quantisation
    assert read_onnx_metadata(out)[1] == "int8" and read_onnx_spec(out) == paired["spec"]
    with cpu_backend(paired["path"], 1) as fp32, cpu_backend(out, 1) as int8:
        result = compare(fp32, int8, frames, runs=1)
    assert 0 < result.max_diff < 0.5 and result.ms_candidate > 0


# --- metadata and the caller's model ----------------------------------------------------------

def test_spec_round_trips_through_metadata(paired, legacy_fp16):
    assert read_onnx_spec(paired["path"]) == paired["spec"]
    assert read_onnx_metadata(paired["path"])[1] == "fp32"
    spec16 = read_onnx_spec(legacy_fp16["path"])
    assert spec16 == legacy_fp16["spec"]
    assert (spec16.task, spec16.generator, spec16.dropout_p, spec16.in_channels, spec16.out_channels) == \
        ("colorize", "encdec", 0.3, 1, 2)
    model = onnx.load(str(paired["path"]))
    props = {p.key: p.value for p in model.metadata_props}
    assert ModelSpec.from_json(props["p2p.spec"]) == paired["spec"]


def test_read_onnx_spec_rejects_foreign_files(tmp_path):
    plain = tmp_path / "plain.onnx"
    onnx.save(tiny_model(helper.make_node("Relu", ["x"], ["y"])), str(plain))
    with pytest.raises(SpecError, match="no 'p2p.spec' metadata"):
        read_onnx_spec(plain)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a protobuf\xff" * 10)
    with pytest.raises(SpecError):
        read_onnx_spec(junk)
    with pytest.raises(SpecError, match="does not exist"):
        read_onnx_spec(tmp_path / "missing.onnx")


def test_export_leaves_generator_unchanged(paired, legacy_fp16):
    assert same_state(paired["before"], snapshot(paired["gen"]))
    assert paired["gen"].training is False
    # a generator with running statistics: tracing in train mode must not update them
    gen = legacy_fp16["gen"]
    assert same_state(legacy_fp16["before"], snapshot(gen))
    bn = next(m for m in gen.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 7 and gen.training is True
    assert all(p.requires_grad for p in gen.parameters())


# --- the CLI ----------------------------------------------------------------------------------

def run_cli(args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    # click turns our errors into SystemExit; any other exception would be a traceback for a user
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


@pytest.mark.slow
def test_cli_fp16_verify_and_trt_without_tensorrt(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, even where it is installed
    digest, state = sha256(checkpoint), load_checkpoint(checkpoint)["generator"]
    out = tmp_path / "out" / "model.onnx"
    result = run_cli([checkpoint.parent, "-o", out, "--fp16", "--verify", "--trt", "--shapes", "64x64,128x128",
                      "--batch", "2"])
    assert result.exit_code == 1
    line = one_line_error(result)
    assert "TensorRT is not installed" in line and "P2P_GPU=cu12 ./install.sh" in line and "JetPack" in line
    assert "was written" in line
    assert "OK: fp16" in result.output
    # the ONNX file is there and complete; no engine, no stray files
    assert read_onnx_spec(out) == load_checkpoint(checkpoint)["spec"]
    assert read_onnx_metadata(out)[1] == "fp16"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]
    # the checkpoint is untouched: bytes and weights
    assert sha256(checkpoint) == digest
    assert same_state(state, load_checkpoint(checkpoint)["generator"])


@pytest.mark.slow
def test_cli_writes_beside_the_checkpoint_by_default(checkpoint, tmp_path, monkeypatch):
    """Without -o the model goes where p2p-live looks (RUN/model.onnx), not into the current folder."""
    monkeypatch.chdir(tmp_path)
    for source in (checkpoint.parent, checkpoint):  # a run folder, or its checkpoint.pt
        result = run_cli([source])
        assert result.exit_code == 0, result.output
        assert (checkpoint.parent / "model.onnx").is_file() and not (tmp_path / "model.onnx").exists()
        (checkpoint.parent / "model.onnx").unlink()


def test_cli_help_has_an_example():
    result = run_cli(["--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "p2p-export runs/" in result.output


def newer_format(path):
    state = torch.load(path, weights_only=True)
    state["format"] = 99
    torch.save(state, path)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("case,expect", [
    ("text_file", "not a readable p2p checkpoint"),
    ("other_torch_file", "not a p2p checkpoint"),
    ("corrupt", "not a readable p2p checkpoint"),
    ("newer", "newer than this p2p"),
    ("missing", "does not exist"),
    ("empty_run_folder", "has no checkpoint.pt"),
])
def test_cli_bad_checkpoints(checkpoint, tmp_path, case, expect):
    target = checkpoint
    if case == "text_file":
        target = tmp_path / "notes.txt"
        target.write_text("hello")
    elif case == "other_torch_file":
        target = tmp_path / "weights.pt"
        torch.save({"state_dict": {"w": torch.zeros(2)}}, target)
    elif case == "corrupt":
        truncate(checkpoint)
    elif case == "newer":
        newer_format(checkpoint)
    elif case == "missing":
        target = tmp_path / "nope.pt"
    elif case == "empty_run_folder":
        target = tmp_path / "empty_run"
        target.mkdir()
    out = tmp_path / "out" / "model.onnx"
    result = run_cli([target, "-o", out])
    assert result.exit_code == 1
    assert expect in one_line_error(result)
    assert not out.exists()


def test_cli_unwritable_output(checkpoint, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = run_cli([checkpoint, "-o", blocker / "sub" / "model.onnx"])
    assert result.exit_code == 1 and "cannot create output folder" in one_line_error(result)
    result = run_cli([checkpoint, "-o", tmp_path])
    assert result.exit_code == 1 and "is a folder" in one_line_error(result)


def test_cli_read_only_folder(checkpoint):
    # /proc refuses new files for every user, root included (permission bits would not stop root)
    result = run_cli([checkpoint, "-o", "/proc/model.onnx"])
    assert result.exit_code == 1 and "not writable" in one_line_error(result)


@pytest.mark.parametrize("args,expect,code", [
    (["--trt", "--shapes", "100x100"], "multiples of 64", 1),
    (["--trt", "--shapes", "64x64,96x128"], "multiples of 64", 1),
    (["--trt", "--min", "1x64x64", "--opt", "1x128x128", "--max", "1x64x64"], "min ≤ opt ≤ max", 1),
    (["--trt", "--min", "1x64x64", "--opt", "1x64x64", "--max", "2x64x200"], "multiples of 64", 1),
    (["--trt", "--shapes", "big"], "not N or WxH", 2),  # the grammar of --size, a usage error
    (["--trt", "--min", "1x64", "--opt", "1x64x64", "--max", "1x64x64"], "NxHxW", 2),
])
def test_cli_bad_shapes_fail_before_export(checkpoint, tmp_path, args, expect, code):
    out = tmp_path / "model.onnx"
    result = run_cli([checkpoint, "-o", out, *args])
    assert result.exit_code == code, result.output
    assert expect in result.output.strip().splitlines()[-1]
    assert not out.exists()  # checked before minutes of export/build


def test_cli_int8_bad_calibration_folder_fails_before_export(checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    (tmp_path / "empty").mkdir()
    for calib, expect in ((tmp_path / "empty", "no images"), (tmp_path / "missing", "not a folder")):
        result = run_cli([checkpoint, "-o", out, "--int8", "--calib", calib])
        assert result.exit_code == 1 and expect in one_line_error(result)
    assert not out.exists()


@pytest.mark.parametrize("args", [["--shapes", "64x64"], ["--trt", "--min", "1x64x64"],
                                  ["--int8"], ["--int8", "--calib", ".", "--fp16"], ["--calib", "."],
                                  ["--trt", "--shapes", "64x64", "--min", "1x64x64", "--opt", "1x64x64",
                                   "--max", "1x64x64"]])
def test_cli_usage_errors(checkpoint, tmp_path, args):
    result = run_cli([checkpoint, "-o", tmp_path / "model.onnx", *args])
    assert result.exit_code == 2 and "Error:" in result.output


# --- TensorRT helpers (no engine is built here) -----------------------------------------------

def test_shapes_parsing_and_profile():
    spec = ModelSpec.for_task("paired", 256)
    assert parse_nhw("2x256x512") == (2, 256, 512)
    assert SIZES.convert("256x256, 768x512", None, None) == [(256, 256), (768, 512)]  # width x height
    shapes = Shapes.from_sizes([(512, 768), (256, 256)], max_batch=4).validated(spec)
    assert shapes.to_dict() == {"min": [1, 256, 256], "opt": [1, 512, 768], "max": [4, 512, 768]}
    assert Shapes.single(spec).to_dict()["opt"] == [1, 256, 256]
    with pytest.raises(SpecError, match="multiples of 256"):
        Shapes.from_sizes([(720, 1280)]).validated(spec)
    with pytest.raises(SpecError, match="batch"):
        Shapes((0, 256, 256), (1, 256, 256), (1, 256, 256)).validated(spec)


def test_tensorrt_too_old_to_build_is_refused_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT("8.4.3"))
    with pytest.raises(TensorRTUnavailable, match="TensorRT 8.4.3 is too old.*JetPack 6"):
        import_tensorrt()


def test_import_tensorrt_explains_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTUnavailable, match=r"P2P_GPU=cu12 \./install\.sh.*JetPack"):
        import_tensorrt()


def test_check_writable_creates_missing_folders(tmp_path):
    target = tmp_path / "a" / "b" / "model.onnx"
    check_writable(target)
    assert target.parent.is_dir() and not target.exists()


# what onnx-tensorrt's importers make of each node (the layer registered under the node's name)
LAYER_TYPES = {"Conv": "CONVOLUTION", "ConvTranspose": "DECONVOLUTION", "ReduceMean": "REDUCE",
               "InstanceNormalization": "NORMALIZATION", "Sqrt": "UNARY", "Reciprocal": "UNARY", "Shape": "SHAPE",
               "Slice": "SLICE", "Concat": "CONCATENATION", "Cast": "CAST", "Gather": "GATHER",
               **dict.fromkeys(["Add", "Sub", "Mul", "Div"], "ELEMENTWISE"),
               **dict.fromkeys(["Relu", "LeakyRelu", "Tanh"], "ACTIVATION"),
               **dict.fromkeys(["Reshape", "Transpose", "Squeeze", "Unsqueeze"], "SHUFFLE")}


class FakeLayer:
    """trt.ILayer: name, type, precision, outputs (named tensors) and their types."""

    def __init__(self, name, layer_type, outputs):
        import types
        self.name, self.type, self.precision, self.output_types = name, layer_type, None, {}
        self._outputs = [types.SimpleNamespace(name=o) for o in outputs]

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_output(self, index):
        return self._outputs[index]

    def set_output_type(self, index, dtype):
        self.output_types[index] = dtype


class FakeTensorRT:
    """Just enough of the TensorRT 8.5+/10/11 Python API to check what build_engine asks of it.

    Its parser builds the network the way onnx-tensorrt 8.6-GA/10.x's does: per node, the helper
    layers an importer adds first (a CONSTANT layer named after each initializer it takes; an
    "ONNXTRT_Broadcast" SHUFFLE with an unnamed output before an ELEMENTWISE one), then the node's
    layer, named by registerLayer after the node (``name_N`` when the name is taken, N from one
    counter) and outputting the tensor named after the node's ONNX output. Constant nodes make
    no layer. ``node_layers`` maps each node's name to its layer.
    """

    def __init__(self, version: str):  # noqa: C901
        import importlib.machinery
        import types
        self.__version__ = version
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # torch.onnx looks it up by find_spec
        self.calls = {"profile": {}, "flags": set(), "cleared": set(), "parsed": None, "network_flags": None}
        self.node_layers: dict = {}
        calls, fake = self.calls, self
        self.float32 = "float32"
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, level=None: None})
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
        major = int(version.split(".")[0])
        # 8.x: implicit batch unless EXPLICIT_BATCH (bit 0); 10 ignores that flag; 11 removed it
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(
            **({"EXPLICIT_BATCH": 0} if major < 11 else {}), **({"STRONGLY_TYPED": 1} if major >= 10 else {}))
        self.OnnxParserFlag = types.SimpleNamespace(NATIVE_INSTANCENORM=0)
        self.LayerType = types.SimpleNamespace(**{t: t for t in {*LAYER_TYPES.values(), "CONSTANT"}})
        flags = ["TF32"] + (["FP16", "PREFER_PRECISION_CONSTRAINTS", "OBEY_PRECISION_CONSTRAINTS"] if major < 11 else [])
        self.BuilderFlag = types.SimpleNamespace(**{f: f for f in flags})

        class Network:
            def __init__(self):
                self.inputs, self.outputs, self.layers, self.names, self.counter = [], [], [], set(), 0

            @property
            def num_inputs(self):
                return len(self.inputs)

            def get_input(self, i):
                return types.SimpleNamespace(name=self.inputs[i])

            @property
            def num_outputs(self):
                return len(self.outputs)

            def get_output(self, i):
                return types.SimpleNamespace(name=self.outputs[i])

            @property
            def num_layers(self):
                return len(self.layers)

            def get_layer(self, i):
                return self.layers[i]

            def add(self, basename, layer_type, outputs):
                name = basename  # onnx-tensorrt's generateUniqueName
                while name in self.names:
                    name = f"{basename}_{self.counter}"
                    self.counter += 1
                self.names.add(name)
                self.layers.append(FakeLayer(name, layer_type, outputs))
                return self.layers[-1]

        class Parser:
            def __init__(self, network, logger):
                self.network, self.num_errors = network, 0

            def set_flag(self, flag):
                pass

            def parse_from_file(self, path):
                calls["parsed"] = path
                graph = onnx.load(path, load_external_data=False).graph
                self.network.inputs = [i.name for i in graph.input]
                self.network.outputs = [o.name for o in graph.output]
                weights, made = {i.name for i in graph.initializer}, set()
                for node in graph.node:
                    if node.op_type == "Constant":
                        continue
                    for name in node.input:
                        if name in weights and name not in made:
                            self.network.add(name, "CONSTANT", [f"(Unnamed Layer) {name}"])
                            made.add(name)
                    layer_type = LAYER_TYPES.get(node.op_type, "PLUGIN")
                    if layer_type == "ELEMENTWISE":
                        self.network.add("ONNXTRT_Broadcast", "SHUFFLE", ["(Unnamed Layer) broadcast"])
                    fake.node_layers[node.name] = self.network.add(node.name, layer_type, list(node.output))
                return True

        class Cache:
            def serialize(self):
                return b"timing-cache"

        class Config:
            def set_memory_pool_limit(self, pool, size):
                pass

            def add_optimization_profile(self, profile):
                pass

            def set_flag(self, flag):
                calls["flags"].add(flag)

            def clear_flag(self, flag):
                calls["cleared"].add(flag)

            def create_timing_cache(self, data):
                return Cache()

            def set_timing_cache(self, cache, ignore_mismatch):
                return True

            def get_timing_cache(self):
                return Cache()

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                calls["profile"][name] = (tuple(lo), tuple(opt), tuple(hi))

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                calls["network_flags"] = flags
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"engine-bytes"

        self.Builder, self.OnnxParser = Builder, Parser


@pytest.mark.parametrize("version", ["8.6.2", "10.3.0", "11.0.0"])
def test_build_engine_profiles_every_input(paired, norm_forms, tmp_path, monkeypatch, version):
    import json

    from p2p.export.tensorrt_build import build_engine
    fake = FakeTensorRT(version)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    spec = paired["spec"]
    source = norm_forms["instance", 17, False] if version.startswith("8.") else paired["path"]
    shapes = Shapes((1, 64, 64), (2, 128, 64), (4, 128, 192))
    engine = build_engine(source, tmp_path / "model.engine", shapes=shapes, fp16=True,
                          fp16_onnx_path=norm_forms["instance", 18, True], timing_cache=tmp_path / "tc",
                          log=lambda m: None)
    assert engine.read_bytes() == b"engine-bytes" and (tmp_path / "tc").read_bytes() == b"timing-cache"
    profile = fake.calls["profile"]
    assert set(profile) == {"image", *contract.mask_names(spec)}  # the image and every mask
    assert profile["image"] == ((1, 3, 64, 64), (2, 3, 128, 64), (4, 3, 128, 192))
    for k, name in enumerate(contract.mask_names(spec)):
        assert profile[name] == tuple(tuple(contract.mask_shapes(spec, *s)[k]) for s in (shapes.min, shapes.opt, shapes.max))
    meta = json.loads((tmp_path / "model.engine.json").read_text())
    assert ModelSpec.from_dict(meta["spec"]) == spec and meta["precision"] == "fp16"
    assert meta["shapes"] == {"min": [1, 64, 64], "opt": [2, 128, 64], "max": [4, 128, 192]}
    assert meta["tensorrt_version"] == version
    if version.startswith("8."):  # JetPack 6.0: the ONNX parser needs an explicit-batch network
        assert "FP16" in fake.calls["flags"] and fake.calls["network_flags"] == 1
    elif version.startswith("10."):
        assert "FP16" in fake.calls["flags"] and fake.calls["network_flags"] == 0
    else:  # strongly typed: precision comes from the FP16 ONNX, no FP16 flag exists
        assert fake.calls["flags"] == set() and fake.calls["network_flags"] == 2
    # fp32 engines keep true fp32 (no TF32), and TensorRT 11 without an FP16 ONNX says what to do
    build_engine(source, tmp_path / "m32.engine", log=lambda m: None, timing_cache=tmp_path / "tc")
    assert "TF32" in fake.calls["cleared"]
    assert json.loads((tmp_path / "m32.engine.json").read_text())["shapes"]["max"] == [1, 64, 64]
    if version.startswith("11."):
        with pytest.raises(ExportError, match="strongly typed"):
            build_engine(paired["path"], tmp_path / "x.engine", fp16=True, log=lambda m: None)


def test_build_engine_checks_the_graphs_inputs_and_outputs_against_the_contract(paired, tmp_path, monkeypatch):
    """The engine's I/O is checked by the contract's own check_io: an output under another name (which the
    old, inputs-only check let through into an engine the runtime then refuses) stops the build."""
    from p2p.export.tensorrt_build import build_engine
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT("10.3.0"))
    model = onnx.load(str(paired["path"]))
    producer = next(n for n in model.graph.node if contract.OUTPUT in n.output)
    producer.output[list(producer.output).index(contract.OUTPUT)] = "translated"
    model.graph.output[0].name = "translated"
    renamed = tmp_path / "renamed.onnx"
    onnx.save(model, str(renamed))
    with pytest.raises(SpecError, match=r"outputs \['translated'\] do not match its spec"):
        build_engine(renamed, tmp_path / "model.engine", log=lambda m: None)
    assert not (tmp_path / "model.engine").exists()


# --- issue 19 (3): an opset-17 graph that TensorRT 8.6 (JetPack 6.0) parses as meant ---------------------

def opset(model) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


@pytest.mark.parametrize("norm", ["instance", "reduce"])
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_opset17_graph_has_nothing_tensorrt_8_6_rejects(norm_forms, norm, fp16):
    """Every construct onnx-tensorrt 8.6-GA rejects or misreads, looked for node by node (subgraphs too)."""
    old, new = (onnx.load(str(norm_forms[norm, o, fp16])) for o in (18, 17))
    onnx.checker.check_model(new)
    assert opset(new) == 17 and not new.functions
    assert {o.domain for o in new.opset_import} <= {"", "ai.onnx"}
    for node in all_nodes(new.graph):
        assert node.domain in ("", "ai.onnx") and node.op_type in TENSORRT8_OPS, node.op_type
        attrs = {a.name for a in node.attribute}
        assert not (node.op_type == "Shape" and attrs & {"start", "end"}), node.name  # ignored by 8.6: wrong shapes
        if node.op_type.startswith("Reduce"):  # 8.6 reads axes only as an attribute
            assert len(node.input) == 1 and "axes" in attrs, node.name
        assert not (node.op_type == "Split" and "num_outputs" in attrs)
    assert tensorrt8_problems(new) == []
    # the opset-18 graph is what 8.6 cannot take: the check finds each construct there
    found = " ".join(tensorrt8_problems(old))
    assert "opset 18" in found
    assert ("Shape" in found and "start/end" in found) if norm == "instance" else "axes as an input" in found


@pytest.mark.parametrize("norm", ["instance", "reduce"])
def test_opset17_graph_computes_what_opset18_does(norm_forms, paired, norm):
    spec = paired["spec"]
    old, new = (session(norm_forms[norm, o, False]) for o in (18, 17))
    for batch, h, w, seed in ((1, 64, 64, 0), (2, 128, 192, 1)):  # the sliced shapes follow every input size
        x = np.random.default_rng(seed).uniform(-1, 1, (batch, 3, h, w)).astype(np.float32)
        feeds = ort_feed(spec, x, random_masks(spec, batch, h, w, seed))
        a, b = (s.run(None, feeds)[0] for s in (old, new))
        assert a.shape == (batch, 3, h, w) and np.abs(a - b).max() <= 1e-6


def test_tensorrt8_check_finds_each_construct():
    def model_with(*nodes, inputs=("x",), initializers=()):
        graph = helper.make_graph(list(nodes), "g", [helper.make_tensor_value_info(i, TensorProto.FLOAT, None)
                                                     for i in inputs],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(initializers))
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    axes = onnx.numpy_helper.from_array(np.array([0], np.int64), "axes")
    cases = {
        "num_outputs": helper.make_node("Split", ["x"], ["y", "z"], axis=0, num_outputs=2),
        "axes input (opset 18)": helper.make_node("Pad", ["x", "p", "", "axes"], ["y"]),
        "opset-18 attributes": helper.make_node("Resize", ["x", "", "s"], ["y"], antialias=1),
        "wants initializers": helper.make_node("Squeeze", ["x", "computed"], ["y"]),
        "not an operator TensorRT 8.6 supports": helper.make_node("Mish", ["x"], ["y"]),
        "domain com.microsoft": helper.make_node("FusedConv", ["x"], ["y"], domain="com.microsoft"),
        "reduces every axis": helper.make_node("ReduceMean", ["x", "axes"], ["y"]),
    }
    for expected, node in cases.items():
        assert any(expected in p for p in tensorrt8_problems(model_with(node, initializers=[axes]))), expected
    assert tensorrt8_problems(model_with(helper.make_node("Squeeze", ["x", "axes"], ["y"]), initializers=[axes])) == []


@pytest.mark.slow
def test_cli_opset_17_when_tensorrt_is_older_than_10_or_by_choice(checkpoint, tmp_path, monkeypatch):
    for version, args in (("8.6.2", []), ("10.3.0", ["--opset", "17"])):
        monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(version))
        out = tmp_path / version / "model.onnx"
        result = run_cli([checkpoint.parent, "-o", out, "--trt", "--timing-cache", tmp_path / "tc", *args])
        assert result.exit_code == 0, result.output
        written = onnx.load(str(out))
        assert opset(written) == 17 and tensorrt8_problems(written) == [] and out.with_suffix(".engine").is_file()
        assert ("TensorRT 8.6.2 parses opset 17" in result.output) == (not args)  # chosen by itself, and said


def test_tensorrt_8_refuses_an_opset_18_file_in_one_line(paired, tmp_path, monkeypatch):
    from p2p.export.tensorrt_build import build_engine
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT("8.6.2"))
    with pytest.raises(ExportError, match=r"TensorRT 8\.6\.2 cannot parse .*opset 18.*export it with --opset 17"):
        build_engine(paired["path"], tmp_path / "m.engine", log=lambda m: None)


# --- issue 19 (4): an FP16 engine keeps each whole normalisation in fp32 ---------------------------------

def normalisation_nodes(model, norm: str) -> set[str]:
    """The nodes of every batch normalisation, found here by what they compute (not by export/fp16.py's finder):
    instance: InstanceNormalization; reduce: both means, the centring, the square, eps, sqrt, reciprocal and
    the product that normalises."""
    nodes = list(model.graph.node)
    if norm == "instance":
        return {n.name for n in nodes if n.op_type == "InstanceNormalization"}
    made_by = {o: n for n in nodes for o in n.output}
    found = {n.name for n in nodes if n.op_type in ("ReduceMean", "Sub", "Sqrt", "Reciprocal")}
    for n in nodes:
        sources = [made_by.get(i) for i in n.input]
        if n.op_type == "Mul" and (n.input[0] == n.input[1] or any(s is not None and s.op_type == "Reciprocal"
                                                                    for s in sources)):
            found.add(n.name)
        if n.op_type == "Add" and any(s is not None and s.op_type == "ReduceMean" for s in sources):
            found.add(n.name)
    return found


@pytest.mark.parametrize("norm", ["instance", "reduce"])
@pytest.mark.parametrize("version", ["8.6.2", "10.3.0"])
def test_fp16_engine_pins_every_node_of_each_normalisation_to_fp32(norm_forms, paired, tmp_path, monkeypatch,
                                                                   norm, version):
    from p2p.export.tensorrt_build import build_engine
    fake = FakeTensorRT(version)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    source = norm_forms[norm, 17 if version.startswith("8.") else 18, False]
    build_engine(source, tmp_path / "m.engine", fp16=True, timing_cache=tmp_path / "tc", log=lambda m: None)
    model = onnx.load(str(source))
    wanted = normalisation_nodes(model, norm)
    batch_norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in paired["gen"].modules())
    assert len(wanted) == batch_norms * (1 if norm == "instance" else 8)  # every node of every normalisation
    for name in wanted:
        layer = fake.node_layers[name]
        assert layer.precision == "float32", (name, layer.name)
        assert layer.output_types == {j: "float32" for j in range(layer.num_outputs)}, name
    convolutions = [fake.node_layers[n.name] for n in model.graph.node if n.op_type.startswith("Conv")]
    assert convolutions and all(layer.precision is None for layer in convolutions)  # the rest runs in fp16
    assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= fake.calls["flags"]


@pytest.mark.parametrize("norm", ["instance", "reduce"])
def test_fp16_onnx_keeps_every_node_of_each_normalisation_in_fp32(norm_forms, norm):
    """TensorRT 11 (strongly typed) and ONNX Runtime take precision from the FP16 file itself."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(norm_forms[norm, 18, True])))
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.output)}
    wanted = normalisation_nodes(model, norm)
    assert wanted
    for node in model.graph.node:
        if node.name in wanted:
            assert all(types.get(o) == TensorProto.FLOAT for o in node.output), (node.name, node.op_type)
