"""Motor cortex with the supplementary motor area: the last gate before an action leaves the brain.

A choice goes at once when its confidence (relative to chance) clears a threshold that serotonin
raises (patience) and dopamine lowers (vigour). A choice below it is held back: it goes out after
a delay that grows with the shortfall (up to `max_hold_s`), marked `held`, unless the gate is
starved (see regions.motor_gate). So the threshold shapes reaction time, and no stimulus is left
unanswered. Actions go out on `NS.motor.action` naming the stimulus they answer.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from actors.actor import on
from bus import Meta
from bus.models import MotorAction, RegionOutput
from regions.modulated import Modulated
from regions.motor_gate import MotorGate

__all__ = ["Motor"]


class MotorOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: At baseline hormones every choice passes; serotonin above baseline raises the bar (patience:
    #: near-chance choices wait), dopamine above baseline lowers it (vigour).
    base_threshold: Annotated[float, Field(ge=0, le=1)] = 0.0
    #: >0 makes the threshold track a target go-rate (the SMA's own adaptation); off by default
    #: because every withheld choice is a stimulus left unanswered.
    adapt_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    target_rate: Annotated[float, Field(ge=0, le=1)] = 0.95
    max_nogo: Annotated[int, Field(ge=1, le=1000)] = 3
    #: Longest wait of a choice that is far below the threshold.
    max_hold_s: Annotated[float, Field(ge=0, le=10)] = 0.2
    choice_source: Annotated[str, Field(pattern=r"^[a-z0-9_-]+$")] = "basal_ganglia"


class Motor(Modulated):
    kind = "motor"
    Options = MotorOptions
    options: MotorOptions

    async def on_start(self) -> None:
        self.init_modulation()
        o = self.options
        self.gate = MotorGate(base=o.base_threshold, target_rate=o.target_rate, adapt_rate=o.adapt_rate,
                              max_nogo=o.max_nogo)
        self.acted = 0
        self.held: dict[str, tuple[float, MotorAction]] = {}  # stimulus id -> (due time, action)
        self.held_total = 0
        self.out_subject = self.bus.subjects.region_out(self.name)

    @on("region.{choice_source}.out")
    async def choice(self, msg: RegionOutput, meta: Meta) -> None:
        if msg.kind != "choice" or msg.region != self.options.choice_source or not msg.stimulus_id:
            return
        action, confidence = msg.data.get("action"), float(msg.data.get("confidence", 0.0))
        if not isinstance(action, str):
            return
        decision = self.gate.decide(confidence, n_actions=msg.data.get("n_actions"),
                                    shift=self.mod.motor_threshold_shift)
        out = MotorAction(action=action, stimulus_id=msg.stimulus_id, confidence=min(1.0, max(0.0, confidence)),
                          source=self.name, threshold=round(decision.threshold, 4), held=not decision.go)
        if decision.go:
            await self._act(out)
            return
        shortfall = (decision.threshold - decision.confidence) / max(decision.threshold, 1e-6)
        delay = self.options.max_hold_s * min(1.0, max(0.0, shortfall))
        self.held[msg.stimulus_id] = (time.monotonic() + delay, out)
        self.held_total += 1
        self.call_later(delay, "release")

    async def release(self) -> None:
        """Send the held actions whose wait is over."""
        now = time.monotonic()
        for sid, (due, out) in list(self.held.items()):
            if due <= now:
                del self.held[sid]
                await self._act(out)

    async def _act(self, out: MotorAction) -> None:
        self.acted += 1
        await self.publish(self.bus.subjects.motor_action, out, stimulus_id=out.stimulus_id)

    def snapshot(self) -> dict[str, Any]:
        return {"gate": self.gate.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        self.gate.restore(state["gate"])

    def extra_stats(self) -> dict[str, Any]:
        return {"acted": self.acted, "held": self.held_total, "holding": len(self.held),
                "threshold": round(self.gate.threshold(self.mod.motor_threshold_shift), 4)}
