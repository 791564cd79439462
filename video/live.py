"""p2p-live: translate a camera (or a file, stream or GStreamer pipeline) live, frame by frame."""
from __future__ import annotations

import time
from pathlib import Path

import click
import cv2
import numpy as np

from p2p.runtime import cli_options as o
from p2p.runtime import trt_backend
from p2p.runtime.artifacts import default_model, demo_model, find_models

from .capture import LatestFrameReader, parse_source
from .display import FpsMeter, Window, side_by_side
from .options import model_options, open_translator, user_errors
from .pipeline import VideoOutput, check_output

CSI_PIPELINE = ("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! "
                "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
                "appsink drop=1 max-buffers=1")


class Recorder:
    """Writes input | output (full size, without the window's labels) at the rate frames are actually translated.

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
        self.writer = VideoOutput(self.path, max(1.0, round(fps, 2)), size, self.codec)
        for image in self.held:
            self.writer.write(image)
        self.held = []

    def close(self, fps: float) -> None:
        if self.writer is None and self.held:
            self._open(fps)
        if self.writer is not None:
            self.writer.finish()  # checked, then renamed to its name: never a broken file under it


KEYS = {"q": "quit", "esc": "quit", " ": "pause", "n": "noise", "t": "temporal", "s": "snapshot"}
# what the window shows bottom-right; a new key adds one entry to each
KEY_HINT = "q quit | space pause | n noise | t temporal | s snapshot"
DEFAULT_TEMPORAL = 0.8  # what t turns stabilisation on to when --temporal did not say


def pick_model(runs: Path) -> tuple[Path, str]:
    """The model p2p-live uses when none is given, and why that one (for a line to the user)."""
    allow_engine = trt_backend.available()
    path = default_model(runs, allow_engine=allow_engine)
    found = find_models(runs)
    if path == demo_model():
        if not found:
            return path, f"no export under {runs}/: the shipped demo model"
        return path, f"no usable export under {runs}/ (engines need TensorRT): the shipped demo model"
    if found[0] != path:
        skipped = "needs TensorRT" if not allow_engine else f"has no {found[0].name}.json beside it"
        return path, f"newest usable export under {runs}/; the newer {found[0]} {skipped}"
    return path, f"newest export under {runs}/"


def source_name(src) -> str:
    """The source as a window title shows it: a file by its name, a camera by its index."""
    return Path(src.target).name if src.kind == "file" else str(src)


class SnapshotSaver:
    """PNG snapshots with names unique to the millisecond plus a counter, never overwriting a file."""

    def __init__(self, folder: Path, clock=time.time):
        self.folder, self.clock, self.count = Path(folder), clock, 0

    def save(self, image: np.ndarray) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        ok, png = cv2.imencode(".png", image)
        if not ok:
            raise OSError("could not encode the snapshot as PNG")
        while True:
            self.count += 1
            now = self.clock()
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now * 1000) % 1000:03d}"
            path = self.folder / f"p2p-live-{stamp}-{self.count:03d}.png"
            try:
                with path.open("xb") as f:  # x: fail rather than overwrite
                    f.write(png.tobytes())
                return path
            except FileExistsError:
                continue


def say(message: str) -> None:
    click.echo(message, err=True)  # every message goes to stderr; stdout stays empty


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--camera", type=click.IntRange(0), default=None, metavar="N",
              help="Camera index (default 0 when no --source).")
@click.option("--source", default=None, metavar="FILE|URL|PIPELINE",
              help="A video file (played on its own timeline, like a camera), a stream URL (rtsp://, http://), or "
                   "a GStreamer pipeline ending in appsink (e.g. a Jetson CSI camera; see the README).")
@click.option("--as-fast-as-possible", "fast", is_flag=True,
              help="A video file: translate every frame as fast as the model goes instead of at the file's frame "
                   "rate (cameras and streams always come as fast as they deliver).")
@click.option("--headless", is_flag=True,
              help="No window (servers, SSH, Docker): print the frame rate instead; Ctrl+C stops.")
@click.option("--record", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write input | output (full size, no overlay) to this video (.mp4, .avi, .mkv).")
@click.option("--max-frames", type=click.IntRange(1), default=None, help="Stop after N translated frames.")
@click.option("--snapshots", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Folder for the s key's snapshots.")
@click.option("--runs", type=click.Path(path_type=Path, file_okay=False), default=Path("runs"), show_default=True,
              help="Where to look for the newest exported model when MODEL is not given.")
@model_options(noise_default="fixed")
@o.temporal_option()
def main(model, camera, source, fast, headless, record, max_frames, snapshots, runs, **opts):
    """Translate a live camera with MODEL (.onnx or .engine), frame by frame.

    Without MODEL: the newest model exported under ./runs, else the demo model
    shipped with p2p. Frames are captured on their own thread and only the newest
    is translated, so the output never lags behind the camera.

    The window shows input | output, sized to the frames (scaled down to fit the
    screen). Keys in the window: q (or Esc) quit, space pause, n cycle the noise
    mode, t temporal stabilisation on/off, s save a snapshot (full-size PNG in
    --snapshots). Closing the window quits too.

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
        reader = LatestFrameReader(src, on_event=say, pace=not fast)
    window = None
    try:
        with user_errors():
            if model is None:
                model, why = pick_model(runs)
                say(f"model: {model} ({why})")
            if not headless:  # checks there is a display now; the window opens at the first frame
                window = Window(f"p2p-live: {Path(model).name} on {source_name(src)}", hint=KEY_HINT)
        translator = open_translator(model, **opts)
    except BaseException:
        reader.stop()  # releases the camera
        if window:
            window.close()
        raise
    say(f"{src}: {translator.describe()}, seed {translator.seed}"
        + ("  (Ctrl+C stops)" if headless else f"  (keys: {KEY_HINT}; closing the window quits)"))
    meter = FpsMeter()
    try:
        with user_errors(), reader:
            _loop(reader, translator, window, recorder, meter, max_frames, SnapshotSaver(snapshots),
                  opts["temporal"] or DEFAULT_TEMPORAL)
    finally:
        if window:
            window.close()
        if recorder:
            with user_errors():  # a recording that did not come out whole says so in one line
                recorder.close(meter.overall)
    paused = f"; {meter.paused_for:.1f} s paused, not counted" if meter.paused_for >= 0.05 else ""
    say(f"{meter.count} frames in {meter.elapsed:.1f} s: {meter.overall:.1f} fps "
        f"({translator.describe()}; {reader.dropped} source frames skipped to stay live{paused})")


def _loop(reader, translator, window, recorder, meter, max_frames, saver, temporal: float) -> None:
    """Translate the newest frame, show it (or print the rate), act on keys, until the source, a key or a limit ends."""
    session = _Session(reader, translator, window, recorder, meter, saver, temporal)
    try:
        while max_frames is None or meter.count < max_frames:
            if (not session.paused or session.view is None) and not session.next_frame():
                return  # a file source ended
            if window is None:
                session.print_rate()
            elif not session.show():
                return
    except KeyboardInterrupt:  # Ctrl+C in the terminal: stop like q, with the summary
        return


class _Session:
    """What a p2p-live session holds between frames: the frame on show, pause, and what the keys do."""

    def __init__(self, reader, translator, window, recorder, meter, saver, temporal: float):
        self.reader, self.translator, self.window, self.recorder = reader, translator, window, recorder
        self.meter, self.saver, self.temporal = meter, saver, temporal
        self.frame = self.view = None
        self.paused, self.last_print = False, time.perf_counter()

    def next_frame(self) -> bool:
        """Translate the newest frame (False once a file source has ended)."""
        self.frame = self.reader.read()
        if self.frame is None:
            return False
        self.view = side_by_side(self.frame, self.translator.translate(self.frame))
        fps = self.meter.tick()
        if self.recorder:
            self.recorder.write(self.view, fps)
        return True

    def print_rate(self) -> None:
        now = time.perf_counter()
        if now - self.last_print >= 1.0:
            say(f"frame {self.meter.count}: {self.meter.fps:.1f} fps ({self.translator.describe()})")
            self.last_print = now

    def show(self) -> bool:
        """Show the view and act on a key; False when the window closed or q was pressed."""
        status = f"{self.meter.fps:.1f} fps | {self.translator.describe()}" + (" | paused" if self.paused else "")
        action = KEYS.get(self.window.show(self.view, status))
        if self.window.closed or action == "quit":
            return False
        if action == "pause":
            self.toggle_pause()
        elif action in ("noise", "temporal"):
            self.switch(action)
        elif action == "snapshot":
            self.snapshot()
        if self.paused:
            time.sleep(0.03)  # nothing to translate: do not spin
        return True

    def toggle_pause(self) -> None:
        self.paused = not self.paused
        if self.paused:
            self.meter.pause()
        else:
            self.meter.resume()
            self.translator.reset_temporal()  # the source moved on meanwhile: no blending across the gap

    def switch(self, action: str) -> None:
        if action == "noise":
            say(f"noise: {self.translator.sampler.next_mode()}")
        else:
            strength = self.translator.toggle_temporal(self.temporal)
            say(f"temporal stabilisation: {strength:g}" if strength else "temporal stabilisation: off")
        if self.paused:  # show the held frame in the new mode
            self.view = side_by_side(self.frame, self.translator.translate(self.frame))

    def snapshot(self) -> None:
        try:
            say(f"saved {self.saver.save(self.view)}")
        except OSError as exc:  # a full disk or a read-only folder must not end the session
            say(f"snapshot not saved: {exc}")
