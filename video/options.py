"""What p2p-live, p2p-video and p2p-translate share: model options, and errors as one-line messages."""
from __future__ import annotations

from pathlib import Path

import click

from p2p.runtime.backends import BACKENDS
from p2p.runtime.cli_errors import user_errors
from p2p.runtime.masks import NOISE_MODES
from p2p.runtime.translator import FIT_MODES, Translator, parse_size


def model_options(noise_default: str):
    """--backend --noise --seed --fit --size --threads, passed to the command as keyword arguments."""
    def decorate(f):
        options = [
            click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
                         help="auto: TensorRT for a .engine; for a .onnx, ONNX Runtime's TensorRT, CUDA or CPU "
                              "provider, the best one installed."),
            click.option("--noise", type=click.Choice(NOISE_MODES), default=noise_default, show_default=True,
                         help="Dropout noise: per-frame (the paper), fixed (one draw per session: no flicker), "
                              "off (deterministic)."),
            click.option("--seed", type=int, default=None, help="Seed for the noise (default: random, printed)."),
            click.option("--fit", type=click.Choice(FIT_MODES), default="resize", show_default=True,
                         help="resize: stretch frames to the model size; pad: keep the aspect ratio and pad."),
            click.option("--size", default=None, metavar="N|WxH",
                         help="Size the model runs at (default: its training size). Larger = more detail, slower."),
            click.option("--threads", type=click.IntRange(1, 256), default=None,
                         help="CPU threads for ONNX Runtime (default: one per physical core)."),
        ]
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


def temporal_option(f):
    """--temporal STRENGTH, passed to Translator(temporal=...)."""
    return click.option("--temporal", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                        metavar="STRENGTH",
                        help="Temporal stabilisation, 0 (off) to 1: blend each output with the previous one "
                             "warped along the input's optical flow, where that flow can be trusted.")(f)


def open_translator(model: Path, *, backend: str, noise: str, seed, fit: str, size, threads, **extra) -> Translator:
    with user_errors():
        try:
            size = parse_size(size)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--size") from None
        options = {"threads": threads} if threads else {}
        return Translator(model, backend=backend, noise=noise, seed=seed, fit=fit, size=size, **options, **extra)
