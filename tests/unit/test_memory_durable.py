"""Unit tests for shard persistence: the framed log, snapshots, recovery (memory.durable)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from memory import episode_log, snapshot
from memory.durable import (
    KIND_ADD,
    CorruptSnapshot,
    EpisodeLog,
    LogRecord,
    ShardPersistence,
    Snapshot,
)
from memory.episodes import Episode
from memory.store import StoreState, VectorStore

DIM = 16


def _records(n: int, start: int = 1) -> list[LogRecord]:
    return [LogRecord(seq, KIND_ADD, f"payload-{seq}".encode() * 3) for seq in range(start, start + n)]


def _write_log(path: Path, n: int) -> EpisodeLog:
    log = EpisodeLog(path)
    for b in range(0, n, 10):
        log.append(_records(min(10, n - b), start=b + 1))
    log.close()
    return log


def test_log_round_trip(tmp_path: Path) -> None:
    log = _write_log(tmp_path / "a.bin", 100)
    got = list(log.replay())
    assert got == _records(100)
    assert log.last_report is not None
    assert (log.last_report.records_ok, log.last_report.bytes_dropped, log.last_report.reason) == (
        100,
        0,
        None,
    )
    assert list(EpisodeLog(tmp_path / "missing.bin").replay()) == []


def test_truncated_tail_drops_only_last_record(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    log = _write_log(path, 100)
    size = path.stat().st_size
    os.truncate(path, size - 7)
    got = list(log.replay())
    report = log.last_report
    assert report is not None
    assert got == _records(99)
    assert report.records_ok == 99
    assert report.bytes_dropped == len(episode_log.encode_record(_records(1, start=100)[0])) - 7
    assert report.reason is not None and "truncated" in report.reason


def test_flipped_byte_stops_at_corrupt_record_and_repair_continues(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    log = _write_log(path, 100)
    sizes = [len(episode_log.encode_record(r)) for r in _records(100)]
    offset = sum(sizes[:50])  # start of record 51
    data = bytearray(path.read_bytes())
    data[offset + 12] ^= 0x40  # inside record 51's payload
    path.write_bytes(bytes(data))
    got = list(log.replay())
    assert [r.seq for r in got] == list(range(1, 51))
    assert log.last_report is not None
    assert log.last_report.reason is not None and "crc mismatch" in log.last_report.reason
    assert log.last_report.bytes_dropped == sum(sizes[50:])

    report = log.repair()
    assert report.records_ok == 50 and path.stat().st_size == offset
    log.append(_records(5, start=51))
    assert [r.seq for r in log.replay()] == list(range(1, 56))
    assert log.last_report is not None and log.last_report.reason is None


def test_append_to_unrepaired_torn_log_repairs_first(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    _write_log(path, 10)
    with open(path, "ab") as f:
        f.write(b"\xb5\x00\x01")  # a torn frame header
    log = EpisodeLog(path)
    log.append(_records(1, start=11))
    assert [r.seq for r in log.replay()] == list(range(1, 12))


def _store(n: int = 20) -> VectorStore:
    store = VectorStore(DIM, 64, dtype="float16")
    rng = np.random.default_rng(0)
    store.add([Episode(-1, rng.standard_normal(DIM), stimulus_id=f"s{i}", action="a") for i in range(n)])
    return store


def test_snapshot_round_trip_and_corruption(tmp_path: Path) -> None:
    store = _store()
    path = Snapshot.write(tmp_path / "x.snap", store.export_state())
    loaded = Snapshot.load(path)
    other = VectorStore(DIM, 64, dtype="float16")
    other.load_state(loaded)
    assert [other.get(i) for i in range(20)] == [store.get(i) for i in range(20)]

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptSnapshot, match=r"x\.snap: sha256 checksum mismatch"):
        Snapshot.load(path)
    path.write_bytes(bytes(data[:40]))
    with pytest.raises(CorruptSnapshot, match="x.snap"):
        Snapshot.load(path)
    assert issubclass(CorruptSnapshot, ValueError)


def test_snapshot_write_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(5)
    path = Snapshot.write(tmp_path / "x.snap", store.export_state())
    before = path.read_bytes()
    store.add([Episode(-1, np.ones(DIM))])
    calls = {"n": 0}
    real = snapshot._write_array

    def failing(f: object, arr: np.ndarray, hasher: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (injected)")
        real(f, arr, hasher)

    monkeypatch.setattr(snapshot, "_write_array", failing)
    with pytest.raises(OSError, match="injected"):
        Snapshot.write(path, store.export_state())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.snap"]  # no temp file left behind
    assert len(Snapshot.load(path).arrays["ids"]) == 5


def _add(store: VectorStore, p: ShardPersistence, rng: np.random.Generator, n: int, t0: float = 0.0) -> None:
    eps = store.prepare(
        [
            Episode(
                -1,
                rng.standard_normal(DIM),
                action=str(i % 3),
                reward=float(i % 2),
                time=t0 + i,
                salience=0.5,
            )
            for i in range(n)
        ]
    )
    p.log_add(eps)
    store.add(eps)


def _assert_same(a: VectorStore, b: VectorStore) -> None:
    assert len(a) == len(b) and a.next_id == b.next_id
    assert sorted(a.ids().tolist()) == sorted(b.ids().tolist())
    for i in a.ids().tolist():
        assert a.get(i) == b.get(i)
    sa, sb = a.export_state(), b.export_state()
    for name in ("ids", "valid", "keys", "time", "free"):
        assert np.array_equal(sa.arrays[name], sb.arrays[name]), name


def test_shard_persistence_restores_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    store = VectorStore(DIM, 500, dtype="float16")
    p = ShardPersistence(tmp_path)
    assert p.open(store).snapshot == "none"
    _add(store, p, rng, 100)
    p.log_remove(store.evict(10))
    p.checkpoint(store)
    _add(store, p, rng, 50, t0=200)
    p.log_remove(store.remove([20, 21, 22]))
    p.log_remove(store.prune(0.6))  # everything goes: salience 0.5 < 0.6
    _add(store, p, rng, 30, t0=400)
    p.close()

    restored = VectorStore(DIM, 500, dtype="float16")
    p2 = ShardPersistence(tmp_path)
    report = p2.open(restored)
    assert report.snapshot == "ok" and report.clean
    assert report.records_replayed == 50 + 1 + 1 + 30
    assert report.last_seq == p.last_seq
    _assert_same(store, restored)
    # Appending continues after the recovered sequence.
    _add(restored, p2, rng, 5, t0=600)
    assert p2.last_seq == p.last_seq + 5


def test_shard_persistence_rotation_fallback_and_torn_tail(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    store = VectorStore(DIM, 500)
    p = ShardPersistence(tmp_path, keep_snapshots=2)
    p.open(store)
    for r in range(4):
        _add(store, p, rng, 20, t0=r * 100)
        p.checkpoint(store)
    _add(store, p, rng, 7, t0=1000)
    p.close()
    snaps = sorted(tmp_path.glob("snap-*.snap"))
    assert len(snaps) == 2  # only the last two kept
    assert len(list(tmp_path.glob("log-*.bin"))) == 2  # segments since the older kept snapshot

    # Corrupt the newest snapshot and tear the last log record.
    data = bytearray(snaps[-1].read_bytes())
    data[100] ^= 0xFF
    snaps[-1].write_bytes(bytes(data))
    active = sorted(tmp_path.glob("log-*.bin"))[-1]
    os.truncate(active, active.stat().st_size - 3)

    restored = VectorStore(DIM, 500)
    report = ShardPersistence(tmp_path).open(restored)
    assert report.snapshot == "fallback"
    assert report.snapshot_errors and snaps[-1].name in report.snapshot_errors[0]
    assert report.records_replayed == 20 + 6 and report.bytes_dropped > 0 and not report.log_gap
    assert not report.clean
    assert len(restored) == len(store) - 1
    for i in restored.ids().tolist():
        assert restored.get(i) == store.get(i)


def test_all_snapshots_corrupt_replays_full_log(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    store = VectorStore(DIM, 100)
    p = ShardPersistence(tmp_path)
    p.open(store)
    _add(store, p, rng, 10)
    p.checkpoint(store)
    _add(store, p, rng, 5)
    p.close()
    for snap in tmp_path.glob("snap-*.snap"):
        snap.write_bytes(b"garbage")
    restored = VectorStore(DIM, 100)
    report = ShardPersistence(tmp_path).open(restored)
    assert report.snapshot == "corrupt" and report.records_replayed == 15 and not report.log_gap
    _assert_same(store, restored)


_CHILD = textwrap.dedent(
    """
    import sys
    from memory.durable import EpisodeLog, LogRecord, KIND_ADD
    log = EpisodeLog(sys.argv[1])
    seq = 0
    while True:
        batch = [LogRecord(seq + i + 1, KIND_ADD, bytes([seq % 251]) * 3000) for i in range(7)]
        log.append(batch, sync=True)
        seq += 7
        print(seq, flush=True)
    """
)


@pytest.mark.slow
def test_kill9_mid_stream_keeps_every_acknowledged_record(tmp_path: Path) -> None:
    path = tmp_path / "crash.bin"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdout is not None
    acked = 0
    try:
        for line in child.stdout:
            acked = int(line)
            if acked >= 700:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    # Lines printed after the break were acknowledged too but not read: `acked` is a lower bound.
    log = EpisodeLog(path)
    seqs = [r.seq for r in log.replay()]
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) >= acked
    log.repair()
    log.append([LogRecord(len(seqs) + 1, KIND_ADD, b"after")])
    assert [r.seq for r in log.replay()][-1] == len(seqs) + 1


def _steps(store: VectorStore, rng: np.random.Generator, n: int, t0: float, world: str | None) -> list[Episode]:
    """``n`` prepared steps; every other one of world episode ``world`` (the rest without one)."""
    return store.prepare([
        Episode(-1, rng.standard_normal(DIM), stimulus_id=f"s{t0 + i:g}", action="a", reward=0.5, time=t0 + i,
                salience=1.0, world_episode=world if i % 2 == 0 else None)
        for i in range(n)
    ])


def _log_steps(store: VectorStore, p: ShardPersistence, steps: list[Episode]) -> None:
    p.log_add(steps)
    store.add(steps, prepared=True)


def test_world_episodes_survive_log_replay_and_snapshot_recovery(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    store = VectorStore(DIM, 100, dtype="float16")
    p = ShardPersistence(tmp_path)
    p.open(store)
    _log_steps(store, p, _steps(store, rng, 10, 0.0, "ep-1"))
    p.close()

    from_log = VectorStore(DIM, 100, dtype="float16")
    p2 = ShardPersistence(tmp_path)
    report = p2.open(from_log)
    assert report.snapshot == "none" and report.records_replayed == 10 and report.clean
    _assert_same(store, from_log)
    assert [from_log.get(i).world_episode for i in range(4)] == ["ep-1", None, "ep-1", None]

    p2.checkpoint(from_log)
    _log_steps(from_log, p2, _steps(from_log, rng, 6, 100.0, "ep-2"))
    p2.log_remove(from_log.remove([0]))
    p2.close()

    restored = VectorStore(DIM, 100, dtype="float16")
    report = ShardPersistence(tmp_path).open(restored)
    assert report.snapshot == "ok" and report.records_replayed == 7 and report.clean
    _assert_same(from_log, restored)
    assert 0 not in restored and restored.get(2).world_episode == "ep-1"
    assert [restored.get(i).world_episode for i in range(10, 13)] == ["ep-2", None, "ep-2"]


def test_shard_written_before_world_episodes_recovers_without_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    store = VectorStore(DIM, 100)
    p = ShardPersistence(tmp_path)
    p.open(store)
    _log_steps(store, p, _steps(store, rng, 8, 0.0, None))
    snap = p.checkpoint(store)
    _log_steps(store, p, _steps(store, rng, 4, 50.0, None))
    p.close()
    # Rewrite the snapshot as the earlier format wrote it: no world episode arrays. (The log
    # records of steps without a world episode are byte for byte the earlier format's.)
    state = Snapshot.load(snap)
    Snapshot.write(snap, StoreState(meta=state.meta, arrays={
        k: v for k, v in state.arrays.items() if not k.startswith("world_episode")}))
    assert "world_episode" not in Snapshot.load(snap).arrays

    restored = VectorStore(DIM, 100)
    p2 = ShardPersistence(tmp_path)
    report = p2.open(restored)
    assert report.snapshot == "ok" and report.records_replayed == 4 and report.clean
    _assert_same(store, restored)
    assert all(restored.get(i).world_episode is None for i in restored.ids().tolist())
    # Steps with a world episode go on top and come back after the next recovery.
    _log_steps(restored, p2, _steps(restored, rng, 2, 90.0, "ep-9"))
    p2.checkpoint(restored)
    p2.close()
    again = VectorStore(DIM, 100)
    assert ShardPersistence(tmp_path).open(again).clean
    _assert_same(restored, again)
    assert again.get(12).world_episode == "ep-9" and again.get(13).world_episode is None
