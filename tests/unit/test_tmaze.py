"""The cued T-maze (bench.tmaze): what it shows, what it pays, and that Gymnasium accepts it."""

from __future__ import annotations

import pytest

gymnasium = pytest.importorskip("gymnasium")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from bench.tmaze import (  # noqa: E402
    ACTIONS,
    CORRIDOR,
    CUE_LEFT,
    CUE_RIGHT,
    ENV_ID,
    JUNCTION,
    TMazeEnv,
    register,
)

LEFT, RIGHT, FORWARD = (ACTIONS.index(a) for a in ("left", "right", "forward"))


def walk_to_junction(env: TMazeEnv, action: int = FORWARD) -> list[int]:
    """Step until the junction; the observations seen on the way (the cue first)."""
    seen = []
    for _ in range(env.corridor + 1):
        obs, reward, terminated, truncated, _ = env.step(action)
        assert (reward, terminated, truncated) == (0.0, False, False)
        seen.append(obs)
    return seen


@pytest.mark.parametrize("k", [0, 1, 3, 6])
def test_the_cue_shows_once_and_the_corridor_looks_the_same_at_every_step(k: int) -> None:
    env = TMazeEnv(corridor=k)
    obs, info = env.reset(seed=4)
    assert obs in (CUE_LEFT, CUE_RIGHT) and info["position"] == 0
    seen = walk_to_junction(env)
    assert seen == [CORRIDOR] * k + [JUNCTION]


@pytest.mark.parametrize("mover", [LEFT, RIGHT, FORWARD])
def test_any_action_moves_on_through_the_corridor(mover: int) -> None:
    env = TMazeEnv(corridor=3)
    env.reset(seed=0)
    walk_to_junction(env, mover)
    assert env._info()["position"] == env.junction


def test_turning_as_cued_pays_one_and_the_other_way_minus_one() -> None:
    env = TMazeEnv(corridor=2)
    for seed in range(20):
        cue, _ = env.reset(seed=seed)
        walk_to_junction(env)
        right_turn = LEFT if cue == CUE_LEFT else RIGHT
        _, reward, terminated, truncated, _ = env.step(right_turn)
        assert (reward, terminated, truncated) == (1.0, True, False)
        env.reset(seed=seed)
        walk_to_junction(env)
        _, reward, terminated, _, _ = env.step(RIGHT if right_turn == LEFT else LEFT)
        assert (reward, terminated) == (-1.0, True)


def test_forward_at_the_junction_costs_a_little_until_the_time_limit() -> None:
    env = TMazeEnv(corridor=1, max_steps=5)
    env.reset(seed=0)
    walk_to_junction(env)  # 2 steps
    for step in (3, 4):
        obs, reward, terminated, truncated, _ = env.step(FORWARD)
        assert (obs, reward, terminated, truncated) == (JUNCTION, -0.1, False, False), step
    obs, reward, terminated, truncated, _ = env.step(FORWARD)
    assert (obs, reward, terminated, truncated) == (JUNCTION, -0.1, False, True)
    env = TMazeEnv(corridor=1, stall_penalty=0.0)
    env.reset(seed=0)
    walk_to_junction(env)
    assert env.step(FORWARD)[1] == 0.0


def test_the_seed_fixes_the_cues_and_both_cues_come() -> None:
    def cues(seed: int) -> list[int]:
        env = TMazeEnv(corridor=1)
        first, _ = env.reset(seed=seed)
        return [first] + [env.reset()[0] for _ in range(39)]

    assert cues(7) == cues(7)
    assert cues(7) != cues(8)
    assert {CUE_LEFT, CUE_RIGHT} == set(cues(7))


def test_the_true_state_tells_cue_and_position_apart() -> None:
    env = TMazeEnv(corridor=2)
    states = set()
    for seed in range(10):
        _, info = env.reset(seed=seed)
        states.add(info["state"])
        for _ in range(env.corridor + 1):
            states.add(env.step(FORWARD)[4]["state"])
    assert states == set(range(env.n_states))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="corridor"):
        TMazeEnv(corridor=-1)
    with pytest.raises(ValueError, match="max_steps"):
        TMazeEnv(corridor=3, max_steps=4)
    with pytest.raises(ValueError, match="stall_penalty"):
        TMazeEnv(stall_penalty=-1)
    env = TMazeEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(3)


def test_gymnasium_env_checker_passes() -> None:
    # Made through the registry (the checker tries the other render modes through its spec).
    for render_mode in (None, "ansi"):
        env = gymnasium.make(ENV_ID, corridor=2, render_mode=render_mode)
        check_env(env.unwrapped, skip_render_check=False)
        env.close()


def test_registered_once_and_made_with_its_corridor() -> None:
    register()
    register()
    env = gymnasium.make(ENV_ID, corridor=4)
    try:
        assert env.unwrapped.corridor == 4
        assert env.unwrapped.action_names == ("left", "right", "forward")
        obs, _ = env.reset(seed=1)
        assert obs in (CUE_LEFT, CUE_RIGHT)
    finally:
        env.close()
    assert gymnasium.make(ENV_ID).unwrapped.corridor == 3


def test_ansi_render_draws_the_agent_and_the_cue() -> None:
    env = TMazeEnv(corridor=2, render_mode="ansi")
    cue, _ = env.reset(seed=0)
    assert env.render() == "@..T"
    env.step(FORWARD)
    assert env.render() == ("<" if cue == CUE_LEFT else ">") + "@.T"
