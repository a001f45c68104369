"""Crash-safe persistence for one hippocampal shard: the append-only log (memory.episode_log)
plus atomic snapshots (memory.snapshot), and recovery from both.

Durability contract: an episode is acknowledged only after :meth:`ShardPersistence.log_add`
returned, which means its log record was fsynced. A crash (kill -9, power loss) can then only
tear the record being written when it happened; replay drops that unacknowledged tail and keeps
everything before it.

On-disk layout of a shard directory::

    log-<first seq, 20 digits>.bin    log segments; a checkpoint starts a new one
    snap-<last seq, 20 digits>.snap   snapshots; the newest ``keep_snapshots`` are kept
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import structlog

from bus.runtime import private_dir
from memory.episode_log import KIND_ADD, KIND_REMOVE, EpisodeLog, LogRecord, LogReport, fsync_dir
from memory.episodes import Episode
from memory.snapshot import CorruptSnapshot, Snapshot
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
        directory: The shard's directory (created if missing; owner-only, like its files).
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
        private_dir(self.directory)  # 0700, like every file in it (0600): the shard's memories
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
        fsync_dir(self.directory)
