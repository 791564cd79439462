"""Stopping a run cleanly: SIGINT (Ctrl-C) and SIGTERM (docker stop, Kubernetes, Slurm, torchrun) alike.

The first signal sets a flag that the training loop checks between steps: it finishes
the step, saves, says how to resume and exits with ``EXIT_STATUS`` (128 + the signal,
as shells report a process killed by it). A second signal stops at once (``StopNow``);
the last checkpoint on disk is intact either way, since every save is atomic.
"""
from __future__ import annotations

import ctypes
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopNow(KeyboardInterrupt):
    """A second stop signal: leave at once, without saving."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Installs the handlers (main thread only; elsewhere signals keep their handlers) until ``restore``."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def installed(self) -> bool:
        return bool(self._old)

    @property
    def status(self) -> int:
        return EXIT_STATUS.get(self.signum, 130)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise StopNow(signum)
        self.signum = signum

    def install(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread() and not self._old:
            self._old = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._old = {}

    def __enter__(self) -> "StopSignals":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``signum`` to this process when its parent dies (a no-op elsewhere).

    For the processes a launcher starts: killed with -9, the launcher cannot pass a
    signal on, so the kernel does.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    except (OSError, AttributeError):
        pass
