"""Learning that spans steps, shown on worlds played over the bus: the cued T-maze needs working
memory (with it the cue is followed, without it the turn is a coin toss), and a chain of steps
with its reward at the end is learnt through temporal-difference credit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

gymnasium = pytest.importorskip("gymnasium")

from gymnasium import Env, spaces  # noqa: E402

import bench.tmaze  # noqa: E402,F401 (registers brainbus/TMaze-v0)
from bus import Bus  # noqa: E402
from bus.gym_bridge import run_episodes  # noqa: E402
from tests.integration.test_brain import start_brain  # noqa: E402


async def play(bus: Bus, tmp_path: Path, env: Any, episodes: int, **prefrontal: Any) -> list[float]:
    """`episodes` of `env` against a small brain run in-process; the returns."""
    sup, task = await start_brain(bus, tmp_path, **({"prefrontal": prefrontal} if prefrontal else {}))
    try:
        result = await run_episodes(env, episodes=episodes, seed=3, nats_url=bus.url, namespace=bus.subjects.ns,
                                    env_kwargs={"corridor": 3} if isinstance(env, str) else None)
    finally:
        sup.request_stop()
        await asyncio.wait_for(task, 30)
    assert result.timeouts == 0
    return [float(e["return"]) for e in result.episodes]


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_the_cue_is_held_over_three_corridor_steps_only_with_working_memory(bus: Bus, tmp_path: Path) -> None:
    with_wm = await play(bus, tmp_path / "wm", "brainbus/TMaze-v0", 160)
    without = await play(bus, tmp_path / "no-wm", "brainbus/TMaze-v0", 160, working_memory=False)
    correct_with = sum(r > 0 for r in with_wm[-40:]) / 40
    correct_without = sum(r > 0 for r in without[-40:]) / 40
    assert correct_with >= 0.9, with_wm
    assert correct_without <= 0.7, without


class Chain(Env[int, int]):
    """`n` states in a row: `go` moves on (the last pays 1), `stop` ends the episode with nothing."""

    action_names = ("go", "stop")

    def __init__(self, n: int = 5) -> None:
        self.n, self.s = n, 0
        self.observation_space = spaces.Discrete(n)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        self.s = 0
        return 0, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        if action == 1:
            return self.s, 0.0, True, False, {}
        self.s += 1
        if self.s == self.n:
            return self.n - 1, 1.0, True, False, {}
        return self.s, 0.0, False, False, {}


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_reward_five_steps_away_is_learnt(bus: Bus, tmp_path: Path) -> None:
    """A random walk reaches the end one time in 32; credit flowing back step by step makes it a habit."""
    returns = await play(bus, tmp_path, Chain(5), 150)
    assert sum(returns[-30:]) >= 27, returns
