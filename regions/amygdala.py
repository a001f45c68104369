"""Amygdala: the valence of outcomes, and the stress and surprise they cause.

Each reward is compared with a running expectation (regions.valence); punishment streaks raise
stress, large prediction errors are surprises. Both go to the hormone system as events.
"""

from __future__ import annotations

import time
from typing import Any

from actors.actor import Actor, every, on
from bus import Meta
from bus.models import NeuromodEvent, RegionOutput, Reward
from regions.valence import Amygdala as ValenceCore

__all__ = ["Amygdala"]


class Amygdala(Actor):
    kind = "amygdala"

    async def on_start(self) -> None:
        self.core = ValenceCore()
        self.last_step = time.monotonic()
        self.out_subject = self.bus.subjects.region_out(self.name)

    @on("feedback.reward")
    async def outcome(self, msg: Reward, meta: Meta) -> None:
        report = self.core.observe(msg.value)
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
        now = time.monotonic()
        self.core.step(now - self.last_step)
        self.last_step = now

    def snapshot(self) -> dict[str, Any]:
        return {"core": self.core.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        self.core.restore(state["core"])

    def extra_stats(self) -> dict[str, Any]:
        return {"stress": round(self.core.stress, 4)}
