"""Frame sources (camera index, file, URL, GStreamer pipeline) and a reader thread that keeps only the newest frame.

A live camera produces frames whether or not we keep up; queuing them would make
the output lag further and further behind. So a thread reads continuously and
keeps one slot: the consumer always gets the newest frame and skips the rest.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from p2p.runtime.errors import UserError

GSTREAMER_HINT = ("this OpenCV has no GStreamer support (pip's opencv wheels never do), so a pipeline "
                  "cannot be opened: on Jetson use JetPack's OpenCV (venv created with --system-site-packages)")


class CaptureError(UserError, RuntimeError):
    """A source that cannot be opened or stopped delivering frames; the message is one line for the user."""


@contextlib.contextmanager
def quiet_opencv():
    """OpenCV logs its own multi-line warnings when a device fails to open; we say it in one line instead."""
    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(level)


def has_gstreamer() -> bool:
    return cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER)


@dataclass(frozen=True)
class Source:
    kind: str          # "camera", "file", "url" or "pipeline"
    target: int | str

    @property
    def live(self) -> bool:
        """Cameras, streams and pipelines run on their own clock; files can be read at any pace."""
        return self.kind != "file"

    def __str__(self) -> str:
        if self.kind == "camera":
            return f"camera {self.target}"
        if self.kind == "pipeline":
            return "GStreamer pipeline"
        return f"{self.kind} {self.target}"

    def open(self) -> cv2.VideoCapture:
        """An opened capture, or CaptureError saying why not."""
        if self.kind == "pipeline" and not has_gstreamer():
            raise CaptureError(GSTREAMER_HINT)
        if self.kind == "file" and not Path(self.target).is_file():
            raise CaptureError(f"input {self.target} does not exist")
        api = {"pipeline": cv2.CAP_GSTREAMER, "url": cv2.CAP_FFMPEG}.get(self.kind, cv2.CAP_ANY)
        with quiet_opencv():
            cap = cv2.VideoCapture(self.target, api)
        if not cap.isOpened():
            cap.release()
            raise CaptureError(self._open_failure())
        return cap

    def _open_failure(self) -> str:
        if self.kind == "camera":
            return (f"cannot open camera {self.target}: no camera at that index, no permission, or it is in "
                    "use by another program (try another --camera N, or --source FILE|URL|PIPELINE)")
        if self.kind == "file":
            return f"cannot read {self.target}: not a video OpenCV can decode (corrupt, or an unknown format?)"
        if self.kind == "url":
            return f"cannot open stream {self.target}: unreachable, or not a stream FFmpeg can read"
        return "cannot open the GStreamer pipeline: check it with gst-launch-1.0 (with 'fakesink' for 'appsink')"


def parse_source(camera: int | None = None, source: str | None = None) -> Source:
    """--camera N or --source FILE|URL|PIPELINE (a pipeline contains '!'; digits mean a camera)."""
    if source is None:
        return Source("camera", 0 if camera is None else int(camera))
    text = source.strip()
    if "!" in text:
        return Source("pipeline", text)
    if text.isdigit():
        return Source("camera", int(text))
    if "://" in text:
        return Source("url", text)
    return Source("file", text)


class Pacer:
    """When each picture of a file is due, so that it plays on its own timeline, as a camera would deliver it.

    A picture is due at its timestamp (OpenCV's position in ms after reading it) from the first one's
    arrival. Files whose pictures stand for several frames (empty AVI chunks: a 30 s clip of 68 pictures)
    keep their length; where the decoder reports no timestamps, picture k is due at k / fps.
    """

    def __init__(self, fps: float, clock: Callable[[], float] = time.perf_counter):
        self.fps, self.clock = fps, clock
        self.start: float | None = None
        self.count = 0

    def delay(self, msec: float) -> float:
        """Seconds to wait before handing out the next picture, whose timestamp is ``msec``."""
        due = msec / 1000.0 if msec > 0 else self.count / self.fps
        self.count += 1
        now = self.clock()
        if self.start is None:
            self.start = now - due
        return max(0.0, self.start + due - now)


class LatestFrameReader:
    """Reads a source on its own thread, keeping only the newest frame.

    ``read()`` waits for a frame newer than the last one it returned. Files end with
    None; with ``pace`` a file plays on its own timeline (see Pacer) so that it behaves like
    a camera, without it every frame is handed out, as fast as the consumer takes them. A live
    source that stops delivering is reopened ``reconnects`` times, then ``read()`` raises
    CaptureError.
    """

    def __init__(self, source: Source, *, reconnects: int = 3, retry_delay: float = 1.0, pace: bool = True,
                 on_event: Callable[[str], None] | None = None):
        self.source = source
        self.reconnects, self.retry_delay = reconnects, retry_delay
        self.on_event = on_event or (lambda message: None)
        self._cap = source.open()
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else None
        self._pacer = Pacer(self.fps) if pace and not source.live and self.fps is not None else None
        self._every_frame = not pace and not source.live  # a file as fast as possible: skip none
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._seq = 0          # frames captured
        self._taken = 0        # seq of the last frame handed out
        self._handed = 0       # frames handed out
        self._done = False
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="p2p-capture", daemon=True)

    def start(self) -> "LatestFrameReader":
        self._thread.start()
        return self

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                ok, frame = self._cap.read()
                if not ok or frame is None:
                    if not self.source.live or not self._reconnect():
                        break
                    continue
                if self._pacer:  # a file on its own timeline: this picture is shown when it is due
                    delay = self._pacer.delay(self._cap.get(cv2.CAP_PROP_POS_MSEC))
                    if delay > 0 and self._stop.wait(delay):
                        break
                with self._cond:
                    if self._every_frame:  # the consumer takes each one before the next is read
                        while self._taken != self._seq and not self._stop.is_set():
                            self._cond.wait(0.1)
                    self._frame, self._seq = frame, self._seq + 1
                    self._cond.notify_all()
        except Exception as exc:  # never die silently: the consumer gets the reason
            self._error = f"{self.source}: capture failed: {exc}"
        finally:
            self._cap.release()
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _reconnect(self) -> bool:
        self._cap.release()
        for attempt in range(1, self.reconnects + 1):
            self.on_event(f"{self.source} stopped delivering frames; reconnecting ({attempt}/{self.reconnects})")
            if self._stop.wait(self.retry_delay * attempt):
                return False
            try:
                self._cap = self.source.open()
                return True
            except CaptureError:
                continue
        self._error = (f"{self.source} stopped delivering frames and did not come back after "
                       f"{self.reconnects} reconnect tries")
        return False

    def read(self, timeout: float = 10.0) -> np.ndarray | None:
        """The newest frame not yet returned; None once a file has ended."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._seq == self._taken and not self._done:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CaptureError(f"{self.source} delivered no frame for {timeout:g} s")
                self._cond.wait(left)
            if self._seq == self._taken:  # finished, nothing new
                if self._error:
                    raise CaptureError(self._error)
                return None
            self._taken = self._seq
            self._handed += 1
            self._cond.notify_all()  # a reader handing out every frame reads the next one now
            return self._frame

    @property
    def dropped(self) -> int:
        """Frames captured but never handed out (the consumer was slower than the source)."""
        return self._seq - self._handed

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        elif self._thread.ident is None:  # never started: the capture is still ours to release
            self._cap.release()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
