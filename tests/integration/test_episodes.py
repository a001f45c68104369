"""The episode contract end to end on a real nats-server: a world of many steps, spoken through
public subjects only, against the small brain run in-process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from actors.supervisor import Supervisor
from bus import Bus, EnvActions, Heartbeat, MotorAction, NeuromodEvent, RegionOutput, SysError
from tests.actors_for_tests import eventually
from tests.integration.test_brain import Recorder, start_brain


class World:
    """An environment on the bus: sends steps, waits for the action that answers each."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.actions = Recorder()
        self.errors = Recorder()
        self.rpes = Recorder()
        self.outcomes = Recorder()
        self.beats = Recorder()

    async def start(self, actions: list[str]) -> None:
        await self.bus.subscribe("motor.action", self.actions, model=MotorAction)
        await self.bus.subscribe("sys.error", self.errors, model=SysError)
        await self.bus.subscribe("neuromod.event", self.rpes, model=NeuromodEvent)
        await self.bus.subscribe("region.basal_ganglia.out", self.outcomes, model=RegionOutput)
        await self.bus.subscribe("sys.heartbeat.basal_ganglia", self.beats, model=Heartbeat)
        await self.bus.flush()
        await self.bus.publish("env.actions", EnvActions(actions=actions, env="world"))
        await asyncio.sleep(0.2)

    async def step(self, episode: str, t: int, vector: list[float]) -> str:
        sid = f"{episode}-{t}"
        body = {"vector": vector, "id": sid, "episode": episode}
        await self.bus.publish_raw("stim.vector", json.dumps(body).encode())
        await eventually(lambda: bool(self.actions.where(lambda m: m.stimulus_id == sid)), within=5,
                         what=f"an action for step {t} of {episode}")
        return str(self.actions.where(lambda m: m.stimulus_id == sid)[0].action)

    async def reward(self, sid: str, value: float, **flags: Any) -> None:
        body = {"value": value, "stimulus_id": sid, **flags}
        await self.bus.publish_raw("feedback.reward", json.dumps(body).encode())


async def bg_stats(world: World) -> dict[str, Any]:
    """The basal ganglia's stats from a heartbeat sent after this call."""
    seen = len(world.beats.items)
    await eventually(lambda: len(world.beats.items) > seen, within=5, what="a basal ganglia heartbeat")
    return dict(world.beats.items[-1][0].stats)


@pytest.fixture
async def brain(bus: Bus, tmp_path: Path) -> AsyncIterator[Supervisor]:
    sup, task = await start_brain(bus, tmp_path, top={"supervisor": {"heartbeat_interval": 0.2}},
                                  basal_ganglia={"max_open_episodes": 2})
    yield sup
    sup.request_stop()
    await asyncio.wait_for(task, 30)


async def test_every_step_is_answered_repeats_included_and_rewards_of_any_size_count(
        brain: Supervisor, bus: Bus) -> None:
    world = World(bus)
    await world.start(["up", "down"])
    steps = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    for t, obs in enumerate(steps):
        await world.step("ep-1", t, obs)
        last = t == len(steps) - 1
        await world.reward(f"ep-1-{t}", 250.0 if last else -3.0, terminal=last)
    # A non-terminal reward waits for the next state's value: one TD error per step after the
    # first reward, the last at the terminal reward; none is lost.
    await eventually(lambda: len(world.outcomes.where(lambda m: m.kind == "outcome")) == len(steps), within=5,
                     what="an outcome per reward")
    outcomes = world.outcomes.where(lambda m: m.kind == "outcome")
    assert [o.data["rpe"] is None for o in outcomes] == [True] * 4 + [False]
    assert outcomes[-1].data["scaled"] == pytest.approx(1.0)  # 250 is the largest seen: scaled to 1
    await eventually(lambda: len(world.rpes.where(lambda m: m.kind == "reward")) == len(steps), within=5,
                     what="a reward prediction error per step")
    assert world.errors.where(lambda m: m.actor == "basal_ganglia") == []
    stats = await bg_stats(world)
    assert stats["episodes_ended"] == 1 and stats["open_episodes"] == 0


async def test_truncation_ends_and_a_new_episode_past_the_limit_closes_the_oldest(
        brain: Supervisor, bus: Bus) -> None:
    world = World(bus)
    await world.start(["a", "b"])
    await world.step("cut", 0, [0.5, 0.5])
    await world.reward("cut-0", 0.0, terminal=False, truncated=True)
    for episode in ("one", "two", "three"):  # max_open_episodes is 2: "one" is closed unended
        await world.step(episode, 0, [1.0, 0.0])
        await world.reward(f"{episode}-0", 0.0, terminal=False)
    await asyncio.sleep(0.3)
    stats = await bg_stats(world)
    assert stats["episodes_ended"] == 1 and stats["episodes_timed_out"] == 1 and stats["open_episodes"] == 2


async def test_bad_episode_input_is_reported_and_the_brain_goes_on(brain: Supervisor, bus: Bus) -> None:
    world = World(bus)
    await world.start(["a", "b"])
    bad = [("stim.vector", {"vector": [1.0], "episode": "e" * 129}),
           ("stim.text", {"text": "hi", "episode": "has space"}),
           ("stim.vector", {"vector": []}),
           ("stim.vector", {"vector": [0.5] * 4097}),
           ("feedback.reward", {"value": 10_000.5}),
           ("feedback.reward", {"value": 1e308}),
           ("feedback.reward", {"value": 1.0, "terminal": "maybe"})]
    for subject, body in bad:
        await bus.publish_raw(subject, json.dumps(body).encode())
    await bus.publish_raw("feedback.reward", b'{"value": NaN}')
    expected = ("at most 128 characters", "String should match pattern", "length 0", "length 4097",
                "less than or equal to 10000", "valid boolean", "finite number")

    def reasons() -> str:
        return " | ".join(m.reason for m in world.errors.where(lambda m: True))

    await eventually(lambda: all(e in reasons() for e in expected), within=5,
                     what=f"reports naming each of {expected}")
    assert await world.step("fine", 0, [1.0, 2.0, 3.0]) in ("a", "b")


async def test_one_hot_codes_of_length_two_are_told_apart(brain: Supervisor, bus: Bus) -> None:
    """A world of two states, one-hot coded, where each state wants its own action: learnt."""
    world = World(bus)
    await world.start(["left", "right"])
    correct = []
    for n in range(60):
        state = n % 2
        obs = [1.0, 0.0] if state == 0 else [0.0, 1.0]
        action = await world.step(f"ep{n}", 0, obs)
        good = action == ("left" if state == 0 else "right")
        correct.append(good)
        await world.reward(f"ep{n}-0", 1.0 if good else -1.0)
    assert sum(correct[-20:]) >= 17, correct
