"""p2p.runtime: the Translator against the PyTorch generator, noise modes, fitting, errors, and no torch.

Tiny generators (ngf 8, 64²) exported with p2p.export once per session; real frames
from ../shared/data/video.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, shared_data

from p2p.runtime import Translator
from p2p.runtime.artifacts import ArtifactError, ShapeError, ShapeLimits, default_model
from p2p.runtime.errors import BackendUnavailable
from p2p.runtime.images import input_tensor, output_to_bgr
from p2p.runtime.masks import MaskSampler
from p2p.runtime.ort_providers import available as ort_available
from p2p.runtime.spec import ModelSpec
from p2p.training.models import Generator, init_weights

SIZE, NGF = 64, 8
_MODELS: dict[str, tuple[Path, Generator]] = {}  # shared with test_video.py: export each task once per run


def export_tiny(task: str, folder: Path) -> tuple[Path, Generator]:
    """A randomly initialised ngf-8 generator at 64², exported by p2p.export (cached per session)."""
    if task not in _MODELS:
        from p2p.export.onnx_export import export_onnx

        spec = ModelSpec.for_task(task, SIZE, ngf=NGF)
        torch.manual_seed({"paired": 0, "edges": 1, "colorize": 2}[task])
        gen = Generator(spec)
        init_weights(gen)
        # a wider weight spread than the paper's init, so outputs are far from flat grey
        # and differences between noise draws are large enough to see
        with torch.no_grad():
            for p in gen.parameters():
                if p.dim() == 4:
                    p.mul_(5)
        path = export_onnx(gen, spec, folder / f"{task}.onnx")
        _MODELS[task] = (Path(path), gen.train())
    return _MODELS[task]


@pytest.fixture(scope="session")
def paired(tmp_path_factory):
    return export_tiny("paired", tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def colorize(tmp_path_factory):
    return export_tiny("colorize", tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def street_frame():
    cap = cv2.VideoCapture(str(shared_data("video", "vtest_first10s.mp4")))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (576, 768, 3)
    return frame


def torch_out(gen: Generator, x: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return gen(torch.from_numpy(x), [torch.from_numpy(m) for m in masks]).numpy()


# --- the runtime computes the PyTorch generator's function -----------------------
def test_tensor_equals_pytorch_on_same_masks(paired):
    path, gen = paired
    tr = Translator(path, noise="per-frame", seed=0)
    assert tr.backend_name == "ort-cpu" and tr.spec == gen.spec
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 128)).astype(np.float32)  # batch 2, non-square
    y = tr.run(x)
    assert y.shape == (2, 3, 64, 128)
    assert len(tr.last_masks) == 3 and {float(v) for m in tr.last_masks for v in np.unique(m)} == {0.0, 2.0}
    np.testing.assert_allclose(y, torch_out(gen, x, tr.last_masks), atol=1e-4)
    # masks passed in explicitly are used as given
    ones = [np.ones_like(m) for m in tr.last_masks]
    np.testing.assert_allclose(tr.run(x, ones), torch_out(gen, x, ones), atol=1e-4)


def test_frame_equals_pytorch_pipeline(paired, street_frame):
    path, gen = paired
    tr = Translator(path, noise="fixed", seed=3)
    out = tr.translate(street_frame)
    assert out.shape == street_frame.shape and out.dtype == np.uint8
    # the reference: the same preprocessing functions as training, then PyTorch
    small = cv2.resize(street_frame, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    x = input_tensor(small, gen.spec)[None]
    ref = torch_out(gen, x, tr.last_masks)
    np.testing.assert_allclose(tr.run(x, tr.last_masks), ref, atol=1e-4)
    ref_frame = cv2.resize(output_to_bgr(ref[0], gen.spec), (768, 576), interpolation=cv2.INTER_CUBIC)
    assert np.abs(out.astype(int) - ref_frame).max() <= 1  # float noise may flip one rounding step
    assert out.std() > 5  # a real picture, not a flat one


# --- noise modes -------------------------------------------------------------------
def test_noise_off_is_deterministic_and_equals_no_dropout(paired, street_frame):
    path, gen = paired
    tr = Translator(path, noise="off")
    a, b = tr.translate(street_frame), tr.translate(street_frame)
    assert np.array_equal(a, b)
    assert all(np.all(m == 1) for m in tr.last_masks)
    other = Translator(path, noise="off", seed=123)  # the seed does not matter without noise
    assert np.array_equal(a, other.translate(street_frame))


def test_noise_fixed_same_for_every_frame_of_a_session(paired, street_frame):
    path, _ = paired
    tr = Translator(path, noise="fixed", seed=7)
    first = tr.translate(street_frame)
    tr.translate(np.ascontiguousarray(street_frame[::-1]))  # another frame in between changes nothing
    assert np.array_equal(first, tr.translate(street_frame))
    # a batch of identical frames gets the same mask for each: identical outputs
    batch = tr.translate_batch([street_frame] * 3)
    assert all(np.array_equal(batch[0], b) for b in batch[1:])
    # the same seed reproduces the session; another seed gives another draw
    assert np.array_equal(first, Translator(path, noise="fixed", seed=7).translate(street_frame))
    assert not np.array_equal(first, Translator(path, noise="fixed", seed=8).translate(street_frame))
    off = Translator(path, noise="off").translate(street_frame)
    assert not np.array_equal(first, off)


def test_noise_per_frame_differs_and_seed_reproduces(paired, street_frame):
    path, _ = paired
    tr = Translator(path, noise="per-frame", seed=1)
    a, b = tr.translate(street_frame), tr.translate(street_frame)
    assert np.abs(a.astype(int) - b).mean() > 0.5
    again = Translator(path, noise="per-frame", seed=1)
    assert np.array_equal(a, again.translate(street_frame)) and np.array_equal(b, again.translate(street_frame))


def test_noise_mode_can_change_mid_session(paired):
    path, _ = paired
    tr = Translator(path, noise="per-frame", seed=0)
    assert [tr.sampler.next_mode() for _ in range(3)] == ["fixed", "off", "per-frame"]
    tr.noise = "off"
    assert tr.describe() == "ort-cpu | noise off"
    with pytest.raises(ValueError, match="unknown noise mode"):
        tr.noise = "sometimes"


def test_mask_sampler_rate_and_shapes():
    spec = ModelSpec.for_task("paired", 256)
    masks = MaskSampler(spec, "per-frame", seed=0)(1, 256, 512)
    assert [m.shape for m in masks] == [(1, 512, 2, 4), (1, 512, 4, 8), (1, 512, 8, 16)]
    values = np.concatenate([m.ravel() for m in masks])
    assert set(np.unique(values)) == {0.0, 2.0}
    assert abs((values == 0).mean() - spec.dropout_p) < 0.02


# --- fitting frames to the model ------------------------------------------------------
def test_fit_pad_restores_frame_size_and_keeps_aspect(paired, street_frame):
    path, _ = paired
    tr = Translator(path, noise="off", fit="pad", size=128)
    p = tr.placement(576, 768)
    assert (p.cw, p.ch) == (128, 96) and (p.mw, p.mh) == (128, 128) and (p.top, p.left) == (16, 0)
    out = tr.translate(street_frame)
    assert out.shape == street_frame.shape
    # odd, tall and tiny frames all come back at their own size
    for h, w in [(241, 97), (50, 10), (64, 64)]:
        frame = cv2.resize(street_frame, (w, h))
        assert tr.translate(frame).shape == (h, w, 3)
    # padding is cropped away: content alone decides the result, not a black border
    x, placement = tr.preprocess(street_frame)
    assert x.shape == (3, 128, 128)
    assert np.allclose(x[:, :16], x[:, 32:16:-1])  # mirror padding above the content


def test_fit_resize_sizes(paired, street_frame):
    path, _ = paired
    tr = Translator(path, noise="off", size="128x64")
    x, p = tr.preprocess(street_frame)
    assert x.shape == (3, 64, 128) and tr.translate(street_frame).shape == street_frame.shape
    with pytest.raises(ShapeError, match="multiples of 64"):
        Translator(path, size="100x64")
    with pytest.raises(ValueError, match="not N or WxH"):
        Translator(path, size="big")


def test_batch_of_frames(paired, street_frame):
    path, _ = paired
    tr = Translator(path, noise="per-frame", seed=0)
    frames = np.stack([street_frame, street_frame[::-1], street_frame[:, ::-1]])
    outs = tr(frames)
    assert len(outs) == 3 and all(o.shape == street_frame.shape for o in outs)
    with pytest.raises(ValueError, match="share a size"):
        tr.translate_batch([street_frame, street_frame[:100]])
    assert tr(street_frame).shape == street_frame.shape  # a single frame stays a single frame


def test_colorize_keeps_full_resolution_lightness(colorize):
    path, gen = colorize
    photo = cv2.imread(str(next(iter(sorted(shared_data("photos", "val").glob("*.jpg"))))))
    tr = Translator(path, noise="off", fit="pad")
    assert tr.spec.in_channels == 1 and tr.spec.out_channels == 2
    out = tr.translate(photo)
    assert out.shape == photo.shape
    light_in = cv2.cvtColor(photo, cv2.COLOR_BGR2Lab)[:, :, 0].astype(int)
    light_out = cv2.cvtColor(out, cv2.COLOR_BGR2Lab)[:, :, 0].astype(int)
    # L comes from the photo itself at full size: edges stay sharp although the model ran at 64²
    # (only where the predicted colour falls out of gamut does the conversion clip L)
    error = np.abs(light_in - light_out)
    assert np.median(error) <= 1
    small = cv2.resize(photo, (tr.placement(*photo.shape[:2]).cw, tr.placement(*photo.shape[:2]).ch),
                       interpolation=cv2.INTER_AREA)
    blurred = cv2.resize(cv2.cvtColor(small, cv2.COLOR_BGR2Lab)[:, :, 0], photo.shape[1::-1],
                         interpolation=cv2.INTER_CUBIC).astype(int)
    assert error.mean() < np.abs(light_in - blurred).mean() / 2  # far sharper than L at model size
    assert np.abs(out.astype(int) - photo).mean() > 1.0  # but the colours are the model's


# --- errors a user meets ------------------------------------------------------------------
def test_bad_model_files(tmp_path, paired):
    with pytest.raises(ArtifactError, match="does not exist"):
        Translator(tmp_path / "missing.onnx")
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="unknown model type"):
        Translator(tmp_path / "model.pt")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(ArtifactError, match="cannot load"):
        Translator(tmp_path / "junk.onnx")
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["output"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 64, 64])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "plain.onnx")
    with pytest.raises(ArtifactError, match="not a p2p one"):
        Translator(tmp_path / "plain.onnx")
    if not ort_available("ort-cuda"):
        with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
            Translator(paired[0], backend="ort-cuda")


def test_engine_files_without_tensorrt(tmp_path, paired):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 16)
    with pytest.raises(ArtifactError, match="model.engine.json"):
        Translator(engine)
    spec = paired[1].spec
    (tmp_path / "model.engine.json").write_text(
        '{"spec": %s, "shapes": {"min": [1, 64, 64], "opt": [1, 64, 64], "max": [1, 128, 128]}, '
        '"precision": "fp16"}' % spec.to_json())
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="tensorrt package is missing"):
            Translator(engine)
    with pytest.raises(ArtifactError, match="only --backend tensorrt"):
        Translator(engine, backend="ort-cpu")


def test_engine_shape_limits_are_enforced(paired, street_frame, monkeypatch):
    """An engine built for some shapes: frames outside them get a clear error, and the default size is its optimum."""
    path, _ = paired
    limits = ShapeLimits(min=(1, 128, 128), opt=(1, 128, 192), max=(2, 256, 256))
    assert limits.covers(2, 256, 128) and not limits.covers(3, 128, 128) and not limits.covers(1, 64, 64)
    import p2p.runtime.translator as translator

    def engine_like(*args, **kwargs):  # the ONNX backend, posing as an engine built for `limits`
        backend = real_open(*args, **kwargs)
        backend.limits = limits
        return backend

    real_open = translator.open_backend
    monkeypatch.setattr(translator, "open_backend", engine_like)
    tr = Translator(path, noise="off", size=64)
    with pytest.raises(ShapeError, match=r"frames from 128x128 to 256x256, but this run needs batch 1 at 64x64"):
        tr.translate(street_frame)  # --size 64 is outside the engine
    with pytest.raises(ShapeError, match="batch 3"):
        tr.run(np.zeros((3, 3, 128, 128), np.float32))
    tr = Translator(path, noise="off")
    assert tr.box == (192, 128)  # by default the engine's optimum, not the training size it cannot run
    assert tr.translate(street_frame).shape == street_frame.shape


def test_default_model_prefers_newest_export(tmp_path, monkeypatch, paired):
    import p2p.runtime.artifacts as artifacts

    monkeypatch.setattr(artifacts, "demo_model", lambda: None)
    with pytest.raises(ArtifactError, match="no MODEL given"):
        default_model(tmp_path / "runs")
    old, new = tmp_path / "runs" / "a" / "model.onnx", tmp_path / "runs" / "b" / "model.onnx"
    for i, p in enumerate((old, new)):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")
        os.utime(p, (1000 + i, 1000 + i))
    engine = tmp_path / "runs" / "b" / "model.engine"
    engine.write_bytes(b"x")
    (tmp_path / "runs" / "b" / "model.engine.json").write_text("{}")
    assert default_model(tmp_path / "runs") == new  # engines only count where TensorRT runs
    assert default_model(tmp_path / "runs", allow_engine=True) == engine


# --- GPU backends (skipped without CUDA; the CPU tests above cover the same behaviour) ----------
def _native_tensorrt() -> bool:
    from p2p.runtime import trt_backend
    return trt_backend.available()


@pytest.mark.gpu
@pytest.mark.skipif(not _native_tensorrt(), reason="needs tensorrt, cuda-python and a CUDA GPU")
def test_tensorrt_engine_matches_pytorch_and_enforces_shapes(tmp_path, paired, street_frame):
    from p2p.export.tensorrt_build import Shapes, build_engine

    path, gen = paired
    engine = build_engine(path, tmp_path / "tiny.engine", shapes=Shapes((1, 64, 64), (1, 64, 64), (2, 128, 128)),
                          log=lambda message: None)
    tr = Translator(engine, noise="fixed", seed=0)
    assert tr.backend_name == "tensorrt"
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 64, 128)).astype(np.float32)
    masks = MaskSampler(gen.spec, "per-frame", seed=1)(2, 64, 128)
    np.testing.assert_allclose(tr.run(x, masks), torch_out(gen, x, masks), atol=1e-3)
    np.testing.assert_allclose(tr.run(x[:1], [m[:1] for m in masks]), torch_out(gen, x[:1], [m[:1] for m in masks]),
                               atol=1e-3)  # another shape on the same bound buffers
    with pytest.raises(ShapeError, match="was built for batch 1..2"):
        tr.run(np.zeros((1, 3, 256, 256), np.float32))
    cpu = Translator(path, backend="ort-cpu", noise="fixed", seed=0)
    assert np.abs(tr.translate(street_frame).astype(int) - cpu.translate(street_frame)).max() <= 2
    tr.close()


@pytest.mark.gpu
@pytest.mark.skipif(not ort_available("ort-cuda"), reason="needs onnxruntime-gpu and a CUDA GPU")
def test_onnxruntime_cuda_matches_pytorch(paired):
    path, gen = paired
    tr = Translator(path, backend="ort-cuda", noise="per-frame", seed=0)
    assert tr.backend_name == "ort-cuda"
    x = np.random.default_rng(2).uniform(-1, 1, (1, 3, 128, 64)).astype(np.float32)
    np.testing.assert_allclose(tr.run(x), torch_out(gen, x, tr.last_masks), atol=1e-3)


# --- no torch in runtime/ and video/ ---------------------------------------------------------
BLOCKER = '''
import sys
class _NoTorch:
    """Make torch (and the torch-based p2p folders) unimportable, as on a deployment box."""
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch" or name.startswith(("p2p.training", "p2p.export")):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
'''


def run_without_torch(tmp_path: Path, code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_runtime_and_video_run_without_torch(tmp_path, paired):
    clip = shared_data("video", "tree.avi")
    facades = shared_data("facades")
    code = f"""
        import sys
        from pathlib import Path
        try:
            import torch
            raise SystemExit("the shim did not block torch")
        except ImportError:
            pass
        import numpy as np
        import p2p.runtime, p2p.video
        from p2p.runtime import Translator
        from p2p.runtime import backends, trt_backend, artifacts, masks, ort_backend, ort_providers, flow, temporal, warping_error
        from p2p.video import capture, cli, display, live, options, pipeline
        tr = Translator({str(paired[0])!r}, noise="per-frame", seed=0)
        out = tr.translate(np.full((90, 120, 3), 128, np.uint8))
        assert out.shape == (90, 120, 3), out.shape
        tr.temporal = 0.8  # the stabiliser and the warping error: numpy and OpenCV only
        frames = [np.full((72, 96, 3), 60 + 5 * k, np.uint8) for k in range(3)]
        warping_error.measure(frames, {{"output": tr.translate}}).summary()
        cli.video_main([{str(paired[0])!r}, {str(clip)!r}, "out.mp4", "--max-frames", "5", "--no-progress",
                        "--temporal", "0.5"], standalone_mode=False)
        live.main([{str(paired[0])!r}, "--source", {str(clip)!r}, "--headless", "--max-frames", "3"],
                  standalone_mode=False)
        from p2p.evaluation import cli as eval_cli  # scoring an exported model on a Jetson: no torch either
        eval_cli.main([{str(paired[0])!r}, "--data", {str(facades)!r}, "--limit", "2", "--report", "report",
                       "--no-progress"], standalone_mode=False)
        assert (Path("report") / "metrics.json").is_file()
        bad = [m for m in sys.modules if m.split(".")[0] == "torch" or m.startswith(("p2p.training", "p2p.export"))]
        assert not bad, bad
        print("torch-free ok")
    """
    result = run_without_torch(tmp_path, code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch-free ok" in result.stdout
    assert (tmp_path / "out.mp4").is_file()


TORCH_FREE_PACKAGES = ("p2p.runtime", "p2p.video", "p2p.evaluation")
# the CLIs parse options (and answer --help) before they load torch
TORCH_FREE_MODULES = ("p2p.training.cli", "p2p.training.config", "p2p.export.cli")
NEEDS_TORCH = ("p2p.evaluation.segmenter",)  # --segmenter trains a network: torch by design


def test_torch_free_modules_leave_torch_unimported_where_it_is_installed(tmp_path):
    """Unlike the blocker above, this catches a module that imports torch when it can (`try: import torch`)."""
    code = f"""
        import importlib, importlib.util, pkgutil, sys
        assert importlib.util.find_spec("torch") is not None, "torch must be installed for this check"
        names = list({TORCH_FREE_MODULES!r})
        for package in {TORCH_FREE_PACKAGES!r}:
            module = importlib.import_module(package)
            names += [m.name for m in pkgutil.walk_packages(module.__path__, package + ".")
                      if m.name not in {NEEDS_TORCH!r}]
        for name in names:
            importlib.import_module(name)
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print(len(names), "modules;", "torch loaded" if loaded else "no torch")
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no torch" in result.stdout, result.stdout
    assert int(result.stdout.split()[0]) >= 20  # the walk really found the modules


def test_every_command_answers_help_and_usage_errors_without_torch(tmp_path):
    """--help and argument errors must be instant: no command may load torch before its options parse."""
    code = """
        import importlib, sys, tomllib
        scripts = tomllib.load(open(sys.argv[1], "rb"))["project"]["scripts"]
        for name, target in scripts.items():
            module, func = target.split(":")
            command = getattr(importlib.import_module(module), func)
            for args, want in ((["--help"], 0), (["--no-such-flag"], 2)):
                try:
                    command(args, prog_name=name)
                except SystemExit as exc:
                    assert exc.code == want, (name, args, exc.code)
        print("RESULT", len(scripts), "commands;", "torch loaded" if "torch" in sys.modules else "no torch")
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(ROOT / "pyproject.toml")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    verdict = result.stdout.strip().splitlines()[-1]  # after the help texts
    assert verdict.startswith("RESULT") and verdict.endswith("no torch"), verdict
    assert int(verdict.split()[1]) >= 6


def test_blocker_really_blocks(tmp_path):
    """The check above is only worth something if importing torch fails in that subprocess."""
    result = run_without_torch(tmp_path, "import torch")
    assert result.returncode != 0 and "blocked in this test" in result.stderr
