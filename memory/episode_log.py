"""The append-only episode log of a hippocampal shard: CRC-framed records, group commit.

Log frame: ``[u32 magic<<24 | payload_len][u32 crc32(word0 + payload)][payload]`` with payload
``[u64 seq][u8 kind][data]`` (all little endian). A crash can only tear the record being written
when it happened; replay stops at the first frame that fails its length or CRC check, so that
unacknowledged tail is dropped and everything before it survives. memory.durable puts the log
and the snapshots (memory.snapshot) together into a shard's persistence.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import structlog

from bus.runtime import open_private

__all__ = ["KIND_ADD", "KIND_REMOVE", "EpisodeLog", "LogRecord", "LogReport", "encode_record", "fsync_dir"]

log = structlog.get_logger("memory.episode_log")

_FRAME = struct.Struct("<II")
_LOG_MAGIC = 0xB5
_MAX_PAYLOAD = (1 << 24) - 1  # the length shares its u32 with the magic byte
_REC_HEAD = struct.Struct("<QB")

KIND_ADD = 1
"""Log record kind: ``data`` is one :meth:`Episode.to_bytes`."""
KIND_REMOVE = 2
"""Log record kind: ``data`` is little-endian int64 episode ids (eviction, pruning, removal)."""


# fdatasync skips the inode timestamps but still flushes the size an append changed.
_datasync = getattr(os, "fdatasync", os.fsync)


def fsync_dir(directory: Path) -> None:
    """Make a create/rename/unlink in ``directory`` durable (the entry lives in the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
            # Owner-only (0600), an existing segment of an older version too: it holds memories.
            self._fd = open_private(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            if not existed:
                fsync_dir(self.path.parent)
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
