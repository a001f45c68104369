"""A hippocampal memory shard on the bus: durable, acknowledged stores and exact top-k recall.

Stores (`NS.mem.store`, request/reply):
- ``independent`` mode: the store subscription joins the NATS queue group ``hippocampus``, so
  NATS hands each store to exactly one live shard. A queue group, not ``hash(id) % n``: a hash
  partition needs every shard to know the shard count, and growing the memory at run time would
  move old episodes; with a queue group a new shard just joins and takes its share.
- ``mirrored`` mode: a plain subscription, so every shard stores every episode (and acks it).

Group commit: a store is checked and queued as it is read off the connection (no handler
call per episode); a committer task takes everything queued within ``commit_window_ms``,
evicts if the shard is full, writes the removal and the whole batch to the log with ONE fsync
(`ShardPersistence.log_commit`), adds it to the `VectorStore`, and only then sends the acks.
Acknowledged therefore means durable.

Recall (`NS.mem.recall`, scatter-gather): every shard answers with its local top-k; the caller
merges (see `memory.recall`). Search runs in a worker thread under the store lock, so the
event loop keeps taking stores while a large shard scans its matrix; the workers run torch on
one thread each, the shards of a process searching side by side (`memory.search_threads`).

Intake when full (independent mode): a full shard that sees, in the other shards' heartbeats,
an open shard with room leaves the queue group ("sealed": it keeps answering recalls), so new
episodes go to the shard with room (a newly grown one); with no such peer it stays open and
evicts by age and salience.

Bad input gets an error reply (``ok=False`` / ``error``) AND a report on ``NS.sys.error``;
malformed messages that never decode (NaN, k out of range) are answered the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from actors.actor import Actor, ActorState, HandlerFn, every, on
from actors.device import resolve_device
from bus import Meta, Subscription
from bus.errors import BadInput
from bus.models import (
    Heartbeat,
    MemHit,
    MemRecall,
    MemRecallReply,
    MemReplay,
    MemStore,
    MemStoreAck,
    Message,
)
from memory.durable import RecoveryReport, ShardPersistence
from memory.episodes import Episode
from memory.search_threads import run_search
from memory.store import VectorStore

if TYPE_CHECKING:
    from actors.supervisor import Supervisor

__all__ = ["STORE_QUEUE", "HippocampusShard", "ShardOptions"]

STORE_QUEUE = "hippocampus"
"""NATS queue group of the store subscription in independent mode."""

# A shard this small (4,096 keys of 384-d) is searched in well under a millisecond, less than
# the hand-off to a worker thread and back costs: it is searched on the event loop.
_INLINE_SEARCH_ELEMENTS = 1 << 20


class ShardOptions(BaseModel):
    """Options of one shard (a config's ``actors.<name>.options``)."""

    model_config = ConfigDict(extra="forbid")
    dim: Annotated[int, Field(ge=1, le=8192)] = 384
    capacity: Annotated[int, Field(ge=1, lt=2**31)] = 100_000
    dtype: Literal["float16", "float32"] = "float16"
    mode: Literal["independent", "mirrored"] = "independent"
    #: Root of the hippocampus's files; this shard uses ``<data_dir>/<name>``. Default: the
    #: brain's ``data_dir``/hippocampus (from the supervisor).
    data_dir: str | None = None
    #: Keep episodes on disk (log + snapshots). Off: memory only, lost with the process.
    persist: bool = True
    #: fsync each group commit (off only for benchmarks of the ceiling).
    fsync: bool = True
    commit_window_ms: Annotated[float, Field(ge=0, le=100)] = 2.0
    max_batch: Annotated[int, Field(ge=1, le=65_536)] = 2048
    #: Snapshot after this many logged records, or this many seconds with any new record.
    checkpoint_records: Annotated[int, Field(ge=1)] = 100_000
    checkpoint_interval_s: Annotated[float, Field(gt=0)] = 300.0
    #: Fraction of the capacity evicted at once when full (fewer, larger removal records).
    evict_fraction: Annotated[float, Field(gt=0, le=0.5)] = 0.01
    half_life_s: Annotated[float, Field(gt=0)] = 3600.0
    #: > 0: one modern-Hopfield completion step with this beta before the top-k search.
    hopfield_beta: Annotated[float, Field(ge=0)] = 0.0
    #: Sleep prunes episodes with salience below this (0 = prune nothing).
    prune_salience: Annotated[float, Field(ge=0)] = 0.0
    #: Episodes replayed on `NS.mem.replay` when the brain falls asleep (0 = no replay), sampled
    #: with probability rising with salience and |reward| (`VectorStore.replay_sample`). Per
    #: shard: in mirrored mode every mirror replays its own sample.
    replay_episodes: Annotated[int, Field(ge=0, le=100_000)] = 0
    #: Seed of the replay sampler (a sleep is reproducible for a given memory content).
    replay_seed: int = 0
    #: Torch device of the key matrix; None = the brain's `device` (config top level).
    device: Literal["cpu", "cuda", "auto"] | None = None


class HippocampusShard(Actor):
    """One shard of episodic memory (see the module docstring)."""

    kind = "hippocampus_shard"
    Options = ShardOptions
    options: ShardOptions
    # Two handlers at once: a recall waiting for the store lock does not hold up the others.
    concurrency = 2

    def attach_supervisor(self, supervisor: Supervisor) -> None:
        """Learn the brain's data directory (the default home of this shard's files)."""
        self._brain_data_dir: Path | None = Path(supervisor.config.data_dir)

    # ---------------------------------------------------------------- lifecycle

    async def on_start(self) -> None:
        o = self.options
        device = resolve_device(o.device) if o.device else self.device
        self.store = VectorStore(o.dim, o.capacity, o.dtype, device, half_life_s=o.half_life_s)
        self._lock = asyncio.Lock()  # store reads and writes (search runs in a thread)
        # The log and the store change together: a group commit holds this from its log write
        # until its episodes are in the store, and so does every snapshot and logged removal, so
        # a snapshot never covers a record whose episode is not yet in the store (a restart
        # replays only the records after the snapshot). Taken before `_lock`, never inside it.
        self._log_lock = asyncio.Lock()
        self._pending: list[tuple[Episode, Meta]] = []
        self._have_pending = asyncio.Event()
        self._closing = False
        self.recovery: RecoveryReport | None = None
        self.persistence: ShardPersistence | None = None
        if o.persist:
            self.directory = self._directory()
            self.persistence = ShardPersistence(self.directory, sync=o.fsync)
            self.recovery = await asyncio.to_thread(self.persistence.open, self.store)
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._counts = {"stores": 0, "recalls": 0, "evicted": 0, "pruned": 0, "commits": 0, "replayed": 0}
        self._replay_rng = np.random.default_rng(o.replay_seed)
        self._rate_mark = (time.monotonic(), 0, 0)
        self._rates = (0.0, 0.0)
        self._last_recall_ms = 0.0
        self._peers: dict[str, tuple[float, bool, float]] = {}
        self._store_sub: Subscription | None = None
        self._recall_sub = await self.bus.subscribe_direct(
            "mem.recall", self._enqueuer(cast(HandlerFn, type(self).recalled)), model=MemRecall,
            on_bad=self._bad_recall)
        self._subs.append(self._recall_sub)
        self._store_via_mailbox = self._enqueuer(cast(HandlerFn, type(self).stored))
        await self._open_intake()
        self._committer = asyncio.ensure_future(self._commit_loop())
        self._committer.add_done_callback(self._on_worker_done)
        self.log.info("hippocampus.shard_ready", episodes=len(self.store), capacity=o.capacity,
                      mode=o.mode, dtype=o.dtype, persist=o.persist)
        if self.recovery is not None and not self.recovery.clean:
            r = self.recovery
            gap = ["sequence gap in the log"] if r.log_gap else []
            problems = [*r.snapshot_errors, *r.log_errors, *gap]
            self.report_soon(f"{self.name}.recovery", f"recovered {len(self.store)} episodes with damage: "
                             f"snapshot={r.snapshot}, {r.bytes_dropped} log bytes dropped; "
                             + "; ".join(problems)[:800], kind="handler_error")

    def _directory(self) -> Path:
        if self.options.data_dir is not None:
            return Path(self.options.data_dir) / self.name
        brain_dir: Path | None = getattr(self, "_brain_data_dir", None)
        if brain_dir is None:
            raise BadInput(f"shard {self.name!r} persists episodes but has no data_dir option and no "
                           "supervisor to take the brain's data_dir from; set options.data_dir")
        return brain_dir / "hippocampus" / self.name

    async def on_stop(self) -> None:
        # Finish what was queued (those stores were accepted), then snapshot, so a clean restart
        # loads one file instead of replaying the log.
        self._closing = True
        self._have_pending.set()
        with contextlib.suppress(Exception):
            await self._committer
        if self.persistence is not None:
            if self._since_checkpoint:
                async with self._log_lock, self._lock:
                    await asyncio.to_thread(self.persistence.checkpoint, self.store)
            self.persistence.close()

    async def on_sleep(self) -> None:
        """Consolidate: replay a sample of episodes to the regions that learn from them, prune weak
        episodes (salience below ``prune_salience``) and snapshot.

        Replay comes first, so what is about to be pruned can still be rehearsed once; the sample
        favours salient and rewarded episodes, so weak ones rarely are.
        """
        if self.options.replay_episodes > 0:
            async with self._lock:
                sample = self.store.replay_sample(self.options.replay_episodes, self._replay_rng)
            for ep in sample:
                reward = None if ep.reward is None else max(-1.0, min(1.0, float(ep.reward)))
                await self.publish(self.bus.subjects.mem_replay, MemReplay(
                    key=ep.key, action=ep.action, reward=reward, salience=max(0.0, float(ep.salience)),
                    episode_id=ep.episode_id, shard=self.name, stimulus_id=ep.stimulus_id),
                    stimulus_id=ep.stimulus_id)
            self._counts["replayed"] += len(sample)
            self.log.info("hippocampus.replayed", episodes=len(sample), stored=len(self.store))
        async with self._log_lock, self._lock:
            if self.options.prune_salience > 0:
                ids = self.store.prune(self.options.prune_salience)
                if len(ids) and self.persistence is not None:
                    await asyncio.to_thread(self.persistence.log_remove, ids)
                self._counts["pruned"] += len(ids)
            if self.persistence is not None:
                await asyncio.to_thread(self.persistence.checkpoint, self.store)
                self._since_checkpoint = 0

    # ---------------------------------------------------------------- intake (queue group)

    async def _open_intake(self) -> None:
        if self._store_sub is None:
            queue = STORE_QUEUE if self.options.mode == "independent" else ""
            self._store_sub = await self.bus.subscribe_direct(
                "mem.store", self._take_store, model=MemStore, on_bad=self._bad_store, queue=queue)
            self._subs.append(self._store_sub)

    async def _close_intake(self) -> None:
        sub, self._store_sub = self._store_sub, None
        if sub is not None:
            self._subs.remove(sub)
            await sub.stop()

    @on("sys.heartbeat.*")
    async def peer_beat(self, msg: Heartbeat, meta: Meta) -> None:
        if msg.kind == self.kind and msg.actor != self.name:
            self._peers[msg.actor] = (time.monotonic(), bool(msg.stats.get("open", False)),
                                      float(msg.stats.get("fill", 1.0)))

    @every(0.5)
    async def intake_check(self) -> None:
        """Seal a full shard while a peer has room; reopen when none has (see the module doc)."""
        if self.options.mode != "independent" or self._closing:
            return
        fresh = time.monotonic() - 3 * self.heartbeat_interval
        room_elsewhere = any(t >= fresh and is_open and fill < 1.0
                             for t, is_open, fill in self._peers.values())
        full = len(self.store) >= self.store.capacity
        if self._store_sub is not None and full and room_elsewhere:
            await self._close_intake()
            self.log.info("hippocampus.shard_sealed", episodes=len(self.store))
        elif self._store_sub is None and not room_elsewhere:
            await self._open_intake()
            self.log.info("hippocampus.shard_reopened", episodes=len(self.store))

    # ---------------------------------------------------------------- store

    def _take_store(self, msg: MemStore, meta: Meta) -> None:
        """Check one store and queue it for the committer, straight from the connection's read loop.

        A store needs no handler of its own: it only joins the next group commit, which sends
        the ack once the episode is durable. Going through the mailbox cost a handler call and
        an event-loop round per episode, and batches filled one round at a time. The queue is
        bounded like a mailbox: past ``mailbox_capacity`` waiting stores, a store is refused
        with an error ack ("busy"), counted as dropped and reported, never silently lost.
        While the actor is paused, stores wait in the mailbox as before.
        """
        if self.state not in (ActorState.RUNNING, ActorState.SLEEPING):
            self._store_via_mailbox(msg, meta)
            return
        self.stats["msgs_in"] += 1
        reason = self._store_problem(msg)
        if reason is not None:
            self.stats["rejected"] += 1
            self.report_soon(meta.subject, reason, stimulus_id=meta.stimulus_id)
            self._answer_refused(meta, reason)
            return
        if len(self._pending) >= self._capacity:
            self.stats["dropped"] += 1
            reason = f"shard busy: {len(self._pending)} stores are waiting for the log; retry later"
            self.report_soon(meta.subject, reason, kind="overflow", stimulus_id=meta.stimulus_id)
            self._answer_refused(meta, reason)
            return
        self._queue_store(msg, meta)

    async def stored(self, msg: MemStore, meta: Meta) -> None:
        """Mailbox handler for stores that arrived while the actor was paused."""
        reason = self._store_problem(msg)
        if reason is not None:
            await self.bus.respond(meta, MemStoreAck(shard=self.name, episode_id=-1, ok=False, error=reason),
                                   source=self.name)
            raise BadInput(reason)
        self._queue_store(msg, meta)

    def _store_problem(self, msg: MemStore) -> str | None:
        if msg.key.size != self.options.dim:
            return f"key has {msg.key.size} dimensions; this memory stores {self.options.dim}"
        if not np.count_nonzero(msg.key):  # a third of np.any's time (its dispatch costs more than the test)
            return "key is all zeros (it has no direction to recall it by)"
        return None

    def _queue_store(self, msg: MemStore, meta: Meta) -> None:
        episode = Episode(episode_id=-1, key=msg.key, stimulus_id=msg.stimulus_id or meta.stimulus_id,
                          action=msg.action, reward=msg.reward, hormones=msg.hormones,
                          time=time.time(), salience=msg.salience, world_episode=msg.episode)
        self._pending.append((episode, meta))
        self._have_pending.set()

    def _answer_refused(self, meta: Meta, reason: str) -> None:
        self._spawn(self.bus.respond(meta, MemStoreAck(shard=self.name, episode_id=-1, ok=False, error=reason),
                                     source=self.name), f"{self.name}.refused")

    async def _commit_loop(self) -> None:
        window = self.options.commit_window_ms / 1000
        while True:
            await self._have_pending.wait()
            if not self._pending:
                if self._closing:
                    return
                self._have_pending.clear()
                continue
            if window and len(self._pending) < self.options.max_batch and not self._closing:
                await asyncio.sleep(window)  # let concurrent stores join this fsync
            batch = self._pending[: min(self.options.max_batch, self.store.capacity)]
            del self._pending[: len(batch)]
            await self._commit(batch)
            await self._maybe_checkpoint()

    async def _commit(self, batch: list[tuple[Episode, Meta]]) -> None:
        store = self.store
        error: str | None = None
        async with self._log_lock:
            async with self._lock:
                episodes, metas = self._prepare(batch)
                need = len(episodes) - store.free_slots
                victims = np.zeros(0, dtype=np.int64)
                if need > 0:  # evict a little more than needed: fewer, larger removal records
                    victims = store.evict(max(need, int(store.capacity * self.options.evict_fraction)))
            if self.persistence is not None and episodes:
                try:
                    encoded = [ep.to_bytes() for ep in episodes]  # here: the thread only does I/O
                    await asyncio.to_thread(self.persistence.log_commit, victims, encoded)
                except OSError as exc:
                    error = f"cannot write the shard log ({exc}); episode not stored"
                    self.log.error("hippocampus.log_failed", error=str(exc), batch=len(episodes))
            if error is None and episodes:
                async with self._lock:
                    store.add(episodes, prepared=True)
                self._counts["stores"] += len(episodes)
                self._counts["evicted"] += len(victims)
                self._counts["commits"] += 1
                self._since_checkpoint += len(episodes) + (1 if len(victims) else 0)
        for ep, meta in zip(episodes, metas, strict=True):
            ack = MemStoreAck(shard=self.name, episode_id=ep.episode_id) if error is None else \
                MemStoreAck(shard=self.name, episode_id=-1, ok=False, error=error)
            await self.bus.respond(meta, ack, source=self.name)
        if error is not None:
            await self.report(self.bus.subjects.mem_store, error, kind="handler_error")

    def _prepare(self, batch: list[tuple[Episode, Meta]]) -> tuple[list[Episode], list[Meta]]:
        """Assign ids and normalize; an episode the store refuses is answered alone, not the batch."""
        try:
            return self.store.prepare([ep for ep, _ in batch]), [m for _, m in batch]
        except ValueError:
            pass
        good: list[Episode] = []
        metas: list[Meta] = []
        for ep, meta in batch:
            try:
                good.extend(self.store.prepare([ep]))
                metas.append(meta)
            except ValueError as exc:
                reason = str(exc).removeprefix("episode 0: ")
                self.stats["rejected"] += 1
                self.report_soon(meta.subject, reason, stimulus_id=meta.stimulus_id)
                self._spawn(self.bus.respond(meta, MemStoreAck(shard=self.name, episode_id=-1, ok=False,
                                                               error=reason), source=self.name),
                            f"{self.name}.reject")
        return good, metas

    async def _maybe_checkpoint(self) -> None:
        if self.persistence is None or not self._since_checkpoint:
            return
        due = (self._since_checkpoint >= self.options.checkpoint_records
               or time.monotonic() - self._last_checkpoint >= self.options.checkpoint_interval_s)
        if due:
            async with self._log_lock, self._lock:
                await asyncio.to_thread(self.persistence.checkpoint, self.store)
            self._since_checkpoint = 0
            self._last_checkpoint = time.monotonic()

    # ---------------------------------------------------------------- recall

    async def recalled(self, msg: MemRecall, meta: Meta) -> MemRecallReply:
        """Answer with this shard's top-k (an error reply for a query of the wrong dimension)."""
        if msg.query.size != self.options.dim:
            reason = f"query has {msg.query.size} dimensions; this memory stores {self.options.dim}"
            await self.bus.respond(meta, self._error_reply(reason), source=self.name)
            raise BadInput(reason)
        if not np.any(msg.query):
            reason = "query is all zeros (no direction to compare with)"
            await self.bus.respond(meta, self._error_reply(reason), source=self.name)
            raise BadInput(reason)
        t0 = time.perf_counter()
        async with self._lock:
            if len(self.store) * self.options.dim <= _INLINE_SEARCH_ELEMENTS:
                hits = self._search(msg.query, msg.k, msg.with_keys)
            else:
                hits = await run_search(self._search, msg.query, msg.k, msg.with_keys)
            episodes = len(self.store)
        self._last_recall_ms = (time.perf_counter() - t0) * 1000
        self._counts["recalls"] += 1
        return MemRecallReply(hits=hits, shards_asked=1, shards_answered=1, shard=self.name,
                              episodes=episodes)

    def _search(self, query: np.ndarray, k: int, with_keys: bool = False) -> list[MemHit]:
        if len(self.store) == 0:
            return []
        q: Any = query
        if self.options.hopfield_beta > 0:
            q = self.store.complete(query, self.options.hopfield_beta)
        scores, ids = self.store.search(q, k)
        live = ids[0] >= 0
        found = self.store.get_many(ids[0][live])
        return [MemHit(shard=self.name, episode_id=ep.episode_id, score=float(s), stimulus_id=ep.stimulus_id,
                       action=ep.action, reward=ep.reward, salience=ep.salience, time=ep.time,
                       episode=ep.world_episode, key=ep.key.astype(np.float32).tolist() if with_keys else None)
                for s, ep in zip(scores[0][live], found, strict=True) if ep is not None]

    def _error_reply(self, reason: str) -> MemRecallReply:
        return MemRecallReply(hits=[], shards_asked=1, shards_answered=0, shard=self.name, error=reason)

    # ---------------------------------------------------------------- undecodable requests

    def _bad_store(self, exc: BadInput, meta: Meta) -> None:
        self._bad_request(exc, meta, MemStoreAck(shard=self.name, episode_id=-1, ok=False, error=exc.reason))

    def _bad_recall(self, exc: BadInput, meta: Meta) -> None:
        self._bad_request(exc, meta, self._error_reply(exc.reason))

    def _bad_request(self, exc: BadInput, meta: Meta, reply: Message) -> None:
        # Runs in the connection's read loop: count and report now, answer from a task.
        self._on_bad(exc, meta)
        if meta.reply:
            self._spawn(self.bus.respond(meta, reply, source=self.name), f"{self.name}.bad_reply")

    # ---------------------------------------------------------------- stats

    def extra_stats(self) -> dict[str, Any]:
        now = time.monotonic()
        t, stores, recalls = self._rate_mark
        if now - t >= 0.5:
            self._rates = ((self._counts["stores"] - stores) / (now - t),
                           (self._counts["recalls"] - recalls) / (now - t))
            self._rate_mark = (now, self._counts["stores"], self._counts["recalls"])
        episodes = len(self.store)
        return {
            "episodes": episodes, "capacity": self.store.capacity,
            "fill": round(episodes / self.store.capacity, 4), "open": self._store_sub is not None,
            "mode": self.options.mode, "dtype": self.options.dtype,
            "stores_per_s": round(self._rates[0], 1), "recalls_per_s": round(self._rates[1], 1),
            "last_recall_ms": round(self._last_recall_ms, 3), "pending": len(self._pending),
            "recovered": None if self.recovery is None else self.recovery.snapshot,
            **self._counts,
        }
