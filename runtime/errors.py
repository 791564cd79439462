"""Error types shared by the runtime's modules, and turning exceptions into the one line a user reads."""
from __future__ import annotations


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (its type name if it has none), cut to ``limit``."""
    line = next((s for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
    return line.strip()[:limit]


class BackendUnavailable(RuntimeError):
    """The backend asked for is not installed or has no device here; the message says what to install."""
