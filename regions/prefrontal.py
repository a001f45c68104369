"""Prefrontal cortex: working memory updated by workspace broadcasts; the context for action.

Each broadcast is written into a leaky, gated recurrent state (regions.working_memory); after a
percept the current context (percept + history) goes out on `NS.region.<name>.out` for the basal
ganglia to act on.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from actors.actor import on
from bus import Meta
from bus.models import Broadcast, RegionOutput
from regions.modulated import Modulated
from regions.working_memory import WorkingMemory

__all__ = ["Prefrontal"]


class PrefrontalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: Annotated[int, Field(ge=8, le=8192)] = 384
    leak: Annotated[float, Field(gt=0, le=1)] = 0.9


class Prefrontal(Modulated):
    kind = "prefrontal"
    Options = PrefrontalOptions
    options: PrefrontalOptions

    async def on_start(self) -> None:
        self.init_modulation()
        self.wm = WorkingMemory(self.options.dim, leak=self.options.leak)
        self.out_subject = self.bus.subjects.region_out(self.name)

    @on("gw.broadcast")
    async def broadcast(self, msg: Broadcast, meta: Meta) -> None:
        if msg.content.size != self.options.dim:
            return
        is_percept = msg.kind == "percept"
        gate = self.wm.update(msg.content, min(msg.salience, 1.0), is_percept=is_percept)
        if is_percept:
            await self.publish(self.out_subject, RegionOutput(
                region=self.name, kind="context", stimulus_id=msg.stimulus_id,
                vector=self.wm.context().numpy(),
                data={"gate": round(gate, 4), "source": msg.source, "cycle": msg.cycle,
                      "text": msg.detail.get("text")}), stimulus_id=msg.stimulus_id)

    def snapshot(self) -> dict[str, Any]:
        return {"wm": self.wm.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        self.wm.restore(state["wm"])
