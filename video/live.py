"""p2p-live: translate a camera (or a file, stream or GStreamer pipeline) live, frame by frame."""
from __future__ import annotations

import time
from pathlib import Path

import click
import cv2
import numpy as np

from p2p.runtime import trt_backend
from p2p.runtime.artifacts import default_model

from .capture import LatestFrameReader, parse_source
from .display import FpsMeter, Window, put_status, side_by_side
from .options import model_options, open_translator, user_errors
from .pipeline import check_output, open_writer

CSI_PIPELINE = ("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! "
                "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
                "appsink drop=1 max-buffers=1")


class Recorder:
    """Writes what the window shows (input | output) at the rate frames are actually translated.

    The rate is known only once a few frames are done, so the first ones are held back until then.
    """

    def __init__(self, path: Path, warmup: int = 10):
        self.path, self.warmup = Path(path), warmup
        self.codec = check_output(self.path)  # fail before the camera starts, not after
        self.held: list[np.ndarray] = []
        self.writer = None

    def write(self, image: np.ndarray, fps: float) -> None:
        if self.writer is None:
            self.held.append(image)
            if len(self.held) >= self.warmup:
                self._open(fps)
        else:
            self.writer.write(image)

    def _open(self, fps: float) -> None:
        size = (self.held[0].shape[1], self.held[0].shape[0])
        self.writer = open_writer(self.path, max(1.0, round(fps, 2)), size, self.codec)
        for image in self.held:
            self.writer.write(image)
        self.held = []

    def close(self, fps: float) -> None:
        if self.writer is None and self.held:
            self._open(fps)
        if self.writer is not None:
            self.writer.release()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--camera", type=click.IntRange(0), default=None, metavar="N",
              help="Camera index (default 0 when no --source).")
@click.option("--source", default=None, metavar="FILE|URL|PIPELINE",
              help="A video file (replayed at its frame rate), a stream URL (rtsp://, http://), or a GStreamer "
                   "pipeline ending in appsink (e.g. a Jetson CSI camera; see the README).")
@click.option("--headless", is_flag=True, help="No window (e.g. over SSH): print the frame rate instead.")
@click.option("--record", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write input | output to this video (.mp4, .avi, .mkv).")
@click.option("--max-frames", type=click.IntRange(1), default=None, help="Stop after N translated frames.")
@click.option("--snapshots", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Folder for the s key's snapshots.")
@click.option("--runs", type=click.Path(path_type=Path, file_okay=False), default=Path("runs"), show_default=True,
              help="Where to look for the newest exported model when MODEL is not given.")
@model_options(noise_default="fixed")
def main(model, camera, source, headless, record, max_frames, snapshots, runs, **opts):
    """Translate a live camera with MODEL (.onnx or .engine), frame by frame.

    Without MODEL: the newest model exported under ./runs, else the demo model
    shipped with p2p. Frames are captured on their own thread and only the newest
    is translated, so the output never lags behind the camera.

    Keys in the window: q quit, space pause, n cycle the noise mode, s save a snapshot.

    \b
    Examples:
      p2p-live --camera 0
      p2p-live runs/edges/model.onnx --camera 1 --noise per-frame
      p2p-live model.engine --source street.mp4 --headless --max-frames 300
      p2p-live model.onnx --source rtsp://camera.local:8554/cam --record out.mp4
      p2p-live model.engine --source "nvarguscamerasrc ! ... ! appsink drop=1 max-buffers=1"
    """
    if camera is not None and source is not None:
        raise click.BadParameter("give --camera N or --source, not both", param_hint="--camera/--source")
    with user_errors():
        recorder = Recorder(record) if record else None
        src = parse_source(camera, source)
        reader = LatestFrameReader(src, on_event=lambda message: click.echo(message, err=True))
    try:
        with user_errors():
            window = None if headless else Window()
            if model is None:
                model = default_model(runs, allow_engine=trt_backend.available())
                click.echo(f"model: {model}", err=True)
        translator = open_translator(model, **opts)
    except BaseException:
        reader.stop()  # releases the camera
        raise
    click.echo(f"{src}: {translator.describe()}, seed {translator.seed}"
               + ("" if headless else "  (keys: q quit, space pause, n noise, s snapshot)"), err=True)
    meter = FpsMeter()
    try:
        with user_errors(), reader:
            _loop(reader, translator, window, recorder, meter, max_frames, snapshots)
    finally:
        if recorder:
            recorder.close(meter.overall)
        if window:
            window.close()
    click.echo(f"{meter.count} frames in {time.perf_counter() - meter.start:.1f} s: {meter.overall:.1f} fps "
               f"({translator.describe()}; {reader.dropped} source frames skipped to stay live)")


def _loop(reader, translator, window, recorder, meter, max_frames, snapshots) -> None:
    view, paused, last_print = None, False, time.perf_counter()
    while max_frames is None or meter.count < max_frames:
        if not paused or view is None:
            frame = reader.read()
            if frame is None:  # a file source ended
                return
            view = side_by_side(frame, translator.translate(frame))
            fps = meter.tick()
            if recorder:
                recorder.write(view, fps)
        if window is None:
            now = time.perf_counter()
            if now - last_print >= 1.0:
                click.echo(f"frame {meter.count}: {meter.fps:.1f} fps ({translator.describe()})")
                last_print = now
            continue
        status = f"{meter.fps:.1f} fps | {translator.describe()}" + (" | paused" if paused else "")
        key = window.show(put_status(view, status))
        if key in (ord("q"), 27):  # q or Esc
            return
        if key == ord(" "):
            paused = not paused
        elif key == ord("n"):
            click.echo(f"noise: {translator.sampler.next_mode()}", err=True)
        elif key == ord("s"):
            snapshots.mkdir(parents=True, exist_ok=True)
            path = snapshots / time.strftime("p2p-live-%Y%m%d-%H%M%S.png")
            cv2.imwrite(str(path), view)
            click.echo(f"saved {path}", err=True)
        if paused:
            time.sleep(0.03)  # nothing to translate: do not spin
