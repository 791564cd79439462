"""The option vocabulary every p2p command shares: one name, one grammar, one help text each.

A command takes the shared options from here (``output_option``, ``size_option``, ``backend_option``,
``seed_option``, ``noise_option``, ``fit_option``, ``device_option``, ``temporal_option``), so that
``--size 512x288`` or ``--backend ort-cpu`` mean the same in p2p-train, p2p-export, p2p-live,
p2p-video, p2p-translate, p2p-eval and p2p-web. Defaults are passed in by the command from its one
source (training: TrainConfig; the runtime: the constants below), never written twice.

Torch-free (runtime/ goes on a Jetson): click only.
"""
from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import click

DEFAULT_SEED = 0  # every command's --seed default: runs and translations repeat unless told otherwise
DEFAULT_NOISE = "fixed"  # the runtime's: one draw of the dropout noise per session, no flicker
FIT_MODES = ("resize", "pad")
DEFAULT_FIT = "resize"
DEFAULT_DEVICE = "auto"
DEFAULT_TEMPORAL = 0.0

SIZE_METAVAR = "N|WxH"
_SIZE = re.compile(r"\s*(\d+)\s*(?:[x×X]\s*(\d+)\s*)?")


def parse_size(text) -> tuple[int, int]:
    """``--size``: "256" (a square, 256x256) or "512x288" (width x height) → (width, height).

    A ValueError says what was wrong; an int or a (width, height) pair passes through.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        values = (text, text)
    elif isinstance(text, tuple) and len(text) == 2:
        values = tuple(int(v) for v in text)
    else:
        m = _SIZE.fullmatch(str(text))
        if not m:
            raise ValueError(f"size {text!r} is not N or WxH (e.g. 256 or 512x288)")
        values = (int(m.group(1)), int(m.group(2) or m.group(1)))
    if min(values) <= 0:
        raise ValueError(f"size {text!r} is not N or WxH with positive numbers (e.g. 256 or 512x288)")
    return values


class SizeType(click.ParamType):
    """N or WxH → (width, height); a bad value is click's usage error (exit 2)."""
    name = "size"

    def convert(self, value, param, ctx):
        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)

    def get_metavar(self, param, ctx=None):
        return SIZE_METAVAR


class SizeListType(SizeType):
    """WxH[,WxH...] (each item in --size's grammar) → [(width, height), ...]."""
    name = "sizes"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        return [SizeType.convert(self, part, param, ctx) for part in str(value).split(",")]

    def get_metavar(self, param, ctx=None):
        return "WxH[,WxH...]"


class DeviceType(click.ParamType):
    """auto, cpu, cuda or cuda:N (the training device)."""
    name = "device"

    def convert(self, value, param, ctx):
        if re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(value)):
            return str(value)
        self.fail(f"{value!r} is not auto, cpu, cuda or cuda:N", param, ctx)

    def get_metavar(self, param, ctx=None):
        return "auto|cpu|cuda[:N]"


SIZE = SizeType()
SIZES = SizeListType()
DEVICE = DeviceType()
TEMPORAL = click.FloatRange(0, 1)


def output_option(help: str, *, default=None, required: bool = False, file_okay: bool = True,
                  dir_okay: bool = True, old: tuple[str, ...] = ()):
    """-o/--out PATH: where a command writes its result. ``old``: earlier spellings, accepted but not shown."""
    kind = click.Path(path_type=Path, file_okay=file_okay, dir_okay=dir_okay)

    def decorate(f):
        for name in old:
            f = click.option(name, _alias_key("out", name), type=kind, default=None, hidden=True,
                             help=f"Old spelling of --out ({help})")(f)
        return click.option("-o", "--out", type=kind, default=default, required=required and not old,
                            show_default=default is not None, help=help)(f)
    return decorate


def size_option(help: str, *, default=None):
    """--size N|WxH → (width, height) (None: the default the command describes)."""
    shown = None if default is None else f"{default[0]}x{default[1]}" if isinstance(default, tuple) else default
    return click.option("--size", type=SIZE, default=default, show_default=shown is not None and str(shown),
                        help=f"{help} N (a square) or WxH (width x height).")


def backend_option(help: str = "", *, default: str = "auto"):
    """--backend: one of the runtime's backends (a typo is refused with the list)."""
    from .backends import BACKENDS  # the list lives with the backends; imported late: onnxruntime is not needed

    return click.option("--backend", type=click.Choice(BACKENDS), default=default, show_default=True,
                        help=help or "auto: TensorRT for a .engine; for a .onnx, ONNX Runtime's TensorRT, CUDA or "
                                     "CPU provider, the best one installed.")


def seed_option(help: str = "Seeds the dropout noise.", *,
                default: int = DEFAULT_SEED):
    return click.option("--seed", type=int, default=default, show_default=True, help=help)


def noise_option(*, default: str = DEFAULT_NOISE, help: str = ""):
    """--noise: per-frame (the paper's test-time dropout), fixed, off."""
    from .masks import NOISE_MODES

    return click.option("--noise", type=click.Choice(NOISE_MODES), default=default, show_default=True,
                        help=help or "Dropout noise: per-frame (the paper's), fixed (one draw per session: no "
                                     "flicker), off (deterministic).")


def fit_option(*, default: str = DEFAULT_FIT):
    return click.option("--fit", type=click.Choice(FIT_MODES), default=default, show_default=True,
                        help="resize: stretch frames to the model size; pad: keep the aspect ratio and pad.")


def device_option(*, default: str = DEFAULT_DEVICE, help: str = "Where to compute: auto, cpu, cuda or cuda:N."):
    return click.option("--device", type=DEVICE, default=default, show_default=True, help=help)


def temporal_option(*, default=DEFAULT_TEMPORAL, multiple: bool = False,
                    help: str = "Temporal stabilisation, 0 (off) to 1: blend each output with the previous one "
                                "warped along the input's optical flow, where that flow can be trusted."):
    return click.option("--temporal", type=TEMPORAL, default=() if multiple else default, multiple=multiple,
                        show_default=not multiple, metavar="STRENGTH", help=help)


def resolve_aliases(f):
    """Put the values of hidden old spellings under their option's name (both given: a usage error).

    Goes right below ``@click.command``, above the options.
    """
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        for key in [k for k in kwargs if k.startswith("alias__")]:
            value = kwargs.pop(key)
            target, old = key[len("alias__"):].split("__", 1)
            if value is None:
                continue
            if kwargs.get(target) not in (None, ()):
                raise click.UsageError(f"--{old.replace('_', '-')} is the old spelling of "
                                       f"--{target.replace('_', '-')}: give one of them")
            kwargs[target] = value
        return f(*args, **kwargs)
    return wrapper


def _alias_key(target: str, old: str) -> str:
    return f"alias__{target}__{old.lstrip('-').replace('-', '_')}"


def runnable(name: str, argv0: str | None = None) -> str:
    """How to call the p2p command ``name`` so that a suggested command runs as printed.

    The way this command was called: ``.venv/bin/p2p-train`` suggests ``.venv/bin/p2p-export``; a bare
    ``p2p-train`` (on PATH) suggests ``p2p-export``. Called some other way (python -m, a test), the
    command on PATH if there is one, else the script beside this Python.
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    head, tail = os.path.split(argv0)
    if tail.startswith("p2p-"):
        return shlex.quote(os.path.join(head, name) if head else name)
    if shutil.which(name):
        return name
    sibling = Path(sys.executable).with_name(name)
    if sibling.exists():
        try:
            return shlex.quote(os.path.relpath(sibling))
        except ValueError:  # another drive (Windows)
            return shlex.quote(str(sibling))
    return name
