"""Basal ganglia: action selection over the repertoire the environment declared.

The prefrontal context feeds an actor-critic (regions.selection): softmax with the inverse
temperature from norepinephrine, plus episodic evidence from recalled memories as a bias;
three-factor learning when a reward arrives (eligibility trace x dopamine-like RPE, learning rate
from acetylcholine, RPE gain from dopamine). The RPE goes to the hormone system as a reward event.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from actors.actor import on
from bus import Meta
from bus.errors import BadInput
from bus.models import Broadcast, EnvActions, NeuromodEvent, RegionOutput, Reward
from regions.modulated import Modulated
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
    context_source: str = "prefrontal"
    seed: int = 0


class BasalGanglia(Modulated):
    kind = "basal_ganglia"
    Options = BasalGangliaOptions
    options: BasalGangliaOptions

    async def on_start(self) -> None:
        self.init_modulation()
        o = self.options
        self.ac = ActorCritic(o.dim, trace_decay=o.trace_decay, actor_decay=o.actor_decay, seed=o.seed)
        self.env: str | None = None
        self.choices: OrderedDict[str, str] = OrderedDict()  # stimulus id -> action chosen
        self.episodic: OrderedDict[str, dict[str, float]] = OrderedDict()  # stimulus id -> bias
        self.unanswered = 0
        self.told_no_actions = False
        self.rewards = 0
        self.reward_sum = 0.0
        self.out_subject = self.bus.subjects.region_out(self.name)

    @on("env.actions")
    async def actions_declared(self, msg: EnvActions, meta: Meta) -> None:
        if len(set(msg.actions)) != len(msg.actions):
            raise BadInput(f"actions must be distinct, got {msg.actions}")
        self.ac.set_actions(msg.actions)
        self.env = msg.env
        self.told_no_actions = False
        self.log.info("basal_ganglia.repertoire", actions=msg.actions, env=msg.env)

    @on("gw.broadcast")
    async def recalled(self, msg: Broadcast, meta: Meta) -> None:
        """A recalled episode about the current stimulus becomes evidence for its action."""
        if msg.kind != "episode" or not msg.stimulus_id:
            return
        action, reward, score = msg.detail.get("action"), msg.detail.get("reward"), msg.detail.get("score", 1.0)
        if not isinstance(action, str) or not isinstance(reward, int | float):
            return
        bias = self.episodic.setdefault(msg.stimulus_id, {})
        bias[action] = bias.get(action, 0.0) + self.options.episodic_gain * float(reward) * float(score)
        while len(self.episodic) > _REMEMBERED_CHOICES:
            self.episodic.popitem(last=False)

    @on("region.*.out")
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
        bias = self.episodic.pop(sid, None)
        choice = self.ac.choose(msg.vector, beta=self.mod.inverse_temperature, bias=bias)
        self.choices[sid] = choice.action
        while len(self.choices) > _REMEMBERED_CHOICES:
            self.choices.popitem(last=False)
        await self.publish(self.out_subject, RegionOutput(
            region=self.name, kind="choice", stimulus_id=sid,
            data={"action": choice.action, "confidence": choice.confidence, "value": choice.value,
                  "n_actions": len(self.ac.actions), "episodic": bias or {},
                  "probs": {a: round(p, 4) for a, p in choice.probs.items()}}), stimulus_id=sid)

    @on("feedback.reward")
    async def rewarded(self, msg: Reward, meta: Meta) -> None:
        if msg.action is not None and msg.action not in self.ac.actions:
            raise BadInput(f"reward names action {msg.action!r}, which is not in the declared repertoire "
                           f"{self.ac.actions}")
        if msg.stimulus_id is not None and msg.stimulus_id not in self.choices:
            raise BadInput(f"reward for unknown stimulus {msg.stimulus_id!r}: no action of this brain answered it")
        if not self.choices:
            raise BadInput("reward before any action was taken")
        m = self.mod
        rpe = self.ac.learn(msg.value, lr=m.learning_rate, rpe_gain=m.rpe_gain)
        self.rewards += 1
        self.reward_sum += msg.value
        sid = msg.stimulus_id or next(reversed(self.choices))
        await self.publish(self.bus.subjects.neuromod_event, NeuromodEvent(
            kind="reward", value=msg.value, rpe=max(-2.0, min(2.0, rpe)), source=self.name, stimulus_id=sid),
            stimulus_id=sid)
        await self.publish(self.out_subject, RegionOutput(
            region=self.name, kind="outcome", stimulus_id=sid,
            data={"action": self.choices.get(sid), "reward": msg.value, "rpe": rpe}), stimulus_id=sid)

    def snapshot(self) -> dict[str, Any]:
        return {"ac": self.ac.snapshot(), "env": self.env}

    def restore(self, state: dict[str, Any]) -> None:
        self.ac.restore(state["ac"])
        self.env = state.get("env")

    def extra_stats(self) -> dict[str, Any]:
        return {"actions": len(self.ac.actions), "choices": self.ac.choices, "unanswered": self.unanswered,
                "rewards": self.rewards, "mean_reward": round(self.reward_sum / max(1, self.rewards), 4)}
