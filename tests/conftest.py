"""Shared test helpers. Real data lives in ../shared/data (read-only, never copied)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Two cores: keep each test process to one intra-op thread unless a test asks otherwise.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip with the reason (CI always has it)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is absent (../shared beside the repo); CI provides it")
    return path


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)
    yield
