"""Amygdala: the valence of outcomes, and the stress and surprise they cause.

Each reward is compared with a running expectation (regions.valence); punishment streaks raise
stress, large prediction errors are surprises. Both go to the hormone system as events.
In deterministic mode rewards come in order through the thalamus (regions.intake) and stress
relaxes one logical step per reward instead of with the wall clock.
"""

from __future__ import annotations

import time
from typing import Any

from actors.actor import Actor, every, on
from actors.determinism import INTAKE, STEP_S
from bus import Meta
from bus.models import NeuromodEvent, RegionOutput, Reward
from regions.intake import relayed_reward
from regions.rewards import RewardScale
from regions.valence import Amygdala as ValenceCore

__all__ = ["Amygdala"]


class Amygdala(Actor):
    kind = "amygdala"

    async def on_start(self) -> None:
        self.core = ValenceCore()
        self.reward_scale = RewardScale()  # the same scaling the basal ganglia apply
        self.last_step = time.monotonic()
        self.out_subject = self.bus.subjects.region_out(self.name)
        if self.deterministic:
            await self.listen(f"region.{INTAKE}.out", Amygdala.relayed)

    @on("feedback.reward")
    async def outcome(self, msg: Reward, meta: Meta) -> None:
        if not self.deterministic:  # else the thalamus relays it, in order with the stimuli
            await self._outcome(msg)

    async def relayed(self, msg: RegionOutput, meta: Meta) -> None:
        reward = relayed_reward(msg)
        if reward is not None:
            self.core.step(STEP_S)
            await self._outcome(reward)

    async def _outcome(self, msg: Reward) -> None:
        report = self.core.observe(self.reward_scale(msg.value))
        sid = msg.stimulus_id
        for event in report.events:
            await self.publish(self.bus.subjects.neuromod_event, NeuromodEvent(
                kind=event.kind, value=max(0.0, min(1.0, event.value)), source=self.name, stimulus_id=sid),
                stimulus_id=sid)
        await self.publish(self.out_subject, RegionOutput(
            region=self.name, kind="valence", stimulus_id=sid,
            data={"valence": report.valence, "expectation": report.expectation, "stress": report.stress,
                  "surprise": report.surprise}), stimulus_id=sid)

    @every(1.0)
    async def relax(self) -> None:
        if self.deterministic:
            return  # relaxation runs on the logical clock (`relayed`)
        now = time.monotonic()
        self.core.step(now - self.last_step)
        self.last_step = now

    def snapshot(self) -> dict[str, Any]:
        return {"core": self.core.snapshot(), "reward_scale": self.reward_scale.largest}

    def restore(self, state: dict[str, Any]) -> None:
        self.core.restore(state["core"])
        self.reward_scale.largest = float(state.get("reward_scale", 1.0))

    def extra_stats(self) -> dict[str, Any]:
        return {"stress": round(self.core.stress, 4)}
