"""The model in a web page (p2p-export --web, p2p-web), checked in a real headless Chromium.

One Chromium (Debian's, driven through /usr/bin/chromedriver by selenium: nothing is downloaded)
serves the whole module. The page's test hook (window.p2pTest) takes fixed tensors in and gives the
output back, so the browser's numbers are compared with ONNX Runtime's and numpy's in Python.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import one_line_error, shared_data

from p2p.runtime import contract
from p2p.runtime.artifacts import demo_model, read_onnx_metadata
from p2p.runtime.images import input_tensor
from p2p.runtime.masks import MaskSampler
from p2p.runtime.web import browser as chromium
from p2p.runtime.web import bundle, ortweb
from p2p.runtime.web.browser import open_page
from p2p.runtime.web.cli import main as web_main
from p2p.runtime.web.serve import WebServer

PARITY = 1e-4  # the tolerance: the page against ONNX Runtime on the CPU in Python


def need_runtime() -> Path:
    try:
        return ortweb.runtime_files()
    except ortweb.RuntimeMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must install onnxruntime-web (./install.sh): {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    why = chromium.missing()
    if why:
        pytest.skip(f"{why} (CI installs it)")
    need_runtime()
    driver = chromium.headless_chromium(tmp_path_factory.mktemp("chromium-profile"), network_log=True,
                                      fake_camera=True)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    need_runtime()
    return bundle.build_web_folder(demo_model(), tmp_path_factory.mktemp("web") / "demo")


@pytest.fixture(scope="module")
def served(demo_folder):
    with WebServer(demo_folder, port=0).start() as server:
        yield server.url


def b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()


def unb64(text: str, dtype=np.float32) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype)


def page_run(driver, x: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    _, _, h, w = x.shape
    out = driver.execute_script("return p2pTest.run(arguments[0], arguments[1], arguments[2], arguments[3])",
                                b64(x), [b64(m) for m in masks], w, h)
    return unb64(out)


def canvas_pixels(driver, canvas_id: str) -> np.ndarray:
    data = driver.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let s = ''; for (let i = 0; i < d.length; i += 0x8000) s += String.fromCharCode(...d.subarray(i, i + 0x8000));"
        "return [btoa(s), c.width, c.height];", canvas_id)
    return unb64(data[0], np.uint8).reshape(data[2], data[1], 4)


def page_message(driver) -> str:
    driver.execute_script("return p2pTest.ready.catch(() => null)")
    return driver.find_element("id", "message").text


# --- the static folder --------------------------------------------------------------------------------
def test_folder_is_self_contained(demo_folder):
    names = sorted(str(p.relative_to(demo_folder)) for p in demo_folder.rglob("*") if p.is_file())
    assert names == sorted([*bundle.PAGE_FILES, "model.onnx", "model.json",
                            *(f"ort/{f}" for f in (*ortweb.FILES, ortweb.LICENSE))])
    assert not any(p.is_symlink() for p in demo_folder.rglob("*"))  # copies: the folder can be published
    assert "MIT License" in (demo_folder / "ort" / ortweb.LICENSE).read_text()
    meta = json.loads((demo_folder / "model.json").read_text())
    spec, precision = read_onnx_metadata(demo_folder / "model.onnx")
    assert meta["spec"] == spec.to_dict() and meta["precision"] == precision
    assert [m["name"] for m in meta["masks"]] == contract.mask_names(spec)
    h, w = 256, 384  # the rule in model.json gives contract.mask_shapes for any size
    assert [(1, m["channels"], h // m["scale"], w // m["scale"]) for m in meta["masks"]] == \
        contract.mask_shapes(spec, 1, h, w)
    # no address of another origin anywhere in the page's own files
    for name in bundle.PAGE_FILES:
        text = (demo_folder / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name


def test_static_folder_runs_from_a_plain_static_host(browser, demo_folder):
    """Any static host: Python's http.server sends no isolation headers, so one WebAssembly thread."""
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1",
                             "--directory", str(demo_folder)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (http://127.0.0.1:N/) ..."
        port = int(line.split(" port ")[1].split()[0])
        info = open_page(browser, f"http://127.0.0.1:{port}/")
    finally:
        proc.terminate()
        proc.wait(10)
    assert info["ep"] == "wasm" and info["isolated"] is False and info["threads"] == 1, info
    assert (info["width"], info["height"]) == (128, 128)  # the demo's training size, from its spec
    assert "WebAssembly (SIMD, 1 thread" in browser.find_element("id", "status").text


def test_p2p_web_serves_a_model_cross_origin_isolated_and_stops_on_ctrl_c(browser):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "p2p.runtime.web.cli", str(demo_model()), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), (url, proc.stderr.read() if proc.poll() is not None else "")
        info = open_page(browser, url)
        assert info["ep"] == "wasm" and info["isolated"] is True, info
        assert info["threads"] == min(4, info["cores"]), info  # threads: the page is cross-origin isolated
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in err and "stopped" in err, err


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_p2p_web_stops_on_sigint_and_sigterm_even_when_started_with_sigint_ignored(stop):
    """A shell starts background jobs with SIGINT ignored (and docker stop sends SIGTERM): both still stop the
    server in one line, also while a browser holds a connection open."""
    import socket

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "p2p.runtime.web.cli", str(demo_model()), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        url = proc.stdout.readline().strip()
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        idle = socket.create_connection(("127.0.0.1", port))  # connected, no request sent (a preconnect)
        time.sleep(0.5)
    finally:
        proc.send_signal(stop)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"p2p-web did not stop on {signal.Signals(stop).name}") from None
    idle.close()
    assert proc.returncode == 0 and "Traceback" not in err and "stopped" in err, err


# --- what the page computes -------------------------------------------------------------------------------------
def test_page_matches_onnxruntime_for_the_same_input_and_masks(browser, served):
    import onnxruntime as ort

    open_page(browser, served)
    model = demo_model()
    spec, _ = read_onnx_metadata(model)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for h, w in ((128, 128), (256, 256), (128, 256)):
        x = np.where(rng.random((1, 1, h, w)) < 0.1, -1.0, 1.0).astype(np.float32)  # sparse black "edges"
        masks = contract.draw_masks(spec, rng, 1, h, w)
        want = session.run(None, contract.feeds(spec, x, masks))[0]
        got = page_run(browser, x, masks).reshape(want.shape)
        worst = max(worst, float(np.abs(got - want).max()))
        assert np.abs(got - want).max() <= PARITY, (h, w, np.abs(got - want).max())
        assert want.std() > 0.05  # a real output, not a flat one
    print(f"page vs ONNX Runtime (demo model, 3 sizes): max |diff| {worst:.2e}")


@pytest.mark.slow
def test_webgpu_path_matches_onnxruntime(served, tmp_path):
    """WebGPU where the browser has an adapter: Chromium's software one (SwiftShader) stands in for a GPU."""
    import onnxruntime as ort

    need_runtime()
    driver = chromium.headless_chromium(tmp_path / "profile", software_webgpu=True)
    try:
        info = open_page(driver, served + "?noise=off")
        assert info["ep"] == "webgpu", info  # chosen because an adapter exists, not because it was asked for
        assert driver.find_element("id", "status").text.startswith("WebGPU")
        spec, _ = read_onnx_metadata(demo_model())
        rng = np.random.default_rng(5)
        x = np.where(rng.random((1, 1, 128, 128)) < 0.1, -1.0, 1.0).astype(np.float32)
        masks = contract.draw_masks(spec, rng, 1, 128, 128)
        want = ort.InferenceSession(str(demo_model()), providers=["CPUExecutionProvider"]).run(
            None, contract.feeds(spec, x, masks))[0]
        got = page_run(driver, x, masks).reshape(want.shape)
    finally:
        driver.quit()
    assert np.abs(got - want).max() <= PARITY, np.abs(got - want).max()


def test_fp16_stored_weights_halve_the_model_and_keep_parity_with_their_file(browser, tmp_path):
    import onnxruntime as ort

    folder = bundle.build_web_folder(demo_model(), tmp_path / "half", fp16=True)
    model = folder / "model.onnx"
    assert model.stat().st_size < 0.55 * demo_model().stat().st_size
    spec, precision = read_onnx_metadata(model)  # the spec travels with it
    assert spec == read_onnx_metadata(demo_model())[0] and json.loads((folder / "model.json").read_text())["weights"] == "fp16"
    rng = np.random.default_rng(1)
    x = np.where(rng.random((1, 1, 128, 128)) < 0.1, -1.0, 1.0).astype(np.float32)
    masks = contract.draw_masks(spec, rng, 1, 128, 128)
    feeds = contract.feeds(spec, x, masks)
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    full = ort.InferenceSession(str(demo_model()), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert 0 < np.abs(want - full).max() < 1e-2  # rounded weights: close to the fp32 model, not equal
    with WebServer(folder, port=0).start() as server:
        open_page(browser, server.url)
        got = page_run(browser, x, masks).reshape(want.shape)
    assert np.abs(got - want).max() <= PARITY


def test_page_draws_the_masks_numpy_draws(browser, served):
    open_page(browser, served)
    spec, _ = read_onnx_metadata(demo_model())
    for seed in (0, 7, 2**32 - 1):
        for w, h in ((128, 128), (256, 128)):
            for mode, frames in (("fixed", 1), ("per-frame", 3), ("off", 1)):
                sampler = MaskSampler(spec, mode, seed)
                want = b"".join(m.tobytes() for _ in range(frames) for m in sampler(1, h, w))
                got = base64.b64decode(browser.execute_script(
                    "return p2pTest.masks(arguments[0], arguments[1], arguments[2], arguments[3], arguments[4])",
                    seed, mode, w, h, frames))
                assert got == want, (seed, mode, w, h)


def test_page_canny_is_opencvs_on_real_photos(browser, served):
    """The edges adapter in the page against OpenCV (runtime/images.py), pixel by pixel, on photos."""
    open_page(browser, served)
    spec, _ = read_onnx_metadata(demo_model())
    photos = sorted(shared_data("photos", "val").iterdir())[:6]
    differ = total = 0
    for path in photos:
        bgr = cv2.resize(cv2.imread(str(path)), (256, 192), interpolation=cv2.INTER_AREA)
        rgba = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA)
        got = unb64(browser.execute_script("return p2pTest.adapt(arguments[0], arguments[1], arguments[2])",
                                           b64(rgba), 256, 192)).reshape(1, 192, 256)
        want = input_tensor(bgr, spec)
        differ += int((got != want).sum())
        total += want.size
    assert differ == 0, f"{differ} of {total} pixels differ from OpenCV's Canny"


def test_a_drawn_stroke_changes_the_output(browser, served):
    from selenium.webdriver import ActionChains

    open_page(browser, served + "?noise=off")
    browser.execute_script("p2pTest.pause(false)")
    canvas = browser.find_element("id", "input")
    wait_for_frames(browser, 1)
    before = canvas_pixels(browser, "output")
    start = browser.execute_script("return p2pTest.info().translated")
    ActionChains(browser).move_to_element_with_offset(canvas, -80, -60).click_and_hold() \
        .move_by_offset(150, 20).move_by_offset(-40, 90).move_by_offset(-60, -30).release().perform()
    drawn = canvas_pixels(browser, "input")
    assert (drawn[..., :3] < 128).any(axis=2).sum() > 100, "the stroke did not reach the canvas"
    wait_for_frames(browser, start + 1)
    after = canvas_pixels(browser, "output")
    changed = np.abs(after.astype(int) - before.astype(int)).max(axis=2) > 30
    assert changed.mean() > 0.01, changed.mean()  # the model drew something where the stroke is
    assert after[..., :3].std() > 10  # and the output is a picture, not a blank


def test_webcam_and_an_uploaded_photo_go_through_the_edges_adapter(browser, served):
    photo = sorted(shared_data("photos", "val").iterdir())[0]
    open_page(browser, served + "?noise=per-frame&seed=1")  # per-frame: every source translates continuously
    browser.execute_script("p2pTest.pause(false)")
    for source in ("webcam", "upload"):
        if source == "webcam":  # Chromium's fake camera: a moving test pattern
            browser.find_element("css selector", "input[name=source][value=webcam]").click()
        else:
            browser.execute_script("document.getElementById('file').hidden = false")
            browser.find_element("id", "file").send_keys(str(photo))
        end = time.time() + 30
        while browser.execute_script("return document.querySelector('input[name=source]:checked').value") != source:
            assert time.time() < end, f"the page did not switch to {source}"
            time.sleep(0.05)
        start = browser.execute_script("return p2pTest.info().translated")
        wait_for_frames(browser, start + 2)
        end = time.time() + 30  # the caption follows the first frame of the new source; on a loaded host later
        while "Canny edges" not in browser.find_element("id", "input-caption").text:
            assert time.time() < end, browser.find_element("id", "input-caption").text
            time.sleep(0.05)
        shown = canvas_pixels(browser, "input")[..., :3]
        # the input pane shows what the model sees: black edges on white, nothing else
        assert set(np.unique(shown)) <= {0, 255} and 0.005 < (shown == 0).mean() < 0.5, source
        assert canvas_pixels(browser, "output")[..., :3].std() > 10


@pytest.mark.parametrize("task", ["colorize", "paired"])
def test_the_other_tasks_adapters_and_pictures_match_the_runtime(browser, task, tmp_path):
    """Colorisation (Lab L in, ab merged with the input's L out) and paired models (RGB), against images.py."""
    from test_runtime import export_tiny

    from p2p.runtime.images import output_to_bgr

    model, _ = export_tiny(task, tmp_path)
    spec, _ = read_onnx_metadata(model)
    folder = bundle.build_web_folder(model, tmp_path / "web", link=True)
    photo = cv2.resize(cv2.imread(str(sorted(shared_data("photos", "val").iterdir())[1])), (64, 64),
                       interpolation=cv2.INTER_AREA)
    y = np.random.default_rng(3).uniform(-1, 1, (spec.out_channels, 64, 64)).astype(np.float32)
    with WebServer(folder, port=0).start() as server:
        info = open_page(browser, server.url)
        x = unb64(browser.execute_script("return p2pTest.adapt(arguments[0], 64, 64)",
                                         b64(cv2.cvtColor(photo, cv2.COLOR_BGR2RGBA)))).reshape(spec.in_channels, 64, 64)
        shown = unb64(browser.execute_script("return p2pTest.picture(arguments[0], arguments[1], 64, 64)", b64(y), b64(x)),
                      np.uint8).reshape(64, 64, 4)
        pens = len(browser.find_elements("css selector", "#colours button"))
    assert (info["width"], info["height"]) == (64, 64)  # the model's training size, from its spec
    want_x = input_tensor(photo, spec)
    # OpenCV's float Lab tabulates its curves: its L is off the CIE formula (the page's) by up to ~0.2 of 100
    assert np.abs(x - want_x).max() <= (5e-3 if task == "colorize" else 1e-6)
    want = output_to_bgr(y, spec, want_x)[:, :, ::-1]
    assert np.abs(shown[..., :3].astype(int) - want).max() <= (2 if task == "colorize" else 0)
    assert pens == (12 if task == "paired" else 3)  # paired: the CMP label colours to draw with


def wait_for_frames(driver, count: int, timeout: float = 30) -> None:
    end = time.time() + timeout
    while driver.execute_script("return p2pTest.info().translated") < count:
        assert time.time() < end, "the page translated no frame"
        time.sleep(0.05)


# --- never beyond its own origin ----------------------------------------------------------------------------------------
def test_page_requests_nothing_from_another_origin_and_its_policy_blocks_it(browser, served):
    browser.get_log("performance")  # drop what earlier tests logged
    open_page(browser, served)
    origin = served.rstrip("/")
    urls = [json.loads(e["message"])["message"]["params"]["request"]["url"] for e in browser.get_log("performance")
            if json.loads(e["message"])["message"]["method"] == "Network.requestWillBeSent"]
    assert any(u.endswith("/model.onnx") for u in urls) and any(u.endswith(".wasm") for u in urls), urls
    foreign = [u for u in urls if not u.startswith((origin, "data:", "blob:"))]
    assert not foreign, foreign
    # the Content-Security-Policy holds: a request to another origin (another port on this machine) is
    # blocked before it leaves the page, and reported
    blocked = browser.execute_script("""
        const seen = [];
        document.addEventListener("securitypolicyviolation", (e) => seen.push(e.blockedURI));
        try { await fetch(arguments[0]); } catch (e) {}
        await new Promise((r) => setTimeout(r, 100));
        return seen;""", "http://127.0.0.1:9/elsewhere.json")
    assert blocked and blocked[0].startswith("http://127.0.0.1:9"), blocked


# --- models that are not p2p models -------------------------------------------------------------------------------------
def foreign_model(path: Path) -> Path:
    """A valid ONNX file that is not a p2p model (no p2p.spec)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_a_model_that_is_not_p2p_gets_a_readable_message_on_the_page(browser, demo_folder, tmp_path):
    folder = tmp_path / "swapped"
    shutil.copytree(demo_folder, folder)
    foreign_model(folder / "model.onnx")  # someone replaced the model in a published folder
    with WebServer(folder, port=0).start() as server:
        browser.get(server.url)
        message = page_message(browser)
    assert "model.onnx is not a p2p model" in message and "p2p-export" in message, message
    (folder / "model.json").unlink()
    with WebServer(folder, port=0).start() as server:
        browser.get(server.url)
        message = page_message(browser)
    assert "not made by p2p-export --web" in message, message


def test_cli_refuses_what_it_cannot_serve_in_one_line(tmp_path, demo_folder):
    need_runtime()
    runner = CliRunner()
    line = one_line_error(runner.invoke(web_main, [str(foreign_model(tmp_path / "other.onnx"))]))
    assert "not a p2p one" in line
    line = one_line_error(runner.invoke(web_main, [str(tmp_path)]))
    assert "not a folder made by p2p-export --web" in line
    with WebServer(demo_folder, port=0).start() as busy:  # a port in use
        port = busy.httpd.server_address[1]
        line = one_line_error(runner.invoke(web_main, [str(demo_folder), "--port", str(port)]))
    assert f"port {port}" in line and "in use" in line and "--port" in line
    # --web into a folder that holds something else: refused before anything is written
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.jpg").write_bytes(b"x")
    with pytest.raises(bundle.WebFolderError, match="not a web folder p2p made"):
        bundle.build_web_folder(demo_model(), other)
    assert [p.name for p in other.iterdir()] == ["keep.jpg"]


def test_missing_onnxruntime_web_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_WEB_RUNTIME", str(tmp_path / "nothing"))
    line = one_line_error(CliRunner().invoke(web_main, [str(demo_model())]))
    assert "onnxruntime-web" in line and "p2p-web --fetch-runtime" in line, line


@pytest.mark.slow
def test_p2p_export_web_writes_the_folder(tmp_path):
    """p2p-export RUN --web DIR: the ONNX as usual, and the folder for it; again replaces p2p's own folder."""
    need_runtime()
    import torch

    from p2p.export.cli import main as export_main
    from p2p.runtime.spec import ModelSpec
    from p2p.training.checkpoint import save_checkpoint
    from p2p.training.models import Generator

    spec = ModelSpec.for_task("edges", 64, ngf=8)
    torch.manual_seed(0)
    save_checkpoint({"spec": spec.to_dict(), "config": {}, "generator": Generator(spec).state_dict()},
                    tmp_path / "run" / "checkpoint.pt")
    result = CliRunner().invoke(export_main, [str(tmp_path / "run"), "--web", str(tmp_path / "web")])
    assert result.exit_code == 0, result.output
    assert "p2p-web" in result.output
    meta = json.loads((tmp_path / "web" / "model.json").read_text())
    assert meta["spec"] == spec.to_dict() and (meta["width"], meta["height"]) == (64, 64)
    assert (tmp_path / "web" / "model.onnx").read_bytes() == (tmp_path / "run" / "model.onnx").read_bytes()
    # again, with float16-stored weights: p2p's own folder is replaced
    result = CliRunner().invoke(export_main, [str(tmp_path / "run"), "--web", str(tmp_path / "web"), "--web-fp16"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "web" / "model.json").read_text())["weights"] == "fp16"
    assert (tmp_path / "web" / "model.onnx").stat().st_size < 0.6 * (tmp_path / "run" / "model.onnx").stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "web"]  # no temporary folders left
    assert one_line_error(CliRunner().invoke(export_main, [str(tmp_path / "run"), "--web-fp16"]), code=2)


def test_folder_is_built_and_served_without_torch(tmp_path):
    """The web side is runtime: building the folder and serving it need no torch (a Jetson, a web host)."""
    from test_runtime import run_without_torch

    need_runtime()
    result = run_without_torch(tmp_path, f"""
        import sys, urllib.request
        from pathlib import Path
        from p2p.runtime.web.bundle import build_web_folder
        from p2p.runtime.web.serve import WebServer
        folder = build_web_folder(Path({str(demo_model())!r}), Path("web"))
        with WebServer(folder, port=0).start() as server:
            for name in ("index.html", "ort/ort-wasm-simd-threaded.wasm"):
                with urllib.request.urlopen(server.url + name) as r:
                    print(name, r.headers["Content-Type"], r.headers["Cross-Origin-Opener-Policy"],
                          r.headers["Cross-Origin-Embedder-Policy"])
        assert not [m for m in sys.modules if m.split(".")[0] == "torch"]
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ort/ort-wasm-simd-threaded.wasm application/wasm same-origin require-corp" in result.stdout
    assert "index.html text/html same-origin require-corp" in result.stdout


# --- onnxruntime-web's files ------------------------------------------------------------------------------------------------
def test_runtime_tarball_is_verified_and_only_the_page_files_are_kept(tmp_path):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in (*ortweb.FILES, "ort.all.min.js", "../../evil.js"):
            data = f"// {name}".encode()
            info = tarfile.TarInfo(f"package/dist/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    with pytest.raises(ortweb.FetchError, match="does not match the pinned sha512"):
        ortweb.check_integrity(data)
    ortweb.extract(data, tmp_path / "rt")
    assert sorted(p.name for p in (tmp_path / "rt").iterdir()) == sorted([*ortweb.FILES, ortweb.LICENSE])
    assert not (tmp_path / "evil.js").exists() and not (tmp_path.parent / "evil.js").exists()
    assert ortweb.runtime_files(tmp_path / "rt") == tmp_path / "rt"
