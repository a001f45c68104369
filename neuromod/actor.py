"""The hormone system on the bus: events in on `NS.neuromod.event`, levels out on `NS.neuromod.levels`.

Levels are published at a fixed rate and at once whenever an event moves any of them by more
than `change_threshold`. `frozen: true` pins every level at its baseline (the ablation).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from actors.actor import Actor, every, on
from bus import Meta
from bus.models import NeuromodEvent, NeuromodLevels
from neuromod.dynamics import HormoneSystem
from neuromod.dynamics import NeuromodEvent as HormoneInput

__all__ = ["Hormones"]


class HormoneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    frozen: bool = False
    change_threshold: Annotated[float, Field(ge=0, le=1)] = 0.02


class Hormones(Actor):
    kind = "hormones"
    Options = HormoneOptions
    options: HormoneOptions

    async def on_start(self) -> None:
        self.system = HormoneSystem(frozen=self.options.frozen)
        self.last_step = time.monotonic()
        self.published: dict[str, float] = {}
        self.events = 0

    def _advance(self) -> dict[str, float]:
        now = time.monotonic()
        levels = self.system.step(now - self.last_step)
        self.last_step = now
        return levels

    @on("neuromod.event")
    async def event(self, msg: NeuromodEvent, meta: Meta) -> None:
        self._advance()
        value = msg.value if msg.kind == "reward" else max(0.0, msg.value)
        self.system.apply(HormoneInput(kind=msg.kind, value=value, rpe=msg.rpe))
        self.events += 1
        levels = self.system.levels()
        if any(abs(levels[h] - self.published.get(h, -1.0)) > self.options.change_threshold for h in levels):
            await self._publish(levels)

    @every(0.1)
    async def tick(self) -> None:
        await self._publish(self._advance())

    async def _publish(self, levels: dict[str, float]) -> None:
        self.published = dict(levels)
        await self.publish(self.bus.subjects.neuromod_levels, NeuromodLevels(
            **levels, baseline=self.system.baselines(), frozen=self.system.frozen))

    # No snapshot on purpose: levels are transient physiology. A restarted hormone system starts
    # at baseline, which is where the levels return within a few time constants anyway.

    def extra_stats(self) -> dict[str, Any]:
        return {"events": self.events, **{h: round(v, 4) for h, v in self.system.levels().items()}}
