"""Basal ganglia: action selection over the repertoire the environment declared.

The prefrontal context feeds an actor-critic (regions.selection): softmax with the inverse
temperature from norepinephrine, plus episodic evidence from recalled memories as a bias;
three-factor learning when a reward arrives (eligibility trace x dopamine-like RPE, learning rate
from acetylcholine). The RPE goes to the hormone system as a reward event (the phasic dopamine).

Episodic evidence (`gw.broadcast` of kind "episode", see memory.episodic) comes by a longer road
than the context (a recall through the hippocampal shards, then a workspace cycle), so it usually
arrives a few milliseconds after it. With `episodic_wait_s` > 0 the choice waits that long after
the context (deliberation) and then takes whatever evidence came; 0 chooses at once, as a brain
without a hippocampus should.

Worlds of many steps (regions.selection): a context that carries an `episode` id first learns
from the reward its episode received since its last choice, with the TD error
`r + gamma V(s') - V(s)` (gamma the serotonin discount, or `discount` when fixed), then chooses;
its traces are the episode's own. A terminal or truncated reward ends the episode; an episode
idle for `episode_timeout_s`, or pushed out by more than `max_open_episodes` open ones, is closed
without learning and counted (`episodes_timed_out`). Rewards are scaled into the brain's range
first (regions.rewards.RewardScale).

Sleep consolidation: episodes replayed on `NS.mem.replay` are learnt offline with the context a
lone percept would give (`[key, 0] / sqrt(2)`, the prefrontal layout with an empty history), the
remembered action and reward, at `replay_lr` (regions.selection.ActorCritic.replay).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from actors.actor import every, on
from actors.determinism import INTAKE
from bus import Meta
from bus.errors import BadInput
from bus.models import Broadcast, EnvActions, MemReplay, NeuromodEvent, RegionOutput, Reward, Vector
from regions.intake import relayed_reward
from regions.modulated import Modulated
from regions.rewards import RewardScale
from regions.selection import ActorCritic

__all__ = ["BasalGanglia"]

_REMEMBERED_CHOICES = 4096


class BasalGangliaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Context dimension: the prefrontal context is twice its content dimension.
    dim: Annotated[int, Field(ge=8, le=16384)] = 768
    trace_decay: Annotated[float, Field(ge=0, le=1)] = 0.5
    actor_decay: Annotated[float, Field(ge=0, le=10)] = 0.1
    #: Log-odds added per unit of (recall score x remembered reward) of a recalled episode.
    episodic_gain: Annotated[float, Field(ge=0, le=100)] = 4.0
    #: Deliberation: seconds a choice waits after its context for episodic evidence (0 = none).
    #: Listen to recalled episodes (`gw.broadcast` of kind episode) and sleep replay (`mem.replay`):
    #: for a brain with a hippocampus. Off, those messages are not even received.
    episodic: bool = False
    episodic_wait_s: Annotated[float, Field(ge=0, le=1)] = 0.0
    #: Learning rate of sleep replay (`NS.mem.replay`); 0 ignores replays.
    replay_lr: Annotated[float, Field(ge=0, le=1)] = 0.1
    #: Scales the acetylcholine-set learning rate of live rewards. Below 1 the striatum learns
    #: slowly, as in complementary learning systems: a hippocampus does the one-shot learning
    #: (episodic control) and sleep replay consolidates it, sparing older habits from interference.
    learning_rate_scale: Annotated[float, Field(ge=0, le=10)] = 1.0
    context_source: Annotated[str, Field(pattern=r"^[a-z0-9_-]+$")] = "prefrontal"
    #: The TD discount gamma; None takes it from serotonin (the hormones' `discount`).
    discount: Annotated[float, Field(ge=0, le=1)] | None = None
    #: Episodes kept open at once (interleaved worlds); past this the least recently active closes.
    max_open_episodes: Annotated[int, Field(ge=1, le=10_000)] = 64
    #: An episode with no step for this long is closed (its traces dropped) and counted.
    episode_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    seed: int = 0


class BasalGanglia(Modulated):
    kind = "basal_ganglia"
    Options = BasalGangliaOptions
    options: BasalGangliaOptions

    async def on_start(self) -> None:
        self.init_modulation()
        o = self.options
        self.ac = ActorCritic(o.dim, trace_decay=o.trace_decay, actor_decay=o.actor_decay, seed=o.seed)
        if self.deterministic:  # rewards come in order through the thalamus (regions.intake)
            await self.listen(f"region.{INTAKE}.out", BasalGanglia.relayed)
        self.env: str | None = None
        # stimulus id -> (action chosen, its episode)
        self.choices: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self.reward_scale = RewardScale()
        self.active: OrderedDict[str, float] = OrderedDict()  # open episode -> when it last stepped
        self.episodes_ended = 0
        self.episodes_timed_out = 0
        self.episodic: OrderedDict[str, dict[str, float]] = OrderedDict()  # stimulus id -> bias
        self.unanswered = 0
        self.told_no_actions = False
        self.rewards = 0
        self.reward_sum = 0.0
        self.replays = 0
        self.with_evidence = 0
        # Contexts waiting for episodic evidence: stimulus id -> (due time, context, episode).
        self.deliberating: OrderedDict[str, tuple[float, Vector, str | None]] = OrderedDict()
        self.out_subject = self.bus.subjects.region_out(self.name)

    @on("env.actions")
    async def actions_declared(self, msg: EnvActions, meta: Meta) -> None:
        if len(set(msg.actions)) != len(msg.actions):
            raise BadInput(f"actions must be distinct, got {msg.actions}")
        self.ac.set_actions(msg.actions)
        self.env = msg.env
        self.told_no_actions = False
        self.log.info("basal_ganglia.repertoire", actions=msg.actions, env=msg.env)

    @on("gw.broadcast", when="episodic")
    async def recalled(self, msg: Broadcast, meta: Meta) -> None:
        """A recalled episode about the current stimulus becomes evidence for its action."""
        if msg.kind != "episode" or not msg.stimulus_id:
            return
        # `evidence` (one item per action, memory.episodic) when given; else the single episode.
        items = msg.detail.get("evidence")
        if not isinstance(items, list):
            items = [msg.detail]
        bias = self.episodic.setdefault(msg.stimulus_id, {})
        for item in items:
            if not isinstance(item, dict):
                continue
            action, reward, score = item.get("action"), item.get("reward"), item.get("score", 1.0)
            if not isinstance(action, str) or not isinstance(reward, int | float) \
                    or not isinstance(score, int | float) or not math.isfinite(reward * score):
                continue
            bias[action] = bias.get(action, 0.0) + self.options.episodic_gain * float(reward) * float(score)
        while len(self.episodic) > _REMEMBERED_CHOICES:
            self.episodic.popitem(last=False)

    @on("region.{context_source}.out")
    async def context(self, msg: RegionOutput, meta: Meta) -> None:
        if msg.kind != "context" or msg.region != self.options.context_source or msg.vector is None:
            return
        sid = msg.stimulus_id or meta.stimulus_id or "?"
        if not self.ac.actions:
            self.unanswered += 1
            if not self.told_no_actions:
                self.told_no_actions = True
                await self.report(meta.subject, f"stimulus {sid} was perceived, but no actions are declared on "
                                  f"{self.bus.subjects.env_actions}: no action is taken until they are "
                                  "(reported once; see the unanswered count in the heartbeat)",
                                  kind="no_actions", stimulus_id=sid)
            return
        if msg.vector.size != self.options.dim:
            raise BadInput(f"context has {msg.vector.size} dimensions; basal ganglia expect {self.options.dim}")
        episode = msg.data.get("episode")
        episode = episode if isinstance(episode, str) and episode else None
        if episode is not None:
            await self._step(episode, sid, msg.vector)
        wait = self.options.episodic_wait_s
        if wait > 0:
            self.deliberating[sid] = (time.monotonic() + wait, msg.vector, episode)
            while len(self.deliberating) > _REMEMBERED_CHOICES:  # bounded even if ticks stall
                old_sid, (_, old_context, old_episode) = self.deliberating.popitem(last=False)
                await self._choose(old_sid, old_context, old_episode)
            self.call_later(wait, "deliberated")
            return
        await self._choose(sid, msg.vector, episode)

    @property
    def discount(self) -> float:
        fixed = self.options.discount
        return self.mod.discount if fixed is None else fixed

    async def _step(self, episode: str, sid: str, context: Vector) -> None:
        """An episode's next state: learn from the reward held since its last choice."""
        self.active.pop(episode, None)
        self.active[episode] = time.monotonic()
        while len(self.active) > self.options.max_open_episodes:
            await self._time_out(next(iter(self.active)))
        delta = self.ac.bootstrap(context, lr=self._lr(), discount=self.discount, episode=episode)
        if delta is not None:
            await self._learnt(delta, sid)

    async def _time_out(self, episode: str) -> None:
        self.active.pop(episode, None)
        if self.ac.end_episode(episode):
            self.episodes_timed_out += 1
            self.log.info("basal_ganglia.episode_timed_out", episode=episode)

    @every(5.0)
    async def close_idle_episodes(self) -> None:
        due = time.monotonic() - self.options.episode_timeout_s
        for episode in [e for e, at in self.active.items() if at < due]:
            await self._time_out(episode)

    def _lr(self) -> float:
        return self.mod.learning_rate * self.options.learning_rate_scale

    async def deliberated(self) -> None:
        """Choose for every context whose deliberation window is over, in arrival order."""
        # The timer and the clock may disagree by a fraction of a millisecond: never leave a
        # due context to a later tick that might not come.
        now = time.monotonic() + 1e-3
        while self.deliberating:
            sid, (due, context, episode) = next(iter(self.deliberating.items()))
            if due > now:
                break
            del self.deliberating[sid]
            await self._choose(sid, context, episode)

    async def _choose(self, sid: str, context: Vector, episode: str | None) -> None:
        if not self.ac.actions:
            return  # the repertoire was withdrawn while this context waited
        bias = self.episodic.pop(sid, None)
        if bias:
            self.with_evidence += 1
        # One-step trials (no episode) keep their traces' plain lambda decay.
        choice = self.ac.choose(context, beta=self.mod.inverse_temperature, bias=bias, episode=episode,
                                discount=1.0 if episode is None else self.discount)
        self.choices[sid] = (choice.action, episode)
        while len(self.choices) > _REMEMBERED_CHOICES:
            self.choices.popitem(last=False)
        await self.publish(self.out_subject, RegionOutput(
            region=self.name, kind="choice", stimulus_id=sid,
            data={"action": choice.action, "confidence": choice.confidence, "value": choice.value,
                  "n_actions": len(self.ac.actions), "episodic": bias or {},
                  "probs": {a: round(p, 4) for a, p in choice.probs.items()}}), stimulus_id=sid)

    @on("feedback.reward")
    async def rewarded(self, msg: Reward, meta: Meta) -> None:
        if not self.deterministic:  # else the thalamus relays it, in order with the stimuli
            await self._reward(msg)

    async def relayed(self, msg: RegionOutput, meta: Meta) -> None:
        """Deterministic mode: a reward relayed by the thalamus (regions.intake)."""
        reward = relayed_reward(msg)
        if reward is not None:
            await self._reward(reward)

    async def _reward(self, msg: Reward) -> None:
        if msg.action is not None and msg.action not in self.ac.actions:
            raise BadInput(f"reward names action {msg.action!r}, which is not in the declared repertoire "
                           f"{self.ac.actions}")
        if msg.stimulus_id is not None and msg.stimulus_id not in self.choices:
            raise BadInput(f"reward for unknown stimulus {msg.stimulus_id!r}: no action of this brain answered it")
        if not self.choices:
            raise BadInput("reward before any action was taken")
        sid = msg.stimulus_id or next(reversed(self.choices))
        action, episode = self.choices[sid]
        if msg.episode is not None:
            episode = msg.episode
        value = self.reward_scale(msg.value)
        # The critic's prediction error is the dopamine signal itself (it goes to the hormone
        # system below); the level of dopamine does not gate it a second time.
        ends = msg.terminal or msg.truncated
        rpe = self.ac.learn(value, lr=self._lr(), terminal=msg.terminal, truncated=msg.truncated and not msg.terminal,
                            discount=self.discount, episode=episode)
        if ends and episode is not None and self.active.pop(episode, None) is not None:
            self.episodes_ended += 1
        self.rewards += 1
        self.reward_sum += value
        if rpe is not None:
            await self._learnt(rpe, sid, value)
        # Said for every reward (deterministic mode waits for it), with the RPE once it is known.
        await self.publish(self.out_subject, RegionOutput(
            region=self.name, kind="outcome", stimulus_id=sid,
            data={"action": action, "reward": msg.value, "scaled": value, "rpe": rpe, "episode": episode,
                  "terminal": msg.terminal, "truncated": msg.truncated}), stimulus_id=sid)

    async def _learnt(self, rpe: float, sid: str, value: float = 0.0) -> None:
        """Tell the hormone system of a reward prediction error (the phasic dopamine)."""
        await self.publish(self.bus.subjects.neuromod_event, NeuromodEvent(
            kind="reward", value=max(-1.0, min(1.0, value)), rpe=max(-2.0, min(2.0, rpe)), source=self.name,
            stimulus_id=sid), stimulus_id=sid)

    @on("mem.replay", when="episodic")
    async def replayed(self, msg: MemReplay, meta: Meta) -> None:
        """Sleep replay: learn from a remembered episode as if its percept came alone."""
        lr = self.options.replay_lr
        if lr <= 0 or msg.action is None or msg.reward is None or msg.action not in self.ac.actions:
            return
        if 2 * msg.key.size != self.options.dim:
            raise BadInput(f"replayed key has {msg.key.size} dimensions; basal ganglia take "
                           f"{self.options.dim // 2}-d contents")
        key = torch.from_numpy(np.ascontiguousarray(msg.key, dtype=np.float32))
        norm = float(key.norm())
        if norm == 0.0:
            raise BadInput("replayed key is all zeros")
        # The percept half carries the unit-length content, as the prefrontal context does.
        context = torch.cat([key / norm, torch.zeros_like(key)]) / math.sqrt(2.0)
        # No weight decay on replay: downscaling everything at each of hundreds of replays erased
        # more of the older task than rehearsal restored (measured, tests/integration/test_episodic.py).
        self.ac.replay(context, msg.action, msg.reward, lr=lr, decay=False)
        self.replays += 1

    def snapshot(self) -> dict[str, Any]:
        return {"ac": self.ac.snapshot(), "env": self.env, "reward_scale": self.reward_scale.largest}

    def restore(self, state: dict[str, Any]) -> None:
        self.ac.restore(state["ac"])
        self.env = state.get("env")
        self.reward_scale.largest = float(state.get("reward_scale", 1.0))
        now = time.monotonic()  # episodes open at the snapshot get a full timeout from here
        self.active = OrderedDict((e, now) for e in self.ac.open_episodes if e is not None)

    def extra_stats(self) -> dict[str, Any]:
        return {"actions": len(self.ac.actions), "choices": self.ac.choices, "unanswered": self.unanswered,
                "rewards": self.rewards, "mean_reward": round(self.reward_sum / max(1, self.rewards), 4),
                "replays": self.replays, "updates": self.ac.updates, "with_evidence": self.with_evidence,
                "deliberating": len(self.deliberating), "open_episodes": len(self.active),
                "episodes_ended": self.episodes_ended, "episodes_timed_out": self.episodes_timed_out,
                "discount": round(self.discount, 4), "reward_scale": self.reward_scale.largest}
