"""Atomic, checksummed snapshots of a hippocampal shard's vector store.

Snapshot file: ``magic | u32 header_len | JSON header | raw numpy bytes | sha256 of everything
before it``. No pickle anywhere: a snapshot can only ever produce plain numeric/bytes arrays.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from bus.runtime import open_private
from memory.episode_log import fsync_dir
from memory.store import StoreState

__all__ = ["CorruptSnapshot", "Snapshot"]

_SNAP_MAGIC = b"BBSNAP1\n"
_SNAP_HEADER_LEN = struct.Struct("<I")
_DIGEST = 32


class CorruptSnapshot(ValueError):
    """A snapshot file failed verification; the message names the file and the check."""


def _write_array(f: Any, arr: npt.NDArray[Any], hasher: Any) -> None:
    """Write an array's raw bytes (C order) and feed them to the checksum."""
    raw = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    mv = raw.data
    f.write(mv)
    hasher.update(mv)


class Snapshot:
    """Atomic, checksummed snapshot files of a :class:`StoreState`."""

    @staticmethod
    def write(path: str | os.PathLike[str], store_state: StoreState) -> Path:
        """Write ``store_state`` to ``path`` atomically.

        Written to a temporary file in the same directory, fsynced, renamed over ``path`` with
        ``os.replace`` and the directory fsynced, so a crash leaves either the old file or the
        complete new one, never a mix. The file is its owner's only (0600), from its first byte.

        Returns:
            The final path.
        """
        path = Path(path)
        entries: list[dict[str, Any]] = []
        offset = 0
        for name, arr in store_state.arrays.items():
            if arr.dtype.hasobject:
                raise ValueError(f"snapshot array {name!r} has object dtype, which cannot be stored")
            entries.append(
                {
                    "name": name,
                    "dtype": arr.dtype.str,
                    "shape": list(arr.shape),
                    "offset": offset,
                    "nbytes": arr.nbytes,
                }
            )
            offset += arr.nbytes
        header = orjson.dumps({"format": 1, "meta": store_state.meta, "arrays": entries})
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        hasher = hashlib.sha256()
        try:
            with os.fdopen(open_private(tmp), "wb") as f:  # owner-only from the start, as the file
                for part in (_SNAP_MAGIC, _SNAP_HEADER_LEN.pack(len(header)), header):
                    f.write(part)
                    hasher.update(part)
                for arr in store_state.arrays.values():
                    _write_array(f, arr, hasher)
                f.write(hasher.digest())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)
        return path

    @staticmethod
    def load(path: str | os.PathLike[str]) -> StoreState:
        """Read and verify a snapshot.

        Raises:
            CorruptSnapshot: If the file is truncated, has a bad magic, fails its sha256 or has
                an inconsistent header; the message names the file and the failed check.
            FileNotFoundError: If the file does not exist.
        """
        path = Path(path)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buf = bytearray(size)
            got = f.readinto(buf)
        if got != size:
            raise CorruptSnapshot(f"snapshot {path}: read {got} of {size} bytes")
        fixed = len(_SNAP_MAGIC) + _SNAP_HEADER_LEN.size + _DIGEST
        if size < fixed:
            raise CorruptSnapshot(f"snapshot {path}: only {size} bytes, too short to be a snapshot")
        if bytes(buf[: len(_SNAP_MAGIC)]) != _SNAP_MAGIC:
            raise CorruptSnapshot(f"snapshot {path}: bad magic {bytes(buf[:8])!r}")
        view = memoryview(buf)
        if hashlib.sha256(view[:-_DIGEST]).digest() != bytes(view[-_DIGEST:]):
            raise CorruptSnapshot(f"snapshot {path}: sha256 checksum mismatch (corrupt or truncated file)")
        (head_len,) = _SNAP_HEADER_LEN.unpack_from(view, len(_SNAP_MAGIC))
        head_start = len(_SNAP_MAGIC) + _SNAP_HEADER_LEN.size
        body_start = head_start + head_len
        body_len = size - _DIGEST - body_start
        if body_len < 0:
            raise CorruptSnapshot(f"snapshot {path}: header length {head_len} runs past the end")
        try:
            header = orjson.loads(view[head_start:body_start])
            meta = header["meta"]
            arrays: dict[str, npt.NDArray[Any]] = {}
            for e in header["arrays"]:
                dtype = np.dtype(e["dtype"])
                if dtype.hasobject:
                    raise ValueError(f"array {e['name']!r} has object dtype")
                shape = tuple(int(s) for s in e["shape"])
                off, nbytes = int(e["offset"]), int(e["nbytes"])
                if off < 0 or off + nbytes > body_len or nbytes != int(np.prod(shape)) * dtype.itemsize:
                    raise ValueError(f"array {e['name']!r} extent/shape inconsistent")
                # Views into the writable bytearray: no copy, and torch.from_numpy accepts them.
                arrays[str(e["name"])] = np.frombuffer(
                    buf, dtype=dtype, count=int(np.prod(shape)), offset=body_start + off
                ).reshape(shape)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CorruptSnapshot(f"snapshot {path}: malformed header: {exc}") from exc
        if not isinstance(meta, dict):
            raise CorruptSnapshot(f"snapshot {path}: header meta is not an object")
        return StoreState(meta=meta, arrays=arrays)
