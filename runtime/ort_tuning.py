"""ONNX Runtime CPU session settings chosen per model and machine: measured once, then remembered.

Which settings are fastest depends on the model and the host: a compact student at 256² can
run faster on one thread than on two (its layers are too small to split), a CPU with other
work on it prefers fewer threads, and fixing the frame size lets ONNX Runtime plan memory and
fold shape arithmetic for that size. So the first time a model is opened on the CPU provider
(without ``--threads``), a short tuning pass times a few candidate settings on a frame of the
size the translator will run, interleaved against the best so far, and keeps a candidate only
when it is clearly faster (MIN_GAIN): the defaults stand unless something beats them.

The result is stored in ``~/.cache/p2p/ort-cpu-settings.json``, keyed by the model file's
SHA-256, the machine (CPU model, its vector extensions, logical CPUs, onnxruntime version) and
the frame shape, so it is measured once per model and machine. ``P2P_ORT_TUNE`` decides:
``auto`` (default: use the stored settings, tune when there are none), ``again`` (measure
again now and store), ``off`` (ONNX Runtime's defaults, nothing stored).
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import contract
from .files import write_atomic
from .spec import ModelSpec

ENV = "P2P_ORT_TUNE"
MODES = ("auto", "again", "off")
MIN_GAIN = 0.05        # a candidate must be ≥ 5% faster than the best so far to replace it
TIME_BUDGET_S = 4.0    # stop trying candidates after this much timing (a large model gets fewer runs)
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "sve")


@dataclass(frozen=True)
class SessionSettings:
    """What a CPU session is created with. ``shape``: (N, H, W) to specialise the session for (ONNX Runtime
    then plans for that exact size; other sizes go to a general session), or None."""
    threads: int                     # 0: ONNX Runtime's default (one per physical core)
    optimization: str = "all"
    arena: bool = True
    shape: tuple[int, int, int] | None = None

    def describe(self) -> str:
        threads = f"{self.threads} thread{'s' if self.threads > 1 else ''}" if self.threads else "default threads"
        parts = [threads, f"optimisation {self.optimization}"]
        if not self.arena:
            parts.append("no memory arena")
        if self.shape:
            parts.append("planned for {}x{}".format(self.shape[2], self.shape[1]))
        return ", ".join(parts)


def mode() -> str:
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    return value if value in MODES else "auto"


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "p2p" / "ort-cpu-settings.json"


def cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def machine_key(ort_version: str) -> str:
    """What makes another machine another machine, for these settings."""
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not name:
                name = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        import platform
        name = platform.processor() or platform.machine()
    isa = "+".join(f for f in ISA_FLAGS if f in flags) or "-"
    return f"{name} | {isa} | {cpu_threads()} cpus | onnxruntime {ort_version}"


def dimension_values(spec: ModelSpec, shape: tuple[int, int, int]) -> dict[str, int]:
    """The named dimensions of a p2p ONNX file (see onnx_export) for frames of ``shape`` (N, H, W)."""
    n, h, w = shape
    values = {"batch": n, "height": h, "width": w}
    for k in range(spec.dropout_blocks):
        s = contract.mask_scale(spec, k)
        values.update({f"height/{s}": h // s, f"width/{s}": w // s})
    return values


def candidates(default: SessionSettings, shape: tuple[int, int, int] | None) -> list[SessionSettings]:
    """One change at a time from the default: each other thread count, the extended level (no blocked
    layout), no memory arena, and the session planned for the exact frame shape."""
    out = [dataclasses.replace(default, threads=t) for t in sorted({1, max(1, cpu_threads() // 2), cpu_threads()})
           if t != default.threads]
    out += [dataclasses.replace(default, optimization="extended"), dataclasses.replace(default, arena=False)]
    if shape is not None:
        out.append(dataclasses.replace(default, shape=shape))
    return out


def tune(make_run: Callable[[SessionSettings], Callable[[], None]], default: SessionSettings,
         shape: tuple[int, int, int] | None, *, budget_s: float = TIME_BUDGET_S,
         clock=time.perf_counter) -> tuple[SessionSettings, dict]:
    """The fastest settings found by trying each candidate against the best so far, interleaved.

    ``make_run(settings)`` returns a function that runs one frame with those settings. Returns the
    settings and what was measured ({description: ms}). A change is kept only when it is ≥ MIN_GAIN
    faster; the other dimensions then start from it (coordinate descent over a handful of sessions).
    """
    best, best_run = default, make_run(default)
    measured: dict[str, float] = {}
    start = clock()
    for candidate in candidates(default, shape):
        if clock() - start > budget_s:
            break
        candidate = dataclasses.replace(best, **{f.name: getattr(candidate, f.name) for f in
                                                  dataclasses.fields(candidate)
                                                  if getattr(candidate, f.name) != getattr(default, f.name)})
        if candidate == best:
            continue
        run = make_run(candidate)
        ms_best, ms_cand = _race(best_run, run, clock, budget_s / 4)
        measured[best.describe()] = ms_best
        measured[candidate.describe()] = ms_cand
        if ms_cand < (1 - MIN_GAIN) * ms_best:
            best, best_run = candidate, run
    return best, measured


def _race(a, b, clock, budget_s: float, min_rounds: int = 5, max_rounds: int = 25) -> tuple[float, float]:
    """Median ms of a and b, run alternately (a warm-up run each, untimed), until the budget or max_rounds."""
    a(), b()
    times: tuple[list, list] = ([], [])
    start = clock()
    for i in range(max_rounds):
        for fn, out in ((a, times[0]), (b, times[1])):
            t = clock()
            fn()
            out.append((clock() - t) * 1e3)
        if i + 1 >= min_rounds and clock() - start > budget_s:
            break
    return statistics.median(times[0]), statistics.median(times[1])


# --- the store --------------------------------------------------------------------------------------
def _key(model_sha: str, machine: str, shape: tuple[int, int, int] | None) -> str:
    return f"{model_sha} | {machine} | {'x'.join(map(str, shape)) if shape else 'any'}"


def load(model_sha: str, machine: str, shape) -> SessionSettings | None:
    try:
        entry = json.loads(cache_file().read_text())[_key(model_sha, machine, shape)]["settings"]
        shape_value = entry.get("shape")
        return SessionSettings(int(entry["threads"]), str(entry["optimization"]), bool(entry["arena"]),
                               tuple(shape_value) if shape_value else None)
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: tune again
        return None


def store(model_sha: str, machine: str, shape, settings: SessionSettings, measured: dict) -> None:
    path = cache_file()
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, dict):
            entries = {}
    except (OSError, ValueError):
        entries = {}
    entries[_key(model_sha, machine, shape)] = {
        "settings": dataclasses.asdict(settings), "measured_ms": measured,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average": round(os.getloadavg()[0], 2)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(entries, indent=1, sort_keys=True) + "\n").encode())
    except OSError:  # a read-only home: the settings still apply to this session
        pass
