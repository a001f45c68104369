"""Actors used by the actor, supervisor and CLI tests (kind `tests.actors_for_tests:<Class>`).

They listen on `stim.text` (a registered public subject) so tests can drive them with plain
`TextStimulus` messages; a text of `crash <name>` or `hang <name>` targets one actor by name.
The ones told to crash take one failed message as a fault (`failures_to_crash = 1`), so the
supervisor's tests need one message per crash.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from actors.actor import Actor, every, on
from bus import Meta
from bus.errors import BadInput
from bus.models import Message, RegionOutput, TextStimulus

__all__ = [
    "Counter", "Crasher", "Echo", "FailsOnRestart", "Hanger", "SubjectLogger", "TickCrasher", "Ticker",
    "eventually",
]


class EchoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    delay: Annotated[float, Field(ge=0)] = 0.0


class Echo(Actor):
    """Publishes each text on `region.<name>.out` and returns it (so a request gets it as the reply).

    A text of `bad` is rejected with BadInput; `crash <name>` raises RuntimeError.
    """

    failures_to_crash = 1

    kind = "echo"
    Options = EchoOptions
    options: EchoOptions

    async def on_start(self) -> None:
        self.seen: list[TextStimulus] = []
        self.metas: list[Meta] = []

    @on("stim.text")
    async def heard(self, msg: TextStimulus, meta: Meta) -> RegionOutput:
        if msg.text == "bad":
            raise BadInput("echo refuses the text 'bad'")
        if msg.text == f"crash {self.name}":
            raise RuntimeError(f"{self.name} was told to crash")
        if self.options.delay:
            await asyncio.sleep(self.options.delay)
        self.seen.append(msg)
        self.metas.append(meta)
        out = RegionOutput(region=self.name, kind="echo", stimulus_id=msg.id, data={"text": msg.text})
        await self.publish(self.bus.subjects.region_out(self.name), out, stimulus_id=msg.id)
        return out


class SubjectLogger(Actor):
    """A handler annotated with `Message` itself: each subject gets its registered model."""

    kind = "subject_logger"

    async def on_start(self) -> None:
        self.got: list[tuple[str, Message]] = []

    @on("stim.>")
    async def any_stimulus(self, msg: Message, meta: Meta) -> None:
        self.got.append((meta.subject, msg))


class Crasher(Actor):
    """Raises on every message it gets."""

    kind = "crasher"
    failures_to_crash = 1

    @on("stim.text")
    async def heard(self, msg: TextStimulus, meta: Meta) -> None:
        raise RuntimeError(f"crasher {self.name} fails on {msg.text!r}")


class TickCrasher(Actor):
    """Crashes on its own, from a tick, shortly after every start (no messages needed)."""

    kind = "tick_crasher"

    @every(0.05)
    async def boom(self) -> None:
        raise RuntimeError(f"tick crasher {self.name} fails")


class Hanger(Actor):
    """Its handler never returns on `hang` or `hang <its name>`; other texts are ignored."""

    kind = "hanger"

    async def on_start(self) -> None:
        self.entered = asyncio.Event()

    @on("stim.text")
    async def heard(self, msg: TextStimulus, meta: Meta) -> None:
        if msg.text not in ("hang", f"hang {self.name}"):
            return
        self.entered.set()
        await asyncio.Event().wait()


class Ticker(Actor):
    kind = "ticker"

    async def on_start(self) -> None:
        self.ticks = 0

    @every(0.02)
    async def tick(self) -> None:
        self.ticks += 1


class Counter(Actor):
    """Counts texts; its count survives restarts through snapshot/restore."""

    kind = "counter"
    failures_to_crash = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count = 0
        self.restored: dict[str, Any] | None = None

    @on("stim.text")
    async def heard(self, msg: TextStimulus, meta: Meta) -> None:
        if msg.text in ("crash", f"crash {self.name}"):
            raise RuntimeError(f"counter {self.name} told to crash at count {self.count}")
        if msg.text.startswith("crash "):
            return  # aimed at another actor
        self.count += 1

    def snapshot(self) -> dict[str, Any]:
        return {"count": self.count}

    def restore(self, state: dict[str, Any]) -> None:
        self.restored = dict(state)
        self.count = int(state["count"])


# ---------------------------------------------------------------- helpers for the tests


async def eventually(cond: Any, *, within: float = 3.0, what: str = "condition") -> None:
    """Poll `cond()` every 10 ms until it is true; fail with `what` after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.01)


class FailsOnRestart(Counter):
    """Starts the first time; every later incarnation fails in `on_start`."""

    kind = "fails_on_restart"

    async def on_start(self) -> None:
        if self.restarts:
            raise RuntimeError(f"{self.name} cannot start again")
