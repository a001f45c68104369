"""A cued T-maze for Gymnasium (`brainbus/TMaze-v0`): a cue to hold in working memory.

The agent sees a cue (left or right) at the first step only, then walks a corridor of
`corridor` (k) steps whose observations are all identical, then reaches the junction and must
turn the way the cue said (Bakker 2002, "Reinforcement learning with long short-term memory")::

    step:         0          1 .. k       k + 1
    observation:  cue_left   corridor     junction
              or  cue_right

Observations are `Discrete(4)` symbols: 0 = cue-left, 1 = cue-right, 2 = corridor, 3 = junction
(an agent that needs vectors one-hot encodes them). Actions are `Discrete(3)`, named by
`action_names`: 0 = ``left``, 1 = ``right``, 2 = ``forward``.

* Before the junction every action moves one step on (the corridor has no walls to bump into,
  so the only thing to learn is the final turn), with reward 0.
* At the junction ``left`` / ``right`` ends the episode (terminated) with +1 when it matches the
  cue and -1 when it does not; ``forward`` bumps into the wall: it stays at the junction and
  costs `stall_penalty` (default 0.1), so waiting is worse than a guess (Bakker's T-maze too
  punishes a standstill; without it, a learner that cannot hold the cue finds waiting out the
  time limit, 0, as good as guessing, expected 0, and need never turn).
* A time limit (`max_steps`, default ``corridor + 8``) truncates an episode that never turns.

The cue is drawn from the environment's random generator, so `reset(seed=s)` fixes the sequence
of cues. The corridor and junction observations carry no trace of the cue: a memoryless agent can
do no better than chance (success 0.5, expected return 0), one that holds the cue can always
succeed (success 1, return 1). The true
(Markov) state, cue and position together, is in ``info["state"]`` (``n_states`` of them) for
references that are given it.

Importing this module registers the environment (idempotently)::

    import gymnasium, bench.tmaze
    env = gymnasium.make("brainbus/TMaze-v0", corridor=3)
"""

from __future__ import annotations

from typing import Any, cast

import gymnasium as gym
from gymnasium import spaces

__all__ = ["ACTIONS", "CORRIDOR", "CUE_LEFT", "CUE_RIGHT", "ENV_ID", "JUNCTION", "TMazeEnv", "register"]

ENV_ID = "brainbus/TMaze-v0"
CUE_LEFT, CUE_RIGHT, CORRIDOR, JUNCTION = 0, 1, 2, 3
ACTIONS = ("left", "right", "forward")
LEFT, RIGHT, FORWARD = 0, 1, 2


class TMazeEnv(gym.Env[int, int]):
    """The cued T-maze (see the module docstring).

    Args:
        corridor: Number of identical corridor steps between the cue and the junction (k >= 0).
        max_steps: Steps before the episode is truncated (default ``corridor + 8``).
        stall_penalty: What ``forward`` at the junction costs (a reward of minus this).
        render_mode: None or ``"ansi"`` (a one-line picture of the maze).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}
    action_names = ACTIONS

    def __init__(self, corridor: int = 3, max_steps: int | None = None, render_mode: str | None = None,
                 stall_penalty: float = 0.1) -> None:
        if not isinstance(corridor, int) or corridor < 0:
            raise ValueError(f"corridor must be an integer >= 0, got {corridor!r}")
        if not 0 <= stall_penalty <= 1:
            raise ValueError(f"stall_penalty must be in [0, 1], got {stall_penalty!r}")
        if max_steps is None:
            max_steps = corridor + 8
        if max_steps < corridor + 2:
            raise ValueError(f"max_steps must leave room to reach the junction and turn "
                             f"(>= corridor + 2 = {corridor + 2}), got {max_steps}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.corridor = corridor
        self.max_steps = max_steps
        self.stall_penalty = float(stall_penalty)
        self.render_mode = render_mode
        self.observation_space = cast(spaces.Space[int], spaces.Discrete(4))
        self.action_space = cast(spaces.Space[int], spaces.Discrete(3))
        #: Number of true states: (cue, position) with positions 0 .. corridor + 1.
        self.n_states = 2 * (corridor + 2)
        self._cue = CUE_LEFT
        self._pos = 0
        self._t = 0

    @property
    def junction(self) -> int:
        """The position of the junction."""
        return self.corridor + 1

    def _obs(self) -> int:
        if self._pos == 0:
            return self._cue
        return JUNCTION if self._pos == self.junction else CORRIDOR

    def _info(self) -> dict[str, Any]:
        return {"state": self._cue * (self.corridor + 2) + self._pos, "cue": ACTIONS[self._cue],
                "position": self._pos}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(2))
        self._pos = 0
        self._t = 0
        return self._obs(), self._info()

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be one of 0..2 (left, right, forward), got {action!r}")
        action = int(action)
        reward, terminated = 0.0, False
        if self._pos < self.junction:
            self._pos += 1
        elif action in (LEFT, RIGHT):
            reward = 1.0 if action == self._cue else -1.0
            terminated = True
        else:
            reward = -self.stall_penalty
        self._t += 1
        truncated = not terminated and self._t >= self.max_steps
        return self._obs(), reward, terminated, truncated, self._info()

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        cells = ["<" if self._cue == CUE_LEFT else ">"] + ["."] * self.corridor + ["T"]
        cells[self._pos] = "@"
        return "".join(cells)


def register() -> None:
    """Register `brainbus/TMaze-v0` with Gymnasium (a second call does nothing)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="bench.tmaze:TMazeEnv", kwargs={"corridor": 3})


register()
