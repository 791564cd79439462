"""Shared test helpers. Real data lives in ../shared/data (read-only, never copied)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Two cores: keep each test process to one intra-op thread unless a test asks otherwise.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# No ONNX Runtime settings tuning on every model a test opens (seconds each, and a cache in ~):
# tests/test_compact.py tests the tuning itself.
os.environ.setdefault("P2P_ORT_TUNE", "off")


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip with the reason (CI always has it)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is absent (../shared beside the repo); CI provides it")
    return path


def one_line_error(result, code: int = 1) -> str:
    """A CLI failure the way users must see it: exit ``code`` (click: 1 for our errors, 2 for usage),
    one 'Error:' line, no traceback and no exception other than click's exit. Returns that line."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


def dropout_output_shapes(generator, x) -> list[tuple[int, ...]]:
    """Shapes of what each dropout layer of ``generator`` outputs for the input ``x``, in order."""
    from p2p.training.models import MaskDropout

    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
             for m in generator.modules() if isinstance(m, MaskDropout)]
    generator(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)
    yield
