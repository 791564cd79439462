"""p2p-video (translate a video file) and p2p-translate (translate still images)."""
from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm

from p2p.runtime import cli_options as o
from p2p.runtime.errors import OutputError
from p2p.runtime.files import output_error, probe_writable
from p2p.runtime.images import IMAGE_SUFFIXES, list_images, read_image, write_image

from .options import model_options, open_translator, user_errors
from .pipeline import translate_video


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("input", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path), required=False)
@o.output_option("The translated video (.mp4, .avi, .mkv, .mov); also accepted as a third argument.",
                 dir_okay=False)
@click.option("--side-by-side", is_flag=True,
              help="Write input | output next to each other (input | plain | stabilised with --temporal).")
@click.option("--max-frames", type=click.IntRange(1), default=None, help="Stop after N frames (a quick preview).")
@click.option("--no-progress", is_flag=True, help="No progress bar (e.g. in logs).")
@model_options(noise_default="fixed")
@o.temporal_option()
def video_main(model, input, output, out, side_by_side, max_frames, no_progress, **opts):
    """Translate the video INPUT frame by frame into OUT, with MODEL (.onnx or .engine).

    OUT (.mp4, .avi, .mkv, .mov) has the input's frame rate and timeline: a picture the
    file shows for several frames is written for as many. When frames cannot be decoded,
    one line says how many. Decoding (and the optical flow of --temporal) and encoding run
    on their own threads, beside the model. OUT is written beside its name and renamed
    only once complete and checked (reopened, frames counted): a full disk never leaves a
    broken file under it.

    \b
    Examples:
      p2p-video runs/edges/model.onnx street.mp4 -o street_p2p.mp4
      p2p-video model.onnx street.mp4 -o out.mp4 --side-by-side --noise per-frame --seed 1
      p2p-video model.onnx street.mp4 -o calm.mp4 --temporal 0.8 --side-by-side
      p2p-video model.engine clip.avi -o out.avi --fit pad --size 512x288
    """
    if (output is None) == (out is None):
        raise click.UsageError("give the output video once: -o/--out FILE (or as the third argument)")
    output = out or output
    translator = open_translator(model, **opts)
    bar = None

    def on_open(total, fps):
        nonlocal bar
        click.echo(f"{input} → {output}: {fps:g} fps, {translator.describe()}, seed {translator.seed}", err=True)
        bar = tqdm(total=total, unit="frame", disable=no_progress, dynamic_ncols=True)

    with user_errors():
        try:
            stats = translate_video(translator, input, output, side_by_side=side_by_side, max_frames=max_frames,
                                    on_open=on_open, on_frame=lambda: bar.update(1))
        finally:
            if bar is not None:
                bar.close()
    note = stats.timeline_note(str(input))
    if note:
        click.echo(note, err=True)
    click.echo(f"wrote {output}: {stats.frames} frames at {stats.fps:g} fps, translated at "
               f"{stats.throughput:.1f} frames/s")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@o.output_option("Folder for the results (created if needed).", required=True, file_okay=False)
@click.option("--samples", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Stochastic outputs per image (K draws of the dropout noise; needs --noise per-frame).")
@model_options(noise_default="per-frame")
def translate_main(model, images, out, samples, **opts):
    """Translate still IMAGES (files or folders of images) with MODEL into OUT.

    Each result is OUT/NAME.png (NAME_sK.png with --samples), at the input's size.

    \b
    Examples:
      p2p-translate runs/facades/model.onnx labels/ -o results/
      p2p-translate model.onnx sketch.png --samples 4 --seed 0 -o samples/
      p2p-translate model.onnx photo.jpg --fit pad --size 512x384 -o out/
    """
    if samples > 1 and opts["noise"] != "per-frame":
        raise click.BadParameter(f"--samples {samples} needs --noise per-frame (with {opts['noise']} every "
                                 "sample would be the same image)", param_hint="--samples")
    files = _collect(images)
    translator = open_translator(model, **opts)
    with user_errors():
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error(exc, out) from None
        probe_writable(out)  # a read-only or unwritable --out fails before the first translation
        names: set[str] = set()
        written = 0
        for path in files:
            frame = read_image(path)
            stem = _unique(path.stem, names)
            for k in range(samples):
                result = translator.translate(frame)  # one frame per run: statistics of this image alone
                target = out / (f"{stem}_s{k}.png" if samples > 1 else f"{stem}.png")
                try:
                    write_image(target, result)  # atomic: a full disk leaves no half-written result
                except OutputError as exc:
                    raise OutputError(f"{exc}; the {written} result(s) written before it are whole") from None
                written += 1
    click.echo(f"translated {len(files)} image(s) × {samples} into {out} "
               f"({translator.describe()}, seed {translator.seed})")


def _collect(inputs) -> list[Path]:
    files = []
    for path in inputs:
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise click.ClickException(f"no images in {path} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise click.ClickException(f"{path} does not exist")
    return files


def _unique(stem: str, taken: set[str]) -> str:
    """Two inputs called a.png in different folders must not overwrite each other's result."""
    name, k = stem, 1
    while name in taken:
        name, k = f"{stem}-{k}", k + 1
    taken.add(name)
    return name
