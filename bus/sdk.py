"""The SDK for external agents and task environments: `async with bus.connect() as brain: ...`.

    import asyncio
    import bus

    async def main() -> None:
        async with bus.connect() as brain:          # the runtime file, NATS_URL, or url=...
            await brain.wait_ready()
            await brain.declare_actions(["eat", "drive"])
            sid = await brain.stimulus(text="banana")
            action = await brain.action_for(sid, timeout=2)
            await brain.reward(1.0 if action.action == "eat" else -1.0, stimulus_id=sid)

    asyncio.run(main())

Everything here is the public bus contract (DESIGN §3); any other NATS client can do the same
with plain JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

import numpy as np

from bus.auth import Role
from bus.client import Bus, Subscription
from bus.codec import Meta
from bus.errors import BusError, RequestTimeout
from bus.models import (
    EnvActions,
    Heartbeat,
    Message,
    MotorAction,
    Reward,
    TextStimulus,
    VectorStimulus,
)
from bus.runtime import resolve_connection

__all__ = ["BrainClient", "connect"]

M = TypeVar("M", bound=Message)
DEFAULT_READY = ("thalamus", "basal_ganglia", "motor")


@contextlib.asynccontextmanager
async def connect(url: str | None = None, *, namespace: str | None = None, name: str = "agent",
                  role: Role = "agent") -> AsyncIterator[BrainClient]:
    """Connect to a brain: `url`, else `NATS_URL`, else the runtime file of this directory.

    Through the runtime file it connects as `role` (default `agent`: stimuli, rewards and actions
    in; motor actions, broadcasts, hormone levels and heartbeats out; see `bus.auth`). Watching
    everything takes `observer`; `admin` adds actor control.
    """
    url, ns = resolve_connection(url, namespace, role=role)
    client = BrainClient(Bus(url, namespace=ns, name=name, source=name))
    await client.bus.connect()
    try:
        await client._start()
        yield client
    finally:
        await client._stop()
        await client.bus.close()


class BrainClient:
    """A connected agent: send stimuli and rewards, declare actions, receive motor actions."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._ids = itertools.count(1)
        self._prefix = f"{bus.name}-{os.getpid():x}-"
        self._actions: dict[str, MotorAction] = {}
        self._arrived = asyncio.Event()
        self._stream: asyncio.Queue[MotorAction] = asyncio.Queue(maxsize=10_000)
        self._subs: list[Subscription] = []

    async def _start(self) -> None:
        self._subs.append(await self.bus.subscribe("motor.action", self._on_action, model=MotorAction))

    async def _stop(self) -> None:
        for sub in self._subs:
            await sub.stop()

    async def _on_action(self, msg: MotorAction, meta: Meta) -> None:
        self._actions[msg.stimulus_id] = msg
        if len(self._actions) > 10_000:
            self._actions.pop(next(iter(self._actions)))
        self._arrived.set()
        with contextlib.suppress(asyncio.QueueFull):  # a reader that never reads loses the oldest view only
            self._stream.put_nowait(msg)

    async def wait_ready(self, actors: Sequence[str] = DEFAULT_READY, timeout: float = 60.0) -> None:
        """Wait until the named actors heartbeat (declare actions only after the basal ganglia listen)."""
        seen: set[str] = set()
        done = asyncio.Event()

        async def beat(hb: Heartbeat, meta: Meta) -> None:
            seen.add(hb.actor)
            if seen >= set(actors):
                done.set()

        sub = await self.bus.subscribe("sys.heartbeat.*", beat, model=Heartbeat)
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            raise BusError(f"no heartbeat from {sorted(set(actors) - seen)} within {timeout:g} s") from None
        finally:
            await sub.stop()

    async def declare_actions(self, actions: Sequence[str], env: str | None = None) -> None:
        await self.bus.publish("env.actions", EnvActions(actions=list(actions), env=env))
        await self.bus.flush()

    async def stimulus(self, *, text: str | None = None, vector: Sequence[float] | np.ndarray | None = None,
                       modality: str = "vector", id: str | None = None, episode: str | None = None) -> str:
        """Send a text or vector stimulus (a step of `episode`, if given); returns its stimulus id
        (yours, or one made here)."""
        sid = id or f"{self._prefix}{next(self._ids)}"
        if (text is None) == (vector is None):
            raise ValueError("give exactly one of text= or vector=")
        if text is not None:
            await self.bus.publish("stim.text", TextStimulus(text=text, id=sid, episode=episode))
        else:
            await self.bus.publish("stim.vector", VectorStimulus(vector=np.asarray(vector, dtype=np.float32),
                                                                 modality=modality, id=sid, episode=episode))
        return sid

    async def reward(self, value: float, *, stimulus_id: str | None = None, action: str | None = None,
                     terminal: bool = True, truncated: bool = False) -> None:
        """Reward the action that answered `stimulus_id`; `terminal=False` when its episode goes on."""
        await self.bus.publish("feedback.reward", Reward(value=value, stimulus_id=stimulus_id, action=action,
                                                         terminal=terminal, truncated=truncated))

    async def action_for(self, stimulus_id: str, timeout: float = 5.0) -> MotorAction:
        """The motor action answering `stimulus_id` (waits for it); RequestTimeout if none comes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while stimulus_id not in self._actions:
            left = deadline - loop.time()
            if left <= 0:
                raise RequestTimeout(self.bus.subjects.motor_action, timeout)
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        return self._actions[stimulus_id]

    async def actions(self) -> AsyncIterator[MotorAction]:
        """Every motor action from now on, in order of arrival."""
        while True:
            yield await self._stream.get()

    async def subscribe(self, pattern: str, model: type[M]) -> AsyncIterator[M]:
        """Iterate over typed messages on any public subject pattern (e.g. `gw.broadcast`)."""
        queue: asyncio.Queue[M] = asyncio.Queue(maxsize=10_000)

        async def put(msg: Any, meta: Meta) -> None:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(msg)

        sub = await self.bus.subscribe(pattern, put, model=model)
        try:
            while True:
                yield await queue.get()
        finally:
            await sub.stop()
