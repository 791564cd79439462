"""Any size and aspect: p2p-train --size WxH and --preprocess, the spec's width and height, the runtime at
the model's own aspect, and the multi-scale discriminator (--num-d, --lambda-fm). Tiny models on CPU;
the 3:2 photos (BSDS, 481x321) and the street clip from ../shared/data."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import one_line_error, shared_data

from p2p.export.cli import main as export_main
from p2p.runtime import Translator
from p2p.runtime.artifacts import ShapeError, ShapeLimits
from p2p.runtime.images import input_tensor
from p2p.runtime.preprocess import apply_crop, draw_crop
from p2p.runtime.sizes import depth_for, nearest_sizes
from p2p.runtime.spec import ModelSpec, SpecError
from p2p.training.checkpoint import load_checkpoint, save_checkpoint
from p2p.training.cli import main as train_main
from p2p.video.cli import translate_main, video_main

FAST = ["--ngf", "4", "--ndf", "4", "--no-progress", "--sample-every", "1000"]


def invoke(command, *args):
    return CliRunner().invoke(command, [str(a) for a in args])


def train(*args):
    result = invoke(train_main, *args)
    assert result.exit_code == 0, result.output
    return result


def photos() -> str:
    return str(shared_data("photos"))


def assert_same_weights(a: dict, b: dict, keys=("generator", "discriminator", "opt_g", "opt_d")) -> None:
    for key in keys:
        flat_a, flat_b = _tensors(a[key]), _tensors(b[key])
        assert flat_a.keys() == flat_b.keys()
        for name in flat_a:
            assert torch.equal(flat_a[name], flat_b[name]), f"{key}.{name} differs after resume"


def _tensors(obj, prefix="") -> dict:
    if torch.is_tensor(obj):
        return {prefix: obj}
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in _tensors(value, f"{prefix}.{key}").items()}
    if isinstance(obj, list):
        return {k: v for i, value in enumerate(obj) for k, v in _tensors(value, f"{prefix}.{i}").items()}
    return {}


# --- the size rule ---------------------------------------------------------------------------
def test_depth_follows_the_shorter_side_and_squares_keep_theirs():
    assert [depth_for(n, n) for n in (8, 32, 64, 256, 512)] == [3, 5, 6, 8, 9]  # as before: log2
    assert depth_for(384, 256) == 7 and depth_for(512, 256) == 8 and depth_for(1024, 512) == 9
    assert depth_for(256, 144) == 4 and depth_for(512, 288) == 5  # 16:9: a 16x9 bottleneck
    assert depth_for(300, 200) is None and depth_for(264, 256) is None  # 2^2 | 300; a 33x32 bottleneck
    assert nearest_sizes(300, 200)[0] == (288, 192)  # the same aspect first
    spec = ModelSpec.for_task("edges", (384, 256), ngf=4)
    assert (spec.width, spec.height, spec.depth, spec.multiple, spec.image_size) == (384, 256, 7, 128, 256)


def test_spec_records_width_and_height_and_old_specs_load():
    rect = ModelSpec.for_task("paired", (384, 256), ngf=8)
    data = rect.to_dict()
    assert (data["image_width"], data["image_height"], data["format"]) == (384, 256, 3)
    assert ModelSpec.from_json(rect.to_json()) == rect
    square = ModelSpec.for_task("paired", 256)
    assert square.to_dict()["format"] == 1 and "image_width" not in square.to_dict()  # older readers open it
    old = {"generator": "unet", "depth": 8, "ngf": 64, "image_size": 256, "format": 1}  # a spec from before
    assert (ModelSpec.from_dict(old).width, ModelSpec.from_dict(old).height) == (256, 256)
    with pytest.raises(SpecError, match="shorter side"):
        ModelSpec.from_dict({**data, "image_size": 384})


@pytest.mark.parametrize("size,words", [("300x200", "nearest sizes it takes: --size 288x192"),
                                        ("264x256", "--size 256"), ("100", "--size 96")])
def test_a_size_the_network_cannot_take_names_the_nearest(tmp_path, size, words):
    line = one_line_error(invoke(train_main, "--size", size, "--out", tmp_path / "r", *FAST), code=2)
    assert "does not suit the U-Net" in line and words in line


@pytest.mark.parametrize("size", ["384x", "3x2x1", "wide", "0x256"])
def test_a_size_that_does_not_parse_says_what_to_pass(tmp_path, size):
    line = one_line_error(invoke(train_main, "--size", size, "--out", tmp_path / "r", *FAST), code=2)
    assert "not N or WxH" in line and "512x288" in line  # what to pass, by example


# --- preprocessing -------------------------------------------------------------------------------
def test_preprocess_modes_keep_the_aspect_or_the_pixels():
    image = cv2.imread(str(sorted(shared_data("photos", "train").glob("*.jpg"))[0]))
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    for mode in ("resize-crop", "scale-width-crop", "crop"):
        for jitter in (True, False):
            crop = draw_crop(rng, mode, w, h, 192, 128, jitter)
            assert apply_crop(image, crop, 192, 128).shape == (128, 192, 3)
    crop = draw_crop(rng, "crop", w, h, 192, 128, True)  # native resolution: the image's own pixels
    out = apply_crop(image, crop, 192, 128)
    window = image[crop.y:crop.y + 128, crop.x:crop.x + 192]
    assert np.array_equal(out, window[:, ::-1] if crop.mirror else window)
    crop = draw_crop(rng, "scale-width-crop", w, h, 192, 128, False)
    assert crop.sw == 192 and abs(crop.sh / crop.sw - h / w) < 0.01  # the width scaled, the aspect kept


def test_a_crop_larger_than_the_images_is_one_line(tmp_path):
    line = one_line_error(invoke(train_main, "--data", photos(), "--task", "edges", "--size", "512x512",
                                 "--preprocess", "crop", "--out", tmp_path / "r", "--iters", "1", *FAST))
    assert "smaller than the 512x512 crops of --preprocess crop" in line and "--preprocess resize-crop" in line
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


# --- a 384x256 (3:2) model, end to end -----------------------------------------------------------------
@pytest.fixture(scope="module")
def rect_run(tmp_path_factory):
    """A 384x256 edges→photo run on the 3:2 photos, exported with --verify."""
    run = tmp_path_factory.mktemp("rect") / "run"
    train("--data", photos(), "--task", "edges", "--size", "384x256", "--out", run, "--iters", "4", *FAST)
    result = invoke(export_main, run, "--verify")
    assert result.exit_code == 0, result.output
    assert "384x256" in result.output and "OK" in result.output  # verified at the training size
    return run


def test_rectangular_run_trains_exports_and_records_its_size(rect_run):
    state = load_checkpoint(rect_run)
    assert (state["spec"].width, state["spec"].height) == (384, 256) and state["config"]["size"] == "384x256"
    samples = sorted((rect_run / "samples").glob("iter_*.png"))
    grid = cv2.imread(str(samples[-1]))
    assert grid.shape[1] == 3 * 384 and grid.shape[0] % 256 == 0  # rows of input | output | target at 384x256
    with Translator(rect_run / "model.onnx") as tr:
        assert (tr.spec.width, tr.spec.height) == (384, 256) and tr.box == (384, 256)


def test_rectangular_resume_is_exact(tmp_path, rect_run):
    args = ["--data", photos(), "--task", "edges", "--size", "384x256", *FAST]
    train(*args, "--out", tmp_path / "split", "--iters", "2")
    train("--out", tmp_path / "split", "--resume", "--iters", "4", "--no-progress")
    assert_same_weights(load_checkpoint(rect_run), load_checkpoint(tmp_path / "split"))


def test_a_3_2_image_runs_at_the_models_aspect_without_stretch_or_padding(tmp_path, rect_run):
    source = sorted(shared_data("photos", "val").glob("*.jpg"))
    photo = next(p for p in source if cv2.imread(str(p)).shape[:2] == (321, 481))  # landscape 3:2
    frame = cv2.imread(str(photo))
    for fit in ("resize", "pad"):
        with Translator(rect_run / "model.onnx", noise="off", fit=fit) as tr:
            p = tr.placement(*frame.shape[:2])
            assert (p.mw, p.mh, p.cw, p.ch, p.top, p.left) == (384, 256, 384, 256, 0, 0)  # no padding
            x, _ = tr.preprocess(frame)  # exactly the frame scaled down: no stretch, no border
            expected = input_tensor(cv2.resize(frame, (384, 256), interpolation=cv2.INTER_AREA), tr.spec)
            assert np.array_equal(x, expected)
    result = invoke(translate_main, rect_run / "model.onnx", photo, "-o", tmp_path / "out", "--noise", "off")
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(tmp_path / "out" / f"{photo.stem}.png")).shape == frame.shape


def test_an_engine_built_for_another_size_says_what_to_pass(rect_run, monkeypatch):
    import p2p.runtime.translator as translator

    def engine_like(*args, **kwargs):  # the ONNX backend, posing as an engine built for 384x256 only
        backend = real_open(*args, **kwargs)
        backend.limits = ShapeLimits((1, 256, 384), (1, 256, 384), (1, 256, 384))
        return backend

    real_open = translator.open_backend
    monkeypatch.setattr(translator, "open_backend", engine_like)
    tr = Translator(rect_run / "model.onnx", noise="off", size="512x384")
    with pytest.raises(ShapeError, match="pass --size 384x256"):
        tr.translate(np.zeros((384, 512, 3), np.uint8))


# --- a 16:9 model on a 16:9 video ---------------------------------------------------------------------
def test_a_16_9_model_runs_a_16_9_video_without_distortion(tmp_path):
    cap = cv2.VideoCapture(str(shared_data("video", "vtest_first10s.mp4")))
    clip = tmp_path / "wide.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (512, 288))
    for _ in range(3):
        ok, frame = cap.read()
        writer.write(cv2.resize(frame[72:504], (512, 288), interpolation=cv2.INTER_AREA))  # 768x432: 16:9
    writer.release()
    run = tmp_path / "run"
    train("--size", "256x144", "--out", run, "--iters", "2", *FAST)  # the embedded clips, 4:3
    assert invoke(export_main, run).exit_code == 0
    with Translator(run / "model.onnx", noise="off", fit="pad") as tr:
        p = tr.placement(288, 512)
        assert (p.mw, p.mh, p.cw, p.ch) == (256, 144, 256, 144)  # the model's own 16:9: nothing to pad
    with Translator(run / "model.onnx", noise="off", size="512x288") as tr:  # at --size, same aspect
        assert tr.placement(288, 512).mw == 512 and tr.translate(np.zeros((288, 512, 3), np.uint8)).shape[:2] == (288, 512)
    out = tmp_path / "out.mp4"
    result = invoke(video_main, run / "model.onnx", clip, out, "--noise", "off")
    assert result.exit_code == 0, result.output
    back = cv2.VideoCapture(str(out))
    assert (back.get(cv2.CAP_PROP_FRAME_WIDTH), back.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (512, 288)


# --- the multi-scale discriminator ----------------------------------------------------------------------
MULTI = ["--size", "64", "--patch", "16", "--batch-size", "2", "--epochs", "1", "--epochs-decay", "1", *FAST]


def test_multiscale_with_feature_matching_trains_and_resumes_exactly(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(*MULTI, "--num-d", "3", "--lambda-fm", "10", "--out", straight, "--iters", "6")
    state = load_checkpoint(straight)
    assert {k.split(".")[1] for k in state["discriminator"]} == {"0", "1", "2"}  # three PatchGANs
    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert any("loss_g_fm" in r for r in log)
    train(*MULTI, "--num-d", "3", "--lambda-fm", "10", "--out", split, "--iters", "3")
    train("--out", split, "--resume", "--iters", "6", "--no-progress")
    assert_same_weights(state, load_checkpoint(split))


def test_resuming_with_another_num_d_is_one_line_and_old_checkpoints_resume(tmp_path):
    run = tmp_path / "run"
    train(*MULTI, "--out", run, "--iters", "2")
    line = one_line_error(invoke(train_main, "--out", run, "--resume", "--num-d", "2", "--iters", "3"))
    assert "--num-d" in line and "start a new run" in line
    # a checkpoint from before --num-d, --lambda-fm and --preprocess: its config lacks them
    state = load_checkpoint(run)
    for key in ("num_d", "lambda_fm", "preprocess"):
        del state["config"][key]
    state["spec"] = state["spec"].to_dict()
    save_checkpoint({k: v for k, v in state.items() if k not in ("kind", "format")}, run / "checkpoint.pt")
    train("--out", run, "--resume", "--iters", "3", "--no-progress")
    assert load_checkpoint(run)["iteration"] == 3
    # a multi-scale run whose config was edited to one scale: the weights say which it was
    multi = tmp_path / "multi"
    train(*MULTI, "--num-d", "2", "--out", multi, "--iters", "1")
    state = load_checkpoint(multi)
    del state["config"]["num_d"]
    state["spec"] = state["spec"].to_dict()
    save_checkpoint({k: v for k, v in state.items() if k not in ("kind", "format")}, multi / "checkpoint.pt")
    line = one_line_error(invoke(train_main, "--out", multi, "--resume", "--iters", "2"))
    assert "trained with --num-d 2" in line


def test_distillation_with_a_multiscale_student(tmp_path):
    teacher = tmp_path / "teacher"
    train(*MULTI, "--out", teacher, "--iters", "1")
    student = tmp_path / "student"
    result = train("--teacher", teacher, "--ngf", "2", "--num-d", "2", "--lambda-fm", "1", "--out", student,
                   "--iters", "2", "--no-progress", "--sample-every", "1000")
    assert "starts fresh" in result.output  # the teacher's single PatchGAN does not fit two scales
    assert load_checkpoint(student)["iteration"] == 2
