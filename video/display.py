"""The live window: input | output side by side, sized to the frames, labelled, with a status line; and an FPS meter.

With pip's opencv-python the window is Qt's: the code here keeps Qt's toolbar and status bar away
(WINDOW_GUI_NORMAL), points Qt at the system fonts, and treats every way a user closes the window
(the ✕ button, Alt+F4, a window destroyed from outside) as "quit".
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from p2p.runtime.errors import UserError

from .x11 import X11

NO_GUI = ("this OpenCV cannot open windows (opencv-python-headless, e.g. from P2P_OPENCV=headless ./install.sh): "
          "run with --headless, or install the GUI build: ./install.sh (or pip uninstall -y "
          "opencv-python-headless && pip install opencv-python)")
NO_DISPLAY = ("no display here ($DISPLAY is not set, e.g. over SSH): run with --headless "
              "(add --record out.mp4 to keep the result)")
# What pip's Qt build of OpenCV loads from the system to open a window (the rest is bundled in the wheel),
# and the Debian/Ubuntu package of each.
QT_SYSTEM_LIBS = {"libX11.so.6": "libx11-6", "libxcb.so.1": "libxcb1", "libSM.so.6": "libsm6",
                  "libICE.so.6": "libice6", "libXext.so.6": "libxext6"}
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/TTF", "/usr/share/fonts/dejavu",
             "/usr/share/fonts/truetype/liberation", "/usr/share/fonts/truetype/noto", "/usr/share/fonts/truetype")
WINDOW_MARGIN = (40, 80)  # width, height left for the window frame, title bar and any panel
CLOSE_PROBE_PERIOD = 0.25  # seconds between asks to the X server whether the window still exists
FONT = cv2.FONT_HERSHEY_DUPLEX  # two strokes: reads clearly (people and OCR) down to the smallest scale


class DisplayError(UserError, RuntimeError):
    """No window can be shown here; the message says what to do instead."""


def gui_backend() -> str:
    """OpenCV's HighGUI backend from its build information: "QT5", "GTK3", ..., or "NONE" (headless builds)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper()
    return "UNKNOWN"


def has_gui() -> bool:
    """False for OpenCV builds without HighGUI windows (opencv-python-headless: "GUI: NONE")."""
    return gui_backend() != "NONE"


def fit_size(width: int, height: int, screen: tuple[int, int] | None) -> tuple[int, int]:
    """The size to show a width×height image at: its own, scaled down (aspect kept) only to fit the screen."""
    if screen is None:
        return width, height
    room_w, room_h = screen[0] - WINDOW_MARGIN[0], screen[1] - WINDOW_MARGIN[1]
    scale = min(1.0, room_w / width, room_h / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    if left.shape[:2] != right.shape[:2]:
        right = cv2.resize(right, (left.shape[1], left.shape[0]))
    return np.hstack([left, right])


def text_scale(width: int) -> float:
    """Font scale for text on an image shown ``width`` pixels wide: capital letters 12 to 20 px tall."""
    return min(0.9, max(0.55, width / 2000))


def draw_label(image: np.ndarray, text: str, x: int, y: int, scale: float, anchor: str = "top-left") -> int:
    """White ``text`` on a dark translucent box at (x, y), the box's ``anchor`` corner; returns the box width.

    Drawn on the image as shown (after any scaling), so it keeps its size in pixels whatever the frame size.
    """
    thickness = _thickness(scale)
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    pad = max(4, round(6 * scale))
    bw, bh = tw + 2 * pad, th + base + 2 * pad
    x0 = x - bw if anchor.endswith("right") else x
    y0 = y - bh if anchor.startswith("bottom") else y
    x0, y0 = max(0, x0), max(0, y0)
    box = image[y0:y0 + bh, x0:x0 + bw]
    box[:] = (box * 0.35).astype(np.uint8)  # darken, keep a hint of the picture
    cv2.putText(image, text, (x0 + pad, y0 + pad + th), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return bw


def render(view: np.ndarray, size: tuple[int, int], status: str, hint: str = "") -> np.ndarray:
    """``view`` (input | output, two equal halves) at ``size``, with "input"/"output" on the halves, ``status``
    bottom-left and ``hint`` (the keys) bottom-right where it fits."""
    if (view.shape[1], view.shape[0]) == size:
        image = view.copy()
    else:
        image = cv2.resize(view, size, interpolation=cv2.INTER_AREA)
    width, height = size
    scale = text_scale(width)
    margin = max(4, round(8 * scale))
    draw_label(image, "input", margin, margin, scale)
    draw_label(image, "output", width // 2 + margin, margin, scale)
    used = draw_label(image, status, margin, height - margin, scale, "bottom-left")
    if hint:
        if used + label_width(hint, scale) + 2 * margin < width:  # beside the status
            draw_label(image, hint, width - margin, height - margin, scale, "bottom-right")
        else:  # a small window: the keys wrap onto lines above the status, none cut off
            row = label_height(scale) + margin // 2
            bottom = height - margin - row
            for line in reversed(wrap_hint(hint, width - 2 * margin, scale)):
                draw_label(image, line, width - margin, bottom, scale, "bottom-right")
                bottom -= row
    return image


def _thickness(scale: float) -> int:
    return 1 if scale < 0.8 else 2


def label_width(text: str, scale: float) -> int:
    """The width of ``draw_label``'s box for ``text``."""
    (tw, _), _ = cv2.getTextSize(text, FONT, scale, _thickness(scale))
    return tw + 2 * max(4, round(6 * scale))


def label_height(scale: float) -> int:
    (_, th), base = cv2.getTextSize("Ag", FONT, scale, _thickness(scale))
    return th + base + 2 * max(4, round(6 * scale))


def wrap_hint(hint: str, room: int, scale: float, sep: str = " | ") -> list[str]:
    """The key hint ("q quit | space pause | ...") as lines whose boxes fit ``room`` pixels, broken between
    keys (a single key wider than the room gets a line of its own)."""
    lines: list[str] = []
    for item in hint.split(sep):
        if lines and label_width(lines[-1] + sep + item, scale) <= room:
            lines[-1] += sep + item
        else:
            lines.append(item)
    return lines


def check_display() -> X11 | None:
    """Raise DisplayError (one line: what to do) where a window cannot open, before OpenCV tries: some GUI
    backends abort the whole process instead of raising. Returns an X11 connection where there is one."""
    if not has_gui():
        raise DisplayError(NO_GUI)
    if not sys.platform.startswith("linux"):
        return None
    display = os.environ.get("DISPLAY")
    qt = gui_backend().startswith("QT")
    if not display and not os.environ.get("WAYLAND_DISPLAY"):
        raise DisplayError(NO_DISPLAY)
    if not display and qt:
        raise DisplayError("this OpenCV's windows (Qt, X11) need $DISPLAY, and only $WAYLAND_DISPLAY is set: "
                           "enable XWayland, or run with --headless")
    if qt:
        missing = [package for name, package in QT_SYSTEM_LIBS.items() if not _loadable(name)]
        if missing:
            raise DisplayError(f"the window needs system libraries that are missing: install them "
                               f"(apt-get install {' '.join(missing)}), or run with --headless")
    x11 = X11.connect() if display else None
    if display and x11 is None and qt:
        raise DisplayError(f"cannot open display {display} (no X server there, or no permission): "
                           "run with --headless, or fix $DISPLAY")
    return x11


def _loadable(library: str) -> bool:
    try:
        ctypes.CDLL(library)
        return True
    except OSError:
        return False


def use_system_fonts() -> None:
    """Point Qt at the system's fonts: importing pip's cv2 points it at cv2/qt/fonts, which the wheel does not
    ship, and Qt then prints ten lines of "QFontDatabase: Cannot find font directory" per start."""
    current = os.environ.get("QT_QPA_FONTDIR")
    if current and Path(current).is_dir() and any(Path(current).iterdir()):
        return
    for folder in FONT_DIRS:
        if Path(folder).is_dir() and any(Path(folder).glob("*.[ot]tf")):
            os.environ["QT_QPA_FONTDIR"] = folder
            return


def screen_area_elsewhere() -> tuple[int, int, int, int] | None:
    """The primary screen where there is no X11 to ask (Windows); None where unknown."""
    if sys.platform == "win32":
        metrics = ctypes.windll.user32.GetSystemMetrics
        return 0, 0, metrics(0), metrics(1)
    return None


class Window:
    """The p2p-live window. Created at the first frame, sized to it (scaled down only to fit the screen)."""

    def __init__(self, title: str = "p2p-live", hint: str = ""):
        self.x11 = check_display()
        use_system_fonts()
        self.title, self.hint = title, hint
        self.size: tuple[int, int] | None = None  # shown size, fixed at the first frame
        self.area: tuple[int, int, int, int] | None = None  # x, y, width, height of the usable screen
        self.closed = False
        self._xid: int | None = None
        self._next_probe = 0.0

    def show(self, view: np.ndarray, status: str) -> str | None:
        """Show ``view`` with its labels and ``status``; the key pressed meanwhile ("q", " ", "esc", ...), or
        None. Sets ``closed`` once the user closed the window in any way."""
        first = self.size is None
        if first:
            self._open(view.shape[1], view.shape[0])
        cv2.imshow(self.title, render(view, self.size, status, self.hint))
        if first and self.area is not None:
            # centred: Qt creates the window small, and the window manager places it for that size
            x, y, w, h = self.area
            cv2.moveWindow(self.title, x + max(0, (w - self.size[0]) // 2),
                           y + max(0, (h - self.size[1] - WINDOW_MARGIN[1] // 2) // 2))
        key = cv2.waitKeyEx(1)  # the full code: with waitKey's & 0xFF, the Left arrow (0xff51) reads as "Q"
        if self._gone():
            self.closed = True
            return None
        return key_name(key)

    def close(self) -> None:
        if self.size is not None and not self.closed:
            with contextlib.suppress(cv2.error):
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
        if self.x11 is not None:
            self.x11.close()

    def _open(self, width: int, height: int) -> None:
        self.area = self.x11.usable_area() if self.x11 is not None else screen_area_elsewhere()
        self.size = fit_size(width, height, self.area[2:] if self.area else None)
        try:
            # AUTOSIZE: the window is exactly the image we show (no grey bands); GUI_NORMAL: no Qt toolbar
            # or status bar around it
            cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        except cv2.error as exc:
            raise DisplayError(f"{NO_GUI} ({str(exc).strip().splitlines()[-1]})") from None

    def _gone(self) -> bool:
        try:
            if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                return True
        except cv2.error:  # Qt: the window manager closed it (✕, Alt+F4) and Qt tore its GUI down
            return True
        return self._destroyed_outside()

    def _destroyed_outside(self) -> bool:
        """Qt keeps reporting a window as visible after another program destroyed it (no window manager to
        tell it), so ask the X server, a few times a second."""
        now = time.perf_counter()
        if self.x11 is None or now < self._next_probe:
            return False
        self._next_probe = now + CLOSE_PROBE_PERIOD
        if self._xid is None:
            self._xid = self.x11.find_window(self.title, os.getpid())  # None until the window is mapped
            if self._xid is not None:
                self.x11.remind_mapped(self._xid, *self.size)
            return False
        return not self.x11.exists(self._xid)


def key_name(code: int) -> str | None:
    """A pressed key as the loop reads it: "q", " ", "esc", ...; None for no key or keys we do not use."""
    if code == 27:
        return "esc"
    if 32 <= code < 127:
        return chr(code).lower()
    return None


class FpsMeter:
    """Frames per second over a sliding window of recent frames, and overall; time spent paused counts in neither."""

    def __init__(self, window: int = 30, clock=time.perf_counter):
        self.clock = clock
        self.times: list[float] = []
        self.window = window
        self.count = 0
        self.start = clock()
        self.paused_for = 0.0
        self._paused_at: float | None = None

    def tick(self) -> float:
        self.times = (self.times + [self.clock()])[-self.window:]
        self.count += 1
        return self.fps

    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = self.clock()

    def resume(self) -> None:
        if self._paused_at is not None:
            gap = self.clock() - self._paused_at
            self.paused_for += gap
            self.times = [t + gap for t in self.times]  # as if the pause had not happened
            self._paused_at = None

    @property
    def fps(self) -> float:
        if len(self.times) < 2:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])

    @property
    def elapsed(self) -> float:
        """Seconds since the start, less the time paused."""
        end = self._paused_at if self._paused_at is not None else self.clock()
        return end - self.start - self.paused_for

    @property
    def overall(self) -> float:
        elapsed = self.elapsed
        return self.count / elapsed if elapsed > 0 else 0.0
