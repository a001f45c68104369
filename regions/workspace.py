"""The global workspace: bids compete, the winner is broadcast to every region.

A cycle starts when the first bid arrives at an idle workspace and closes `window_s` later
(the collection window), so a stimulus's bids from several areas compete together. The
competition (regions.competition) has limited capacity, an ignition threshold that
norepinephrine lowers, a refractory period and inhibition of return. Every decision is logged
with its reasons (`--log-level debug` shows each cycle) and carried in the broadcast.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from actors.actor import on
from bus import Meta
from bus.models import Bid, Broadcast
from regions import competition
from regions.modulated import Modulated

__all__ = ["GlobalWorkspace"]


class WorkspaceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window_s: Annotated[float, Field(ge=0, le=1)] = 0.002
    capacity: Annotated[int, Field(ge=1, le=64)] = 4
    ignition_threshold: Annotated[float, Field(ge=0, le=10)] = 0.5
    refractory_s: Annotated[float, Field(ge=0, le=5)] = 0.0
    inhibition_of_return_s: Annotated[float, Field(ge=0, le=60)] = 2.0
    ior_similarity: Annotated[float, Field(ge=-1, le=1)] = 0.95
    ior_across_stimuli: bool = False
    #: Bids that lost only for lack of capacity compete again in the next cycle while younger than
    #: this; older ones are dropped (counted as `expired`). 0 = lose them at once.
    carry_over_s: Annotated[float, Field(ge=0, le=10)] = 0.25
    #: `false` is the "workspace bypassed" ablation: every bid is broadcast at once, no competition.
    compete: bool = True


class GlobalWorkspace(Modulated):
    kind = "workspace"
    Options = WorkspaceOptions
    options: WorkspaceOptions

    async def on_start(self) -> None:
        self.init_modulation()
        o = self.options
        self.ws = competition.Workspace(
            capacity=o.capacity, ignition_threshold=o.ignition_threshold, refractory_s=o.refractory_s,
            inhibition_of_return_s=o.inhibition_of_return_s, ior_similarity=o.ior_similarity,
            ior_across_stimuli=o.ior_across_stimuli)
        self.cycle_open = False
        self.opened_at = 0.0
        self.arrived: dict[int, tuple[float, Bid]] = {}  # bid id -> arrival time and message
        self.next_bid_id = 0
        self.broadcasts = 0
        self.verdicts: Counter[str] = Counter()

    @on("gw.bid")
    async def bid(self, msg: Bid, meta: Meta) -> None:
        if not self.options.compete:
            self.broadcasts += 1
            await self._broadcast(self.broadcasts, msg.source, msg.kind, msg.salience, msg.content,
                                  msg.stimulus_id, [], {"bypassed": True, **msg.detail})
            return
        self._submit(msg, time.monotonic())

    def _submit(self, msg: Bid, arrived: float) -> None:
        self.next_bid_id += 1
        self.arrived[self.next_bid_id] = (arrived, msg)
        self.ws.submit(competition.Bid(source=msg.source, kind=msg.kind, salience=msg.salience,
                                       content=msg.content, stimulus_id=msg.stimulus_id, payload=msg.detail,
                                       bid_id=str(self.next_bid_id)))
        if not self.cycle_open:
            self.cycle_open = True
            self.opened_at = time.monotonic()
            self.call_later(self.options.window_s, "close_cycle")

    async def close_cycle(self) -> None:
        self.cycle_open = False
        now = time.monotonic()
        decision = self.ws.compete(now, threshold_shift=self.mod.ignition_threshold_shift)
        carried = []
        for outcome in (*decision.winners, *decision.losers):
            arrived, msg = self.arrived.pop(int(outcome.bid.bid_id or 0), (now, None))
            verdict = outcome.verdict.value
            if verdict == "capacity" and msg is not None and now - arrived < self.options.carry_over_s:
                carried.append((msg, arrived))
                continue  # not lost: it competes again next cycle
            self.verdicts["expired" if verdict == "capacity" else verdict] += 1
        if self.arrived:  # bids pushed out of a full pending buffer got no outcome: count them
            self.verdicts["dropped"] += len(self.arrived)
            self.arrived.clear()
        self.log.debug("workspace.cycle", **decision.to_log())
        beat = [{"source": o.bid.source, "kind": o.bid.kind, "stimulus_id": o.bid.stimulus_id,
                 "salience": round(o.effective_salience, 4), "verdict": o.verdict.value}
                for o in decision.losers[:8]]
        window_ms = round((now - self.opened_at) * 1000, 3)
        for outcome in decision.winners:
            b = outcome.bid
            self.broadcasts += 1
            await self._broadcast(decision.cycle, b.source, b.kind, outcome.effective_salience, b.content,
                                  b.stimulus_id, beat,
                                  {**dict(b.payload), "window_ms": window_ms, "threshold": decision.threshold,
                                   "reasons": list(decision.reasons)[:8]})
        for msg, arrived in carried:
            self._submit(msg, arrived)

    async def _broadcast(self, cycle: int, source: str, kind: str, salience: float, content: Any,
                         stimulus_id: str | None, beat: list[dict[str, Any]], detail: dict[str, Any]) -> None:
        await self.publish(self.bus.subjects.gw_broadcast, Broadcast(
            cycle=cycle, source=source, salience=salience, kind=kind, content=content,
            stimulus_id=stimulus_id, beat=beat, detail=detail), stimulus_id=stimulus_id)

    def extra_stats(self) -> dict[str, Any]:
        return {"broadcasts": self.broadcasts, "cycles": self.ws.cycle, "verdicts": dict(self.verdicts)}
