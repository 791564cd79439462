"""p2p-eval: metrics on known inputs, the facade segmenter, ONNX vs checkpoint, the HTML page, the ablation."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, shared_data

from p2p.evaluation import metrics as M
from p2p.evaluation import segmenter as S
from p2p.evaluation.cli import main as eval_main
from p2p.runtime import contract
from p2p.runtime.web.browser import FLAGS

# the flags the CI notes prescribe for a sandboxed, offline headless Chromium
CHROMIUM_FLAGS = list(FLAGS)


def facade_photo(name: str = "1.jpg", split: str = "val") -> np.ndarray:
    img = cv2.imread(str(shared_data("facades", split, name)))
    return np.ascontiguousarray(img[:, : img.shape[1] // 2])  # the photo half


# --- metrics on known inputs -------------------------------------------------------------
def sharpness(outputs, targets) -> float:
    """The set-level sharpness ratio p2p-eval reports, through its own accumulator."""
    running = M.Running()
    for out, target in zip(outputs, targets):
        t_out, t_target = (im.astype(np.float32) / 127.5 - 1 for im in (out, target))
        running.add(t_out, t_target, out, target)
    return running.summary()["sharpness"]


def test_identical_images_score_perfectly():
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    t = img.astype(np.float32) / 127.5 - 1
    assert M.l1(t, t) == 0.0
    assert M.psnr(img, img) == M.PSNR_CAP
    assert M.ssim(img, img) == pytest.approx(1.0, abs=1e-9)
    assert sharpness([img], [img]) == pytest.approx(1.0)
    assert M.histogram_intersection([img], [img]) == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}


def test_blur_lowers_sharpness_and_noise_raises_it():
    photo = facade_photo()
    blurred = cv2.GaussianBlur(photo, (0, 0), 2.0)
    assert sharpness([blurred], [photo]) < 0.5
    assert M.psnr(blurred, photo) < M.PSNR_CAP and M.ssim(blurred, photo) < 0.95
    noisy = np.clip(photo.astype(np.int16) + np.random.default_rng(1).normal(0, 25, photo.shape), 0, 255).astype(np.uint8)
    assert sharpness([noisy], [photo]) > 1.5
    # PSNR ranks the two degradations of the same image: a mild blur is closer than a heavy one
    assert M.psnr(cv2.GaussianBlur(photo, (0, 0), 0.7), photo) > M.psnr(blurred, photo)


def test_dropout_std_and_colour_histograms():
    img = facade_photo()
    assert M.dropout_std(np.stack([img, img, img])) == 0.0
    assert M.dropout_std(np.stack([img, 255 - img])) > 0.1
    gray = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    red = img.copy()
    red[:, :, 2] = 255
    hi_gray, hi_red = M.histogram_intersection([gray], [img]), M.histogram_intersection([red], [img])
    assert hi_gray["a"] < 0.9 and hi_red["a"] < 0.5  # greyscale and a red cast both miss the real colours


# --- the segmenter ---------------------------------------------------------------------------
def test_palette_maps_back_to_class_ids():
    ids = np.arange(12).repeat(4).reshape(6, 8)
    rgb = S.CMP_PALETTE_RGB[ids] + np.random.default_rng(0).normal(0, 6, (6, 8, 3))  # JPEG-like noise
    got, dist = S.label_ids(rgb)
    assert (got == ids).all() and dist < 15
    assert S.label_ids(facade_photo()[:, :, ::-1])[1] > S.MAX_LABEL_DISTANCE  # a photo is no label map


@pytest.mark.slow
def test_segmenter_on_real_photos_beats_chance(tmp_path):
    data = shared_data("facades")
    cfg = S.SegConfig(size=64, width=8, iters=250, batch=8)  # ~20 s; measured 0.49 per-pixel, 0.21 per-class
    net = S.train_segmenter(data, "BtoA", cfg, cache=tmp_path)
    assert len(list(tmp_path.glob("segmenter-*.pt"))) == 1
    photos, ids = S.load_pairs(data / "val", "BtoA", cfg.size)
    conf = S.confusion(S.predict(net, photos, cfg.size), ids)
    score, chance = S.scores(conf), S.majority_baseline(conf)
    # chance: always "facade" (the majority class), or 1/12 per class
    assert score["per_pixel_acc"] > chance + 0.08, (score, chance)
    assert score["per_class_acc"] > 1.8 / 12, score
    # the second call reuses the cache: same weights, same answers
    again = S.train_segmenter(data, "BtoA", cfg, cache=tmp_path)
    assert (S.predict(again, photos[:4], cfg.size) == S.predict(net, photos[:4], cfg.size)).all()


# --- p2p-eval on a checkpoint and on its ONNX export ----------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """8 training and 4 val facades, copied to a temp folder: ROOT/data/{train,val}."""
    src = shared_data("facades")
    root = tmp_path_factory.mktemp("facades")
    for split, names in (("train", [f"{i}.jpg" for i in range(1, 9)]), ("val", sorted(p.name for p in (src / "val").iterdir())[:4])):
        (root / "data" / split).mkdir(parents=True)
        for n in names:
            shutil.copy(src / split / n, root / "data" / split / n)
    return root


@pytest.fixture(scope="module")
def tiny_facades(tiny_data):
    """A 2-iteration run on tiny_data (ROOT/run) and its ONNX export (ROOT/model.onnx)."""
    root = tiny_data
    from p2p.export.onnx_export import export_onnx
    from p2p.training.checkpoint import load_generator
    from p2p.training.trainer import TrainConfig, Trainer

    cfg = TrainConfig(data=str(root / "data"), out=str(root / "run"), direction="BtoA", size=64, ngf=8, ndf=8,
                      iters=2, progress=False, device="cpu", sample_every=1000, save_every=1000)
    Trainer(cfg).run()
    gen, spec, _ = load_generator(root / "run")
    export_onnx(gen, spec, root / "model.onnx")
    return root


def run_eval(*args) -> tuple[int, str, dict | None]:
    res = CliRunner().invoke(eval_main, [str(a) for a in args] + ["--no-progress"])
    out = None
    if res.exit_code == 0:
        out = json.loads(res.stdout.strip().splitlines()[-1])
    return res.exit_code, res.output, out


def test_onnx_and_checkpoint_agree(tiny_facades, tmp_path):
    r = tiny_facades
    common = ["--data", r / "data", "--rows", "2"]
    code, text, ckpt = run_eval(r / "run", *common, "--noise", "off", "--report", tmp_path / "ckpt")
    assert code == 0, text
    code, text, onnx = run_eval(r / "model.onnx", *common, "--noise", "off", "--report", tmp_path / "onnx")
    assert code == 0, text
    assert ckpt["kind"] == "checkpoint" and onnx["kind"] == "onnx" and onnx["backend"].startswith("ort")
    a, b = ckpt["metrics"], onnx["metrics"]
    assert a["images"] == b["images"] == 4
    assert b["l1"] == pytest.approx(a["l1"], abs=1e-4)
    assert b["psnr"] == pytest.approx(a["psnr"], abs=0.05)
    assert b["ssim"] == pytest.approx(a["ssim"], abs=2e-3)
    assert b["sharpness"] == pytest.approx(a["sharpness"], rel=1e-2)
    assert a["dropout_std"] is None  # noise off: one sample, no diversity
    # per image too, and the files a user opens
    per_a = json.loads((tmp_path / "ckpt" / "metrics.json").read_text())["per_image"]
    per_b = json.loads((tmp_path / "onnx" / "metrics.json").read_text())["per_image"]
    assert [p["name"] for p in per_a] == [p["name"] for p in per_b]
    assert max(abs(p["l1"] - q["l1"]) for p, q in zip(per_a, per_b)) < 1e-4
    assert (tmp_path / "onnx" / "index.html").stat().st_size > 1000


def test_training_validation_l1_equals_p2p_eval_on_the_same_images_and_masks(tiny_facades, tmp_path):
    """Training validates the way p2p-eval and the runtime translate: one image per batch, the same masks."""
    r = tiny_facades  # validated at iteration 2 on the 4 val images (val_images 8 ≥ 4)
    logged = [json.loads(line)["val_l1"] for line in (r / "run" / "log.jsonl").read_text().splitlines()
              if "val_l1" in line][-1]
    for model in (r / "run", r / "model.onnx"):  # the checkpoint, and what ships
        code, output, out = run_eval(model, "--data", r / "data", "--noise", "per-frame", "--seed", "0", "-k", "1",
                                     "--report", tmp_path / model.name)
        assert code == 0, output
        assert out["metrics"]["l1"] == pytest.approx(logged, abs=2e-6), (model, out["metrics"]["l1"], logged)


def test_reports_are_named_after_model_and_data_and_never_replaced_silently(tiny_facades, tmp_path):
    r = tiny_facades
    other = tmp_path / "other-data"
    shutil.copytree(r / "data", other)
    runs = [run_eval(r / "model.onnx", "--data", data, "-k", "1", "--rows", "1") for data in (r / "data", other)]
    assert all(code == 0 for code, _, _ in runs), runs
    assert {Path(out["report"]).parent.name for _, _, out in runs} == {"model-eval-data-val", "model-eval-other-data-val"}
    assert not any("replaced" in output for _, output, _ in runs)
    code, output, out = run_eval(r / "model.onnx", "--data", other, "-k", "1", "--rows", "1")
    assert code == 0 and "replaced the earlier report" in output and "other-data" in output


@pytest.mark.slow
def test_data_that_does_not_fit_the_model_is_said(tmp_path):
    from test_runtime import export_tiny

    edges_model, _ = export_tiny("edges", tmp_path)  # edges→photo, trained on single photos
    code, output, out = run_eval(edges_model, "--data", shared_data("facades"), "--limit", "2", "-k", "1",
                                 "--report", tmp_path / "report")
    assert code == 0 and "looks like aligned A|B pairs" in output and "edges→photo" in output
    assert out["warnings"] and "A|B" in out["warnings"][0]
    code, output, out = run_eval(edges_model, "--data", shared_data("photos"), "--limit", "2", "-k", "1",
                                 "--report", tmp_path / "report2")
    assert code == 0 and "warning:" not in output and out["warnings"] == []


def test_dropout_noise_is_measured_and_seeded(tiny_facades, tmp_path):
    r = tiny_facades
    args = ["--data", r / "data", "--noise", "per-frame", "-k", "3", "--seed", "5", "--rows", "0"]
    code, text, ckpt = run_eval(r / "run", *args, "--report", tmp_path / "a")
    assert code == 0, text
    code, text, onnx = run_eval(r / "model.onnx", *args, "--report", tmp_path / "b")
    assert code == 0, text
    assert ckpt["metrics"]["dropout_std"] > 0
    # the same seed draws the same masks for both: even the noisy numbers agree
    assert onnx["metrics"]["dropout_std"] == pytest.approx(ckpt["metrics"]["dropout_std"], abs=1e-4)
    assert onnx["metrics"]["l1"] == pytest.approx(ckpt["metrics"]["l1"], abs=1e-4)


def test_clear_errors(tiny_facades, tmp_path):
    r = tiny_facades
    code, text, _ = run_eval(tmp_path / "nope.onnx", "--data", r / "data")
    assert code == 1 and "does not exist" in text and "Traceback" not in text
    code, text, _ = run_eval(r / "run", "--data", r / "data", "--split", "test")
    assert code == 1 and "no test/ folder" in text
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    code, text, _ = run_eval(broken, "--data", r / "data")
    assert code == 1 and "Traceback" not in text and len(text.strip().splitlines()) == 1
    # the segmenter needs label maps on the input side: AtoB feeds photos
    code, text, _ = run_eval(r / "run", "--data", r / "data", "--direction", "AtoB", "--segmenter",
                             "--cache", tmp_path / "cache", "--seg-iters", "2")
    assert code == 1 and "not a CMP label map" in text, text
    code, text, _ = run_eval(r / "run", "--data", r / "data", "--size", "48")
    assert code == 1 and "multiples of 64" in text
    help_text = CliRunner().invoke(eval_main, ["--help"]).output
    assert "Examples:" in help_text and "--segmenter" in help_text


def test_segmentation_score_in_report(tiny_facades, tmp_path):
    r = tiny_facades
    code, text, out = run_eval(r / "run", "--data", r / "data", "--segmenter", "--seg-iters", "5",
                               "--cache", tmp_path / "cache", "--report", tmp_path / "rep", "-k", "2")
    assert code == 0, text
    seg = out["segmentation"]
    for key in ("generated", "real"):
        assert set(seg[key]) == {"per_pixel_acc", "per_class_acc", "class_iou"}
        assert all(0 <= v <= 1 for v in seg[key].values())
    assert "Segmentation score" in (tmp_path / "rep" / "index.html").read_text()


def test_colorisation_reports_histogram_intersection(tmp_path):
    """evaluate() with a stand-in colouriser that predicts no colour (ab = 0): grey outputs."""
    from p2p.evaluation.evaluate import evaluate
    from p2p.runtime.spec import ModelSpec

    class Grey:
        spec = ModelSpec.for_task("colorize", 64)
        kind, name, path, limits = "stand-in", "numpy", Path("grey"), None  # a runtime Backend

        def run(self, x, masks):
            assert [m.shape for m in masks] == contract.mask_shapes(self.spec, *x.shape[:1], *x.shape[2:])
            return np.zeros((x.shape[0], 2, *x.shape[2:]), np.float32)

    results, page = evaluate(Grey(), shared_data("photos"), limit=3, samples=2, rows=1)
    m = results["metrics"]
    assert m["images"] == 3 and len(page) == 1
    assert 0 < m["histogram_intersection"]["a"] < 0.9 and 0 < m["histogram_intersection"]["b"] < 0.9
    assert m["dropout_std"] == 0.0  # the stand-in ignores its masks: no diversity
    assert 0 < m["ssim"] < 1 and m["psnr"] > 15  # right lightness, wrong colours


# --- the HTML page in a real browser ----------------------------------------------------------
def test_report_renders_in_headless_chromium(tiny_facades, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (CI: apt-get install -y chromium)")
    r = tiny_facades
    code, text, _ = run_eval(r / "model.onnx", "--data", r / "data", "--rows", "2", "--report", tmp_path / "rep")
    assert code == 0, text
    page = tmp_path / "rep" / "index.html"
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    profile.mkdir()
    proc = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                           "--window-size=1000,1000", page.as_uri()], capture_output=True, timeout=120)
    assert shot.exists(), proc.stderr.decode(errors="replace")[-2000:]
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1000, 1000)
    assert img.std() > 20  # not blank
    # the first row's target photo is on screen: find it (shown 3× enlarged, pixelated) in the screenshot
    target = cv2.imread(str(r / "data" / "val" / sorted(p.name for p in (r / "data" / "val").iterdir())[0]))
    target = cv2.resize(target[:, : target.shape[1] // 2], (64, 64), interpolation=cv2.INTER_AREA)
    shown = cv2.resize(target, (192, 192), interpolation=cv2.INTER_NEAREST)
    score = cv2.matchTemplate(img, shown, cv2.TM_CCOEFF_NORMED).max()
    assert score > 0.9, f"the target image was not found in the screenshot (best match {score:.2f})"
    # and the CMP label input: many pixels of the facade blue (BGR 255, 0, 0)
    assert (np.abs(img.astype(int) - (255, 0, 0)).sum(axis=2) < 60).mean() > 0.005


# --- the ablation benchmark, tiny ---------------------------------------------------------------
@pytest.mark.slow
def test_ablation_tiny(tiny_data, tmp_path):
    spec = importlib.util.spec_from_file_location("ablation", ROOT / "benchmarks" / "ablation.py")
    ablation = importlib.util.module_from_spec(spec)
    sys.modules["ablation"] = ablation  # dataclasses look their module up there
    spec.loader.exec_module(ablation)
    md = tmp_path / "ablation.md"
    code = ablation.main(["--tiny", "--data", str(tiny_data / "data"), "--out", str(tmp_path / "runs"),
                          "--variants", "L1,L1+cGAN", "--jobs", "2", "--cache", str(tmp_path / "cache"),
                          "--markdown", str(md)])
    assert code == 0
    text = md.read_text()
    assert "| L1 |" in text and "L1+cGAN (U-Net" in text and "real photos (upper bound)" in text
    assert "L1+cGAN is sharper than L1" in text and "encoder-decoder" not in text  # only claims it can check
    assert (tmp_path / "runs" / "ablation_samples.jpg").exists()
    assert json.loads((tmp_path / "runs" / "L1" / "eval-val" / "metrics.json").read_text())["segmentation"]
