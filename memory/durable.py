"""Crash-safe persistence for one hippocampal shard: an append-only log plus atomic snapshots.

Durability contract: an episode is acknowledged only after :meth:`ShardPersistence.log_add`
returned, which means its log record was fsynced. A crash (kill -9, power loss) can then only
tear the record being written when it happened; replay stops at the first frame that fails its
length or CRC check, so that unacknowledged tail is dropped and everything before it survives.

On-disk layout of a shard directory::

    log-<first seq, 20 digits>.bin    log segments; a checkpoint starts a new one
    snap-<last seq, 20 digits>.snap   snapshots; the newest ``keep_snapshots`` are kept

Log frame: ``[u32 magic<<24 | payload_len][u32 crc32(word0 + payload)][payload]`` with payload
``[u64 seq][u8 kind][data]`` (all little endian). Snapshot: ``magic | u32 header_len | JSON
header | raw numpy bytes | sha256 of everything before it``. No pickle anywhere: a snapshot can
only ever produce plain numeric/bytes arrays.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson
import structlog

from memory.episodes import Episode
from memory.store import StoreFull, StoreState, VectorStore

__all__ = [
    "KIND_ADD",
    "KIND_REMOVE",
    "CorruptSnapshot",
    "EpisodeLog",
    "LogRecord",
    "LogReport",
    "RecoveryReport",
    "ShardPersistence",
    "Snapshot",
]

log = structlog.get_logger("memory.durable")

_FRAME = struct.Struct("<II")
_LOG_MAGIC = 0xB5
_MAX_PAYLOAD = (1 << 24) - 1  # the length shares its u32 with the magic byte
_REC_HEAD = struct.Struct("<QB")

_SNAP_MAGIC = b"BBSNAP1\n"
_SNAP_HEADER_LEN = struct.Struct("<I")
_DIGEST = 32

KIND_ADD = 1
"""Log record kind: ``data`` is one :meth:`Episode.to_bytes`."""
KIND_REMOVE = 2
"""Log record kind: ``data`` is little-endian int64 episode ids (eviction, pruning, removal)."""


# fdatasync skips the inode timestamps but still flushes the size an append changed.
_datasync = getattr(os, "fdatasync", os.fsync)


def _fsync_dir(directory: Path) -> None:
    """Make a create/rename/unlink in ``directory`` durable (the entry lives in the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- log


class LogRecord(NamedTuple):
    """One log entry: a sequence number, a kind tag and opaque bytes."""

    seq: int
    kind: int
    data: bytes


@dataclass(frozen=True, slots=True)
class LogReport:
    """Outcome of reading a log file.

    Attributes:
        records_ok: Records read intact before the first bad frame (or the end).
        bytes_dropped: Bytes after the last intact record (0 for a clean log).
        reason: Why reading stopped early, or None for a clean end of file.
        valid_bytes: Length of the intact prefix; :meth:`EpisodeLog.repair` truncates to it.
    """

    records_ok: int
    bytes_dropped: int
    reason: str | None
    valid_bytes: int = 0


def encode_record(record: LogRecord) -> bytes:
    """Frame one record (exposed for tests that forge corrupt logs)."""
    payload = _REC_HEAD.pack(record.seq, record.kind) + record.data
    if len(payload) > _MAX_PAYLOAD:
        raise ValueError(f"log record seq={record.seq} is {len(payload)} bytes, limit {_MAX_PAYLOAD}")
    word0 = (_LOG_MAGIC << 24) | len(payload)
    crc = zlib.crc32(payload, zlib.crc32(struct.pack("<I", word0)))
    return _FRAME.pack(word0, crc) + payload


class EpisodeLog:
    """Append-only file of CRC-framed records with group commit.

    Not thread-safe; one writer per file (the shard actor).

    Args:
        path: The log file; created on first append.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.last_report: LogReport | None = None
        self._fd: int | None = None
        self._verified = False  # the file is known to end on a record boundary

    def __enter__(self) -> EpisodeLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the append handle (reading needs none)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def size(self) -> int:
        """Current file size in bytes (0 if the file does not exist)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, records: Iterable[LogRecord], sync: bool = True) -> int:
        """Append records with one write and (if ``sync``) one fsync for the whole batch.

        The first append on a file that was not verified runs :meth:`repair`, because records
        written after a torn tail would be unreachable on replay.

        Returns:
            The number of bytes appended.

        Raises:
            OSError: If writing or syncing fails; a partially written batch is truncated away
                first, so the log still ends on a record boundary.
        """
        buf = b"".join(encode_record(r) for r in records)
        if not buf:
            return 0
        if not self._verified:
            self.repair()
        fd = self._open_for_append()
        start = os.fstat(fd).st_size
        try:
            view = memoryview(buf)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if sync:
                _datasync(fd)
        except BaseException:
            # Keep the file on a record boundary so the next batch is reachable.
            try:
                os.ftruncate(fd, start)
            except OSError:
                self._verified = False
            raise
        return len(buf)

    def create(self) -> None:
        """Create the file (durably) if it does not exist; an empty file needs no verification."""
        self._open_for_append()
        if self.size() == 0:
            self._verified = True

    def _open_for_append(self) -> int:
        if self._fd is None:
            existed = self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if not existed:
                _fsync_dir(self.path.parent)
        return self._fd

    def replay(self) -> Generator[LogRecord, None, LogReport]:
        """Yield intact records in order, stopping at a truncated or corrupt frame.

        Never raises on bad data: when the generator finishes, :attr:`last_report` (also the
        generator's return value) says how many records were read and what was dropped.
        """
        ok = 0
        good_end = 0
        reason: str | None = None
        try:
            f = open(self.path, "rb")  # closed in the finally below; a with-block cannot span yields cleanly
        except FileNotFoundError:
            self.last_report = LogReport(0, 0, None, 0)
            return self.last_report
        try:
            size = os.fstat(f.fileno()).st_size
            while True:
                head = f.read(_FRAME.size)
                if not head:
                    break
                if len(head) < _FRAME.size:
                    reason = f"truncated frame header at offset {good_end}"
                    break
                word0, crc = _FRAME.unpack(head)
                if word0 >> 24 != _LOG_MAGIC:
                    reason = f"bad frame magic 0x{word0 >> 24:02x} at offset {good_end}"
                    break
                length = word0 & _MAX_PAYLOAD
                payload = f.read(length)
                if len(payload) < length:
                    reason = f"truncated record at offset {good_end}: {len(payload)} of {length} bytes"
                    break
                if zlib.crc32(payload, zlib.crc32(head[:4])) != crc:
                    reason = f"crc mismatch in record at offset {good_end}"
                    break
                if length < _REC_HEAD.size:
                    reason = f"record at offset {good_end} too short for its header ({length} bytes)"
                    break
                seq, kind = _REC_HEAD.unpack_from(payload, 0)
                good_end += _FRAME.size + length
                ok += 1
                yield LogRecord(seq, kind, payload[_REC_HEAD.size :])
        finally:
            f.close()
        dropped = size - good_end
        if reason is None and dropped:
            reason = f"file shrank or grew while reading; {dropped} bytes after offset {good_end}"
        self.last_report = LogReport(ok, dropped, reason, good_end)
        if reason is not None:
            log.warning(
                "memory.log_truncated",
                path=str(self.path),
                bytes_dropped=dropped,
                reason=reason,
                records_ok=ok,
            )
        else:
            self._verified = True
        return self.last_report

    def scan(self) -> LogReport:
        """Read the whole log without keeping records and return the report."""
        for _ in self.replay():
            pass
        assert self.last_report is not None
        return self.last_report

    def repair(self) -> LogReport:
        """Truncate a torn or corrupt tail so appends continue on a record boundary.

        Returns:
            The report of the scan that found the bad tail (``bytes_dropped`` were removed).
        """
        report = self.scan()
        if report.bytes_dropped:
            with open(self.path, "r+b") as f:
                f.truncate(report.valid_bytes)
                f.flush()
                os.fsync(f.fileno())
            log.warning(
                "memory.log_repaired",
                path=str(self.path),
                bytes_dropped=report.bytes_dropped,
                records_ok=report.records_ok,
            )
        self._verified = True
        return report


# ---------------------------------------------------------------------------- snapshots


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
        complete new one, never a mix.

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
            with open(tmp, "wb") as f:
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
        _fsync_dir(path.parent)
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


# ---------------------------------------------------------------------------- shard


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What :meth:`ShardPersistence.open` found and did.

    Attributes:
        snapshot: ``"ok"`` newest snapshot loaded; ``"fallback"`` newest corrupt, an older one
            loaded; ``"corrupt"`` every snapshot corrupt, rebuilt from the log alone; ``"none"``
            no snapshot existed.
        snapshot_path: The snapshot loaded, if any.
        snapshot_seq: Last sequence number contained in that snapshot (0 if none).
        snapshot_errors: One message per corrupt snapshot.
        records_replayed: Log records applied on top of the snapshot.
        records_skipped: Intact log records already contained in the snapshot.
        bytes_dropped: Bytes of torn/corrupt log data dropped (summed over segments).
        log_errors: One message per log segment that ended in a bad frame.
        log_gap: Some sequence numbers are missing (lost segment data or snapshots); the store
            is missing the operations in between.
        last_seq: Highest sequence number now in the store; appends continue after it.
    """

    snapshot: Literal["ok", "fallback", "corrupt", "none"]
    snapshot_path: str | None
    snapshot_seq: int
    snapshot_errors: tuple[str, ...]
    records_replayed: int
    records_skipped: int
    bytes_dropped: int
    log_errors: tuple[str, ...]
    log_gap: bool
    last_seq: int

    @property
    def clean(self) -> bool:
        """True when nothing was corrupt, dropped or missing."""
        return (
            self.snapshot in ("ok", "none")
            and not self.bytes_dropped
            and not self.log_errors
            and not self.log_gap
        )


_SEG_PREFIX, _SEG_SUFFIX = "log-", ".bin"
_SNAP_PREFIX, _SNAP_SUFFIX = "snap-", ".snap"
_REPLAY_BATCH = 1024


def _numbered(directory: Path, prefix: str, suffix: str) -> list[tuple[int, Path]]:
    out: list[tuple[int, Path]] = []
    for p in directory.iterdir():
        name = p.name
        if name.startswith(prefix) and name.endswith(suffix):
            digits = name[len(prefix) : -len(suffix)]
            if digits.isdigit():
                out.append((int(digits), p))
    out.sort()
    return out


class ShardPersistence:
    """Log + snapshots for one shard directory.

    Usage by the shard actor (single-threaded)::

        store = VectorStore(dim, capacity)
        persistence = ShardPersistence(shard_dir)
        report = persistence.open(store)          # restore; inspect report
        eps = store.prepare(incoming)             # validate, normalize, assign ids
        persistence.log_add(eps)                  # durable (fsync) -> now it may be acked
        store.add(eps)
        persistence.log_remove(store.evict(n))    # log every removal too
        persistence.checkpoint(store)             # now and then: snapshot + new log segment

    Args:
        directory: The shard's directory (created if missing).
        keep_snapshots: Snapshots kept (>= 1); log segments are kept back to the oldest one, so
            a corrupt newest snapshot falls back to the previous one plus the log.
        sync: fsync every logged batch (turn off only for tests/benchmarks of the ceiling).
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, keep_snapshots: int = 2, sync: bool = True
    ) -> None:
        if keep_snapshots < 1:
            raise ValueError(f"keep_snapshots must be >= 1, got {keep_snapshots}")
        self.directory = Path(directory)
        self.keep_snapshots = keep_snapshots
        self.sync = sync
        self._log: EpisodeLog | None = None
        self._log_start = 0
        self._last_seq = 0

    @property
    def last_seq(self) -> int:
        """Sequence number of the last logged record."""
        return self._last_seq

    def open(self, store: VectorStore) -> RecoveryReport:
        """Restore ``store`` (which must be empty) from the newest valid snapshot plus the log.

        Never raises on corrupt data (it is reported and logged); raises ValueError when the
        data does not fit ``store`` (another dim, a smaller capacity).
        """
        if len(store) != 0:
            raise ValueError(
                f"ShardPersistence.open needs an empty store, this one holds {len(store)} episodes"
            )
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        for p in self.directory.glob(".*.tmp"):  # leftovers of snapshot writes cut short by a crash
            p.unlink(missing_ok=True)

        snaps = _numbered(self.directory, _SNAP_PREFIX, _SNAP_SUFFIX)
        status: Literal["ok", "fallback", "corrupt", "none"] = "none"
        snap_path: str | None = None
        snap_seq = 0
        snap_errors: list[str] = []
        for rank, (file_seq, path) in enumerate(reversed(snaps)):
            try:
                state = Snapshot.load(path)
            except CorruptSnapshot as exc:
                snap_errors.append(str(exc))
                log.warning("memory.snapshot_corrupt", path=str(path), error=str(exc))
                continue
            meta = dict(state.meta)
            snap_seq = int(meta.pop("log_seq", file_seq))
            store.load_state(StoreState(meta=meta, arrays=state.arrays))
            status = "ok" if rank == 0 else "fallback"
            snap_path = str(path)
            break
        else:
            if snaps:
                status = "corrupt"

        segments = _numbered(self.directory, _SEG_PREFIX, _SEG_SUFFIX)
        replayed = skipped = dropped = 0
        log_errors: list[str] = []
        gap = False
        expected = snap_seq + 1
        pending: list[Episode] = []

        def flush() -> None:
            if pending:
                try:
                    store.add(pending)
                except StoreFull as exc:
                    raise ValueError(f"shard log in {self.directory} does not fit the store: {exc}") from exc
                pending.clear()

        for i, (_start, path) in enumerate(segments):
            seg = EpisodeLog(path)
            for rec in seg.replay():
                if rec.seq < expected:
                    skipped += 1
                    continue
                if rec.seq > expected:
                    gap = True
                    log.warning("memory.log_gap", path=str(path), expected=expected, found=rec.seq)
                expected = rec.seq + 1
                replayed += 1
                if rec.kind == KIND_ADD:
                    try:
                        pending.append(Episode.from_bytes(rec.data))
                    except ValueError as exc:  # CRC-valid but undecodable: a writer bug, not a crash
                        log_errors.append(f"{path.name}: seq {rec.seq} undecodable: {exc}")
                        log.error("memory.log_bad_record", path=str(path), seq=rec.seq, error=str(exc))
                    if len(pending) >= _REPLAY_BATCH:
                        flush()
                elif rec.kind == KIND_REMOVE:
                    flush()
                    store.remove(np.frombuffer(rec.data, dtype="<i8").astype(np.int64))
                else:
                    log.warning("memory.log_unknown_kind", path=str(path), seq=rec.seq, kind=rec.kind)
            report = seg.last_report
            assert report is not None
            if report.reason is not None:
                dropped += report.bytes_dropped
                log_errors.append(f"{path.name}: {report.reason} ({report.bytes_dropped} bytes dropped)")
                if i == len(segments) - 1:
                    seg.repair()  # the active segment must end on a record boundary to append to it
            if i == len(segments) - 1:
                self._log_start, self._log = segments[-1][0], seg
        flush()
        self._last_seq = max(expected - 1, snap_seq)

        if self._log is not None:
            self._last_seq = max(self._last_seq, self._log_start - 1)
        else:
            self._start_segment(self._last_seq + 1)

        result = RecoveryReport(
            snapshot=status,
            snapshot_path=snap_path,
            snapshot_seq=snap_seq,
            snapshot_errors=tuple(snap_errors),
            records_replayed=replayed,
            records_skipped=skipped,
            bytes_dropped=dropped,
            log_errors=tuple(log_errors),
            log_gap=gap,
            last_seq=self._last_seq,
        )
        log_fn = log.info if result.clean else log.warning
        log_fn(
            "memory.shard_recovered",
            directory=str(self.directory),
            snapshot=status,
            snapshot_seq=snap_seq,
            records_replayed=replayed,
            bytes_dropped=dropped,
            log_gap=gap,
            episodes=len(store),
        )
        return result

    def log_add(self, episodes: Sequence[Episode]) -> int:
        """Durably log episodes (ids must be assigned, see :meth:`VectorStore.prepare`).

        One record per episode, one write and one fsync for the batch.

        Returns:
            The sequence number of the last record written.
        """
        for ep in episodes:
            if ep.episode_id < 0:
                raise ValueError("log_add needs assigned episode ids; call VectorStore.prepare first")
        return self._append([(KIND_ADD, ep.to_bytes()) for ep in episodes])

    def log_commit(self, removed: Sequence[int] | npt.NDArray[np.integer[Any]], added: Sequence[bytes]) -> int:
        """Durably log one group commit: the removal of ``removed`` (if any) as one record, then
        one record per episode in ``added``, with one write and one fsync for all of them.

        ``added`` holds :meth:`Episode.to_bytes` of episodes with assigned ids: encoding is
        left to the caller so that it can run on the caller's thread. A shard calls this from a
        worker thread, and every time a worker thread gives the GIL back and needs it again
        behind a busy event loop it can wait a whole switch interval (5 ms); with encoding done
        before, the thread only writes and syncs.

        Returns:
            The sequence number of the last record written (unchanged if both are empty).
        """
        arr = np.asarray(removed, dtype="<i8").reshape(-1)
        items = [(KIND_REMOVE, arr.tobytes())] if len(arr) else []
        items.extend((KIND_ADD, data) for data in added)
        if not items:
            return self._last_seq
        return self._append(items)

    def log_remove(self, ids: Sequence[int] | npt.NDArray[np.integer[Any]]) -> int:
        """Durably log the removal of ``ids`` (evicted, pruned or deleted), as one record.

        Returns:
            The sequence number of the record (unchanged if ``ids`` is empty).
        """
        arr = np.asarray(ids, dtype="<i8").reshape(-1)
        if len(arr) == 0:
            return self._last_seq
        return self._append([(KIND_REMOVE, arr.tobytes())])

    def checkpoint(self, store: VectorStore) -> Path:
        """Snapshot ``store`` (which must reflect every logged record), then rotate the log.

        Old snapshots beyond ``keep_snapshots`` and log segments wholly covered by the oldest
        kept snapshot are deleted.

        Returns:
            The snapshot path.
        """
        log_ = self._require_open()
        seq = self._last_seq
        state = store.export_state()
        state.meta["log_seq"] = seq
        path = Snapshot.write(self.directory / f"{_SNAP_PREFIX}{seq:020d}{_SNAP_SUFFIX}", state)
        if log_.size() > 0:
            log_.close()
            self._start_segment(seq + 1)
        self._prune()
        log.info("memory.checkpoint", path=str(path), seq=seq, episodes=len(store))
        return path

    def close(self) -> None:
        """Close the active log segment."""
        if self._log is not None:
            self._log.close()
            self._log = None

    def _require_open(self) -> EpisodeLog:
        if self._log is None:
            raise RuntimeError("ShardPersistence is not open; call open(store) first")
        return self._log

    def _append(self, items: list[tuple[int, bytes]]) -> int:
        log_ = self._require_open()
        first = self._last_seq + 1
        log_.append(
            (LogRecord(first + i, kind, data) for i, (kind, data) in enumerate(items)), sync=self.sync
        )
        self._last_seq = first + len(items) - 1
        return self._last_seq

    def _start_segment(self, start: int) -> None:
        self._log_start = start
        self._log = EpisodeLog(self.directory / f"{_SEG_PREFIX}{start:020d}{_SEG_SUFFIX}")
        # Create it now so an empty active segment still marks where the next records start.
        self._log.create()

    def _prune(self) -> None:
        snaps = _numbered(self.directory, _SNAP_PREFIX, _SNAP_SUFFIX)
        for _seq, path in snaps[: -self.keep_snapshots]:
            path.unlink(missing_ok=True)
        kept = snaps[-self.keep_snapshots :]
        if len(kept) < self.keep_snapshots:
            # Until there are enough snapshots to fall back on, the full log is the fallback.
            return
        oldest = kept[0][0]
        segments = _numbered(self.directory, _SEG_PREFIX, _SEG_SUFFIX)
        for (_start, path), (next_start, _p) in zip(segments, segments[1:], strict=False):
            # A segment's records end right before the next segment starts.
            if next_start - 1 <= oldest and next_start <= self._log_start:
                path.unlink(missing_ok=True)
        _fsync_dir(self.directory)
