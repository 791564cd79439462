"""Offline video translation: decode → translate → encode, every frame, at the input's frame rate.

Three stages on three threads joined by small queues: the decoder also prepares the
model input (resize, adapter, normalise) and, with temporal stabilisation, the optical
flow; the encoder finishes each frame (temporal blend, output adapter, resize back,
side-by-side) and writes it, so the inference thread does nothing but run the model.
OpenCV and ONNX Runtime release the GIL, so the stages really overlap.

The output keeps the input's timeline: each decoded picture is written for as long as
its timestamps say it is shown. Some files store a picture once and then "repeat the
previous picture" entries (AVI drop frames, variable frame rates): OpenCV decodes such a
picture once, and it is written once per frame it covers. Where a frame cannot be
decoded, the decoder seeks past the damage and the previous picture stands in; what
was repeated, lost or missing at the end is counted in ``VideoStats``.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .capture import CaptureError, Source
from .video_output import VideoOutput, check_output

__all__ = ["translate_video", "VideoStats", "Timeline", "VideoOutput", "check_output"]

_END = object()


@dataclass
class VideoStats:
    frames: int         # written
    seconds: float
    fps: float          # of the output file (= the input's)
    size: tuple[int, int]
    pictures: int = 0   # decoded and translated (fewer than frames when the file repeats pictures)
    declared: int | None = None  # the container's frame count
    repeats: int = 0    # frames the file stores as "repeat the previous picture": written as such
    lost: int = 0       # frames that would not decode, skipped by seeking: the previous picture stands in
    limited: bool = False  # stopped by max_frames

    @property
    def throughput(self) -> float:
        """Pictures translated per second of wall time."""
        return self.pictures / self.seconds if self.seconds > 0 else float("inf")

    @property
    def missing(self) -> int:
        """Declared frames beyond the last one decoded (a file that ends early)."""
        if self.limited or not self.declared:
            return 0
        return max(0, self.declared - self.frames)

    def timeline_note(self, name: str) -> str | None:
        """One line when the file did not decode into the frames its container declares; else None."""
        if self.missing > 1:  # containers may round their count: one frame is not worth a warning
            return (f"warning: {name} declares {self.declared} frames but only {self.frames} could be decoded "
                    f"(it ends early or is damaged{f'; {self.lost} lost on the way' if self.lost else ''}): "
                    f"wrote {self.frames} frames, {self.frames / self.fps:.1f} s of {self.declared / self.fps:.1f} s")
        if self.lost:
            return (f"warning: {name}: {self.lost} of its {self.declared or self.frames} frames would not decode; "
                    "skipped past them, the previous picture stands in for them")
        if self.repeats and not self.limited:
            return (f"note: {name} declares {self.declared or self.frames} frames but stores {self.pictures} "
                    f"pictures (the other {self.repeats} frames repeat the previous one): each picture was "
                    f"written for as long as it is shown, {self.frames} frames")
        return None


class Timeline:
    """Decoded pictures and where each sits on the container's frame timeline (from its timestamp).

    ``read()`` → (picture, index) or None at the end. A failed read before the declared end is
    retried further on (1, 2, 4, ... frames ahead, then bisected back), as FFmpeg can resume
    after damage when asked to seek.
    """

    def __init__(self, cap: cv2.VideoCapture, fps: float, declared: int | None):
        self.cap, self.fps, self.declared = cap, fps, declared
        self.repeats = self.lost = 0
        self._t0: float | None = None
        self._last_ms = -1.0
        self._last = -1

    def read(self) -> tuple[np.ndarray, int] | None:
        ok, frame = self.cap.read()
        skipped = not ok or frame is None
        if skipped:
            frame = self._seek_past_damage()
            if frame is None:
                return None
        ms = self.cap.get(cv2.CAP_PROP_POS_MSEC)
        if self._t0 is None:
            self._t0 = ms
        # never backwards nor twice on one frame: a stream without timestamps counts one by one
        index = max(self._last + 1, round((ms - self._t0) * self.fps / 1000.0))
        if self._last >= 0:
            gap = index - self._last - 1
            if skipped:
                self.lost += gap
            else:
                self.repeats += gap
        self._last, self._last_ms = index, ms
        return frame, index

    def _try(self, position: int) -> np.ndarray | None:
        self.cap.set(cv2.CAP_PROP_POS_FRAMES, position)
        ok, frame = self.cap.read()
        if ok and frame is not None and self.cap.get(cv2.CAP_PROP_POS_MSEC) > self._last_ms:
            return frame
        return None

    def _seek_past_damage(self) -> np.ndarray | None:
        start = self._last + 1  # the frame that failed
        if not self.declared or start >= self.declared - 1:
            return None
        step, frame = 1, None
        while start + step < self.declared:
            frame = self._try(start + step)
            if frame is not None:
                break
            step *= 2
        if frame is None:
            return None
        bad, good = start + step // 2, start + step  # bisect back to the first frame that decodes
        while good - bad > 1:
            mid = (bad + good) // 2
            if self._try(mid) is not None:
                good = mid
            else:
                bad = mid
        return self._try(good)


class _Stage(threading.Thread):
    """A worker thread: its exception is kept for the main thread, and stops the other stages."""

    def __init__(self, name: str, target: Callable[[], None], stop: threading.Event):
        super().__init__(name=name, daemon=True)
        self._target_fn, self._halt, self.error = target, stop, None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # re-raised in the main thread
            self.error = exc
            self._halt.set()


def translate_video(translator, src: Path, dst: Path, *, side_by_side: bool = False,
                    max_frames: int | None = None, on_open: Callable[[int | None, float], None] | None = None,
                    on_frame: Callable[[], None] | None = None, queue_size: int = 4) -> VideoStats:
    """Translate ``src`` into ``dst`` frame by frame. ``on_open(total, fps)`` and ``on_frame()`` feed a progress bar.

    With ``translator.temporal`` > 0 the output is stabilised (the stream starts afresh here), and
    ``side_by_side`` writes input | plain | stabilised; otherwise input | output.
    """
    src, dst = Path(src), Path(dst)
    codec = check_output(dst, src)
    cap, fps, total, timeline, first = _open_video(src)
    h, w = first[0].shape[:2]
    temporal = bool(translator.temporal)
    translator.reset_temporal()
    panels = (3 if temporal else 2) if side_by_side else 1
    try:
        writer = VideoOutput(dst, fps, (panels * w, h), codec)
    except BaseException:
        cap.release()
        raise
    if on_open:
        on_open(min(total, max_frames) if total and max_frames else (total or max_frames), fps)
    job = _VideoJob(translator, timeline, first, writer, side_by_side=side_by_side, plain_panel=temporal,
                    max_frames=max_frames, on_frame=on_frame, queue_size=queue_size)
    start = time.perf_counter()
    try:
        job.run()
    finally:
        cap.release()
    writer.finish()
    return VideoStats(job.written, time.perf_counter() - start, fps, (panels * w, h), pictures=job.pictures,
                      declared=total, repeats=timeline.repeats, lost=timeline.lost, limited=job.limited)


def _open_video(src: Path):
    """(capture, fps, declared frame count or None, Timeline, first picture) of a file, or CaptureError."""
    cap = Source("file", str(src)).open()
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not fps or not 0 < fps < 1000:
        cap.release()
        raise CaptureError(f"{src} does not say its frame rate; re-encode it (e.g. ffmpeg -i IN -r 30 OUT.mp4)")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    timeline = Timeline(cap, fps, total)
    first = timeline.read()
    if first is None:
        cap.release()
        raise CaptureError(f"cannot read {src}: no decodable frame in it")
    return cap, fps, total, timeline, first


class _VideoJob:
    """Decode (and prepare, with the flow of --temporal) → translate → postprocess and encode, on three threads.

    Any failure sets ``stop``: every stage then winds down, and the output is discarded.
    """

    def __init__(self, translator, timeline: Timeline, first, writer: VideoOutput, *, side_by_side: bool,
                 plain_panel: bool, max_frames: int | None, on_frame, queue_size: int):
        self.translator, self.timeline, self.first, self.writer = translator, timeline, first, writer
        self.side_by_side, self.plain_panel = side_by_side, plain_panel  # input | (plain |) output
        self.limit = max_frames if max_frames is not None else float("inf")
        self.on_frame = on_frame
        self.size = first[0].shape[:2]
        self.stop = threading.Event()
        self.q_in: queue.Queue = queue.Queue(queue_size)
        self.q_out: queue.Queue = queue.Queue(queue_size)
        self.limited, self.pictures, self.written = False, 0, 0

    def run(self) -> None:
        decoder = _Stage("p2p-decode", self.decode, self.stop)
        encoder = _Stage("p2p-encode", self.encode, self.stop)
        decoder.start()
        encoder.start()
        finished = False
        try:
            self.translate()
            finished = True
        finally:
            if not finished:
                self.stop.set()
            encoder.join()
            self.stop.set()
            decoder.join()
            if not finished or decoder.error is not None or encoder.error is not None:
                self.writer.discard()  # no half-written file left looking like a result
        for stage in (decoder, encoder):
            if stage.error is not None:
                raise stage.error

    def put(self, q: queue.Queue, item) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue):
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    return _END

    def decode(self) -> None:
        h, w = self.size
        current = self.first
        while current is not None and current[1] < self.limit:
            frame, index = current
            upcoming = self.timeline.read()  # one picture ahead: its timestamp says how long this one shows
            hold = (upcoming[1] if upcoming is not None else index + 1) - index
            if index + hold > self.limit:
                hold, self.limited = int(self.limit - index), True
            if frame.shape[:2] != (h, w):  # a stream that changes size: the writer takes one size only
                frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
            x, placement, motion = self.translator.prepare(frame)  # with --temporal, the flow runs here
            if not self.put(self.q_in, (frame, x, placement, motion, hold)):
                return
            self.pictures += 1
            current = upcoming
        self.limited = self.limited or current is not None
        self.put(self.q_in, _END)

    def translate(self) -> None:
        while (item := self.get(self.q_in)) is not _END:
            frame, x, placement, motion, hold = item
            out = self.translator.run(x[None])[0]  # a copy: the backend reuses its output buffer
            if not self.put(self.q_out, (frame, out, placement, motion, hold)):
                break
        self.put(self.q_out, _END)  # after the last frame: the encoder finishes the queue, then stops

    def encode(self) -> None:
        while (item := self.get(self.q_out)) is not _END:
            frame, out, placement, motion, hold = item
            result = self.translator.postprocess(out, placement, frame, motion)
            if self.side_by_side:
                plain = [self.translator.postprocess(out, placement, frame)] if self.plain_panel else []
                result = np.hstack([frame, *plain, result])
            for _ in range(hold):
                self.writer.write(result)
                self.written += 1
                if self.on_frame:
                    self.on_frame()
