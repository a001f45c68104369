"""The files the brain writes are its owner's only: folders 0700, files 0600, temporary files
before their atomic replace included, whatever the umask (these tests run with umask 0, where
anything not made private explicitly would come out 0777 or 0666)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from actors.supervisor import _save_snapshot
from bus.runtime import Runtime, open_private, private_dir, read_runtime, write_runtime
from memory.durable import ShardPersistence
from memory.episodes import Episode
from memory.snapshot import Snapshot
from memory.store import VectorStore

DIM = 8


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def modes_under(root: Path) -> dict[str, int]:
    """Every folder and file under `root` (itself included), relative name → mode."""
    out = {".": mode(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = mode(p)
    return out


def assert_private(root: Path) -> None:
    found = modes_under(root)
    wrong = {name: oct(m) for name, m in found.items()
             if m != (0o700 if (root / name).is_dir() else 0o600)}
    assert not wrong, f"not owner-only under {root}: {wrong}"


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def replaced(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The mode of every temporary file at the moment it is renamed over its target."""
    seen: dict[str, int] = {}
    real: Callable[..., None] = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen[Path(src).name] = mode(Path(src))
        real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    return seen


def episodes(store: VectorStore, n: int, seed: int) -> list[Episode]:
    rng = np.random.default_rng(seed)
    keys = rng.standard_normal((n, DIM)).astype(np.float32)
    return store.prepare([Episode(episode_id=-1, key=k, stimulus_id=f"s{seed}-{i}") for i, k in enumerate(keys)])


def test_a_shards_log_snapshots_and_folders_are_owner_only(tmp_path: Path, replaced: dict[str, int]) -> None:
    data = tmp_path / "data"
    shard_dir = data / "hippocampus" / "shard0"
    store = VectorStore(DIM, 100, "float32", "cpu")
    persistence = ShardPersistence(shard_dir)
    persistence.open(store)
    eps = episodes(store, 10, 1)
    persistence.log_add(eps)
    store.add(eps)
    persistence.checkpoint(store)
    more = episodes(store, 5, 2)
    persistence.log_add(more)
    store.add(more)
    persistence.close()
    assert sorted(p.suffix for p in shard_dir.iterdir()) == [".bin", ".bin", ".snap"]
    assert_private(data)  # the folders it created on the way too
    assert replaced and set(replaced.values()) == {0o600}, replaced  # the snapshot's temporary file


def test_files_and_folders_of_an_older_version_are_made_owner_only_when_used(tmp_path: Path) -> None:
    shard_dir = tmp_path / "shard0"
    store = VectorStore(DIM, 100, "float32", "cpu")
    first = ShardPersistence(shard_dir)
    first.open(store)
    eps = episodes(store, 3, 3)
    first.log_add(eps)
    store.add(eps)
    first.close()
    # As an older version left them: world-readable.
    shard_dir.chmod(0o755)
    for p in shard_dir.iterdir():
        p.chmod(0o644)
    again = ShardPersistence(shard_dir)
    recovered = VectorStore(DIM, 100, "float32", "cpu")
    again.open(recovered)
    assert len(recovered) == 3
    assert mode(shard_dir) == 0o700
    later = episodes(recovered, 2, 4)
    again.log_add(later)  # the segment it appends to
    again.close()
    assert_private(shard_dir)


def test_a_snapshot_written_over_a_world_readable_one_is_owner_only(tmp_path: Path) -> None:
    store = VectorStore(DIM, 10, "float32", "cpu")
    path = tmp_path / "snap.snap"
    path.write_bytes(b"old")
    path.chmod(0o644)
    Snapshot.write(path, store.export_state())
    assert mode(path) == 0o600


def test_actor_snapshots_and_the_runtime_file_are_owner_only(tmp_path: Path, replaced: dict[str, int]) -> None:
    snapshots = tmp_path / "data" / "snapshots"
    _save_snapshot(snapshots, "thalamus", {"seen": [1, 2, 3]})
    _save_snapshot(snapshots, "thalamus", {"seen": [1, 2, 3, 4]})  # replaced, still private
    runtime = tmp_path / ".brainbus" / "runtime.json"
    write_runtime(Runtime(url="nats://127.0.0.1:4222", namespace="brain", pid=os.getpid(), started=0.0), runtime)
    assert read_runtime(runtime) is not None
    assert_private(tmp_path / "data")
    assert_private(tmp_path / ".brainbus")
    assert set(replaced) == {"thalamus.json.tmp", "runtime.tmp"} and set(replaced.values()) == {0o600}


def test_private_dir_leaves_folders_it_did_not_make_alone_unless_they_are_its_own(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    private_dir(shared / "a" / "b")
    assert (mode(shared), mode(shared / "a"), mode(shared / "a" / "b")) == (0o755, 0o700, 0o700)
    private_dir(shared, existing=False)
    assert mode(shared) == 0o755
    private_dir(shared)
    assert mode(shared) == 0o700


def test_open_private_makes_an_existing_file_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    path.chmod(0o666)
    os.close(open_private(path, os.O_WRONLY | os.O_APPEND))
    assert mode(path) == 0o600 and path.read_bytes() == b"x"
