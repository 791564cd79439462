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


# --- the fault tests' shared pieces (docs/promises.md) ----------------------------------------------
TINY = ["--size", "32", "--ngf", "4", "--ndf", "4", "--no-progress", "--sample-every", "1000"]  # seconds, one core


def invoke(command, *args):
    """A click command run in-process, its arguments given as anything str() turns into one."""
    from click.testing import CliRunner

    return CliRunner().invoke(command, [str(a) for a in args])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A p2p-train run with two saves: checkpoint.pt (iteration 4), checkpoint.prev.pt (2). Copy it to change it."""
    from p2p.training.cli import main

    out = tmp_path_factory.mktemp("tiny") / "run"
    r = invoke(main, "--out", out, *TINY, "--iters", "4", "--save-every", "2")
    assert r.exit_code == 0, r.output
    return out


# real small file systems, for the full-disk and read-only promises
def _mount_tmpfs(where: Path, size: str) -> None:
    import subprocess

    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:  # CI runs as root on the same machine kind, where this works
        pytest.skip(f"cannot mount a small tmpfs here (needs root and mount(2)): {r.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """small_disk(size) → a folder on a real tmpfs of that size (e.g. "1m"): writes past it fail with ENOSPC."""
    mounts = []

    def make(size: str, name: str = "disk") -> Path:
        where = tmp_path / name
        _mount_tmpfs(where, size)
        mounts.append(where)
        return where

    yield make
    import subprocess

    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def read_only(tmp_path):
    """read_only(fill) → a folder on a real read-only file system, holding what ``fill(folder)`` put there."""
    import subprocess

    mounts = []

    def make(fill=None, name: str = "ro") -> Path:
        where = tmp_path / name
        _mount_tmpfs(where, "64m")
        mounts.append(where)
        if fill:
            fill(where)
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        return where

    yield make
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) and its bytes: to show that nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0x01
    Path(path).write_bytes(bytes(data))


def tensor_data_offset(checkpoint: Path) -> int:
    """The offset of a byte in the middle of a checkpoint's largest tensor (its data in the zip file)."""
    import zipfile

    with zipfile.ZipFile(checkpoint) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(checkpoint, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    return info.header_offset + 30 + name_len + extra_len + info.file_size // 2
