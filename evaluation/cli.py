"""p2p-eval: score a model on a data split and write metrics.json and an HTML page."""
from __future__ import annotations

import json
from pathlib import Path

import click

from p2p.runtime import cli_options as o
from p2p.runtime.cli_errors import user_errors

from .evaluate import default_report_dir, earlier_report, evaluate, finite, open_model, summary_lines, write_outputs
from .video import default_video_report_dir, evaluate_video, video_summary_lines, write_video_outputs

EXAMPLE = """
\b
Examples:
  p2p-eval runs/facades --data ../shared/data/facades          # val split, report in runs/facades/eval-facades-val
  p2p-eval model.onnx --data ../shared/data/facades --segmenter -o out/
  p2p-eval runs/color/checkpoint.pt --data ../shared/data/photos --noise off
  p2p-eval model.onnx --video ../shared/data/video/vtest_first10s.mp4 --size 256 --temporal 0.8   # flicker
"""


@click.command(help="Score a pix2pix model on a data split: L1, PSNR, SSIM, sharpness, dropout diversity, "
                    "colour histograms (colorisation), segmentation score (facades); or, with --video, its "
                    "flicker on a clip (warping error). Writes metrics.json and an HTML page.\n\nMODEL: a "
                    "p2p-train run folder, a checkpoint.pt, or a .onnx/.engine from p2p-export.\n" + EXAMPLE,
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@o.resolve_aliases
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Dataset folder (with train/ and val/).")
@click.option("--video", type=click.Path(path_type=Path), default=None,
              help="Instead of --data: a clip; reports the warping error (flicker) of the translated clip for each "
                   "noise mode beside the input's own, and a plot of it over time.")
@o.temporal_option(multiple=True, help="--video: also fixed noise + temporal stabilisation at this strength, 0 (off) "
                                       "to 1 (repeatable, to compare strengths).")
@click.option("--max-frames", type=click.IntRange(2), default=None, help="--video: only the first N frames.")
@click.option("--direction", type=click.Choice(["AtoB", "BtoA"]), default=None,
              help="Which half of the data is the input. Default: the model's own (from its spec).")
@click.option("--split", default="val", show_default=True, help="Sub-folder of --data to score.")
@click.option("--layout", type=click.Choice(["auto", "aligned", "folders", "photos"]), default="auto",
              show_default=True, help="How --data pairs its images (as p2p-train --layout).")
@o.size_option("Evaluation size (default: the training size and aspect):")
@o.noise_option(default="per-frame")
@click.option("--samples", "-k", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Dropout samples per image for the diversity metric (per-frame noise only).")
@o.seed_option()
@click.option("--limit", type=click.IntRange(1), default=None, help="Score only the first N images.")
@o.output_option("Folder for metrics.json and index.html. Default: RUN/eval-DATA-SPLIT, or MODEL-eval-DATA-SPLIT "
                 "beside a model file (DATA: the data folder's name).", file_okay=False, old=("--report",))
@click.option("--rows", type=click.IntRange(0), default=8, show_default=True, help="Image rows on the HTML page.")
@click.option("--segmenter", is_flag=True,
              help="Also the FCN-style segmentation score (facades labels→photo): trains a small segmenter on "
                   "--data/train once and caches it.")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Segmenter cache folder. Default: ~/.cache/p2p.")
@click.option("--seg-iters", type=click.IntRange(1), default=None,
              help="Segmenter training iterations (default 1000; fewer for a quick, weaker check).")
@o.backend_option("For .onnx/.engine: auto (the best installed), tensorrt, or an ONNX Runtime provider.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def main(model, data, video, temporal, max_frames, direction, split, layout, size, noise, samples, seed, limit, out,
         rows, segmenter, cache, seg_iters, backend, no_progress):
    report = out
    if not model.exists():
        raise click.ClickException(f"model {model} does not exist (a run folder, checkpoint.pt, or .onnx/.engine)")
    if (data is None) == (video is None):
        raise click.UsageError("give --data FOLDER (image metrics) or --video CLIP (warping error), one of them")
    if video is not None:
        return video_main(model, video, size=size, seed=seed, temporal=tuple(s for s in temporal if s > 0),
                          max_frames=max_frames, report=report, backend=backend, progress=not no_progress)
    if temporal or max_frames:
        raise click.UsageError("--temporal and --max-frames go with --video")
    if not data.is_dir():
        raise click.ClickException(f"--data {data} is not a folder")
    log = lambda msg: click.echo(msg, err=True)  # noqa: E731
    with user_errors():
        m = open_model(model, backend)
        results, page = evaluate(m, data, split=split, direction=direction, size=size, layout=layout, noise=noise,
                                 samples=samples, seed=seed, limit=limit, rows=rows, segmenter=segmenter,
                                 seg_config={"iters": seg_iters} if seg_iters else None, cache=cache,
                                 progress=not no_progress, log=log)
        results["model_name"] = display_name(model)
        folder = report or default_report_dir(model, data, split)
        replaced = earlier_report(folder)
        html_path = write_outputs(folder, results, page)
    if replaced:
        log(f"replaced the earlier report in {folder} ({replaced})")
    for line in summary_lines(results):
        click.echo(line, err=True)
    click.echo(f"  report: {html_path}", err=True)
    out = finite({k: v for k, v in results.items() if k not in ("per_image", "spec")})
    out["report"] = str(html_path)
    click.echo(json.dumps(out))


def display_name(model: Path) -> str:
    """The model's name in reports: the run folder's name, or the file's."""
    return model.resolve().name if model.is_dir() else model.name


def video_main(model: Path, video: Path, *, size, seed, temporal, max_frames, report, backend, progress) -> None:
    """p2p-eval --video: the warping error of MODEL on a clip, to metrics.json, index.html and a plot."""
    if not video.is_file():
        raise click.ClickException(f"--video {video} does not exist")
    with user_errors():
        m = open_model(model, backend)
        results, sample = evaluate_video(m, video, size=size, seed=seed, temporal=temporal, max_frames=max_frames,
                                         progress=progress)
        results["model_name"] = display_name(model)
        html_path = write_video_outputs(report or default_video_report_dir(model, video), results, sample)
    for line in video_summary_lines(results):
        click.echo(line, err=True)
    click.echo(f"  report: {html_path}", err=True)
    out = finite({k: v for k, v in results.items() if k != "per_frame"})
    out["report"] = str(html_path)
    click.echo(json.dumps(out))


if __name__ == "__main__":
    main()
