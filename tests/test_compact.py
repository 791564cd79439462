"""Compact students and CPU speed (issue 22): the separable block type end to end, INT8 with integer
convolutions, ONNX Runtime settings tuned per model and machine, and the frame conversion."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from conftest import dropout_output_shapes, shared_data
from onnx import TensorProto, helper, numpy_helper

from p2p.runtime import contract, ort_tuning
from p2p.runtime.files import file_sha256
from p2p.runtime.spec import SPEC_FORMAT, ModelSpec, SpecError
from p2p.training.models import Generator, count_parameters, init_weights

TINY = ["--size", "32", "--ndf", "8", "--no-progress", "--sample-every", "1000"]


# --- the spec ------------------------------------------------------------------------------------

def test_block_type_in_the_spec_and_old_specs_load():
    old = {k: v for k, v in ModelSpec.for_task("paired", 64, ngf=8).to_dict().items()}
    assert "block" not in old and old["format"] == 1  # the paper's blocks: readable by p2p before format 2
    assert ModelSpec.from_dict(old).block == "conv"
    fast = ModelSpec.for_task("paired", 64, ngf=8, block="separable")
    data = fast.to_dict()
    assert data["block"] == "separable" and data["format"] == 2
    assert ModelSpec.from_json(fast.to_json()) == fast != ModelSpec.from_dict(old)
    with pytest.raises(SpecError, match="unknown block type 'mobile'"):
        ModelSpec.from_dict({**data, "block": "mobile"})
    with pytest.raises(SpecError, match="newer than this p2p understands"):
        ModelSpec.from_dict({**data, "format": SPEC_FORMAT + 1})  # format 3 is the rectangle


def test_conv_generator_keeps_its_checkpoint_layout():
    """Old checkpoints load: the paper's generator has the parameter names it always had."""
    keys = set(Generator(ModelSpec.for_task("paired", 64, ngf=8)).state_dict())
    assert {"downs.0.weight", "downs.1.1.weight", "downs.1.2.weight", "ups.0.up.1.weight", "ups.1.up.2.bias",
            "out.1.weight", "out.1.bias"} <= keys


def test_separable_generator_is_the_paper_unet_with_cheaper_layers():
    spec = ModelSpec.for_task("paired", 256, ngf=16, block="separable")
    gen, plain = Generator(spec), Generator(ModelSpec.for_task("paired", 256, ngf=16))
    d = spec.depth
    for i in range(1, d):  # encoder: depthwise 4×4 stride 2, then pointwise
        dw, pw = gen.downs[i][1], gen.downs[i][2]
        assert dw.groups == dw.in_channels and dw.kernel_size == (4, 4) and dw.stride == (2, 2)
        assert pw.kernel_size == (1, 1)
    for up in gen.ups:  # decoder: pointwise at low resolution, nearest ×2, depthwise 3×3
        kinds = [type(m).__name__ for m in up.up]
        assert kinds == ["ReLU", "Conv2d", "Upsample", "Conv2d", "BatchNorm2d"] and up.up[2].mode == "nearest"
        assert up.up[3].groups == up.up[3].in_channels
    assert isinstance(gen.out[1], torch.nn.ConvTranspose2d)  # the output layer is the paper's
    # the same norms, skips and dropout masks as the paper's U-Net
    norms = [any(isinstance(m, torch.nn.BatchNorm2d) for m in down.modules()) for down in gen.downs]
    assert norms == [False] + [True] * (d - 2) + [False]
    assert dropout_output_shapes(gen, torch.randn(1, 3, 256, 256)) == [tuple(s) for s in contract.mask_shapes(spec, 1, 256, 256)]
    assert count_parameters(gen) < count_parameters(plain) / 10


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from p2p.training.cli import main
    out = tmp_path_factory.mktemp("teacher") / "run"
    r = CliRunner().invoke(main, [str(a) for a in ("--data", shared_data("facades"), "--direction", "BtoA",
                                                   "--out", out, "--ngf", "8", *TINY, "--iters", "2")])
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.slow
def test_separable_student_distils_exports_and_keeps_its_noise(teacher, tmp_path):
    """p2p-train --teacher --block separable → p2p-export --verify (both norm forms, fp16, int8) → runtime."""
    import cv2

    from p2p.export.cli import main as export_main
    from p2p.runtime import Translator
    from p2p.training.checkpoint import load_checkpoint
    from p2p.training.cli import main

    student = tmp_path / "student"
    r = CliRunner().invoke(main, [str(a) for a in ("--teacher", teacher, "--block", "separable", "--ngf", "8",
                                                   "--out", student, *TINY, "--iters", "3")])
    assert r.exit_code == 0, r.output
    spec = load_checkpoint(student)["spec"]
    assert spec.block == "separable" and spec.ngf == 8
    onnx_path = student / "model.onnx"
    for extra in ([], ["--norm", "reduce", "-o", str(student / "reduce.onnx")],
                  ["--fp16", "-o", str(student / "fp16.onnx")], ["--opset", "17", "-o", str(student / "o17.onnx")]):
        r = CliRunner().invoke(export_main, [str(student), "--verify", *extra])
        assert r.exit_code == 0 and "OK: fp" in r.output, r.output
    from p2p.export.opset17 import tensorrt8_problems
    assert tensorrt8_problems(onnx.load(str(student / "o17.onnx"))) == []  # Resize in its opset-13 form
    graph = onnx.load(str(onnx_path)).graph
    assert json.loads({p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}["p2p.spec"])["block"] \
        == "separable"
    ops = [n.op_type for n in graph.node]
    resizes = [n for n in graph.node if n.op_type == "Resize"]
    assert ops.count("ConvTranspose") == 1 and len(resizes) == spec.depth - 1
    assert all(helper.get_attribute_value(a) == b"nearest" for n in resizes for a in n.attribute if a.name == "mode")
    assert any(a.name == "group" and helper.get_attribute_value(a) > 1 for n in graph.node for a in n.attribute)

    calib = shared_data("facades", "val")
    r = CliRunner().invoke(export_main, [str(student), "-o", str(student / "int8.onnx"), "--int8", "--calib",
                                         str(calib)])
    assert r.exit_code == 0 and "int8 vs fp32" in r.output, r.output

    frame = cv2.imread(str(sorted(calib.iterdir())[0]))[:, 256:]
    for path in (onnx_path, student / "int8.onnx"):
        with Translator(path, backend="ort-cpu", noise="per-frame", seed=0) as tr:
            a, b = tr(frame), tr(frame)
            assert a.shape == frame.shape and not np.array_equal(a, b)  # the masks still change the output
            assert [m.shape for m in tr.last_masks] == contract.mask_shapes(spec, 1, 32, 32)
            tr.noise = "off"
            assert np.array_equal(tr(frame), tr(frame))


# --- INT8: every convolution an integer one ---------------------------------------------------------

def test_convtranspose_as_conv_is_exact():
    from p2p.export.subpixel import convtranspose_as_conv

    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3, 4, 4)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    x = rng.standard_normal((2, 5, 6, 10)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], kernel_shape=[4, 4], strides=[2, 2],
                            pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    rewritten, count = convtranspose_as_conv(model)
    assert count == 1 and [n.op_type for n in rewritten.graph.node] == ["Conv", "DepthToSpace"]
    assert [n.op_type for n in model.graph.node] == ["ConvTranspose"]  # the input model is left alone
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(  # noqa: E731
        None, {"x": x})[0]
    ref = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                               stride=2, padding=1).numpy()
    assert np.abs(run(rewritten) - ref).max() < 1e-5 and np.abs(run(model) - ref).max() < 1e-5


@pytest.mark.slow
def test_int8_runs_every_convolution_as_an_integer_kernel(tmp_path):
    """The old --int8 left ConvTranspose in float (weights dequantised every frame): slower than fp32."""
    from p2p.export.int8 import compare, cpu_backend, kernel_counts, quantize_int8
    from p2p.export.onnx_export import export_onnx

    spec = ModelSpec.for_task("paired", 64, ngf=8)
    torch.manual_seed(0)
    gen = Generator(spec)
    init_weights(gen)
    fp32 = export_onnx(gen, spec, tmp_path / "model.onnx")
    calib = tmp_path / "calib"
    calib.mkdir()
    import cv2
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(calib / f"{i}.png"), rng.integers(0, 256, (64, 128, 3), dtype=np.uint8))
    for reduce_range in (False, True):
        out, frames = quantize_int8(fp32, tmp_path / f"int8_{reduce_range}.onnx", calib, reduce_range=reduce_range)
        kernels = kernel_counts(out)
        convs = spec.depth * 2  # encoder and decoder layers
        assert kernels.get("QLinearConv") == convs and "ConvTranspose" not in kernels and "Conv" not in kernels
        with cpu_backend(fp32, 1) as reference, cpu_backend(out, 1) as int8:
            assert compare(reference, int8, frames, runs=1).max_diff < 0.5
    out, _ = quantize_int8(fp32, tmp_path / "float_out.onnx", calib, float_output=True)
    kernels = kernel_counts(out)
    assert kernels.get("QLinearConv") == convs - 1 and kernels.get("Conv") == 1


# --- ONNX Runtime settings per model and machine ---------------------------------------------------

class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_tuning_keeps_only_clearly_faster_settings(monkeypatch):
    monkeypatch.setattr(ort_tuning, "cpu_threads", lambda: 2)
    clock = FakeClock()
    cost = {}  # ms per run of a settings

    def make_run(s):
        def run():
            clock.t += cost(s) / 1e3
        return run

    default = ort_tuning.SessionSettings(threads=0)
    # one thread 30% faster, the fixed shape another 20%, extended 3% faster (noise: not taken)
    cost = lambda s: 10.0 * (0.7 if s.threads == 1 else 1) * (0.8 if s.shape else 1) * (  # noqa: E731
        0.97 if s.optimization == "extended" else 1)
    best, measured = ort_tuning.tune(make_run, default, (1, 64, 64), clock=clock)
    assert best == ort_tuning.SessionSettings(threads=1, shape=(1, 64, 64))
    assert measured and all(v > 0 for v in measured.values())
    cost = lambda s: 10.0 * (0.98 if s.threads == 1 else 1)  # noqa: E731
    assert ort_tuning.tune(make_run, default, None, clock=clock)[0] == default


@pytest.fixture()
def small_model(tmp_path_factory):
    from p2p.export.onnx_export import export_onnx
    spec = ModelSpec.for_task("paired", 32, ngf=4, block="separable")
    torch.manual_seed(0)
    gen = Generator(spec)
    init_weights(gen)
    return export_onnx(gen, spec, tmp_path_factory.mktemp("tune") / "model.onnx")


def test_backend_tunes_once_per_model_and_machine_and_remembers(small_model, tmp_path, monkeypatch, capsys):
    from p2p.runtime import Translator

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(ort_tuning.ENV, "auto")
    frame = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    with Translator(small_model, backend="ort-cpu", noise="off") as tr:
        first = tr(frame)
    assert "tuning ONNX Runtime" in capsys.readouterr().err
    entries = json.loads(ort_tuning.cache_file().read_text())
    (key, entry), = entries.items()
    assert key.startswith(file_sha256(small_model)) and key.endswith("1x32x32")
    assert entry["measured_ms"] and entry["settings"]["threads"] in (0, 1, 2)

    # stored settings are used as they are, without measuring again: here one thread, planned for 32x32
    entry["settings"] = {"threads": 1, "optimization": "all", "arena": False, "shape": [1, 32, 32]}
    ort_tuning.cache_file().write_text(json.dumps({key: entry}))
    monkeypatch.setattr(ort_tuning, "tune", lambda *a, **k: pytest.fail("measured again"))
    with Translator(small_model, backend="ort-cpu", noise="off") as tr:
        settings = tr.backend.settings
        assert (settings.threads, settings.arena, settings.shape) == (1, False, (1, 32, 32))
        assert np.array_equal(tr(frame), first)
        two = tr.translate_batch([frame, frame[::-1]])  # another shape: a general session runs it
        assert two[0].shape == frame.shape and tr(frame).shape == frame.shape
    with Translator(small_model, backend="ort-cpu", noise="off", threads=2) as tr:  # asked for: no tuning
        assert tr.backend.settings.threads == 2 and tr.backend.settings.shape is None
    monkeypatch.setenv(ort_tuning.ENV, "off")
    with Translator(small_model, backend="ort-cpu", noise="off") as tr:
        assert tr.backend.settings.threads == 0
    assert capsys.readouterr().err == ""


def test_output_conversion_matches_the_formula():
    from p2p.runtime.images import output_to_bgr

    rng = np.random.default_rng(0)
    out = rng.uniform(-1.2, 1.2, (3, 48, 64)).astype(np.float32)
    ref = np.clip((out.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)[:, :, ::-1]
    got = output_to_bgr(out[:, 5:40, 3:50], ModelSpec.for_task("paired", 64))  # a crop, as the runtime passes
    diff = np.abs(got.astype(int) - ref[5:40, 3:50])
    assert got.dtype == np.uint8 and got.flags.c_contiguous and diff.max() <= 1 and (diff > 0).mean() < 1e-3
    gray = output_to_bgr(out[:1], ModelSpec.for_task("edges", 64))
    assert gray.shape == (48, 64, 3) and np.array_equal(gray[..., 0], gray[..., 2])
