"""onnxruntime-web, pinned: fetched once from the npm registry, verified, and kept in a cache folder.

The page loads onnxruntime-web from its own folder, never from a CDN. The files come from the
npm package's tarball: with ``npm pack`` where npm is installed (it honours the user's registry
and proxy settings), otherwise with a plain HTTPS GET of the registry's tarball address. Either
way the tarball must match the sha512 the registry published for this version (``INTEGRITY``),
and only the files the page needs are kept (``FILES``, ~44 MB of the 35 MB tarball's 145 MB).
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from importlib import resources
from pathlib import Path

from ..cli_options import runnable
from ..errors import UserError

VERSION = "1.31.1"
PACKAGE = f"onnxruntime-web@{VERSION}"
TARBALL_URL = f"https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{VERSION}.tgz"
# the registry's dist.integrity for this version (npm view onnxruntime-web@1.31.1 dist.integrity)
INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="

# What the page loads: the WebAssembly build (every browser; SIMD, threads when cross-origin
# isolated) and the WebGPU build (loaded only where the browser offers a WebGPU adapter).
WASM_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
WEBGPU_FILES = ("ort.webgpu.min.js", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
FILES = WASM_FILES + WEBGPU_FILES
# The npm package ships no licence file; its sources say "Licensed under the MIT License" (Microsoft).
# This is ONNX Runtime's LICENSE, shipped as package data and copied beside the files.
LICENSE = "LICENSE-onnxruntime.txt"


class RuntimeMissing(UserError, FileNotFoundError):
    """onnxruntime-web's files are not in the cache yet; the message says the command that fetches them."""


class FetchError(UserError, RuntimeError):
    """onnxruntime-web could not be downloaded, or what came did not match the pinned checksum."""


def cache_dir() -> Path:
    """Where the kept files live: $P2P_WEB_RUNTIME if set, else ~/.cache/p2p/onnxruntime-web-VERSION."""
    if os.environ.get("P2P_WEB_RUNTIME"):
        return Path(os.environ["P2P_WEB_RUNTIME"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "p2p" / f"onnxruntime-web-{VERSION}"


def license_text() -> str:
    return resources.files(__package__).joinpath("page").joinpath(LICENSE).read_text(encoding="utf-8")


def runtime_files(folder: Path | None = None) -> Path:
    """The folder holding every file of ``FILES``; RuntimeMissing (with the fix) when any is absent."""
    folder = Path(folder) if folder is not None else cache_dir()
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeMissing(f"onnxruntime-web {VERSION} is not installed in {folder} (missing {missing[0]}): "
                             f"run `{runnable('p2p-web')} --fetch-runtime` once (./install.sh does it; it downloads "
                             f"{PACKAGE} from the npm registry)")
    return folder


def check_integrity(data: bytes, integrity: str = INTEGRITY) -> None:
    algorithm, _, expected = integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if digest != expected:
        raise FetchError(f"{PACKAGE}: the downloaded tarball does not match the pinned {algorithm} "
                         f"({digest[:16]}... instead of {expected[:16]}...): not installed")


def _download_with_npm(workdir: Path) -> bytes | None:
    npm = shutil.which("npm")
    if npm is None:
        return None
    result = subprocess.run([npm, "pack", PACKAGE, "--silent", "--pack-destination", str(workdir)],
                            capture_output=True, text=True, timeout=600)
    tarballs = list(workdir.glob("*.tgz"))
    if result.returncode != 0 or len(tarballs) != 1:
        return None  # plain HTTPS below says what went wrong, if anything does
    return tarballs[0].read_bytes()


def _download_plain(url: str = TARBALL_URL) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            return response.read()
    except OSError as exc:
        raise FetchError(f"cannot download {url}: {exc}") from None


def extract(tarball: bytes, folder: Path) -> None:
    """Keep ``FILES`` (and the licence) from the npm tarball in ``folder``, written whole or not at all."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            for name in FILES:
                member = tar.getmember(f"package/dist/{name}")  # read by name: no path from the archive is used
                (tmp / name).write_bytes(tar.extractfile(member).read())
        (tmp / LICENSE).write_text(license_text(), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fetch(folder: Path | None = None, log=print) -> Path:
    """Download, verify and keep onnxruntime-web's files (nothing to do when they are there)."""
    folder = Path(folder) if folder is not None else cache_dir()
    try:
        return runtime_files(folder)
    except RuntimeMissing:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        data = _download_with_npm(Path(tmp))
        how = "npm pack"
        if data is None:
            data, how = _download_plain(), "HTTPS"
    check_integrity(data)
    extract(data, folder)
    log(f"onnxruntime-web {VERSION} ({how}, sha512 verified) → {folder}")
    return runtime_files(folder)
