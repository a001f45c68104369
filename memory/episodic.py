"""Episodic memory in the thinking loop: encode what happened, recall it when it happens again.

The `Episodic` actor (kind ``episodic``) connects the regions to the hippocampal shards (DESIGN
6.4); it holds no episodes itself, only the short-lived bookkeeping between a percept and its
outcome.

ENCODING. It remembers the content and salience of every percept the workspace broadcasts, by
stimulus id (the last ``remember`` of them). When the basal ganglia publish an ``outcome`` (a
reward for the action they chose), it stores the episode through the shards (`memory.recall.store`,
acknowledged): key = the broadcast content, the action, the reward, the hormone levels at that
moment, the world episode the step was part of, and a salience ``|reward| + broadcast_weight *
broadcast salience``. The reward stored is the outcome's ``scaled`` one (the raw reward divided by
the largest magnitude seen, so a world's rewards of any size land in [-1, 1]); an outcome without
it has its raw reward clipped to [-1, 1]. Acetylcholine sets the mode (neuromod.dynamics:
``encoding`` when ACh is above its reference): in encoding mode every outcome is stored; in
retrieval mode only salient ones (salience >= ``retrieval_min_salience``, i.e. with the defaults a
clear reward or punishment, not a lukewarm one). Stores run as tasks, so
the actor keeps perceiving while a shard fsyncs; a recall first waits for the stores already under
way (read your own writes: a stimulus rewarded a moment ago is found when it comes back).

RETRIEVAL. On every percept broadcast it recalls the top ``k`` episodes by scatter-gather
over the live shards (known from their heartbeats) with a short ``deadline_s``: a slow shard makes
the answer partial, never late. Retrieval runs in both modes: the mode decides what is written,
not whether memory is consulted. The hits at or above ``min_score`` that have an action and a reward
become ONE workspace bid of kind ``episode`` for that stimulus: its content is the best hit's key
(the remembered content itself), its detail names the best episode (``action``, ``reward``,
``score``, ``episode_id``) and carries ``evidence``, one item per action with the score-weighted
mean reward of its episodes and their best score. One bid, because the workspace lets one episode
per stimulus win a cycle (a second is a duplicate); per action, so ten memories of the same
choice count as one strong piece of evidence, not ten. The basal ganglia turn the broadcast into a
bias on their choice (regions.basal_ganglia, `episodic_wait_s`).

Why the cue is the broadcast percept and not the thalamus's raw vector: the sensory cortex adapts
(it subtracts most of its running mean percept before bidding, regions.cortex), so keys, which are
broadcast contents, and raw thalamus vectors differ by that adapted mean (a large part of a
sentence-encoder vector). Cue and key from the same place compare like with like; the recall
still runs in parallel with the prefrontal cortex and the basal ganglia, which wait
`episodic_wait_s` for it.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from actors.actor import on
from bus import Meta
from bus.errors import BadInput, BusError
from bus.models import EPISODE_ID, Bid, Broadcast, Heartbeat, MemHit, MemStore, RegionOutput
from memory.recall import ShardWatch, StoreFailed, recall, store
from regions.modulated import Modulated

__all__ = ["Episodic", "EpisodicOptions", "evidence_from_hits"]


class EpisodicOptions(BaseModel):
    """Options of the episodic actor (a config's ``actors.<name>.options``)."""

    model_config = ConfigDict(extra="forbid")
    #: Dimension of percept contents and episode keys (the shards' `dim`).
    dim: Annotated[int, Field(ge=1, le=8192)] = 384
    #: Episodes recalled per percept.
    k: Annotated[int, Field(ge=1, le=100)] = 5
    #: Recall deadline: shards that have not answered by then are left out (partial answer).
    deadline_s: Annotated[float, Field(gt=0, le=5)] = 0.015
    #: Cosine similarity a recalled episode needs to count as evidence about the current percept.
    min_score: Annotated[float, Field(ge=-1, le=1)] = 0.8
    #: Salience of an episode bid for a perfect match (scaled by the best hit's score).
    bid_salience: Annotated[float, Field(ge=0, le=10)] = 1.0
    #: In retrieval mode (low ACh) only outcomes at least this salient are stored.
    retrieval_min_salience: Annotated[float, Field(ge=0, le=10)] = 1.0
    #: Weight of the broadcast salience in an episode's salience (|reward| has weight 1).
    broadcast_weight: Annotated[float, Field(ge=0, le=10)] = 0.5
    #: Percept broadcasts kept while waiting for their outcome.
    remember: Annotated[int, Field(ge=1, le=1_000_000)] = 4096
    #: Acknowledgements a store needs: 1 for independent shards, the number of mirrors if mirrored.
    replicas: Annotated[int, Field(ge=1, le=64)] = 1
    #: The shards are mirrors of each other: any one recall answer is complete.
    mirrored: bool = False
    store_timeout_s: Annotated[float, Field(gt=0, le=30)] = 1.0
    #: The region whose `outcome` outputs are stored.
    outcome_source: Annotated[str, Field(pattern=r"^[a-z0-9_-]+$")] = "basal_ganglia"


def evidence_from_hits(hits: list[MemHit], min_score: float) -> list[dict[str, Any]]:
    """Evidence per action from recalled hits: score-weighted mean reward, best score, count.

    Hits below ``min_score``, without an action or without a reward are not evidence. The items
    come strongest first (best score, then action name, so the order is deterministic).
    """
    by_action: dict[str, list[MemHit]] = {}
    for h in hits:
        if h.score >= min_score and h.action is not None and h.reward is not None and h.score > 0:
            by_action.setdefault(h.action, []).append(h)
    rows: list[tuple[float, str, float, int]] = []
    for action, group in by_action.items():
        weight = sum(h.score for h in group)
        mean_reward = sum(h.score * float(h.reward or 0.0) for h in group) / weight
        rows.append((max(h.score for h in group), action, mean_reward, len(group)))
    rows.sort(key=lambda row: (-row[0], row[1]))
    return [{"action": action, "reward": round(reward, 6), "score": round(score, 6), "episodes": n}
            for score, action, reward, n in rows]


class Episodic(Modulated):
    """Encodes outcomes as episodes and brings recalled episodes back as workspace bids."""

    kind = "episodic"
    Options = EpisodicOptions
    options: EpisodicOptions
    # Recalls wait on the shards: let several percepts be recalled at once instead of queueing.
    concurrency = 8

    async def on_start(self) -> None:
        self.init_modulation()
        self.watch = ShardWatch(self.bus, stale_after=3 * self.heartbeat_interval + 0.5)
        # stimulus id -> (broadcast content, broadcast salience)
        self.contents: OrderedDict[str, tuple[np.ndarray, float]] = OrderedDict()
        self._inflight: set[asyncio.Task[None]] = set()
        self.counts = {"recalls": 0, "partial": 0, "recall_errors": 0, "bids": 0, "stored": 0,
                       "store_failed": 0, "not_salient": 0, "unencoded": 0}

    async def on_stop(self) -> None:
        # Stores already sent were promised to the shards: give them their time to be acked.
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=self.options.store_timeout_s)
        for task in list(self._inflight):
            task.cancel()

    @on("sys.heartbeat.*")
    async def beat(self, msg: Heartbeat, meta: Meta) -> None:
        self.watch.update(msg)

    # ---------------------------------------------------------------- encoding

    @on("gw.broadcast")
    async def broadcast(self, msg: Broadcast, meta: Meta) -> None:
        """A percept reached the workspace: keep it as the key of its future episode, and recall."""
        sid = msg.stimulus_id
        if msg.kind != "percept" or not sid or msg.content.size != self.options.dim:
            return
        self.contents[sid] = (msg.content, float(msg.salience))
        self.contents.move_to_end(sid)
        while len(self.contents) > self.options.remember:
            self.contents.popitem(last=False)
        await self._retrieve(msg.content, sid)

    @on("region.{outcome_source}.out")
    async def region_output(self, msg: RegionOutput, meta: Meta) -> None:
        if msg.region == self.options.outcome_source and msg.kind == "outcome":
            self._encode(msg)

    def _encode(self, msg: RegionOutput) -> None:
        sid = msg.stimulus_id
        action, reward = msg.data.get("action"), msg.data.get("scaled")
        if not isinstance(reward, int | float):
            reward = msg.data.get("reward")  # an outcome without a scaled reward: its raw one, clipped
        if not sid or not isinstance(action, str) or not isinstance(reward, int | float):
            return
        episode = msg.data.get("episode")
        if not isinstance(episode, str) or not EPISODE_ID.fullmatch(episode):
            episode = None
        remembered = self.contents.get(sid)
        if remembered is None:  # the percept never won the workspace (or was forgotten): no key
            self.counts["unencoded"] += 1
            return
        content, broadcast_salience = remembered
        reward = float(reward)
        if not math.isfinite(reward):
            return
        reward = max(-1.0, min(1.0, reward))
        salience = min(10.0, abs(reward) + self.options.broadcast_weight * max(0.0, broadcast_salience))
        if not self.mod.encoding and salience < self.options.retrieval_min_salience:
            self.counts["not_salient"] += 1
            return
        step = MemStore(key=content, stimulus_id=sid, action=action, reward=reward, salience=salience,
                        hormones=dict(self.levels), episode=episode)
        task = asyncio.ensure_future(self._store(step, sid))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _store(self, episode: MemStore, sid: str) -> None:
        try:
            acks = await store(self.bus, episode, replicas=self.options.replicas,
                               timeout=self.options.store_timeout_s, stimulus_id=sid)
        except (StoreFailed, BadInput) as exc:
            self.counts["store_failed"] += 1
            await self.report(self.bus.subjects.mem_store, f"episode of {sid} not stored: {exc}",
                              kind="handler_error", stimulus_id=sid)
            return
        self.counts["stored"] += 1
        self.log.debug("episodic.stored", stimulus_id=sid, action=episode.action, reward=episode.reward,
                       salience=round(episode.salience, 3), shard=acks[0].shard, episode_id=acks[0].episode_id,
                       world_episode=episode.episode)

    # ---------------------------------------------------------------- retrieval

    async def _retrieve(self, query: np.ndarray, sid: str) -> None:
        shards = self.watch.count
        if shards == 0 or query.size != self.options.dim or not np.any(query):
            return
        o = self.options
        if self._inflight:  # read our own writes: stores under way land before the search
            await asyncio.wait(set(self._inflight), timeout=o.store_timeout_s)
        try:
            reply = await recall(self.bus, query, o.k, shards_expected=shards, deadline=o.deadline_s,
                                 mirrored=o.mirrored, stimulus_id=sid, with_keys=True)
        except (BadInput, BusError) as exc:
            self.counts["recall_errors"] += 1
            await self.report(self.bus.subjects.mem_recall, f"recall for {sid} failed: {exc}",
                              kind="handler_error", stimulus_id=sid)
            return
        self.counts["recalls"] += 1
        self.counts["partial"] += int(reply.partial)
        evidence = evidence_from_hits(reply.hits, o.min_score)
        if not evidence:
            return
        best = next(h for h in reply.hits if h.action is not None and h.reward is not None
                    and h.score >= o.min_score)
        content = query  # stands for the memory if its key did not come back intact
        if best.key is not None:
            key = np.asarray(best.key, dtype=np.float32)
            if key.size == query.size and np.isfinite(key).all() and np.any(key):
                content = key
        await self.publish(self.bus.subjects.gw_bid, Bid(
            source=self.name, kind="episode", salience=max(0.0, min(10.0, o.bid_salience * best.score)),
            content=content, stimulus_id=sid,
            detail={"action": best.action, "reward": best.reward, "score": round(best.score, 6),
                    "episode_id": best.episode_id, "shard": best.shard, "recalled": best.stimulus_id,
                    "evidence": evidence, "partial": reply.partial}), stimulus_id=sid)
        self.counts["bids"] += 1

    def extra_stats(self) -> dict[str, Any]:
        return {"shards": self.watch.count, "remembered": len(self.contents), "storing": len(self._inflight),
                "mode": "encoding" if self.mod.encoding else "retrieval", **self.counts}
