"""What OpenCV's windows do not tell, asked of the X server through libX11: the usable screen area, and
whether our window still exists (Qt does not notice a window destroyed from outside when no window manager
runs, e.g. with `xdotool windowclose`, and would keep running with no window).

Best effort: without libX11 or a reachable X display, ``X11.connect()`` returns None and callers fall back.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

_Window = ctypes.c_ulong
_Atom = ctypes.c_ulong
_ErrorHandler = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
# Xlib's default error handler exits the process: a window that vanished while we looked must not do that.
# Module-level, so the callback outlives every call that may use it.
_ignore_errors = _ErrorHandler(lambda display, event: 0)


def _load_libx11():
    for name in ("libX11.so.6", ctypes.util.find_library("X11")):
        if name:
            with contextlib.suppress(OSError):
                return _declare(ctypes.CDLL(name))
    return None


def _declare(lib):
    p, i, u = ctypes.c_void_p, ctypes.c_int, ctypes.c_ulong
    lib.XOpenDisplay.restype, lib.XOpenDisplay.argtypes = p, [ctypes.c_char_p]
    lib.XCloseDisplay.argtypes = [p]
    lib.XDefaultScreen.argtypes = [p]
    lib.XDisplayWidth.argtypes = lib.XDisplayHeight.argtypes = [p, i]
    lib.XDefaultRootWindow.restype, lib.XDefaultRootWindow.argtypes = _Window, [p]
    lib.XInternAtom.restype, lib.XInternAtom.argtypes = _Atom, [p, ctypes.c_char_p, i]
    lib.XSetErrorHandler.restype, lib.XSetErrorHandler.argtypes = p, [p]
    lib.XFree.argtypes = [p]
    lib.XQueryTree.argtypes = [p, _Window, ctypes.POINTER(_Window), ctypes.POINTER(_Window),
                               ctypes.POINTER(ctypes.POINTER(_Window)), ctypes.POINTER(ctypes.c_uint)]
    lib.XGetWindowProperty.argtypes = [p, _Window, _Atom, ctypes.c_long, ctypes.c_long, i, _Atom,
                                       ctypes.POINTER(_Atom), ctypes.POINTER(i), ctypes.POINTER(u),
                                       ctypes.POINTER(u), ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte))]
    lib.XGetWindowAttributes.argtypes = [p, _Window, p]
    lib.XSendEvent.argtypes = [p, _Window, i, ctypes.c_long, p]
    lib.XFlush.argtypes = [p]
    return lib


class _MonitorInfo(ctypes.Structure):  # XRRMonitorInfo
    _fields_ = [("name", _Atom), ("primary", ctypes.c_int), ("automatic", ctypes.c_int),
                ("noutput", ctypes.c_int), ("x", ctypes.c_int), ("y", ctypes.c_int), ("width", ctypes.c_int),
                ("height", ctypes.c_int), ("mwidth", ctypes.c_int), ("mheight", ctypes.c_int),
                ("outputs", ctypes.c_void_p)]


def _load_libxrandr():
    for name in ("libXrandr.so.2", ctypes.util.find_library("Xrandr")):
        if name:
            with contextlib.suppress(OSError, AttributeError):  # AttributeError: RandR older than 1.5
                lib = ctypes.CDLL(name)
                lib.XRRGetMonitors.restype = ctypes.POINTER(_MonitorInfo)
                lib.XRRGetMonitors.argtypes = [ctypes.c_void_p, _Window, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
                lib.XRRFreeMonitors.argtypes = [ctypes.POINTER(_MonitorInfo)]
                return lib
    return None


class _MapEvent(ctypes.Structure):  # XMapEvent
    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                ("display", ctypes.c_void_p), ("event", _Window), ("window", _Window),
                ("override_redirect", ctypes.c_int)]


class _ExposeEvent(ctypes.Structure):  # XExposeEvent
    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                ("display", ctypes.c_void_p), ("window", _Window), ("x", ctypes.c_int), ("y", ctypes.c_int),
                ("width", ctypes.c_int), ("height", ctypes.c_int), ("count", ctypes.c_int)]


MAP_NOTIFY, EXPOSE = 19, 12
STRUCTURE_NOTIFY_MASK, EXPOSURE_MASK = 1 << 17, 1 << 15
XEVENT_SIZE = 24 * ctypes.sizeof(ctypes.c_long)  # XEvent is a union padded to 24 longs


class X11:
    """One connection to the X server of $DISPLAY, separate from Qt's."""

    def __init__(self, lib, display):
        self.lib, self.display = lib, display
        self.root = lib.XDefaultRootWindow(display)

    @classmethod
    def connect(cls) -> X11 | None:
        lib = _load_libx11()
        if lib is None:
            return None
        display = lib.XOpenDisplay(None)
        return cls(lib, display) if display else None

    def close(self) -> None:
        if self.display:
            self.lib.XCloseDisplay(self.display)
            self.display = None

    def usable_area(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) a window can use: the primary monitor (several monitors share one X screen),
        less what the window manager's work area leaves out (panels)."""
        screen = self.lib.XDefaultScreen(self.display)
        area = self._primary_monitor() or (0, 0, self.lib.XDisplayWidth(self.display, screen),
                                           self.lib.XDisplayHeight(self.display, screen))
        work = self._cardinals(self.root, "_NET_WORKAREA")  # x, y, w, h (per desktop; the first is enough)
        if len(work) >= 4 and work[2] > 0 and work[3] > 0:
            x0, y0 = max(area[0], work[0]), max(area[1], work[1])
            x1, y1 = min(area[0] + area[2], work[0] + work[2]), min(area[1] + area[3], work[1] + work[3])
            if x1 > x0 and y1 > y0:
                area = (x0, y0, x1 - x0, y1 - y0)
        return area

    def _primary_monitor(self) -> tuple[int, int, int, int] | None:
        """The primary (else the first) monitor from RandR 1.5, or None without libXrandr."""
        randr = _load_libxrandr()
        if randr is None:
            return None
        count = ctypes.c_int()
        with self._errors_ignored():
            monitors = randr.XRRGetMonitors(self.display, self.root, 1, ctypes.byref(count))
        if not monitors:
            return None
        try:
            chosen = next((m for m in monitors[:count.value] if m.primary), monitors[0]) if count.value else None
            return (chosen.x, chosen.y, chosen.width, chosen.height) if chosen and chosen.width > 0 else None
        finally:
            randr.XRRFreeMonitors(monitors)

    def find_window(self, title: str, pid: int) -> int | None:
        """The id of the top-level window of process ``pid`` titled ``title``, or None (not mapped yet)."""
        with self._errors_ignored():
            return self._find(self.root, title, pid)

    def exists(self, window: int) -> bool:
        attributes = ctypes.create_string_buffer(512)  # XWindowAttributes is 136 bytes on 64-bit Linux
        with self._errors_ignored():
            return bool(self.lib.XGetWindowAttributes(self.display, window, attributes))

    def remind_mapped(self, window: int, width: int, height: int) -> None:
        """Send ``window`` a MapNotify and an Expose of its whole area, as the X server did when it was mapped.

        Qt 5's X11 backend sometimes loses the events of its first moments (seen with no window manager, when
        the program is busy right after creating the window): it then never learns that its window is mapped
        and never paints it, leaving it black. Both events are harmless to a window that got them already.
        """
        for event, mask in ((_MapEvent(type=MAP_NOTIFY, event=window, window=window), STRUCTURE_NOTIFY_MASK),
                            (_ExposeEvent(type=EXPOSE, window=window, width=width, height=height), EXPOSURE_MASK)):
            buffer = ctypes.create_string_buffer(XEVENT_SIZE)
            ctypes.memmove(buffer, ctypes.byref(event), ctypes.sizeof(event))
            with self._errors_ignored():
                self.lib.XSendEvent(self.display, window, 0, mask, buffer)
        self.lib.XFlush(self.display)

    def _find(self, window: int, title: str, pid: int) -> int | None:
        for child in self._children(window):
            owner = self._cardinals(child, "_NET_WM_PID")
            if owner:  # a client's top-level window: ours or another program's (whose children are its own)
                if owner[0] == pid and self._name(child) == title:
                    return child
                continue
            found = self._find(child, title, pid)  # window-manager frames hold the client windows
            if found:
                return found
        return None

    def _children(self, window: int) -> list[int]:
        root, parent, count = _Window(), _Window(), ctypes.c_uint()
        children = ctypes.POINTER(_Window)()
        if not self.lib.XQueryTree(self.display, window, ctypes.byref(root), ctypes.byref(parent),
                                   ctypes.byref(children), ctypes.byref(count)):
            return []  # the window vanished meanwhile
        try:
            return [children[k] for k in range(count.value)]
        finally:
            if children:
                self.lib.XFree(children)

    def _property(self, window: int, name: str) -> tuple[int, bytes] | None:
        """(format, raw bytes) of a window property, or None if it is not set."""
        atom = self.lib.XInternAtom(self.display, name.encode(), 1)  # 1: only if it exists
        if not atom:
            return None
        kind, fmt, count, after = _Atom(), ctypes.c_int(), ctypes.c_ulong(), ctypes.c_ulong()
        data = ctypes.POINTER(ctypes.c_ubyte)()
        status = self.lib.XGetWindowProperty(self.display, window, atom, 0, 1024, 0, 0, ctypes.byref(kind),
                                             ctypes.byref(fmt), ctypes.byref(count), ctypes.byref(after),
                                             ctypes.byref(data))
        if status != 0 or not data:
            return None
        try:
            # Xlib hands 32-bit items back as C longs
            width = {8: 1, 16: ctypes.sizeof(ctypes.c_short), 32: ctypes.sizeof(ctypes.c_long)}[fmt.value]
            return fmt.value, ctypes.string_at(data, count.value * width)
        finally:
            self.lib.XFree(data)

    def _cardinals(self, window: int, name: str) -> list[int]:
        prop = self._property(window, name)
        if prop is None or prop[0] != 32:
            return []
        raw = prop[1]
        return list((ctypes.c_long * (len(raw) // ctypes.sizeof(ctypes.c_long))).from_buffer_copy(raw))

    def _name(self, window: int) -> str | None:
        for name, encoding in (("_NET_WM_NAME", "utf-8"), ("WM_NAME", "latin-1")):
            prop = self._property(window, name)
            if prop is not None and prop[0] == 8:
                return prop[1].decode(encoding, errors="replace")
        return None

    @contextlib.contextmanager
    def _errors_ignored(self):
        previous = self.lib.XSetErrorHandler(ctypes.cast(_ignore_errors, ctypes.c_void_p))
        try:
            yield
        finally:
            self.lib.XSetErrorHandler(previous)
