"""Hippocampal shards on a real nats-server: partitioning, mirroring, exact recall, partial answers,
bad input, corrupt files, growth, and (slow) durability of acknowledged stores across kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from actors.actor import ActorState
from actors.config import parse_config
from actors.supervisor import ActorChild, Supervisor
from bus import Bus, EmbeddedServer, Meta
from bus.errors import BadInput, EscalationError
from bus.models import CtlReply, CtlRequest, Heartbeat, MemRecallReply, MemStore, MemStoreAck, SysError
from memory.durable import ShardPersistence, Snapshot
from memory.recall import ShardWatch, StoreFailed, recall, store
from memory.shard import HippocampusShard, ShardOptions
from memory.store import VectorStore
from tests.actors_for_tests import eventually

SHARD = "memory.shard:HippocampusShard"
HIPPOCAMPUS = "memory.hippocampus:Hippocampus"
DIM = 32
REPO = str(Path(__file__).resolve().parents[2])
StartShards = Callable[..., Awaitable[list[HippocampusShard]]]


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


@pytest.fixture
async def shards(bus: Bus) -> AsyncIterator[StartShards]:
    started: list[HippocampusShard] = []

    async def start(n: int, **opts: Any) -> list[HippocampusShard]:
        out = []
        for _ in range(n):
            shard = HippocampusShard(f"shard{len(started)}", bus, ShardOptions(**{"dim": DIM, **opts}),
                                     heartbeat_interval=0.2)
            await shard.start()
            started.append(shard)
            out.append(shard)
        await bus.flush()
        return out

    yield start
    for shard in started:
        await shard.stop(0.5)


async def store_all(bus: Bus, keys: np.ndarray, *, replicas: int = 1) -> list[list[MemStoreAck]]:
    return list(await asyncio.gather(*(
        store(bus, MemStore(key=k, stimulus_id=f"s{i}", action="a", reward=0.5), replicas=replicas)
        for i, k in enumerate(keys))))


async def test_independent_shards_partition_stores(bus: Bus, shards: StartShards) -> None:
    group = await shards(3, persist=False)
    keys = unit(np.random.default_rng(1), 90)
    acks = await store_all(bus, keys)
    assert all(len(a) == 1 and a[0].ok for a in acks)
    counts = [len(s.store) for s in group]
    assert sum(counts) == 90, counts  # each episode stored exactly once
    assert sum(c > 0 for c in counts) >= 2, counts  # and spread over the shards
    reply = await recall(bus, keys[7], k=3, shards_expected=3, deadline=2.0)
    assert not reply.partial and reply.shards_answered == 3
    assert reply.hits[0].stimulus_id == "s7" and reply.hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert reply.hits[0].shard == acks[7][0].shard and reply.hits[0].episode_id == acks[7][0].episode_id


async def test_mirrored_shards_each_store_everything(bus: Bus, shards: StartShards) -> None:
    group = await shards(2, persist=False, mode="mirrored")
    keys = unit(np.random.default_rng(2), 20)
    acks = await store_all(bus, keys, replicas=2)
    assert all({a.shard for a in pair} == {"shard0", "shard1"} for pair in acks)
    assert [len(s.store) for s in group] == [20, 20]
    reply = await recall(bus, keys[3], k=4, shards_expected=2, mirrored=True, deadline=2.0)
    assert reply.hits[0].stimulus_id == "s3" and not reply.partial
    assert len({h.stimulus_id for h in reply.hits}) == 4  # no duplicate copies in the answer


async def test_recall_matches_brute_force_over_four_shards(bus: Bus, shards: StartShards) -> None:
    await shards(4, persist=False, dtype="float32")
    rng = np.random.default_rng(3)
    keys = unit(rng, 3000)
    where: dict[tuple[str, int], int] = {}
    for start in range(0, len(keys), 500):
        acks = await store_all(bus, keys[start:start + 500])
        where.update({(a[0].shard, a[0].episode_id): start + i for i, a in enumerate(acks)})
    queries = unit(rng, 25)
    exact = np.argsort(-(queries @ keys.T), axis=1)[:, :10]
    for q, want in zip(queries, exact, strict=True):
        reply = await recall(bus, q, k=10, shards_expected=4, deadline=2.0)
        got = [where[(h.shard, h.episode_id)] for h in reply.hits]
        assert got == list(want)  # same episodes, same order
        assert reply.shards_answered == 4 and not reply.partial


async def test_stopped_shard_gives_partial_answer(bus: Bus, shards: StartShards) -> None:
    group = await shards(3, persist=False)
    keys = unit(np.random.default_rng(4), 30)
    await store_all(bus, keys)
    await group[1].stop(0.5)
    t0 = asyncio.get_running_loop().time()
    reply = await recall(bus, keys[0], k=5, shards_expected=3, deadline=0.3)
    assert asyncio.get_running_loop().time() - t0 < 1.0  # the deadline bounds the wait
    assert reply.partial and reply.shards_asked == 3 and reply.shards_answered == 2
    assert len(reply.hits) == 5 and all(h.shard != "shard1" for h in reply.hits)


async def test_bad_input_gets_error_replies_and_reports(bus: Bus, shards: StartShards) -> None:
    await shards(2, persist=False)
    errors: list[SysError] = []

    async def on_error(msg: SysError, meta: Meta) -> None:
        errors.append(msg)

    await bus.subscribe("sys.error", on_error, model=SysError)
    with pytest.raises(StoreFailed, match="dimensions"):
        await store(bus, MemStore(key=np.ones(DIM + 1, np.float32)))
    with pytest.raises(StoreFailed, match="all zeros"):
        await store(bus, MemStore(key=np.zeros(DIM, np.float32)))
    with pytest.raises(BadInput, match="dimensions"):
        await recall(bus, np.ones(5), k=3, shards_expected=2, deadline=1.0)
    # Requests that never decode (k out of range, NaN in raw bytes) still get an error reply.
    ones = [1.0] * DIM
    for body in (orjson.dumps({"query": ones, "k": 0}), orjson.dumps({"query": ones, "k": 5000}),
                 b'{"query": [NaN, 1.0]}'):
        answer = await bus.nc.request(bus.resolve("mem.recall"), body, timeout=2.0)
        reply = MemRecallReply.model_validate_json(answer.data)
        assert reply.error and not reply.hits
    answer = await bus.nc.request(bus.resolve("mem.store"), b'{"key": "not a vector"}', timeout=2.0)
    assert MemStoreAck.model_validate_json(answer.data).ok is False
    await eventually(lambda: len(errors) >= 5, what="sys.error reports")
    assert any("dimensions" in e.reason for e in errors)
    # ...and the shards keep serving.
    ack = (await store(bus, MemStore(key=np.ones(DIM, np.float32), stimulus_id="fine")))[0]
    assert ack.ok
    reply = await recall(bus, np.ones(DIM), k=1, shards_expected=2, deadline=1.0)
    assert reply.hits[0].stimulus_id == "fine"


async def test_a_steps_world_episode_comes_back_in_its_recall_hit_and_after_a_restart(
        bus: Bus, shards: StartShards, tmp_path: Path) -> None:
    (first,) = await shards(1, data_dir=str(tmp_path))
    keys = unit(np.random.default_rng(9), 3)
    episodes = ["FrozenLake-v1/ep-0", None, "x" * 128]
    for i, (k, episode) in enumerate(zip(keys, episodes, strict=True)):
        ack = (await store(bus, MemStore(key=k, stimulus_id=f"step-{i}", action="left", reward=-0.5,
                                         episode=episode)))[0]
        assert ack.ok, ack
    for i, episode in enumerate(episodes):
        reply = await recall(bus, keys[i], k=1, shards_expected=1, deadline=1.0)
        assert (reply.hits[0].stimulus_id, reply.hits[0].episode) == (f"step-{i}", episode)
    # The wire form carries it (and a hit without one says null).
    answer = await bus.nc.request(bus.resolve("mem.recall"), orjson.dumps({"query": keys[0].tolist(), "k": 2}),
                                  timeout=2.0)
    hits = orjson.loads(answer.data)["hits"]
    assert hits[0]["episode"] == "FrozenLake-v1/ep-0" and "episode" in hits[1]
    # An episode id the contract refuses (a space) is refused on the way in, not stored.
    with pytest.raises(StoreFailed, match="episode"):
        await store(bus, MemStore.model_construct(key=keys[0], episode="has space", salience=1.0, hormones={}))
    await first.stop(1.0)  # checkpoints on stop; the log holds the steps too

    restored = HippocampusShard("shard0", bus, ShardOptions(dim=DIM, data_dir=str(tmp_path)))
    await restored.start()
    try:
        assert restored.recovery is not None and restored.recovery.clean and len(restored.store) == 3
        reply = await recall(bus, keys[2], k=3, shards_expected=1, deadline=1.0)
        assert [h.episode for h in reply.hits] == ["x" * 128] + [
            episodes[int(h.stimulus_id.removeprefix("step-"))] for h in reply.hits[1:] if h.stimulus_id]
    finally:
        await restored.stop(0.5)


async def test_empty_memory_recall_answers_no_hits(bus: Bus, shards: StartShards) -> None:
    await shards(2, persist=False)
    reply = await recall(bus, np.ones(DIM), k=3, shards_expected=2, deadline=1.0)
    assert reply.hits == [] and reply.shards_answered == 2 and not reply.partial


async def test_full_shard_evicts_and_reports_fill(bus: Bus, shards: StartShards) -> None:
    (shard,) = await shards(1, persist=False, capacity=50, evict_fraction=0.1)
    beats: list[Heartbeat] = []

    async def on_beat(msg: Heartbeat, meta: Meta) -> None:
        beats.append(msg)

    await bus.subscribe("sys.heartbeat.shard0", on_beat, model=Heartbeat)
    keys = unit(np.random.default_rng(5), 80)
    await store_all(bus, keys[:50])
    await store_all(bus, keys[50:])
    assert len(shard.store) <= 50 and shard.extra_stats()["evicted"] >= 30
    reply = await recall(bus, keys[79], k=1, shards_expected=1, deadline=1.0)
    assert reply.hits[0].stimulus_id == "s29"  # the newest episode survived eviction
    await eventually(lambda: any(b.stats.get("fill", 0) >= 0.8 for b in beats), what="fill in heartbeat")
    assert beats[-1].stats["capacity"] == 50 and "stores_per_s" in beats[-1].stats


async def test_corrupt_snapshot_and_log_tail_are_reported_and_rest_loads(
        bus: Bus, shards: StartShards, tmp_path: Path) -> None:
    (first,) = await shards(1, data_dir=str(tmp_path))
    keys = unit(np.random.default_rng(6), 40)
    await store_all(bus, keys)
    await first.stop(1.0)  # checkpoints on stop
    shard_dir = tmp_path / "shard0"
    snaps = sorted(shard_dir.glob("snap-*.snap"))
    assert snaps
    data = bytearray(snaps[-1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    snaps[-1].write_bytes(bytes(data))
    segment = sorted(shard_dir.glob("log-*.bin"))[-1]
    segment.write_bytes(segment.read_bytes() + b"\xb5torn tail of a crashed write")
    errors: list[SysError] = []

    async def on_error(msg: SysError, meta: Meta) -> None:
        errors.append(msg)

    await bus.subscribe("sys.error", on_error, model=SysError)
    await bus.flush()
    restored = HippocampusShard("shard0", bus, ShardOptions(dim=DIM, data_dir=str(tmp_path)))
    await restored.start()
    try:
        assert restored.recovery is not None and restored.recovery.snapshot == "corrupt"
        assert restored.recovery.bytes_dropped > 0
        assert len(restored.store) == 40  # rebuilt from the log
        await eventually(lambda: any("checksum" in e.reason for e in errors), what="corruption report")
        reply = await recall(bus, keys[11], k=1, shards_expected=1, deadline=1.0)
        assert reply.hits[0].stimulus_id == "s11"
    finally:
        await restored.stop(0.5)


async def test_memory_grows_a_new_shard_when_full(bus: Bus, namespace: str, tmp_path: Path) -> None:
    config = parse_config({
        "namespace": namespace, "data_dir": str(tmp_path),
        "supervisor": {"heartbeat_interval": 0.2},
        "actors": {
            "shard0": {"kind": SHARD, "options": {"dim": DIM, "capacity": 40, "fsync": False}},
            "hippocampus": {"kind": HIPPOCAMPUS, "options": {"fill_threshold": 0.5, "cooldown_s": 0.5}},
        },
    })
    sup = Supervisor.for_actors(bus, config, ["shard0", "hippocampus"], None)
    task = asyncio.create_task(sup.run())
    try:
        await eventually(lambda: sup._running, what="supervisor running")
        keys = unit(np.random.default_rng(7), 100)
        first = await store_all(bus, keys[:30])
        assert {a[0].shard for a in first} == {"shard0"}
        await eventually(lambda: any(c.name == "shard-g0" for c in sup.children), within=5.0,
                         what="a grown shard")
        grown = sup.child("shard-g0")
        assert isinstance(grown, ActorChild) and grown.actor is not None
        assert grown.actor.state is ActorState.RUNNING
        assert (tmp_path / "hippocampus" / "shard-g0").is_dir()  # persisted under the brain's data dir
        assert orjson.loads((tmp_path / "hippocampus" / "grown.json").read_bytes()) == ["shard-g0"]
        # Fill shard0 to capacity: it seals, and new episodes go to the grown shard.
        shard0 = sup.child("shard0")
        assert isinstance(shard0, ActorChild) and isinstance(shard0.actor, HippocampusShard)
        actor0 = shard0.actor
        n = 30
        while len(actor0.store) < actor0.store.capacity and n < 80:
            await store_all(bus, keys[n:n + 5])
            n += 5
        await eventually(lambda: actor0._store_sub is None, within=5.0, what="full shard0 sealed")
        late = await store_all(bus, keys[80:100])
        assert {a[0].shard for a in late} == {"shard-g0"}
        watch = ShardWatch(bus)
        await watch.start()
        await eventually(lambda: watch.count == 2, what="two live shards")
        reply = await recall(bus, keys[90], k=1, shards_expected=watch.count, deadline=1.0)
        assert reply.hits[0].shard == "shard-g0" and not reply.partial
        await watch.stop()
    finally:
        sup.request_stop()
        with contextlib.suppress(EscalationError):
            await task
    # A restarted brain brings the grown shard back (from the manifest) with its episodes.
    again = Supervisor.for_actors(bus, config, ["shard0", "hippocampus"], None)
    task = asyncio.create_task(again.run())
    try:
        await eventually(lambda: any(c.name == "shard-g0" for c in again.children), within=5.0,
                         what="grown shard restored")
        await bus.flush()
        reply = await recall(bus, keys[90], k=1, shards_expected=2, deadline=1.0)
        assert reply.hits[0].shard == "shard-g0" and reply.hits[0].stimulus_id == "s10"
    finally:
        again.request_stop()
        await task


async def test_add_child_refuses_duplicates_and_a_stopped_supervisor(bus: Bus, namespace: str,
                                                                     tmp_path: Path) -> None:
    config = parse_config({"namespace": namespace, "actors": {
        "shard0": {"kind": SHARD, "options": {"dim": DIM, "persist": False}}}})
    sup = Supervisor.for_actors(bus, config, ["shard0"], None)
    spec = config.actors["shard0"]
    with pytest.raises(Exception, match="not running"):
        await sup.add_child(ActorChild("late", spec, bus, config))
    task = asyncio.create_task(sup.run())
    await eventually(lambda: sup._running, what="supervisor running")
    with pytest.raises(ValueError, match="already exists"):
        await sup.add_child(ActorChild("shard0", spec, bus, config))
    await sup.add_child(ActorChild("shard1", spec, bus, config))
    added = sup.child("shard1")
    assert isinstance(added, ActorChild) and added.actor is not None
    sup.request_stop()
    await task
    assert added.actor.state is ActorState.STOPPED  # stopped with the rest


@pytest.mark.slow
async def test_every_acknowledged_store_survives_kill_9(nats_server: EmbeddedServer, bus: Bus,
                                                        namespace: str, tmp_path: Path) -> None:
    cfg = tmp_path / "brain.yaml"
    cfg.write_text(orjson.dumps({"namespace": namespace, "supervisor": {"heartbeat_interval": 0.2},
                                 "actors": {"shard0": {"kind": SHARD, "options": {"dim": DIM}}}}).decode())
    cmd = [sys.executable, "-m", "actors.cli", "run", "--config", str(cfg), "--nats", nats_server.url,
           "--only", "shard0", "--data-dir", str(tmp_path / "data")]
    env = {**os.environ, "PYTHONPATH": REPO}
    watch = ShardWatch(bus, stale_after=0.6)
    await watch.start()

    def spawn() -> subprocess.Popen[bytes]:
        with open(tmp_path / "shard.log", "ab") as out:  # the child keeps its own copy of the fd
            return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)

    proc = spawn()
    try:
        await eventually(lambda: watch.count == 1, within=30.0, what="shard0 process up")
        keys = unit(np.random.default_rng(8), 4000)
        acked: dict[int, str] = {}
        sent = 0
        killed = False

        async def writer() -> None:
            # Each writer stores until one of its stores fails after the kill: whatever the dying
            # shard had not acknowledged (possibly nothing: a group commit may have just acked all
            # it held) and what came after is refused, never counted as stored.
            nonlocal sent
            while sent < len(keys):
                i = sent
                sent += 1
                try:
                    await store(bus, MemStore(key=keys[i], stimulus_id=f"k{i}"), timeout=1.0)
                except StoreFailed:
                    if killed:
                        return
                    continue
                acked[i] = f"k{i}"

        writers = [asyncio.create_task(writer()) for _ in range(32)]
        await eventually(lambda: len(acked) >= 600, within=30.0, what="600 acknowledged stores")
        proc.send_signal(signal.SIGKILL)  # mid-stream: 32 writers storing
        killed = True
        await asyncio.to_thread(proc.wait, 10)
        await asyncio.gather(*writers)
        assert len(acked) <= sent - len(writers)  # each writer's last store failed with the shard
        await eventually(lambda: watch.count == 0, within=5.0, what="shard0 gone")
        proc = spawn()
        await eventually(lambda: watch.count == 1, within=30.0, what="shard0 restarted")
        missing = []
        for i, sid in acked.items():
            reply = await recall(bus, keys[i], k=1, shards_expected=1, deadline=2.0)
            if not reply.hits or reply.hits[0].stimulus_id != sid:
                missing.append(i)
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged stores lost: {missing[:10]}"
    finally:
        await watch.stop()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def test_stores_beyond_the_queue_bound_are_refused_not_lost(bus: Bus) -> None:
    # Stores are queued for the committer straight off the connection; the queue is bounded by
    # the mailbox capacity. Hold the store lock so nothing commits: 4 stores wait (plus the one
    # the committer may already hold, max_batch=1), the rest are refused with an error ack.
    shard = HippocampusShard("bounded", bus, ShardOptions(dim=DIM, persist=False, max_batch=1,
                                                          commit_window_ms=0),
                             mailbox_capacity=4, heartbeat_interval=0.2)
    await shard.start()
    try:
        keys = unit(np.random.default_rng(11), 12)
        async with shard._lock:
            outcomes = asyncio.gather(*(store(bus, MemStore(key=k, stimulus_id=f"b{i}"), timeout=5)
                                        for i, k in enumerate(keys)), return_exceptions=True)
            await eventually(lambda: shard.stats["dropped"] + len(shard._pending) >= 11)
        results = await outcomes
        refused = [r for r in results if isinstance(r, StoreFailed)]
        acked = [r for r in results if isinstance(r, list)]
        assert len(refused) + len(acked) == 12 and all("shard busy" in str(r) for r in refused)
        assert len(refused) == shard.stats["dropped"] and len(acked) in (4, 5)
        assert all(a[0].ok for a in acked) and len(shard.store) == len(acked)
    finally:
        await shard.stop(0.5)


async def test_stores_wait_while_the_shard_is_paused(bus: Bus, shards: StartShards) -> None:
    (shard,) = await shards(1, persist=False)
    paused = await bus.request(f"sys.ctl.{shard.name}", CtlRequest(verb="pause"), CtlReply, timeout=3)
    assert paused.ok and shard.state is ActorState.PAUSED
    keys = unit(np.random.default_rng(12), 3)
    pending = asyncio.gather(*(store(bus, MemStore(key=k), timeout=5) for k in keys))
    await eventually(lambda: len(shard._mailbox) == 3)
    assert len(shard.store) == 0
    await bus.request(f"sys.ctl.{shard.name}", CtlRequest(verb="resume"), CtlReply, timeout=3)
    acks = await pending
    assert all(a[0].ok for a in acks) and len(shard.store) == 3


async def test_sleep_during_stores_snapshots_every_logged_episode(bus: Bus, tmp_path: Path) -> None:
    # A sleep snapshots while group commits go on. A snapshot says which log records it covers
    # (``log_seq``); a restart loads it and replays only the records after that. If a commit had
    # logged its batch but not yet added it to the store when the snapshot was taken, those
    # episodes would be in neither and lost after a crash, acknowledged. Every record here adds
    # one episode (no eviction, no pruning), so each snapshot must hold exactly log_seq episodes.
    shard = HippocampusShard("sleepy", bus, ShardOptions(dim=DIM, data_dir=str(tmp_path), commit_window_ms=0,
                                                         fsync=False, max_batch=8), heartbeat_interval=0.2)
    await shard.start()
    try:
        keys = unit(np.random.default_rng(13), 400)
        stores = asyncio.gather(*(store(bus, MemStore(key=k, stimulus_id=f"z{i}"), timeout=10)
                                  for i, k in enumerate(keys)))
        covered: list[tuple[int, int]] = []
        while not stores.done():
            await shard.on_sleep()
            newest = max((tmp_path / "sleepy").glob("snap-*.snap"))
            state = Snapshot.load(newest)
            covered.append((int(state.meta["log_seq"]), int(state.meta["count"])))
        acks = [a[0] for a in await stores]
        assert all(a.ok for a in acks) and len(covered) > 1
        short = [(seq, count) for seq, count in covered if count != seq]
        assert not short, f"snapshots missing logged episodes (log_seq, episodes): {short[:5]}"
        recovered = VectorStore(DIM, shard.options.capacity, "float16", "cpu")
        ShardPersistence(tmp_path / "sleepy").open(recovered)
        assert all(a.episode_id in recovered for a in acks)
    finally:
        await shard.stop(0.5)


async def test_shard_keys_live_on_the_brains_device_unless_its_options_name_one(bus: Bus) -> None:
    shard = HippocampusShard("shard-dev", bus, ShardOptions(dim=DIM, persist=False), device="cpu")
    await shard.start()
    try:
        assert shard.store.device.type == "cpu"
    finally:
        await shard.stop(0.5)
    with pytest.raises(ValueError, match="device"):
        ShardOptions(dim=DIM, device="gpu")  # type: ignore[arg-type]
