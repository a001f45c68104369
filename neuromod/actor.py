"""The hormone system on the bus: events in on `NS.neuromod.event`, levels out on `NS.neuromod.levels`.

Levels are published at a fixed rate and at once whenever an event moves any of them by more
than `change_threshold`. `frozen: true` pins every level at its baseline (the ablation).

In deterministic mode (actors.determinism) time is logical and events wait: they are applied,
in a canonical order, when the thalamus asks the system to settle before the next stimulus
(`neuromod.settle`), then the levels relax for one logical step. The periodic publication goes
on, unchanged levels only, so the levels a region reads depend on the inputs, never on timing.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from actors.actor import Actor, every, on
from actors.determinism import SETTLE_SUBJECT, STEP_S
from bus import Meta
from bus.models import NeuromodEvent, NeuromodLevels, RegionOutput
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
        self.waiting: list[NeuromodEvent] = []  # deterministic mode: events until the next settle
        if self.deterministic:
            await self.listen(SETTLE_SUBJECT, Hormones.settle)

    def _advance(self) -> dict[str, float]:
        now = time.monotonic()
        levels = self.system.step(now - self.last_step)
        self.last_step = now
        return levels

    @on("neuromod.event")
    async def event(self, msg: NeuromodEvent, meta: Meta) -> None:
        if self.deterministic:
            self.waiting.append(msg)
            return
        self._advance()
        self._apply(msg)
        levels = self.system.levels()
        if any(abs(levels[h] - self.published.get(h, -1.0)) > self.options.change_threshold for h in levels):
            await self._publish(levels)

    def _apply(self, msg: NeuromodEvent) -> None:
        value = msg.value if msg.kind == "reward" else max(0.0, msg.value)
        self.system.apply(HormoneInput(kind=msg.kind, value=value, rpe=msg.rpe))
        self.events += 1

    async def settle(self, msg: RegionOutput, meta: Meta) -> NeuromodLevels:
        """Deterministic mode: apply the waiting events, relax one logical step, publish; the
        reply tells the thalamus the levels are out before its next stimulus goes in."""
        # Events of one input arrive from several regions in any order; impulses scaled by the
        # room left do not commute, so they are applied sorted, not as they came.
        for event in sorted(self.waiting, key=lambda e: (e.kind, e.source or "", e.stimulus_id or "",
                                                          e.value, e.rpe)):
            self._apply(event)
        self.waiting.clear()
        levels = self.system.step(STEP_S)
        return await self._publish(levels)

    @every(0.1)
    async def tick(self) -> None:
        await self._publish(self.system.levels() if self.deterministic else self._advance())

    async def _publish(self, levels: dict[str, float]) -> NeuromodLevels:
        self.published = dict(levels)
        msg = NeuromodLevels(**levels, baseline=self.system.baselines(), frozen=self.system.frozen)
        await self.publish(self.bus.subjects.neuromod_levels, msg)
        return msg

    # No snapshot on purpose: levels are transient physiology. A restarted hormone system starts
    # at baseline, which is where the levels return within a few time constants anyway.

    def extra_stats(self) -> dict[str, Any]:
        return {"events": self.events, **{h: round(v, 4) for h, v in self.system.levels().items()}}
