"""Offline video translation: decode → translate → encode, every frame, at the input's frame rate.

Three stages on three threads joined by small queues: the decoder also prepares the
model input (resize, adapter, normalise) and the encoder finishes each frame (output
adapter, resize back, side-by-side) and writes it, so the inference thread does
nothing but run the model. OpenCV and ONNX Runtime release the GIL, so the stages
really overlap.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .capture import CaptureError, Source

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}
_END = object()


@dataclass
class VideoStats:
    frames: int
    seconds: float
    fps: float          # of the output file (= the input's)
    size: tuple[int, int]

    @property
    def throughput(self) -> float:
        """Frames translated per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def check_output(path: Path, source: Path | None = None) -> str:
    """The FourCC for ``path``, or CaptureError if it cannot be written there."""
    path = Path(path)
    codec = FOURCC.get(path.suffix.lower())
    if codec is None:
        raise CaptureError(f"cannot write {path}: unknown video type '{path.suffix}'; use "
                           f"{', '.join(sorted(FOURCC))}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CaptureError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CaptureError(f"cannot write {path}: no permission to write there")
    if source is not None and path.resolve() == Path(source).resolve():
        raise CaptureError(f"output {path} is the input: pick another file name")
    return codec


def open_writer(path: Path, fps: float, size: tuple[int, int], codec: str | None = None) -> cv2.VideoWriter:
    codec = codec or check_output(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), size)
    if not writer.isOpened():
        raise CaptureError(f"cannot write {path}: this OpenCV has no {codec} encoder for {Path(path).suffix}")
    return writer


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
    """Translate ``src`` into ``dst`` frame by frame. ``on_open(total, fps)`` and ``on_frame()`` feed a progress bar."""
    src, dst = Path(src), Path(dst)
    codec = check_output(dst, src)
    cap = Source("file", str(src)).open()
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not fps or not 0 < fps < 1000:
        cap.release()
        raise CaptureError(f"{src} does not say its frame rate; re-encode it (e.g. ffmpeg -i IN -r 30 OUT.mp4)")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        raise CaptureError(f"cannot read {src}: no decodable frame in it")
    h, w = first.shape[:2]
    size = (2 * w if side_by_side else w, h)
    writer = open_writer(dst, fps, size, codec)
    if on_open:
        on_open(min(total, max_frames) if total and max_frames else (total or max_frames), fps)

    stop = threading.Event()  # set on any failure: every stage then winds down
    q_in: queue.Queue = queue.Queue(queue_size)
    q_out: queue.Queue = queue.Queue(queue_size)

    def put(q: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(q: queue.Queue):
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    return _END

    def decode() -> None:
        frame, count = first, 0
        while frame is not None and (max_frames is None or count < max_frames):
            if frame.shape[:2] != (h, w):  # a stream that changes size: the writer takes one size only
                frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
            x, placement = translator.preprocess(frame)
            if not put(q_in, (frame, x, placement)):
                return
            count += 1
            ok, frame = cap.read()
            frame = frame if ok else None
        put(q_in, _END)

    written = 0

    def encode() -> None:
        nonlocal written
        while (item := get(q_out)) is not _END:
            frame, out, placement = item
            result = translator.postprocess(out, placement, frame)
            writer.write(np.hstack([frame, result]) if side_by_side else result)
            written += 1
            if on_frame:
                on_frame()

    decoder, encoder = _Stage("p2p-decode", decode, stop), _Stage("p2p-encode", encode, stop)
    start = time.perf_counter()
    decoder.start()
    encoder.start()
    finished = False
    try:
        while (item := get(q_in)) is not _END:
            frame, x, placement = item
            out = translator.run(x[None])[0]  # a copy: the backend reuses its output buffer
            if not put(q_out, (frame, out, placement)):
                break
        put(q_out, _END)  # after the last frame: the encoder finishes the queue, then stops
        finished = True
    finally:
        if not finished:
            stop.set()
        encoder.join()
        stop.set()
        decoder.join()
        cap.release()
        writer.release()
        if not finished or decoder.error is not None or encoder.error is not None:
            dst.unlink(missing_ok=True)  # no half-written file left looking like a result
    for stage in (decoder, encoder):
        if stage.error is not None:
            raise stage.error
    return VideoStats(written, time.perf_counter() - start, fps, size)
