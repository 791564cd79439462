"""Flicker: the warping error, the optical flow under it, temporal stabilisation, and p2p-video's timeline.

Tiny random generators (ngf 8, 64², from test_runtime) and a few real frames from ../shared/data/video.
"""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import shared_data
from test_eval import tiny_data, tiny_facades  # noqa: F401 (fixtures: a 2-iteration run and its ONNX)
from test_runtime import export_tiny

from p2p.evaluation.cli import main as eval_main
from p2p.runtime.flow import FlowEstimator, consistent, warp
from p2p.runtime.temporal import Stabilizer
from p2p.runtime.translator import Translator
from p2p.runtime.warping_error import INPUT, WarpingError, read_clip
from p2p.video.cli import video_main


def clip_warping_error(frames, outputs=None, **options) -> float:
    """The warping error of one clip: of ``outputs`` (frames in the same order), or of ``frames`` themselves."""
    meter = WarpingError(**options)
    outputs = list(outputs) if outputs is not None else None
    for i, frame in enumerate(frames):
        meter.step(frame, {"output": outputs[i]} if outputs is not None else None)
    return meter.summary().get("output" if outputs is not None else INPUT, math.nan)


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    return export_tiny("paired", tmp_path_factory.mktemp("models"))[0]


@pytest.fixture(scope="module")
def street():
    """The first 12 frames of the street clip, at 192×144 (people walk; the camera stands still)."""
    return [cv2.resize(f, (192, 144), interpolation=cv2.INTER_AREA)
            for f in read_clip(shared_data("video", "vtest_first10s.mp4"), 12)]


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random texture (BGR uint8): something optical flow can lock on to."""
    noise = np.random.default_rng(seed).uniform(0, 255, (h // 4, w // 4, 3)).astype(np.float32)
    return np.clip(cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


# --- the metric -----------------------------------------------------------------------------------
def test_static_clip_has_no_warping_error_without_noise_and_some_with_it(paired, street):
    clip = [street[0]] * 5  # the same frame repeated: nothing moves, nothing should change
    off = Translator(paired, noise="off", seed=0)
    per_frame = Translator(paired, noise="per-frame", seed=0)
    assert clip_warping_error(clip) < 1e-9  # the input's own: the floor
    steady = clip_warping_error(clip, [off.translate(f) for f in clip])
    flicker = clip_warping_error(clip, [per_frame.translate(f) for f in clip])
    assert steady < 1e-6
    assert flicker > 1e-3 and flicker > 1000 * max(steady, 1e-9)


def test_flow_recovers_a_known_shift_and_the_warp_undoes_it():
    base = texture(160, 200)
    dx, dy = 3, -2
    frames = [np.roll(base, (k * dy, k * dx), axis=(0, 1)) for k in range(4)]  # content moves by (dx, dy) per frame
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    flow = FlowEstimator("dis-medium")
    backward = flow(gray[1], gray[0])  # current → previous: minus the motion
    inner = (slice(20, -20), slice(20, -20))
    assert np.median(backward[inner][..., 0]) == pytest.approx(-dx, abs=0.2)
    assert np.median(backward[inner][..., 1]) == pytest.approx(-dy, abs=0.2)
    warped = warp(frames[0], backward)
    moved = np.abs(frames[1].astype(float) - frames[0]).mean()
    assert np.abs(frames[1][inner].astype(float) - warped[inner]).mean() < 0.1 * moved
    assert consistent(backward, flow(gray[0], gray[1]))[inner].mean() > 0.95
    # the metric sees through the motion: the shifted clip scores near zero, a flickering one does not
    flickering = [np.clip(f.astype(int) + (12 if k % 2 else -12), 0, 255).astype(np.uint8) for k, f in enumerate(frames)]
    assert clip_warping_error(frames) < 0.05 * clip_warping_error(frames, flickering)


def test_warping_error_keeps_one_series_per_stream(street):
    meter = WarpingError()
    for f in street[:4]:
        meter.step(f, {"same": f, "inverted": 255 - f})
    assert set(meter.series) == {"input", "same", "inverted"} and all(len(v) == 3 for v in meter.series.values())
    summary = meter.summary()
    assert summary["same"] == pytest.approx(summary["input"])
    assert 0 < meter.kept[0] <= 1


# --- stabilisation ----------------------------------------------------------------------------------
def test_strength_zero_changes_nothing_bit_for_bit(paired, street):
    plain = Translator(paired, noise="fixed", seed=3)
    zero = Translator(paired, noise="fixed", seed=3, temporal=0.0)
    toggled = Translator(paired, noise="fixed", seed=3, temporal=0.7)
    toggled.translate(street[0])
    assert toggled.toggle_temporal() == 0.0  # switched off mid-stream (the live key): plain from then on
    for f in street[1:6]:
        expected = plain.translate(f)
        assert np.array_equal(zero.translate(f), expected)
        assert np.array_equal(toggled.translate(f), expected)
    out = np.random.default_rng(0).standard_normal((3, 8, 8)).astype(np.float32)
    assert Stabilizer(0.0).blend(out, None) is out
    assert "temporal" not in zero.describe() and "temporal 0.7" in Translator(paired, temporal=0.7).describe()
    assert zero.toggle_temporal(0.6) == 0.6 and "temporal 0.6" in zero.describe()


def test_stabilisation_lowers_the_warping_error(paired, street):
    plain = Translator(paired, noise="fixed", seed=0)
    steady = Translator(paired, noise="fixed", seed=0, temporal=0.8)
    meter = WarpingError()
    for f in street:
        meter.step(f, {"plain": plain.translate(f), "steady": steady.translate(f)})
    errors = meter.summary()
    assert errors["steady"] < 0.8 * errors["plain"], errors


def test_a_scene_cut_resets_the_blend(paired, street):
    other = cv2.resize(next(read_clip(shared_data("video", "tree.avi"), 1)), (192, 144))
    plain = Translator(paired, noise="off")
    steady = Translator(paired, noise="off", temporal=1.0)
    for f in street[:3]:
        steady.translate(f)
    assert not np.array_equal(steady.translate(street[3]), plain.translate(street[3]))  # blending: history shows
    assert steady.stabilizer.cuts == 0
    # a cut to another scene: the output is the plain translation of the new frame, nothing carried over
    assert np.array_equal(steady.translate(other), plain.translate(other))
    assert steady.stabilizer.cuts == 1
    # and after reset_temporal (e.g. resume after a pause) too, without counting a cut
    steady.reset_temporal()
    assert np.array_equal(steady.translate(street[5]), plain.translate(street[5]))
    assert steady.stabilizer.cuts == 1


def test_moving_objects_leave_no_ghost_and_static_flicker_calms():
    """The ideal model (output = input) plus per-frame flicker; a square moves over a textured background.
    Stabilised: the background flickers less, and where the square just was, the output is background."""
    bg = texture(96, 128, seed=1)
    rng = np.random.default_rng(2)
    st = Stabilizer(0.9)
    trail_errors, flicker_plain, flicker_steady, prev = [], [], [], None
    for k in range(10):
        frame = bg.copy()
        x = 10 + 6 * k
        frame[40:64, x:x + 24] = (40, 200, 255)
        noisy = np.clip(frame.astype(np.float32) + rng.normal(0, 8, (1, 1, 3)) + rng.normal(0, 6, frame.shape), 0, 255)
        motion = st.track(frame)
        out = st.blend(noisy.transpose(2, 0, 1).astype(np.float32), motion).transpose(1, 2, 0)
        if k >= 3:
            trail = (slice(40, 64), slice(x - 6, x))  # uncovered this frame: background now
            trail_errors.append(np.abs(out[trail] - bg[trail]).mean())
            static = (slice(0, 32), slice(None))
            flicker_plain.append(np.abs(noisy[static] - prev[0][static]).mean())
            flicker_steady.append(np.abs(out[static] - prev[1][static]).mean())
        prev = (noisy, out)
    assert max(trail_errors) < 15, trail_errors  # the square (far brighter) would leave ~100 here
    assert np.mean(flicker_steady) < 0.6 * np.mean(flicker_plain)


def test_translate_batch_never_blends(paired, street):
    steady = Translator(paired, noise="fixed", seed=1, temporal=0.9)
    plain = Translator(paired, noise="fixed", seed=1)
    for _ in range(2):
        got = steady.translate_batch(street[:3])
        assert all(np.array_equal(a, b) for a, b in zip(got, plain.translate_batch(street[:3])))
    # nor does it disturb the stream: the first streamed frame is still a fresh start
    assert np.array_equal(steady.translate(street[4]), plain.translate(street[4]))


def test_temporal_strength_is_checked(paired):
    with pytest.raises(ValueError, match="out of range"):
        Translator(paired, temporal=1.5)
    tr = Translator(paired)
    with pytest.raises(ValueError, match="out of range"):
        tr.temporal = -0.1


# --- p2p-video --------------------------------------------------------------------------------------
def test_video_temporal_side_by_side_shows_three_panels(tmp_path, paired):
    out = tmp_path / "three.avi"
    result = CliRunner().invoke(video_main, [str(paired), str(shared_data("video", "vtest_first10s.mp4")), str(out),
                                             "--temporal", "0.8", "--side-by-side", "--max-frames", "6",
                                             "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "temporal 0.8" in result.output
    frames = list(read_clip(out))
    assert len(frames) == 6 and frames[0].shape == (576, 3 * 768, 3)
    # input | plain | stabilised: the first frame has no history, so plain = stabilised; later ones differ
    first, last = frames[0], frames[-1]
    assert np.abs(first[:, 768:1536].astype(int) - first[:, 1536:]).mean() < 2  # MJPEG noise only
    assert np.abs(last[:, 768:1536].astype(int) - last[:, 1536:]).mean() > 0.5
    bad = CliRunner().invoke(video_main, [str(paired), str(shared_data("video", "tree.avi")), str(tmp_path / "o.mp4"),
                                          "--temporal", "2"])
    assert bad.exit_code == 2 and "--temporal" in bad.output


def test_tree_avi_keeps_its_timeline_and_says_why(tmp_path, paired):
    """tree.avi declares 444 frames (29.6 s) but stores 68 pictures; the rest are empty 'repeat' entries.
    p2p-video used to write 68 frames (4.5 s) in silence; now it holds each picture for as long as it shows."""
    src = shared_data("video", "tree.avi")
    out = tmp_path / "tree.mp4"
    result = CliRunner().invoke(video_main, [str(paired), str(src), str(out), "--no-progress", "--noise", "off"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "declares" in line]
    assert len(notes) == 1 and "444" in notes[0] and "68" in notes[0], result.output
    assert "wrote" in result.output and "444 frames" in result.output
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 444
    cap.release()
    written = list(read_clip(out))
    assert len(written) == 444
    # the second picture has timestamp 11/15 s: frames 0–10 show the first picture
    assert np.abs(written[10].astype(int) - written[0]).mean() < 2 < np.abs(written[11].astype(int) - written[0]).mean()


def test_damaged_file_is_read_past_the_damage(tmp_path, paired):
    """Bytes in the middle of an MPEG-4 file overwritten: OpenCV stops there; p2p-video seeks past it and says so."""
    src, damaged = tmp_path / "clip.mp4", tmp_path / "damaged.mp4"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for f in read_clip(shared_data("video", "vtest_first10s.mp4"), 60):
        writer.write(cv2.resize(f, (160, 120), interpolation=cv2.INTER_AREA))
    writer.release()
    data = bytearray(src.read_bytes())
    a, b = int(len(data) * 0.4), int(len(data) * 0.5)
    data[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    damaged.write_bytes(bytes(data))
    plainly = sum(1 for _ in read_clip(damaged))
    assert plainly < 50  # the damage stops a plain read
    out = tmp_path / "out.avi"
    result = CliRunner().invoke(video_main, [str(paired), str(damaged), str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "would not decode" in warning[0], result.output
    assert sum(1 for _ in read_clip(out)) == 60


# --- p2p-eval --video -----------------------------------------------------------------------------
def test_eval_video_reports_warping_errors_for_onnx_and_checkpoint(tiny_facades, tmp_path):  # noqa: F811
    clip = shared_data("video", "vtest_first10s.mp4")
    found = {}
    for name, model in (("onnx", tiny_facades / "model.onnx"), ("ckpt", tiny_facades / "run")):
        result = CliRunner().invoke(eval_main, [str(model), "--video", str(clip), "--max-frames", "6", "--temporal",
                                                "0.8", "--report", str(tmp_path / name), "--no-progress"])
        assert result.exit_code == 0, result.output
        found[name] = json.loads(result.stdout.strip().splitlines()[-1])["warping_error"]
        saved = json.loads((tmp_path / name / "metrics.json").read_text())
        assert set(saved["per_frame"]) == {"input", "per-frame", "fixed", "off", "fixed + temporal 0.8"}
        assert all(len(v) == 5 for v in saved["per_frame"].values())
        page = (tmp_path / name / "index.html").read_text()
        assert "Warping error" in page and "data:image/png;base64," in page
        assert cv2.imread(str(tmp_path / name / "warping_error.png")) is not None
    errors = found["onnx"]
    assert errors["per-frame"] > errors["fixed"] > 0 and errors["input"] > 0
    # the checkpoint runs through the same frame handling: deterministic rows agree with the ONNX export
    assert found["ckpt"]["off"] == pytest.approx(errors["off"], rel=1e-3)
    assert found["ckpt"]["input"] == errors["input"]


def test_eval_video_errors_are_one_line(tiny_facades, tmp_path):  # noqa: F811
    model = tiny_facades / "model.onnx"
    for args, words, code in ((["--video", str(tmp_path / "none.mp4")], "does not exist", 1),
                              ([], "--data FOLDER", 2),  # flags that do not go together: a usage error
                              (["--video", str(shared_data("video", "tree.avi")), "--data", str(tmp_path)],
                               "one of them", 2)):
        result = CliRunner().invoke(eval_main, [str(model), *args])
        assert result.exit_code == code and words in result.output and "Traceback" not in result.output, result.output
