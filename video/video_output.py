"""Writing a video: the codec for a file name (checked before any work), and a writer that never leaves a
broken file under its name (written beside it, the free space watched, reopened and counted, then renamed).
"""
from __future__ import annotations

import errno
import os
import secrets
import tempfile
from pathlib import Path

import cv2
import numpy as np

from p2p.runtime.files import output_error, probe_writable

from .capture import CaptureError

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


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
    probe_writable(parent, path)  # really try: a read-only mount says so (root passes every permission check)
    if source is not None and path.resolve() == Path(source).resolve():
        raise CaptureError(f"output {path} is the input: pick another file name")
    return codec


def open_writer(path: Path, fps: float, size: tuple[int, int], codec: str | None = None,
                name: Path | None = None) -> cv2.VideoWriter:
    """An OpenCV writer for ``path`` (messages say ``name``, the file the user asked for, if given)."""
    codec = codec or check_output(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), size)
    if not writer.isOpened():
        shown = name or path
        if _encoder_works(codec, Path(path).suffix, Path(path).parent):
            raise CaptureError(f"cannot write {shown}: OpenCV's {codec} encoder refuses {size[0]}x{size[1]} "
                               f"frames; write a larger video, or use .avi (MJPG takes any size)")
        raise CaptureError(f"cannot write {shown}: this OpenCV has no {codec} encoder for {Path(path).suffix}")
    return writer


def _encoder_works(codec: str, suffix: str, folder: Path) -> bool:
    """Whether ``codec`` opens at an ordinary frame size (so a refusal was about the size, not the encoder)."""
    fd, probe = tempfile.mkstemp(prefix=".p2p-probe.", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        writer = cv2.VideoWriter(probe, cv2.VideoWriter_fourcc(*codec), 10.0, (64, 64))
        works = writer.isOpened()
        writer.release()
        return works
    finally:
        Path(probe).unlink(missing_ok=True)


LOW_SPACE = 64 << 10  # bytes free below which a video that cannot grow is put down to a full disk


def space_left(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


class VideoOutput:
    """A video written beside its final name, checked, and renamed over it only when complete.

    OpenCV's writer reports no write error (a full disk gives a warning per frame and an
    unplayable file), so the free space is watched while writing and the finished file is
    reopened and its frames counted. On any failure nothing is left under the final name,
    and a file there from before is untouched.
    """

    CHECK_EVERY = 16  # frames between free-space checks

    def __init__(self, path: Path, fps: float, size: tuple[int, int], codec: str | None = None):
        self.path = Path(path)
        self.codec = codec or check_output(self.path)
        folder = self.path.parent if str(self.path.parent) else Path(".")
        self.tmp = folder / f".{self.path.stem}.{secrets.token_hex(4)}.tmp{self.path.suffix}"
        self.writer = open_writer(self.tmp, fps, size, self.codec, name=self.path)
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(frame)
        self.frames += 1
        if self.frames % self.CHECK_EVERY == 0 and space_left(self.tmp.parent) < LOW_SPACE:
            raise self._failure(full=True)

    def _failure(self, full: bool, frames: int | None = None):
        intact = ("the earlier file there is untouched" if self.path.exists() else
                  f"nothing was left under {self.path.name}")
        if full:
            return output_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), self.path, intact)
        return CaptureError(f"cannot write {self.path}: OpenCV's {self.codec} encoder wrote a file that reads back "
                            f"as {frames} of {self.frames} frames; {intact}")

    def finish(self) -> None:
        """Close, check (reopen, count the frames) and rename; CaptureError/OutputError if it is not whole."""
        self.writer.release()
        try:
            cap = cv2.VideoCapture(str(self.tmp))
            frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
            readable = cap.isOpened() and cap.read()[0]
            cap.release()
            if frames != self.frames or not readable:
                raise self._failure(space_left(self.tmp.parent) < LOW_SPACE, max(frames, 0))
            try:
                os.replace(self.tmp, self.path)
            except OSError as exc:
                raise output_error(exc, self.path) from None
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise

    def discard(self) -> None:
        self.writer.release()
        self.tmp.unlink(missing_ok=True)
