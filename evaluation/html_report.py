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
from p2p.runtime.sizes import squared

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;
background:#fafafa}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px} .sub{color:#666;font-size:13px}
table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:4px 10px;font-size:13px;text-align:right}
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
    name = html.escape(results['model_name'])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>p2p-eval: {name}</title>",
             f"<style>{STYLE}</style></head><body>",
             f"<h1>p2p-eval: {name}</h1>",
             f"<div class='sub'>{html.escape(results['model'])} ({html.escape(results['kind'])}, "
             f"{html.escape(results['backend'])}) · data {html.escape(results['data'])} "
             f"[{html.escape(results['split'])}] · {html.escape(results['direction'])} · {squared(results['size'])} · "
             f"noise {html.escape(results['noise'])} · K={results['samples']} · seed {results['seed']}</div>",
             "<h2>Metrics</h2>",
             table([(LABELS.get(k, k), v) for k, v in m.items() if not isinstance(v, dict)])]
    if "histogram_intersection" in m:
        hi = m["histogram_intersection"]
        parts.append("<h2>Colour histogram intersection</h2>" + table([("a", hi["a"]), ("b", hi["b"])]))
    seg = results.get("segmentation")
    if seg:
        head = "<tr><th></th><th>per-pixel acc.</th><th>per-class acc.</th><th>class IoU</th></tr>"
        body = "".join(f"<tr><th>{name}</th><td>{fmt(seg[key]['per_pixel_acc'])}</td>"
                       f"<td>{fmt(seg[key]['per_class_acc'])}</td><td>{fmt(seg[key]['class_iou'])}</td></tr>"
                       for name, key in (("generated photos", "generated"), ("real photos (upper bound)", "real")))
        parts.append("<h2>Segmentation score (FCN-score)</h2><table>" + head + body + "</table>"
                     f"<div class='sub'>majority-class per-pixel accuracy: {fmt(seg['majority_baseline'])}</div>")
    with_std = any(r.get("std") is not None for r in rows)
    parts.append(f"<h2>Samples (first {len(rows)})</h2><table class='rows'>"
                 "<tr><th>input</th><th>output</th><th>target</th>"
                 + ("<th>dropout std</th>" if with_std else "") + "</tr>")
    for r in rows:
        cells = [r["input"], r["output"], r["target"]] + ([r["std"]] if with_std and r.get("std") is not None else [])
        caption = f"{html.escape(r['name'])} · L1 {r['l1']:.3f} · PSNR {r['psnr']:.1f} · SSIM {r['ssim']:.3f}"
        tds = "".join(f"<td><img alt='{kind}' src='{png_data_uri(img)}'>"
                      + (f"<div class='cap'>{caption}</div>" if kind == 'output' else "")
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


# --- p2p-eval --video: the warping error ------------------------------------------------------------
def warping_plot_png(series: dict[str, list[float]], title: str) -> bytes:
    """The per-frame warping error of each stream over time (log scale: the floor and the flicker differ ~10×)."""
    import io

    from matplotlib.figure import Figure  # heavy: loaded only when a video report is written

    # a bare Figure, as training's loss curve: no global backend or pyplot figure registry is touched
    fig = Figure(figsize=(8, 3.2))
    ax = fig.subplots()
    for name, values in series.items():
        ax.plot(range(1, len(values) + 1), values, lw=1.2 if name == "input" else 1,
                ls="--" if name == "input" else "-", color="black" if name == "input" else None, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("frame")
    ax.set_ylabel("warping error")
    ax.set_title(f"warping error per frame: {title}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _thumbnail(bgr: np.ndarray, width: int = 320) -> np.ndarray:
    """Frames at most ``width`` wide on the page: full-size PNGs of a 1080p clip would make it tens of MB."""
    if bgr.shape[1] <= width:
        return bgr
    return cv2.resize(bgr, (width, max(1, round(bgr.shape[0] * width / bgr.shape[1]))), interpolation=cv2.INTER_AREA)


def render_video(results: dict, plot_png: bytes, sample: dict[str, np.ndarray]) -> str:
    """The page for p2p-eval --video: the errors, their plot over time, one frame of each stream."""
    metric = results["metric"]
    head = "<tr><th>stream</th><th>warping error</th><th>× input's own</th></tr>"
    body = "".join(f"<tr><th>{html.escape(name)}</th><td>{fmt(value)}</td>"
                   f"<td>{fmt(results['vs_input'][name])}</td></tr>"
                   for name, value in results["warping_error"].items())
    plot_uri = "data:image/png;base64," + base64.b64encode(plot_png).decode("ascii")
    cells = "".join(f"<td><img alt='{html.escape(name)}' style='width:240px' "
                    f"src='{png_data_uri(_thumbnail(img))}'>"
                    f"<div class='cap'>{html.escape(name)}</div></td>" for name, img in sample.items())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>p2p-eval --video: "
             f"{html.escape(results['model_name'])}</title><style>{STYLE}</style></head><body>",
             f"<h1>p2p-eval --video: {html.escape(results['model_name'])}</h1>",
             f"<div class='sub'>{html.escape(results['model'])} ({html.escape(results['kind'])}, "
             f"{html.escape(results['backend'])}) · clip {html.escape(results['video'])} · "
             f"{results['frames']} frames · "
             f"model at {html.escape(results['size'])} · seed {results['seed']}</div>",
             "<h2>Warping error</h2><table>" + head + body + "</table>",
             f"<div class='sub'>{html.escape(metric['name'])}: output t−1 warped onto frame t by the optical flow of "
             f"the input frames ({html.escape(metric['flow'])}, frames scaled to {metric['width']} px wide), "
             f"{html.escape(metric['units'])}; {fmt(results['non_occluded'])} of the pixels pass the "
             "forward–backward occlusion check. The input's own error is the floor.</div>",
             f"<h2>Over time</h2><img alt='warping error per frame' src='{plot_uri}'>",
             f"<h2>One frame of each</h2><table class='rows'><tr>{cells}</tr></table></body></html>"]
    return "\n".join(parts)


def write_video_report(folder: Path, results: dict, plot_png: bytes, sample: dict[str, np.ndarray]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "index.html"
    write_atomic(path, render_video(results, plot_png, sample))
    return path
