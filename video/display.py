"""The live window: input | output side by side with a status line, and an FPS meter."""
from __future__ import annotations

import os
import sys
import time

import cv2
import numpy as np
from p2p.runtime.errors import UserError

NO_GUI = ("this OpenCV cannot open windows (opencv-python-headless): run with --headless, or "
          "pip uninstall opencv-python-headless && pip install opencv-python")


class DisplayError(UserError, RuntimeError):
    """No window can be shown here; the message says what to do instead."""


def has_gui() -> bool:
    """False for OpenCV builds without HighGUI windows (opencv-python-headless: "GUI: NONE")."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() != "NONE"
    return True


class Window:
    def __init__(self, title: str = "p2p-live"):
        if not has_gui():
            raise DisplayError(NO_GUI)
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            # checked first: some GUI backends abort the process instead of raising without a display
            raise DisplayError("no display here ($DISPLAY is not set, e.g. over SSH): run with --headless "
                               "(add --record out.mp4 to keep the result)")
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise DisplayError(NO_GUI) from None
        self.title = title

    def show(self, image: np.ndarray) -> int:
        """Show ``image``; the key pressed meanwhile (-1 if none), 'q' once the window is closed."""
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1)
        if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            return ord("q")
        return key & 0xFF if key >= 0 else -1

    def close(self) -> None:
        cv2.destroyWindow(self.title)
        cv2.waitKey(1)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    if left.shape[:2] != right.shape[:2]:
        right = cv2.resize(right, (left.shape[1], left.shape[0]))
    return np.hstack([left, right])


def put_status(image: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the top-left corner, white on a dark band, readable on any picture."""
    out = image.copy()
    scale = max(0.4, min(1.0, image.shape[1] / 1600))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (tw + 12, th + base + 10), (0, 0, 0), -1)
    cv2.putText(out, text, (6, th + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class FpsMeter:
    """Frames per second over a sliding window of recent frames (not since the start)."""

    def __init__(self, window: int = 30):
        self.times: list[float] = []
        self.window = window
        self.count = 0
        self.start = time.perf_counter()

    def tick(self) -> float:
        now = time.perf_counter()
        self.times = (self.times + [now])[-self.window:]
        self.count += 1
        return self.fps

    @property
    def fps(self) -> float:
        if len(self.times) < 2:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])

    @property
    def overall(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.count / elapsed if elapsed > 0 else 0.0
