"""In-process references for the worlds benchmark: tabular Q-learning given the true state, and
a random agent. No bus, no brain: they play the same Gymnasium environments with the same seeds,
episode budgets and step limits, and report episodes in the bridge's shape (`bus.gym_bridge`).

The Q-learner is given what the brain has to find out for itself: the *true* discrete state
(`state_function`): the observation of a Discrete world (FrozenLake, Taxi), the cue and position
of the T-maze (`info["state"]`, which the observation hides), and CartPole's four values cut
into bins (3 x 3 x 6 x 6). It learns with ``Q(s, a) += alpha (r + gamma max Q(s', .) - Q(s, a))``
(no bootstrap from a terminal state; a truncated episode bootstraps), epsilon-greedy with epsilon
decaying linearly from 1 to `eps_end` over the first `decay` fraction of the episodes, ties
broken at random. `tune` picks alpha and the decay by a small grid on seeds of its own.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["ALPHAS", "DECAYS", "QConfig", "StateFn", "run_q_learning", "run_random", "state_function", "tune"]

ALPHAS = (0.1, 0.3, 0.5, 0.9)
DECAYS = (0.1, 0.3, 0.6)
#: CartPole's state cut into bins: the inner edges for x, x', theta, theta'.
CARTPOLE_EDGES = (
    np.array([-0.8, 0.8]),
    np.array([-0.5, 0.5]),
    np.linspace(-0.21, 0.21, 7)[1:-1],
    np.array([-2.0, -0.5, 0.0, 0.5, 2.0]),
)

StateFn = Callable[[Any, dict[str, Any]], int]
EnvFactory = Callable[[], Any]


@dataclass(frozen=True)
class QConfig:
    """Q-learning settings."""

    alpha: float = 0.3
    gamma: float = 0.99
    eps_end: float = 0.02
    #: The fraction of the episodes over which epsilon goes from 1 to `eps_end`.
    decay: float = 0.3


def state_function(env: Any) -> tuple[StateFn, int]:
    """The true discrete state of `env` for a tabular learner, and how many states there are."""
    from gymnasium import spaces

    base = env.unwrapped
    n_states = getattr(base, "n_states", None)
    if isinstance(n_states, int):  # a world whose observation hides its state (the T-maze)
        return (lambda obs, info: int(info["state"])), n_states
    space = env.observation_space
    if isinstance(space, spaces.Discrete):
        start = int(space.start)
        return (lambda obs, info: int(obs) - start), int(space.n)
    if isinstance(space, spaces.Box) and space.shape == (4,) and env.spec is not None and env.spec.name == "CartPole":
        sizes = [len(e) + 1 for e in CARTPOLE_EDGES]
        strides = np.cumprod([1, *sizes[:-1]])

        def cartpole(obs: Any, info: dict[str, Any]) -> int:
            return int(sum(int(np.searchsorted(e, float(x))) * int(s)
                           for e, x, s in zip(CARTPOLE_EDGES, obs, strides, strict=True)))
        return cartpole, int(np.prod(sizes))
    raise ValueError(f"no tabular state for observation space {space}")


def _episode(ret: float, steps: int, terminated: bool, truncated: bool, t0: float) -> dict[str, Any]:
    return {"return": ret, "steps": steps, "terminated": terminated, "truncated": truncated,
            "seconds": round(time.monotonic() - t0, 5)}


def _play(env: Any, episodes: int, seed: int, max_steps: int | None,
          act: Callable[[Any, dict[str, Any], int], int],
          learn: Callable[[Any, dict[str, Any], int, float, Any, dict[str, Any], bool], None] | None = None,
          ) -> list[dict[str, Any]]:
    out = []
    obs, info = env.reset(seed=seed)
    for ep in range(episodes):
        if ep:
            obs, info = env.reset()
        t0 = time.monotonic()
        total, steps, terminated, truncated = 0.0, 0, False, False
        while not (terminated or truncated):
            a = act(obs, info, ep)
            obs2, r, term, trunc, info2 = env.step(a)
            steps += 1
            terminated = bool(term)
            truncated = not terminated and (bool(trunc) or (max_steps is not None and steps >= max_steps))
            total += float(r)
            if learn is not None:
                learn(obs, info, a, float(r), obs2, info2, terminated)
            obs, info = obs2, info2
        out.append(_episode(total, steps, terminated, truncated, t0))
    return out


def run_random(make_env: EnvFactory, *, episodes: int, seed: int, max_steps: int | None = None) -> list[dict[str, Any]]:
    """A uniformly random agent: its episodes."""
    env = make_env()
    try:
        rng = np.random.default_rng(seed)
        n = int(env.action_space.n)
        return _play(env, episodes, seed, max_steps, lambda obs, info, ep: int(rng.integers(n)))
    finally:
        env.close()


def run_q_learning(make_env: EnvFactory, *, episodes: int, seed: int, max_steps: int | None = None,
                   config: QConfig | None = None) -> list[dict[str, Any]]:
    """Tabular epsilon-greedy Q-learning on the true state: its episodes."""
    c = config or QConfig()
    env = make_env()
    try:
        state, n_states = state_function(env)
        n = int(env.action_space.n)
        q = np.zeros((n_states, n))
        rng = np.random.default_rng(seed)
        decay_episodes = max(1.0, c.decay * episodes)

        def act(obs: Any, info: dict[str, Any], ep: int) -> int:
            eps = max(c.eps_end, 1.0 - (1.0 - c.eps_end) * ep / decay_episodes)
            if rng.random() < eps:
                return int(rng.integers(n))
            row = q[state(obs, info)]
            return int(rng.choice(np.flatnonzero(row == row.max())))

        def learn(obs: Any, info: dict[str, Any], a: int, r: float, obs2: Any, info2: dict[str, Any],
                  terminal: bool) -> None:
            s = state(obs, info)
            target = r if terminal else r + c.gamma * float(q[state(obs2, info2)].max())
            q[s, a] += c.alpha * (target - q[s, a])

        return _play(env, episodes, seed, max_steps, act, learn)
    finally:
        env.close()


def tune(make_env: EnvFactory, *, episodes: int, seeds: Sequence[int], max_steps: int | None = None,
         alphas: Sequence[float] = ALPHAS, decays: Sequence[float] = DECAYS) -> tuple[QConfig, float]:
    """The (alpha, decay) of the grid with the highest mean return over all episodes (learning fast
    counts, not only the final level), averaged over `seeds`; and that mean."""
    best: tuple[QConfig, float] | None = None
    for alpha, decay in itertools.product(alphas, decays):
        config = QConfig(alpha=alpha, decay=decay)
        score = float(np.mean([np.mean([e["return"] for e in run_q_learning(
            make_env, episodes=episodes, seed=s, max_steps=max_steps, config=config)]) for s in seeds]))
        if best is None or score > best[1]:
            best = (config, score)
    assert best is not None
    return best


def config_dict(config: QConfig) -> dict[str, float]:
    """The settings as JSON."""
    return asdict(config)
