"""p2p-eval's report page: one self-contained HTML file that opens from disk.

Images are embedded as base64 PNGs (no side folder to lose, no server, nothing
fetched from the network), the metrics table on top, then one row per image:
input | output | target (| dropout std when K > 1).
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import cv2
import numpy as np

from p2p.runtime.files import write_atomic

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px} .sub{color:#666;font-size:13px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ccc;padding:4px 10px;font-size:13px;text-align:right}
th{background:#eee;text-align:left} .rows td{text-align:center;vertical-align:top;background:#fff}
.rows img{display:block;image-rendering:pixelated;width:192px;height:auto} .cap{font-size:11px;color:#555}
"""

LABELS = {"l1": "L1 ([-1,1] space)", "psnr": "PSNR (dB)", "ssim": "SSIM", "sharpness": "sharpness (outputs/targets)",
          "dropout_std": "dropout std over K samples", "images": "images"}


def png_data_uri(bgr: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", bgr)
    if not ok:
        raise OSError("could not encode a report image as PNG")
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def std_heatmap(std: np.ndarray) -> np.ndarray:
    """Per-pixel std (H×W, [0, 1] units) as a colour map; scaled so 0.25 is the top colour."""
    scaled = np.clip(std / 0.25 * 255.0, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO)


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return html.escape(str(value))


def table(rows: list[tuple[str, object]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{fmt(v)}</td></tr>" for k, v in rows) + "</table>"


def render(results: dict, rows: list[dict]) -> str:
    """The page as a string. ``rows``: dicts with input, output, target (BGR), optional std, name, metrics."""
    m = results["metrics"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>p2p-eval: {html.escape(results['model_name'])}</title>",
             f"<style>{STYLE}</style></head><body>",
             f"<h1>p2p-eval: {html.escape(results['model_name'])}</h1>",
             f"<div class='sub'>{html.escape(results['model'])} ({html.escape(results['kind'])}, {html.escape(results['backend'])}) · "
             f"data {html.escape(results['data'])} [{html.escape(results['split'])}] · {html.escape(results['direction'])} · "
             f"{results['size']}² · noise {html.escape(results['noise'])} · K={results['samples']} · seed {results['seed']}</div>",
             "<h2>Metrics</h2>",
             table([(LABELS.get(k, k), v) for k, v in m.items() if not isinstance(v, dict)])]
    if "histogram_intersection" in m:
        hi = m["histogram_intersection"]
        parts.append("<h2>Colour histogram intersection</h2>" + table([("a", hi["a"]), ("b", hi["b"])]))
    seg = results.get("segmentation")
    if seg:
        head = "<tr><th></th><th>per-pixel acc.</th><th>per-class acc.</th><th>class IoU</th></tr>"
        body = "".join(f"<tr><th>{name}</th><td>{fmt(seg[key]['per_pixel_acc'])}</td><td>{fmt(seg[key]['per_class_acc'])}"
                       f"</td><td>{fmt(seg[key]['class_iou'])}</td></tr>"
                       for name, key in (("generated photos", "generated"), ("real photos (upper bound)", "real")))
        parts.append("<h2>Segmentation score (FCN-score)</h2><table>" + head + body + "</table>"
                     f"<div class='sub'>majority-class per-pixel accuracy: {fmt(seg['majority_baseline'])}</div>")
    with_std = any(r.get("std") is not None for r in rows)
    parts.append(f"<h2>Samples (first {len(rows)})</h2><table class='rows'><tr><th>input</th><th>output</th><th>target</th>"
                 + ("<th>dropout std</th>" if with_std else "") + "</tr>")
    for r in rows:
        cells = [r["input"], r["output"], r["target"]] + ([r["std"]] if with_std and r.get("std") is not None else [])
        caption = f"{html.escape(r['name'])} · L1 {r['l1']:.3f} · PSNR {r['psnr']:.1f} · SSIM {r['ssim']:.3f}"
        tds = "".join(f"<td><img alt='{kind}' src='{png_data_uri(img)}'>" + (f"<div class='cap'>{caption}</div>" if kind == 'output' else "")
                      + "</td>" for kind, img in zip(("input", "output", "target", "std"), cells))
        parts.append(f"<tr>{tds}</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_report(folder: Path, results: dict, rows: list[dict]) -> Path:
    """Write ``folder``/index.html atomically; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "index.html"
    write_atomic(path, render(results, rows))
    return path
