"""The global workspace: bids compete, the winner is broadcast to every region.

A cycle starts when the first bid arrives at an idle workspace and closes `window_s` later
(the collection window), so a stimulus's bids from several areas compete together. The
competition (regions.competition) has limited capacity, an ignition threshold that
norepinephrine lowers, a refractory period and inhibition of return. Every decision is logged
with its reasons (`--log-level debug` shows each cycle) and carried in the broadcast.

In deterministic mode (actors.determinism) a cycle closes when `expected_bids` bids of one
stimulus are in (one per sensory area that takes its modality), not when a timer fires, and its
clock advances `window_s` per cycle; a stimulus whose bids all lost is reported on
`NS.region.<name>.out` (kind `no_ignition`) so the thalamus can take the next one.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from actors.actor import on
from bus import Meta
from bus.models import Bid, Broadcast, RegionOutput
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
    #: Deterministic mode: bids of one stimulus that close a cycle (one per area that bids on it).
    expected_bids: Annotated[int, Field(ge=1, le=64)] = 1
    #: Deterministic mode: a cycle still short of its bids after this long closes anyway.
    overdue_s: Annotated[float, Field(gt=0, le=60)] = 1.0


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
        self.clock = 0.0  # deterministic mode: logical seconds, one window per cycle
        self.cycles_opened = 0
        self.opened_cycle = 0
        # Each cycle's full log record costs more than the competition: built only when shown.
        self._log_cycles = bool(self.log.is_enabled_for(logging.DEBUG))

    def _now(self) -> float:
        return self.clock if self.deterministic else time.monotonic()

    @on("gw.bid")
    async def bid(self, msg: Bid, meta: Meta) -> None:
        if not self.options.compete:
            self.broadcasts += 1
            await self._broadcast(self.broadcasts, msg.source, msg.kind, msg.salience, msg.content,
                                  msg.stimulus_id, [], {"bypassed": True, **msg.detail})
            return
        self._submit(msg, self._now())
        if self.deterministic and msg.stimulus_id is not None and self.cycle_open and sum(
                1 for _, b in self.arrived.values() if b.stimulus_id == msg.stimulus_id) >= self.options.expected_bids:
            await self.close_cycle()

    async def close_overdue(self) -> None:
        """Deterministic mode: close a cycle whose expected bids did not all come (a region down)."""
        if self.cycle_open and self.opened_cycle == self.cycles_opened \
                and time.monotonic() - self.opened_at >= self.options.overdue_s - 1e-3:
            self.log.warning("workspace.cycle_overdue", bids=len(self.arrived))
            await self.close_cycle()

    def _submit(self, msg: Bid, arrived: float) -> None:
        self.next_bid_id += 1
        self.arrived[self.next_bid_id] = (arrived, msg)
        self.ws.submit(competition.Bid(source=msg.source, kind=msg.kind, salience=msg.salience,
                                       content=msg.content, stimulus_id=msg.stimulus_id, payload=msg.detail,
                                       bid_id=str(self.next_bid_id)))
        if not self.cycle_open:
            self.cycle_open = True
            self.opened_at = time.monotonic()
            self.cycles_opened += 1
            self.opened_cycle = self.cycles_opened
            if self.deterministic:
                self.call_later(self.options.overdue_s, "close_overdue")
            else:
                self.call_later(self.options.window_s, "close_cycle")

    async def close_cycle(self) -> None:
        if not self.cycle_open:
            return  # closed already (deterministic mode closes on the last expected bid)
        self.cycle_open = False
        if self.deterministic:
            self.clock += max(self.options.window_s, 1e-3)
        now = self._now()
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
        if self._log_cycles:
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
        if self.deterministic:
            await self._report_no_ignition(decision, {m.stimulus_id for m, _ in carried})

    async def _report_no_ignition(self, decision: competition.Decision, carried: set[str | None]) -> None:
        """Name each stimulus of this cycle that nothing was broadcast for and that is not
        competing again: no action will come for it."""
        ignited = {o.bid.stimulus_id for o in decision.winners}
        lost = sorted({o.bid.stimulus_id for o in decision.losers if o.bid.stimulus_id is not None}
                      - ignited - carried)
        for sid in lost:
            await self.publish(self.bus.subjects.region_out(self.name), RegionOutput(
                region=self.name, kind="no_ignition", stimulus_id=sid,
                data={"cycle": decision.cycle, "threshold": decision.threshold}), stimulus_id=sid)

    async def _broadcast(self, cycle: int, source: str, kind: str, salience: float, content: Any,
                         stimulus_id: str | None, beat: list[dict[str, Any]], detail: dict[str, Any]) -> None:
        await self.publish(self.bus.subjects.gw_broadcast, Broadcast(
            cycle=cycle, source=source, salience=salience, kind=kind, content=content,
            stimulus_id=stimulus_id, beat=beat, detail=detail), stimulus_id=stimulus_id)

    def extra_stats(self) -> dict[str, Any]:
        return {"broadcasts": self.broadcasts, "cycles": self.ws.cycle, "verdicts": dict(self.verdicts)}
