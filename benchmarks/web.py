"""The model in the browser: frames/s in headless Chromium (onnxruntime-web, WebAssembly) next to ONNX Runtime
in Python on the same machine, in the same run; the web folder's size; float16-stored weights for the web.

    python benchmarks/web.py                                  # prints the tables, writes benchmarks/web.md
    python benchmarks/web.py --screenshot docs/web_page.png   # also the README's picture of the page

Models: the shipped demo (edges→photo, ngf 12) and the paper's full generator (U-Net 256, ngf 64, random
weights: speed does not depend on them), both at 256². Each round runs every configuration once, browser
and Python interleaved; a configuration's number is the median of all its runs over the rounds. The
browser measures session.run after ≥ 2 s of warm-up (WebAssembly is optimised while it runs).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_fps import cpu_name  # noqa: E402  (one CPU probe for the benchmarks)

from p2p.runtime import contract  # noqa: E402
from p2p.runtime.artifacts import demo_model, read_onnx_metadata  # noqa: E402
from p2p.runtime.web import bundle, ortweb  # noqa: E402
from p2p.runtime.web.browser import headless_chromium, open_page  # noqa: E402
from p2p.runtime.web.serve import WebServer  # noqa: E402

SIZE = 256


def full_model(folder: Path) -> Path:
    """The paper's generator at 256² (ngf 64), random weights, exported by p2p's exporter."""
    import torch

    from p2p.export.onnx_export import export_onnx
    from p2p.runtime.spec import ModelSpec
    from p2p.training.models import Generator, init_weights

    spec = ModelSpec.for_task("paired", 256, ngf=64)
    torch.manual_seed(0)
    gen = Generator(spec)
    init_weights(gen)
    return export_onnx(gen, spec, folder / "full.onnx")


def python_times(session, spec, count: int) -> list[float]:
    x = np.full((1, spec.in_channels, SIZE, SIZE), 0.1, np.float32)
    feeds = contract.feeds(spec, x, contract.ones_masks(spec, 1, SIZE, SIZE))
    import time

    for _ in range(2):
        session.run(None, feeds)
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def py_session(path: Path, threads: int):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def page_times(driver, url: str, threads: int, count: int) -> tuple[list[float], dict]:
    info = open_page(driver, f"{url}?ep=wasm&threads={threads}&noise=off")
    assert info["ep"] == "wasm" and info["threads"] == threads, info
    times = driver.execute_script("return p2pTest.bench(arguments[0], arguments[0], 2000, arguments[1])", SIZE, count)
    parts = driver.execute_script("return p2pTest.benchParts(arguments[0], arguments[0], 5)", SIZE)
    return times, parts


def parity(driver, url: str, path: Path, reference: Path | None) -> tuple[float, float | None]:
    """(max |page − ORT Python| on the same file, max |this file − the reference file| in Python)."""
    import base64

    open_page(driver, f"{url}?ep=wasm")
    spec, _ = read_onnx_metadata(path)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, spec.in_channels, SIZE, SIZE)).astype(np.float32)
    masks = contract.draw_masks(spec, rng, 1, SIZE, SIZE)
    want = py_session(path, 2).run(None, contract.feeds(spec, x, masks))[0]
    got = driver.execute_script("return p2pTest.run(arguments[0], arguments[1], arguments[2], arguments[2])",
                                base64.b64encode(x.tobytes()).decode(),
                                [base64.b64encode(m.tobytes()).decode() for m in masks], SIZE)
    got = np.frombuffer(base64.b64decode(got), np.float32).reshape(want.shape)
    ref = None
    if reference is not None:
        ref = float(np.abs(py_session(reference, 2).run(None, contract.feeds(spec, x, masks))[0] - want).max())
    return float(np.abs(got - want).max()), ref


def download_mb(folder: Path, files: list[str]) -> float:
    """MB a visitor downloads: the page, the model, one onnxruntime-web build."""
    page = sum((folder / f).stat().st_size for f in (*bundle.PAGE_FILES, bundle.MODEL_FILE, bundle.CONTRACT_FILE))
    return (page + sum((folder / bundle.RUNTIME_DIR / f).stat().st_size for f in files)) / 1e6


def screenshot(driver, url: str, path: Path) -> None:
    """The page translating a drawing: strokes drawn with the pointer, as a person would."""
    from selenium.webdriver import ActionChains

    driver.set_window_size(1000, 820)
    open_page(driver, f"{url}?noise=per-frame&seed=3&size=256")  # per-frame: it keeps translating
    driver.execute_script("p2pTest.pause(false)")
    canvas = driver.find_element("id", "input")
    # a street: kerb lines, a building with windows and a door, two walking people
    strokes = [[(-128, 40), (128, 30)], [(-128, 75), (128, 62)],
               [(-110, 30), (-110, -90), (-20, -90), (-20, 30)],
               [(-95, -70), (-75, -70), (-75, -45), (-95, -45), (-95, -70)],
               [(-55, -70), (-35, -70), (-35, -45), (-55, -45), (-55, -70)],
               [(-75, 30), (-75, -5), (-55, -5), (-55, 30)],
               [(40, -40), (48, -48), (56, -40), (48, -32), (40, -40)], [(48, -32), (48, 5)], [(48, 5), (38, 35)],
               [(48, 5), (60, 35)], [(48, -22), (34, -5)], [(48, -22), (62, -8)],
               [(95, -30), (101, -36), (107, -30), (101, -24), (95, -30)], [(101, -24), (101, 8)],
               [(101, 8), (92, 34)], [(101, 8), (110, 34)], [(101, -15), (90, 0)], [(101, -15), (112, 0)]]
    scale = canvas.size["width"] / 256  # the strokes are in a 256-pixel square; the page shows it larger
    for stroke in strokes:
        stroke = [(round(x * scale), round(y * scale)) for x, y in stroke]
        chain = ActionChains(driver, duration=10).move_to_element_with_offset(canvas, *stroke[0]).click_and_hold()
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            chain = chain.move_by_offset(x1 - x0, y1 - y0)
        chain.release().perform()
    import time

    time.sleep(4)  # warmed up: the frame rate shown is the one it keeps
    driver.save_screenshot(str(path))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="0: only the screenshot")
    ap.add_argument("--demo-runs", type=int, default=30, help="browser and Python runs per round, demo model")
    ap.add_argument("--full-runs", type=int, default=6, help="the same for the full model")
    ap.add_argument("--markdown", type=Path, default=ROOT / "benchmarks" / "web.md")
    ap.add_argument("--screenshot", type=Path, help="also write a screenshot of the page translating a drawing")
    args = ap.parse_args(argv)

    # a kill still runs the finally below: Chromium and its driver must not outlive the benchmark
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="p2p-web-bench-"))
    models = {"demo (ngf 12)": Path(demo_model())}
    if args.rounds:
        models["full (ngf 64)"] = full_model(tmp)
    folders, servers = {}, []
    for name, path in models.items():
        for half in (False, True):
            key = (name, half)
            folders[key] = bundle.build_web_folder(path, tmp / f"{path.stem}{'-fp16' if half else ''}", fp16=half,
                                                   link=True)  # sizes count what the links point to
            servers.append(WebServer(folders[key], port=0).start())
    urls = {key: s.url for key, s in zip(folders, servers)}
    sizes = {key: (bundle.folder_size(f) / 1e6, download_mb(f, list(ortweb.WASM_FILES))) for key, f in folders.items()}
    driver = headless_chromium(tmp / "profile")
    sessions = {(name, t): py_session(path, t) for name, path in models.items() for t in (1, 2)}
    specs = {name: read_onnx_metadata(path)[0] for name, path in models.items()}
    times: dict = {}
    parts: dict = {}
    try:
        if args.screenshot:
            screenshot(driver, urls[("demo (ngf 12)", False)], args.screenshot)
            print(f"wrote {args.screenshot}", file=sys.stderr)
            if args.rounds == 0:
                return 0
        for r in range(args.rounds):
            for name in models:
                count = args.demo_runs if name.startswith("demo") else args.full_runs
                for t in (1, 2):
                    page, parts[name] = page_times(driver, urls[(name, False)], t, count)
                    times.setdefault(("browser", name, t), []).extend(page)
                    times.setdefault(("python", name, t), []).extend(python_times(sessions[(name, t)], specs[name], count))
                    print(f"round {r + 1}: {name} {t} thread(s): browser {statistics.median(page):.1f} ms, "
                          f"python {statistics.median(times[('python', name, t)][-count:]):.1f} ms", file=sys.stderr)
        fp16 = {}
        for name, path in models.items():
            page_fp32, _ = parity(driver, urls[(name, False)], folders[(name, False)] / "model.onnx", None)
            page_fp16, to_fp32 = parity(driver, urls[(name, True)], folders[(name, True)] / "model.onnx",
                                        folders[(name, False)] / "model.onnx")
            half_times, _ = page_times(driver, urls[(name, True)], 2, args.demo_runs if name.startswith("demo") else args.full_runs)
            fp16[name] = (page_fp32, page_fp16, to_fp32, statistics.median(half_times))
    finally:
        driver.quit()
        for s in servers:
            s.close()
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    text = _report(args, models, times, parts, fp16, sizes, load_before, load_after)
    print(text)
    notes = args.markdown.read_text().split(NOTES, 1) if args.markdown.exists() else []
    args.markdown.write_text(text + (f"\n{NOTES}{notes[1]}" if len(notes) == 2 else ""))  # keep the notes written by hand
    return 0


def _report(args, models, times, parts, fp16, sizes, load_before, load_after) -> str:
    """web.md's tables from the measurements."""
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = ["# The model in the browser (benchmarks/web.py)", "",
             f"onnxruntime-web {ortweb.VERSION} (WebAssembly, SIMD) in headless Chromium "
             f"({chromium_version()}) against onnxruntime {ort.__version__} (CPU provider) in Python, on this "
             f"machine ({cpu_name()}, {os.cpu_count()} CPUs), in one run, interleaved: {args.rounds} rounds; each number is the median "
             f"model run (session.run) at {SIZE}² after ≥ 2 s of warm-up in the browser. Noise off (masks of ones) "
             "for speed; the masks cost the same either way.", "",
             f"Load before: `{load_before}`  ", f"Load after: `{load_after}`", "",
             "| model at 256² | threads | browser ms | browser frames/s | Python ORT ms | Python frames/s | browser / Python |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name in models:
        for t in (1, 2):
            b, p = med[("browser", name, t)], med[("python", name, t)]
            lines.append(f"| {name} | {t} | {b:.1f} | {1000 / b:.1f} | {p:.1f} | {1000 / p:.1f} | {b / p:.1f}× |")
    lines += ["", "Page work per frame besides the model (one thread, in the browser, at 256²): "
              + "; ".join(f"{name}: a per-frame mask draw {parts[name]['masks_ms']:.1f} ms (numpy's PCG64 in "
                          f"BigInt), the input adapter {parts[name]['adapter_ms']:.1f} ms"
                          for name in models) + ".", "",
              "## The folder, and float16-stored weights", "",
              "`p2p-export RUN --web DIR --web-fp16` stores the weights as float16 and computes in float32 "
              "(a Cast after each weight, folded when the session starts). A visitor downloads the page, the model "
              "and one onnxruntime-web build: WebAssembly (15 MB) or, where the browser has a WebGPU adapter, "
              "WebGPU (29 MB); the folder holds both.", "",
              "| model | weights | folder MB | WebAssembly visitor downloads MB | page vs Python ORT, same file (max abs) "
              "| vs the fp32 model (max abs) | browser ms at 256², 2 threads |", "|---|---|---:|---:|---:|---:|---:|"]
    for name in models:
        page_fp32, page_fp16, to_fp32, half_ms = fp16[name]
        for half in (False, True):
            folder_mb, visitor_mb = sizes[(name, half)]
            lines.append(f"| {name} | {'fp16' if half else 'fp32'} | {folder_mb:.1f} | {visitor_mb:.1f} | "
                         f"{(page_fp16 if half else page_fp32):.1e} | {f'{to_fp32:.1e}' if half else '0'} | "
                         f"{half_ms if half else med[('browser', name, 2)]:.1f} |")
    return "\n".join(lines) + "\n"


NOTES = "## Reading the numbers"  # a section written by hand below the tables, kept when they are rewritten


def chromium_version() -> str:
    out = subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True).stdout
    return next((w for w in out.split() if w[:1].isdigit()), "unknown")


if __name__ == "__main__":
    sys.exit(main())
