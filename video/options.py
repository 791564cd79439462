"""What p2p-live, p2p-video and p2p-translate share: the model options, and opening the Translator."""
from __future__ import annotations

from pathlib import Path

import click

from p2p.runtime import cli_options as o
from p2p.runtime.cli_errors import user_errors
from p2p.runtime.translator import Translator

__all__ = ["model_options", "open_translator", "user_errors"]


def model_options(noise_default: str = o.DEFAULT_NOISE):
    """--backend --noise --seed --fit --size --threads, passed to the command as keyword arguments."""
    def decorate(f):
        options = [
            o.backend_option(),
            o.noise_option(default=noise_default),
            o.seed_option("Seeds the dropout noise (printed at the start)."),
            o.fit_option(),
            o.size_option("Size the model runs at (default: its training size); larger = more detail, slower:"),
            click.option("--threads", type=click.IntRange(1, 256), default=None,
                         help="CPU threads for ONNX Runtime (default: one per physical core)."),
        ]
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


def open_translator(model: Path, *, backend: str, noise: str, seed, fit: str, size, threads, **extra) -> Translator:
    with user_errors():
        options = {"threads": threads} if threads else {}
        return Translator(model, backend=backend, noise=noise, seed=seed, fit=fit, size=size, **options, **extra)
