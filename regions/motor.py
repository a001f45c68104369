"""Motor cortex with the supplementary motor area: the last gate before an action leaves the brain.

A choice passes when its confidence (relative to chance) clears an adaptive threshold that
serotonin raises (patience) and dopamine lowers (vigour); a brain that has held back for a while
lowers it (no starvation). Actions go out on `NS.motor.action` naming the stimulus they answer.
"""

from __future__ import annotations

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
    choice_source: str = "basal_ganglia"


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
        self.withheld = 0
        self.out_subject = self.bus.subjects.region_out(self.name)

    @on("region.*.out")
    async def choice(self, msg: RegionOutput, meta: Meta) -> None:
        if msg.kind != "choice" or msg.region != self.options.choice_source or not msg.stimulus_id:
            return
        action, confidence = msg.data.get("action"), float(msg.data.get("confidence", 0.0))
        if not isinstance(action, str):
            return
        decision = self.gate.decide(confidence, n_actions=msg.data.get("n_actions"),
                                    shift=self.mod.motor_threshold_shift)
        if decision.go:
            self.acted += 1
            await self.publish(self.bus.subjects.motor_action, MotorAction(
                action=action, stimulus_id=msg.stimulus_id, confidence=min(1.0, max(0.0, confidence)),
                source=self.name, forced=decision.forced, threshold=round(decision.threshold, 4)),
                stimulus_id=msg.stimulus_id)
        else:
            self.withheld += 1
            await self.publish(self.out_subject, RegionOutput(
                region=self.name, kind="withheld", stimulus_id=msg.stimulus_id,
                data={"action": action, "confidence": confidence, "threshold": decision.threshold}),
                stimulus_id=msg.stimulus_id)

    def snapshot(self) -> dict[str, Any]:
        return {"gate": self.gate.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        self.gate.restore(state["gate"])

    def extra_stats(self) -> dict[str, Any]:
        return {"acted": self.acted, "withheld": self.withheld,
                "threshold": round(self.gate.threshold(self.mod.motor_threshold_shift), 4)}
