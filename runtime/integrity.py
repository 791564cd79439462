"""Checksums that every loader of an exported model checks, with nothing but hashlib (no onnx, no torch).

- ``model.onnx``: p2p-export appends one ``metadata_props`` entry, ``p2p.sha256``, as the very
  last bytes of the serialised ModelProto. Protobuf merges a repeated field met at the end of
  a message, so ONNX Runtime and the onnx package read it as ordinary metadata; its value is
  the SHA-256 of every byte before it and their count. A verifier reads the file, checks the
  fixed-size trailer and hashes the rest.
- ``model.engine``: ``model.engine.json`` records the engine's SHA-256 (``engine_sha256``) and
  its own (``meta_sha256``, over its other fields), checked when the engine is loaded.

Files from before checksums (or re-saved by another tool, which moves the entry) load
unchecked; a file whose bytes no longer match is refused in one line.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os

from .errors import UserError

ONNX_KEY = "p2p.sha256"
_HEX, _COUNT = 64, 12  # the value: 64 hex digits, ":", the byte count before the entry in 12 digits
_VALUE_LEN = _HEX + 1 + _COUNT


class CorruptArtifact(UserError, ValueError):
    """A model file whose bytes no longer match the checksum written with it."""


def _onnx_entry(value: str) -> bytes:
    """ModelProto field 14 (metadata_props), one StringStringEntryProto {1: key, 2: value}, serialised."""
    key, val = ONNX_KEY.encode(), value.encode()
    entry = b"\x0a" + bytes([len(key)]) + key + b"\x12" + bytes([len(val)]) + val
    return b"\x72" + bytes([len(entry)]) + entry  # all lengths < 128: one-byte varints


_ONNX_HEADER = _onnx_entry("0" * _VALUE_LEN)[:-_VALUE_LEN]
ONNX_TRAILER_LEN = len(_ONNX_HEADER) + _VALUE_LEN


def seal_onnx(data: bytes) -> bytes:
    """A serialised ModelProto (without a ``p2p.sha256`` entry) with its checksum entry appended."""
    return data + _onnx_entry(f"{hashlib.sha256(data).hexdigest()}:{len(data):0{_COUNT}d}")


def check_onnx_bytes(data, where: str) -> bool:
    """True if ``data`` carries a checksum and matches it, False if it carries none that applies;
    CorruptArtifact if it does not match."""
    trailer = data[-ONNX_TRAILER_LEN:]
    if len(data) <= ONNX_TRAILER_LEN or not trailer.startswith(_ONNX_HEADER):
        return False
    digest, _, count = trailer[len(_ONNX_HEADER):].decode("ascii", "replace").partition(":")
    size = len(data) - ONNX_TRAILER_LEN
    if not count.isdigit() or int(count) != size:
        return False  # another tool re-saved the model and the entry moved with it: not ours to judge
    with memoryview(data) as view, view[:size] as body:  # released before a memory map closes
        same = hashlib.sha256(body).hexdigest() == digest
    if not same:
        raise CorruptArtifact(f"{where} is corrupt: its bytes do not match the checksum p2p-export wrote into it "
                              "(a damaged disk or copy); export it again")
    return True


def check_onnx_file(path) -> bool:
    """``check_onnx_bytes`` on a file, memory-mapped (hashed where it lies, no copy)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size <= ONNX_TRAILER_LEN:
            return False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return check_onnx_bytes(data, str(path))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _meta_digest(meta: dict) -> str:
    rest = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode())


def seal_engine_meta(meta: dict, engine: bytes) -> dict:
    """``meta`` with the engine's SHA-256 and then its own added (written as model.engine.json)."""
    sealed = {**meta, "engine_sha256": sha256(engine)}
    sealed["meta_sha256"] = _meta_digest(sealed)
    return sealed


def check_engine_meta(meta: dict, where: str) -> None:
    """CorruptArtifact if the description's own checksum (when it has one) does not match its content."""
    if "meta_sha256" in meta and meta["meta_sha256"] != _meta_digest(meta):
        raise CorruptArtifact(f"{where} is corrupt: its content does not match the checksum written with it; "
                              "export the engine again")


def check_engine_bytes(expected: str | None, engine: bytes, where: str) -> bool:
    """True if the engine matches the SHA-256 its description recorded, False if none was recorded."""
    if not expected:
        return False
    if sha256(engine) != expected:
        raise CorruptArtifact(f"{where} is corrupt: its bytes do not match the SHA-256 in its .json (a damaged "
                              "disk or copy); build it again with p2p-export --trt")
    return True
