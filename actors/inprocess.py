"""Run a brain in this process under its own supervisor, for benchmarks, tests and embedding.

`brainbus run` is the usual way to run a brain (its own process, signals, runtime file); this is
the small piece that programs driving a brain from the same event loop need: start it, wait until
every actor has sent a heartbeat, stop it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from actors.config import BrainConfig
from actors.supervisor import Supervisor
from bus import Bus, Meta

__all__ = ["running_brain", "start_brain"]


async def start_brain(bus: Bus, config: BrainConfig, *, within: float = 60.0) -> tuple[Supervisor, asyncio.Task[None]]:
    """Start every actor of ``config`` on ``bus``; return once each has sent a heartbeat, and one
    that is not `loading` (the thalamus heartbeats while its language encoder loads).

    Raises:
        TimeoutError: When some actor has not sent a heartbeat ``within`` seconds (the brain is stopped).
    """
    sup = Supervisor.for_actors(bus, config, list(config.actors), None)
    task = asyncio.ensure_future(sup.run())
    beats: set[str] = set()
    ready = asyncio.Event()

    async def beat(msg: Any, meta: Meta) -> None:
        if msg.state != "loading":  # heartbeating, but still loading a model (actors.actor.Actor.ready)
            beats.add(msg.actor)
        if beats >= set(config.actors):
            ready.set()

    sub = await bus.subscribe("sys.heartbeat.*", beat)
    try:
        await asyncio.wait_for(ready.wait(), within)
    except TimeoutError:
        sup.request_stop()
        await asyncio.wait_for(task, 30)
        missing = sorted(set(config.actors) - beats)
        raise TimeoutError(f"no heartbeat within {within:g} s from {missing}") from None
    finally:
        await sub.stop()
    return sup, task


@asynccontextmanager
async def running_brain(bus: Bus, config: BrainConfig, *, within: float = 60.0) -> AsyncIterator[Supervisor]:
    """`start_brain`, then stop the brain (and wait for it) when the block ends."""
    sup, task = await start_brain(bus, config, within=within)
    try:
        yield sup
    finally:
        sup.request_stop()
        await asyncio.wait_for(task, 30)
