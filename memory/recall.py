"""Client side of the hippocampus: `store` an episode, `recall` by scatter-gather, `ShardWatch`.

Regions (and outside agents) use these instead of talking to shards one by one:

    ack = (await store(bus, MemStore(key=v, stimulus_id="s1", action="left", reward=1.0)))[0]
    reply = await recall(bus, v, k=5, shards_expected=watch.count or 1, deadline=0.2)
    if reply.partial: ...   # a shard was slow or down: the answer is the best of those that replied

Recall publishes one request on `NS.mem.recall`; every shard answers with its local top-k and
the merge keeps the global top-k by score. A shard that misses the deadline degrades the answer
(``partial=True``, ``shards_answered < shards_asked``) instead of blocking it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from bus import Bus, Meta, Subscription, codec
from bus.errors import BadInput, BusError, DecodeError, NoRespondersError, RequestTimeout
from bus.models import Heartbeat, MemHit, MemRecall, MemRecallReply, MemStore, MemStoreAck

__all__ = ["SHARD_KIND", "ShardWatch", "StoreFailed", "merge_hits", "recall", "store"]

SHARD_KIND = "hippocampus_shard"


class StoreFailed(BusError):
    """A store was not acknowledged (rejected, or too few replicas answered in time)."""


def merge_hits(replies: Iterable[MemRecallReply], k: int, *, dedupe: bool = False) -> list[MemHit]:
    """The global top-k of several shards' local top-k lists (best first).

    With ``dedupe`` (mirrored shards hold copies), hits with the same stimulus, action, reward
    and score are one episode.
    """
    hits = sorted((h for r in replies for h in r.hits), key=lambda h: (-h.score, h.shard, h.episode_id))
    if not dedupe:
        return hits[:k]
    seen: set[tuple[Any, ...]] = set()
    out: list[MemHit] = []
    for h in hits:
        key = (h.stimulus_id, h.action, h.reward, round(h.score, 5))
        if key not in seen:
            seen.add(key)
            out.append(h)
            if len(out) == k:
                break
    return out


async def recall(
    bus: Bus,
    query: npt.ArrayLike,
    k: int = 10,
    *,
    shards_expected: int,
    deadline: float = 0.5,
    mirrored: bool = False,
    stimulus_id: str | None = None,
    with_keys: bool = False,
) -> MemRecallReply:
    """Top-k episodes most similar to ``query`` over all shards, within ``deadline`` seconds.

    Args:
        shards_expected: Shards that should answer (a `ShardWatch` knows); the gather returns
            as soon as that many replied. In ``mirrored`` mode any one replica is a full answer.
        deadline: Seconds to wait for shards; late shards make the answer partial.
        with_keys: Bring back each hit's key vector (`MemHit.key`), e.g. to put the recalled
            content itself back into the workspace.

    Raises:
        BadInput: The shards rejected the query (wrong dimension, zero vector), or ``k`` is bad.
    """
    if not 1 <= k <= 1000:
        raise BadInput(f"k must be in 1..1000, got {k}")
    if shards_expected < 1:
        raise BadInput(f"shards_expected must be >= 1, got {shards_expected}")
    request = MemRecall(query=np.asarray(query, dtype=np.float32), k=k, with_keys=with_keys)
    want = 1 if mirrored else shards_expected
    replies = await bus.gather("mem.recall", request, MemRecallReply, expect=want, timeout=deadline,
                               stimulus_id=stimulus_id)
    good = [r for r, _ in replies if r.error is None]
    errors = [r.error for r, _ in replies if r.error is not None]
    if errors and not good:
        raise BadInput(f"recall rejected: {errors[0]}")
    return MemRecallReply(hits=merge_hits(good, k, dedupe=mirrored), shards_asked=shards_expected,
                          shards_answered=len(good), partial=len(good) < want)


class _StoreRequests:
    """One connection's store requests, all answered through one inbox subscription.

    `Bus.request` goes through nats-py's request: a parsed header dict, a `wait_for` and several
    callbacks per call, about 100 us of the client's CPU per store, more than a shard spends
    storing it. Stores are the one request an agent sends by the thousand, so here each is one
    HPUB whose reply subject sits under this connection's own inbox prefix (what nats-py's
    request uses too), and each ack is decoded straight in the connection's read loop: about
    60 us. Same errors as `Bus.request`: `NoRespondersError` (the server's 503), `RequestTimeout`,
    and the ack's `DecodeError`.
    """

    def __init__(self, bus: Bus, nc: Any) -> None:
        self.nc = nc
        self.source = bus.source
        self.subject = bus.resolve("mem.store")
        self._subject = self.subject.encode()
        self.prefix = nc.new_inbox()
        self._ids = itertools.count()
        self._waiting: dict[str, asyncio.Future[MemStoreAck]] = {}
        self.started = asyncio.ensure_future(nc.subscribe_direct(f"{self.prefix}.*", self._deliver, blocks=True))

    def _deliver(self, subject: str, reply: str, data: bytes, headers: Any) -> None:
        waiter = self._waiting.pop(subject, None)
        if waiter is None or waiter.done():
            return  # answered after its deadline
        if not data and isinstance(headers, dict) and headers.get("Status") == "503":
            waiter.set_exception(NoRespondersError(self.subject))
            return
        try:
            waiter.set_result(codec.decode(MemStoreAck, data, headers, subject)[0])
        except DecodeError as exc:
            waiter.set_exception(exc)

    async def request(self, episode: MemStore, timeout: float, stimulus_id: str | None) -> MemStoreAck:  # noqa: ASYNC109
        inbox = f"{self.prefix}.{next(self._ids)}"
        waiter: asyncio.Future[MemStoreAck] = asyncio.get_running_loop().create_future()
        self._waiting[inbox] = waiter
        try:
            body, block = codec.encode_wire(episode, source=self.source, stimulus_id=stimulus_id)
            wait = self.nc.write_block(self._subject, inbox.encode(), block, body)
            if wait is not None:
                await wait
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            raise RequestTimeout(self.subject, timeout) from None
        finally:
            self._waiting.pop(inbox, None)


_store_requests: weakref.WeakKeyDictionary[Any, _StoreRequests] = weakref.WeakKeyDictionary()


async def _store_requests_of(bus: Bus) -> _StoreRequests | None:
    """The store requester of this bus's current connection (None: use `Bus.request`)."""
    nc = bus.nc
    if not hasattr(nc, "subscribe_direct") or not hasattr(nc, "write_block"):
        return None
    requests = _store_requests.get(nc)
    failed = requests is not None and requests.started.done() and (
        requests.started.cancelled() or requests.started.exception() is not None)
    if requests is None or failed or requests.subject != bus.resolve("mem.store"):
        requests = _store_requests[nc] = _StoreRequests(bus, nc)
    await requests.started
    return requests


async def store(bus: Bus, episode: MemStore, *, replicas: int = 1, timeout: float = 2.0,  # noqa: ASYNC109
                stimulus_id: str | None = None) -> list[MemStoreAck]:
    """Store one episode and wait until ``replicas`` shards acknowledged it as durable.

    ``replicas=1`` for independent shards (NATS hands the store to exactly one); the number of
    mirrors for mirrored shards. A moment with no open shard (one sealing while another opens)
    is retried until ``timeout``.

    Raises:
        StoreFailed: A shard rejected the episode, or fewer than ``replicas`` acked in time.
    """
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        try:
            if replicas == 1:
                requests = await _store_requests_of(bus)
                if requests is None:
                    acks = [await bus.request("mem.store", episode, MemStoreAck, timeout=max(left, 0.01),
                                              stimulus_id=stimulus_id)]
                else:
                    acks = [await requests.request(episode, max(left, 0.01), stimulus_id)]
            else:
                got = await bus.gather("mem.store", episode, MemStoreAck, expect=replicas,
                                       timeout=max(left, 0.01), stimulus_id=stimulus_id)
                acks = [a for a, _ in got]
        except NoRespondersError:
            if time.monotonic() + 0.05 >= end:
                raise StoreFailed("no hippocampus shard is taking stores") from None
            await asyncio.sleep(0.05)
            continue
        except BusError as exc:
            raise StoreFailed(f"store not acknowledged: {exc}") from None
        failed = [a.error for a in acks if not a.ok]
        if failed:
            raise StoreFailed(f"store rejected: {failed[0]}")
        if len(acks) < replicas:
            raise StoreFailed(f"only {len(acks)} of {replicas} replicas acknowledged within {timeout:g} s")
        return acks


class ShardWatch:
    """Live hippocampus shards, from their heartbeats (who is there, how full, open for stores).

    Either `start()` it (it subscribes to heartbeats itself) or feed it with `update()` from an
    actor's own heartbeat handler.
    """

    def __init__(self, bus: Bus, *, stale_after: float = 3.0, kind: str = SHARD_KIND) -> None:
        self.bus = bus
        self.stale_after = stale_after
        self.kind = kind
        self._seen: dict[str, tuple[float, Heartbeat]] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        async def beat(msg: Heartbeat, meta: Meta) -> None:
            self.update(msg)

        self._sub = await self.bus.subscribe("sys.heartbeat.*", beat, model=Heartbeat)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.stop()
            self._sub = None

    def update(self, hb: Heartbeat) -> None:
        if hb.kind == self.kind:
            self._seen[hb.actor] = (time.monotonic(), hb)

    def live(self) -> dict[str, Heartbeat]:
        """Shards heard from within ``stale_after`` seconds, by name."""
        cutoff = time.monotonic() - self.stale_after
        return {name: hb for name, (t, hb) in self._seen.items() if t >= cutoff}

    @property
    def count(self) -> int:
        return len(self.live())

    def fills(self) -> dict[str, float]:
        """Fill fraction (episodes / capacity) of each live shard."""
        return {name: float(hb.stats.get("fill", 0.0)) for name, hb in self.live().items()}

    def names(self) -> Sequence[str]:
        return sorted(self.live())
