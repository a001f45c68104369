"""The worlds benchmark's references (bench.qlearning) and measures (bench.worlds), in process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

gymnasium = pytest.importorskip("gymnasium")

import bench.tmaze  # noqa: E402,F401
from bench.qlearning import QConfig, run_q_learning, run_random, state_function, tune  # noqa: E402
from bench.worlds import WORLDS, episodes_to_90, score, sparkline, trailing_mean, window  # noqa: E402


def frozenlake() -> Any:
    return gymnasium.make("FrozenLake-v1", is_slippery=False)


def tmaze(k: int = 3) -> Callable[[], Any]:
    return lambda: gymnasium.make("brainbus/TMaze-v0", corridor=k)


def last_mean(episodes: list[dict[str, Any]], n: int = 50) -> float:
    return float(np.mean([e["return"] for e in episodes[-n:]]))


def test_q_learning_given_the_state_solves_frozenlake_and_random_does_not() -> None:
    q = run_q_learning(frozenlake, episodes=400, seed=0, config=QConfig(alpha=0.5, decay=0.3))
    rnd = run_random(frozenlake, episodes=400, seed=0)
    assert last_mean(q) > 0.9
    assert last_mean(rnd) < 0.1
    assert {"return", "steps", "terminated", "truncated", "seconds"} <= set(q[0])


def test_q_learning_holds_the_cue_it_is_given_and_random_is_at_chance() -> None:
    q = run_q_learning(tmaze(3), episodes=300, seed=1)
    rnd = run_random(tmaze(3), episodes=2000, seed=1)
    assert last_mean(q) > 0.9
    assert abs(last_mean(rnd, 2000)) < 0.1


def test_runs_are_reproducible_from_the_seed() -> None:
    a = run_q_learning(frozenlake, episodes=50, seed=3)
    b = run_q_learning(frozenlake, episodes=50, seed=3)
    assert [e["return"] for e in a] == [e["return"] for e in b]
    assert [e["steps"] for e in a] == [e["steps"] for e in b]


def test_max_steps_truncates_episodes() -> None:
    eps = run_random(tmaze(2), episodes=30, seed=0, max_steps=2)
    assert all(e["steps"] <= 2 for e in eps)
    assert all(e["truncated"] and not e["terminated"] for e in eps)


def test_the_state_function_covers_each_world() -> None:
    for make, n in ((frozenlake, 16), (tmaze(2), 8), (lambda: gymnasium.make("Taxi-v4"), 500)):
        env = make()
        fn, n_states = state_function(env)
        assert n_states == n
        obs, info = env.reset(seed=0)
        assert 0 <= fn(obs, info) < n
        env.close()
    env = gymnasium.make("CartPole-v1")
    fn, n_states = state_function(env)
    assert n_states == 3 * 3 * 6 * 6
    rng = np.random.default_rng(0)
    states = {fn(rng.normal(0, [1, 1, 0.2, 1.5]), {}) for _ in range(2000)}
    assert states <= set(range(n_states)) and len(states) > 100
    env.close()
    with pytest.raises(ValueError, match="no tabular state"):
        state_function(gymnasium.make("MountainCar-v0"))


def test_tune_picks_from_the_grid() -> None:
    # alpha 0 never learns: the T-maze's turns stay at chance (mean return about 0).
    config, mean = tune(tmaze(2), episodes=200, seeds=(5, 6), alphas=(0.0, 0.5), decays=(0.1, 0.3))
    assert config.alpha == 0.5 and config.gamma == 0.99 and config.decay in (0.1, 0.3)
    assert 0.3 < mean <= 1


# ---------------------------------------------------------------- measures of bench.worlds


def test_window_is_the_last_hundred_or_a_fifth() -> None:
    assert window(2000) == 100
    assert window(500) == 100
    assert window(100) == 20
    assert window(30) == 10
    assert window(4) == 4


def test_trailing_mean() -> None:
    assert trailing_mean([1, 2, 3, 4], 2).tolist() == [1.0, 1.5, 2.5, 3.5]


def test_episodes_to_90_percent_of_the_final_level() -> None:
    returns = [0.0] * 20 + [1.0] * 80
    assert episodes_to_90(returns, 10) == 29  # the trailing mean of 10 reaches 0.9 at episode 29
    assert episodes_to_90([1.0] * 50, 10) is None  # no learning: nothing to reach
    assert episodes_to_90([1.0] * 25 + [0.0] * 25, 10) is None


def test_score_of_a_world() -> None:
    world = next(w for w in WORLDS if w.name == "frozenlake")
    episodes = [{"return": float(i >= 50), "steps": 6, "terminated": True, "truncated": False, "seconds": 0.0}
                for i in range(100)]
    s = score(world, episodes, quick=True, limit=30)
    assert s["episodes_run"] == 100 and s["window"] == 20
    assert s["success_rate"] == 1.0 and s["mean_return"] == 1.0
    assert s["episodes_to_90"] is not None and 50 < s["episodes_to_90"] <= 70
    assert len(s["returns"]) == 100
    cartpole = next(w for w in WORLDS if w.name == "cartpole")
    long_ones = [{"return": 480.0, "steps": 480, "terminated": False, "truncated": True}] * 10
    assert score(cartpole, long_ones, quick=False, limit=500)["success_rate"] == 1.0
    assert score(cartpole, long_ones, quick=False, limit=1000)["success_rate"] == 0.0


def test_sparkline() -> None:
    assert sparkline([0.0, 0.5, 1.0], 0.0, 1.0) == "▁▅█"
    assert len(sparkline(list(np.linspace(0, 1, 500)), 0.0, 1.0, width=24)) == 24
    assert sparkline([], 0, 1) == ""
    assert sparkline([3.0, 3.0], 3.0, 3.0) == "▁▁"
