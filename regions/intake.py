"""The thalamus's intake queue in deterministic mode: one input from the world in flight at a time.

Stimuli and rewards wait in arrival order. The head is released (a stimulus relayed into the
brain, a reward relayed to the regions that learn from it) and the next waits until it is
finished: a stimulus when an answer or a drop naming it comes back, a reward when every region
that learns from it acknowledged it. A timeout releases an input that nothing finishes (a region
down, no actions declared), so the queue never stalls for good; that is logged, as it is the one
way a deterministic run can still differ.

Pure bookkeeping, no I/O: the thalamus (regions.thalamus) wires it to the bus.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ValidationError

from actors.determinism import INTAKE
from bus.codec import format_validation_error
from bus.errors import BadInput
from bus.models import RegionOutput, Reward

__all__ = ["Input", "IntakeQueue", "relayed_reward"]


@dataclass(slots=True)
class Input:
    """One input from the world: `release()` sends it into the brain; it is finished when
    `pending_acks` is empty (rewards) or its stimulus is answered or dropped (stimuli)."""

    kind: Literal["stimulus", "reward"]
    stimulus_id: str | None
    release: Callable[[], Awaitable[bool]]  # False: nothing was sent (gated), finished at once
    pending_acks: set[str] = field(default_factory=set)


class IntakeQueue:
    """FIFO of inputs with one in flight; `finished_*` calls report what came back."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.queue: deque[Input] = deque()
        self.current: Input | None = None
        self.deadline = 0.0
        self.released = 0
        self.timeouts = 0

    def add(self, item: Input) -> None:
        self.queue.append(item)

    async def pump(self) -> None:
        """Release inputs until one is in flight or the queue is empty."""
        while self.current is None and self.queue:
            item = self.queue.popleft()
            self.current = item
            self.deadline = time.monotonic() + self.timeout_s
            self.released += 1
            if not await item.release():
                self.current = None

    def stimulus_finished(self, stimulus_id: str | None) -> bool:
        """An answer or a drop for `stimulus_id`; True when it finished the input in flight."""
        cur = self.current
        if cur is not None and cur.kind == "stimulus" and stimulus_id is not None \
                and cur.stimulus_id == stimulus_id:
            self.current = None
            return True
        return False

    def acknowledged(self, actor: str) -> bool:
        """`actor` applied (or rejected) the reward in flight; True when that finished it."""
        cur = self.current
        if cur is None or cur.kind != "reward" or actor not in cur.pending_acks:
            return False
        cur.pending_acks.discard(actor)
        if not cur.pending_acks:
            self.current = None
            return True
        return False

    def expired(self) -> Input | None:
        """The input in flight if its time is up (it is then given up), else None."""
        cur = self.current
        if cur is not None and time.monotonic() >= self.deadline:
            self.current = None
            self.timeouts += 1
            return cur
        return None


def relayed_reward(msg: RegionOutput) -> Reward | None:
    """The reward a thalamus relayed in deterministic mode (`kind: reward`), else None.

    Raises BadInput if its data does not make a valid reward (the thalamus relays only rewards
    that decoded, so this means a stranger published on the thalamus's subject).
    """
    if msg.kind != "reward" or msg.region != INTAKE:
        return None
    try:
        fields = {name: msg.data[name] for name in ("terminal", "truncated", "episode") if name in msg.data}
        return Reward.model_validate({"value": msg.data.get("value"), "action": msg.data.get("action"),
                                      "stimulus_id": msg.stimulus_id, **fields})
    except ValidationError as exc:
        raise BadInput(f"relayed reward is invalid: {format_validation_error(exc)}") from None
