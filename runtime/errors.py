"""Error types shared by p2p's modules, and turning exceptions into the one line a user reads.

Every error p2p raises on purpose (a bad file, flag or environment: something the user
can fix) derives from ``UserError``; the commands show those as one line. Anything else
is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message says what was wrong and what to do."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (its type name if it has none), cut to ``limit``."""
    line = next((s for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
    return line.strip()[:limit]


class BackendUnavailable(UserError, RuntimeError):
    """The backend asked for is not installed or has no device here; the message says what to install."""


class OutputError(UserError, OSError):
    """A result that cannot be written (missing folder, no permission, disk full)."""
