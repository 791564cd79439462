"""What every p2p command does with errors: one line for the user's, a traceback for bugs."""
from __future__ import annotations

import contextlib
import os

import click

from .errors import UserError, first_line

DEBUG_ENV = "P2P_DEBUG"  # P2P_DEBUG=1: full tracebacks for user errors too


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


@contextlib.contextmanager
def user_errors():
    """Inside a click command: a UserError becomes click's one-line ``Error: ...`` (exit 1).

    Any other exception is a bug in p2p and propagates with its traceback; with
    P2P_DEBUG=1 user errors keep theirs as well.
    """
    try:
        yield
    except UserError as exc:
        if debugging():
            raise
        raise click.ClickException(first_line(exc, limit=10_000)) from None
