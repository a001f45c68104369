"""Run a Gymnasium environment against a brain over the bus, with only the public contract.

    import asyncio
    from bus.gym_bridge import run_episodes

    result = asyncio.run(run_episodes("FrozenLake-v1", episodes=20, seed=0, max_steps=50,
                                      env_kwargs={"is_slippery": False}))
    print(result.episodes[-1]["return"], result.latency_ms(50))

The environment's side of the contract, per step:

1. the observation of step t, encoded as a vector (`encode_observation`), on `NS.stim.vector`
   with a stimulus id and the episode's id;
2. the brain's answer on `NS.motor.action` naming that stimulus id (its action name is mapped
   back to the environment's action index);
3. `env.step(action)`, then the reward of that action on `NS.feedback.reward`, naming the same
   stimulus id, with ``terminal`` when the environment terminated, ``truncated`` (and not
   terminal) when it was cut short (its time limit or `max_steps`), neither otherwise;
4. the next observation.

The action names are declared on `NS.env.actions` once the basal ganglia heartbeat. A step whose
action does not come within `timeout` seconds is sent again once (same stimulus id); when that
fails too, a random action is taken. Both are counted (`timeouts`, `random_actions`), never
waited on forever. The brain may live in another process or on another machine: nothing here
reaches into it.

Observations: `Discrete(n)` becomes a one-hot of length n, `MultiDiscrete` the concatenated
one-hots, `MultiBinary` and `Box` their values flattened (a non-finite value becomes 0 and is
counted in `nonfinite_values`). Other spaces are refused with `UnsupportedSpace`, as are action
spaces other than `Discrete`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bus.client import Bus, Subscription
from bus.codec import Headers, decode
from bus.errors import BadInput, BusError, DecodeError
from bus.models import MAX_REWARD, MAX_STIMULUS_DIM, EnvActions, MotorAction, Reward, SysError, VectorStimulus
from bus.runtime import resolve_connection

if TYPE_CHECKING:
    import gymnasium

__all__ = [
    "KNOWN_ACTION_NAMES",
    "ObservationEncoder",
    "RunResult",
    "UnsupportedSpace",
    "action_names",
    "make_env",
    "observation_encoder",
    "run_episodes",
]

#: Action names of well-known environments whose action space is Discrete but unnamed in code
#: (from their documentation), by environment name without version.
KNOWN_ACTION_NAMES: dict[str, tuple[str, ...]] = {
    "FrozenLake": ("left", "down", "right", "up"),
    "FrozenLake8x8": ("left", "down", "right", "up"),
    "Taxi": ("south", "north", "east", "west", "pickup", "dropoff"),
    "CartPole": ("left", "right"),
    "CliffWalking": ("up", "right", "down", "left"),
    "MountainCar": ("left", "none", "right"),
    "Acrobot": ("torque_neg", "torque_zero", "torque_pos"),
    "LunarLander": ("noop", "left_engine", "main_engine", "right_engine"),
    "Blackjack": ("stick", "hit"),
}
DEFAULT_TIMEOUT_S = 2.0


class UnsupportedSpace(BadInput):
    """An observation or action space the bridge cannot put on the bus."""


def _gym() -> Any:
    try:
        import gymnasium
    except ImportError:
        raise BadInput("gymnasium is not installed: install the gym extra (pip install -e '.[gym]')") from None
    return gymnasium


# ---------------------------------------------------------------- observations and actions


@dataclass
class ObservationEncoder:
    """Turns observations of one space into float32 vectors of length `size`."""

    space: Any
    size: int
    encode: Callable[[Any], tuple[np.ndarray, int]]

    def __call__(self, obs: Any) -> tuple[np.ndarray, int]:
        """The vector of `obs`, and how many non-finite values in it were replaced by 0."""
        return self.encode(obs)


def _one_hot(n: int, start: int) -> Callable[[Any], tuple[np.ndarray, int]]:
    def encode(obs: Any) -> tuple[np.ndarray, int]:
        index = int(obs) - start
        if not 0 <= index < n:
            raise ValueError(f"observation {obs!r} is outside Discrete({n}, start={start})")
        v = np.zeros(n, dtype=np.float32)
        v[index] = 1.0
        return v, 0
    return encode


def _multi_one_hot(nvec: np.ndarray, start: np.ndarray) -> Callable[[Any], tuple[np.ndarray, int]]:
    sizes = nvec.reshape(-1).astype(np.int64)
    starts = start.reshape(-1).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    total = int(sizes.sum())

    def encode(obs: Any) -> tuple[np.ndarray, int]:
        idx = np.asarray(obs, dtype=np.int64).reshape(-1) - starts
        if idx.shape != sizes.shape or np.any(idx < 0) or np.any(idx >= sizes):
            raise ValueError(f"observation {obs!r} is outside MultiDiscrete({nvec.tolist()})")
        v = np.zeros(total, dtype=np.float32)
        v[offsets + idx] = 1.0
        return v, 0
    return encode


def _flat_floats(obs: Any) -> tuple[np.ndarray, int]:
    v = np.asarray(obs, dtype=np.float64).reshape(-1)
    bad = ~np.isfinite(v)
    # A float32 on the bus: clip what float32 cannot hold (the brain only takes finite values).
    v = np.clip(np.where(bad, 0.0, v), -3.0e38, 3.0e38).astype(np.float32)
    return v, int(bad.sum())


def observation_encoder(space: Any) -> ObservationEncoder:
    """The encoder for a Gymnasium observation space; `UnsupportedSpace` for any other."""
    spaces = _gym().spaces
    if isinstance(space, spaces.Discrete):
        size, encode = int(space.n), _one_hot(int(space.n), int(space.start))
    elif isinstance(space, spaces.MultiDiscrete):
        start = getattr(space, "start", None)
        start_arr = np.zeros_like(space.nvec) if start is None else np.asarray(start)
        size, encode = int(np.sum(space.nvec)), _multi_one_hot(np.asarray(space.nvec), start_arr)
    elif isinstance(space, spaces.MultiBinary | spaces.Box):
        size, encode = int(np.prod(space.shape)), _flat_floats
    else:
        raise UnsupportedSpace(f"observation space {space} is not supported: "
                               "Discrete, Box, MultiDiscrete and MultiBinary are")
    if not 1 <= size <= MAX_STIMULUS_DIM:
        raise UnsupportedSpace(f"observation space {space} encodes to {size} numbers; a stimulus carries "
                               f"1..{MAX_STIMULUS_DIM}")
    return ObservationEncoder(space, size, encode)


def action_names(env: Any) -> list[str]:
    """Names for the actions of `env` (its action space must be Discrete).

    The environment's own (`action_names` on the unwrapped env, or `get_action_meanings()` as
    Atari environments have), else those of a well-known environment (`KNOWN_ACTION_NAMES`),
    else ``a0 .. a{n-1}``.
    """
    space = env.action_space
    if not isinstance(space, _gym().spaces.Discrete):
        raise UnsupportedSpace(f"action space {space} is not supported: only Discrete(n) is")
    n = int(space.n)
    if not 1 <= n <= 256:
        raise UnsupportedSpace(f"action space {space} has {n} actions; a repertoire holds 1..256")
    base = env.unwrapped
    names: Sequence[str] | None = getattr(base, "action_names", None)
    if names is None and callable(getattr(base, "get_action_meanings", None)):
        names = [str(m).lower() for m in base.get_action_meanings()]
    if names is None and env.spec is not None:
        names = KNOWN_ACTION_NAMES.get(env.spec.name)
    names = list(names) if names is not None else []
    valid = len(names) == n and len(set(names)) == n and all(_valid_name(a) for a in names)
    return names if valid else [f"a{i}" for i in range(n)]


def _valid_name(name: str) -> bool:
    return isinstance(name, str) and 1 <= len(name) <= 64 and all(c.isalnum() or c in "_.:-" for c in name) \
        and name.isascii()


def make_env(env_id_or_env: str | gymnasium.Env[Any, Any], env_kwargs: dict[str, Any] | None = None) -> Any:
    """The environment itself, or `gymnasium.make(env_id, **env_kwargs)`; BadInput for an unknown id."""
    gym = _gym()
    if not isinstance(env_id_or_env, str):
        return env_id_or_env
    if env_id_or_env.startswith("brainbus/"):
        import bench.tmaze  # noqa: F401 (registers brainbus/TMaze-v0)
    try:
        return gym.make(env_id_or_env, **(env_kwargs or {}))
    except (gym.error.Error, TypeError) as exc:  # TypeError: an argument the environment does not take
        raise BadInput(f"environment {env_id_or_env!r}: {' '.join(str(exc).split())}") from None


# ---------------------------------------------------------------- results


@dataclass
class RunResult:
    """What a run of episodes did; `episodes` holds one dict per finished episode."""

    env_id: str
    seed: int
    actions: list[str]
    obs_size: int
    episodes: list[dict[str, Any]] = field(default_factory=list)
    #: Per answered step: stimulus sent -> its motor action received, in ms.
    latencies_ms: list[float] = field(default_factory=list)
    steps: int = 0
    #: Steps whose action did not come within the timeout (each is sent again once).
    timeouts: int = 0
    #: Steps with no action after the resend too, or an action outside the repertoire: a random action was taken.
    random_actions: int = 0
    #: Actions that came after their step had given up on them.
    late_actions: int = 0
    #: Non-finite observation values replaced by 0.
    nonfinite_values: int = 0
    #: The brain's reports on `sys.error` about this run's messages: reason -> count (at most 20 reasons).
    brain_errors: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    seconds: float = 0.0

    def latency_ms(self, q: float) -> float | None:
        """The q-th percentile of the step latencies (ms), None without samples."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None

    def to_json(self, *, latencies: bool = False) -> dict[str, Any]:
        """The JSON of `brainbus gym --out` (plus the counters; every latency sample with `latencies`)."""
        out: dict[str, Any] = {
            "env_id": self.env_id, "seed": self.seed, "episodes": self.episodes, "actions": self.actions,
            "obs_size": self.obs_size, "steps": self.steps, "timeouts": self.timeouts,
            "random_actions": self.random_actions, "late_actions": self.late_actions,
            "nonfinite_values": self.nonfinite_values, "brain_errors": self.brain_errors,
            "interrupted": self.interrupted, "seconds": round(self.seconds, 3),
            "latency_ms": {"p50": self.latency_ms(50), "p99": self.latency_ms(99), "n": len(self.latencies_ms)},
        }
        if latencies:
            out["latencies_ms"] = [round(x, 3) for x in self.latencies_ms]
        return out


OnEpisode = Callable[[int, dict[str, Any], RunResult], Awaitable[None] | None]


# ---------------------------------------------------------------- the loop


class _Link:
    """The bus side of a run: actions by stimulus id, heartbeats, error reports."""

    def __init__(self, bus: Bus, prefix: str, result: RunResult) -> None:
        self.bus = bus
        self.prefix = prefix
        self.result = result
        self.loop = asyncio.get_running_loop()
        self.waiting: dict[str, tuple[asyncio.Future[tuple[str, float]], float]] = {}
        self.ready = asyncio.Event()
        self.subs: list[Subscription] = []

    async def start(self) -> None:
        self.subs.append(await self.bus.subscribe_raw_direct("motor.action", self._on_action))
        self.subs.append(await self.bus.subscribe_raw_direct("sys.heartbeat.basal_ganglia", self._on_beat))
        self.subs.append(await self.bus.subscribe_raw_direct("sys.error", self._on_error))

    async def stop(self) -> None:
        for sub in self.subs:
            with contextlib.suppress(Exception):
                await sub.stop()

    def _on_action(self, subject: str, data: bytes, headers: Headers) -> None:
        now = time.perf_counter()
        try:
            msg, _ = decode(MotorAction, data, headers, subject)
        except DecodeError:
            return
        entry = self.waiting.pop(msg.stimulus_id, None)
        if entry is None:
            if msg.stimulus_id.startswith(self.prefix):
                self.result.late_actions += 1
            return
        fut, sent = entry
        if not fut.done():
            fut.set_result((msg.action, (now - sent) * 1000.0))

    def _on_beat(self, subject: str, data: bytes, headers: Headers) -> None:
        self.ready.set()

    def _on_error(self, subject: str, data: bytes, headers: Headers) -> None:
        try:
            report, _ = decode(SysError, data, headers, subject)
        except DecodeError:
            return
        ours = (report.stimulus_id or "").startswith(self.prefix) or report.subject.endswith(
            (".stim.vector", ".feedback.reward", ".env.actions"))
        if not ours:
            return
        errors = self.result.brain_errors
        reason = f"{report.actor}: {report.reason}"
        if reason in errors or len(errors) < 20:
            errors[reason] = errors.get(reason, 0) + 1 + report.suppressed

    async def ask(self, sid: str, stimulus: VectorStimulus, timeout: float) -> tuple[str, float] | None:
        """Send a stimulus and wait for its action (one resend on timeout): (action, latency ms) or None."""
        for attempt in range(2):
            fut: asyncio.Future[tuple[str, float]] = self.loop.create_future()
            self.waiting[sid] = (fut, time.perf_counter())
            await self.bus.publish("stim.vector", stimulus, stimulus_id=sid)
            try:
                return await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                self.result.timeouts += 1
                if attempt == 0:
                    self.waiting.pop(sid, None)
        self.waiting.pop(sid, None)
        return None


async def run_episodes(
    env_id_or_env: str | gymnasium.Env[Any, Any],
    *,
    episodes: int,
    seed: int = 0,
    max_steps: int | None = None,
    nats_url: str | None = None,
    namespace: str | None = None,
    on_episode: OnEpisode | None = None,
    env_kwargs: dict[str, Any] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    ready_timeout: float = 60.0,
    env_token: str | None = None,
    max_total_steps: int | None = None,
) -> RunResult:
    """Run `episodes` episodes of an environment against a brain; what happened, per episode.

    Args:
        env_id_or_env: A Gymnasium id (``"FrozenLake-v1"``) or an environment (closed by the caller).
        episodes: How many episodes (>= 1).
        seed: Seeds the first `reset` (later resets continue its generator) and the random actions.
        max_steps: Truncate an episode after this many steps (None: the environment's own limit).
        nats_url: The brain's NATS (default: `NATS_URL`, else the runtime file of this directory).
        namespace: The brain's namespace (default: the runtime file's, else ``brain``).
        on_episode: Called as ``on_episode(index, episode, result)`` after each episode (may be async).
        env_kwargs: Keyword arguments for `gymnasium.make`.
        timeout: Seconds to wait for an action before sending the stimulus again (then: random action).
        ready_timeout: Seconds to wait for the basal ganglia's heartbeat.
        env_token: The `env` token of the action declaration (default: none).
        max_total_steps: Stop after the episode in which this many steps in all were reached.

    A cancellation (Ctrl-C) returns what was done so far, with ``interrupted`` set.
    """
    if episodes < 1:
        raise BadInput(f"episodes must be at least 1, got {episodes}")
    if max_steps is not None and max_steps < 1:
        raise BadInput(f"max steps must be at least 1, got {max_steps}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise BadInput(f"timeout must be a positive number of seconds, got {timeout}")
    owned = isinstance(env_id_or_env, str)
    env = make_env(env_id_or_env, env_kwargs)
    try:
        encoder = observation_encoder(env.observation_space)
        names = action_names(env)
        env_id = env_id_or_env if isinstance(env_id_or_env, str) else (env.spec.id if env.spec else type(env).__name__)
        result = RunResult(env_id=env_id, seed=seed, actions=names, obs_size=encoder.size)
        url, ns = resolve_connection(nats_url, namespace, role="agent")
        bus = Bus(url, namespace=ns, name="gym-bridge", source="gym")
        started = time.monotonic()
        try:
            await bus.connect()
            try:
                await _loop(bus, env, encoder, names, result, episodes=episodes, seed=seed, max_steps=max_steps,
                            on_episode=on_episode, timeout=timeout, ready_timeout=ready_timeout, env_token=env_token,
                            max_total_steps=max_total_steps)
            finally:
                with contextlib.suppress(Exception):
                    await bus.close()
        except (asyncio.CancelledError, KeyboardInterrupt):
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            result.interrupted = True
        result.seconds = time.monotonic() - started
        return result
    finally:
        if owned:
            env.close()


async def _loop(bus: Bus, env: Any, encoder: ObservationEncoder, names: list[str], result: RunResult, *,
                episodes: int, seed: int, max_steps: int | None, on_episode: OnEpisode | None, timeout: float,
                ready_timeout: float, env_token: str | None, max_total_steps: int | None) -> None:
    run = f"gym-{os.getpid():x}-{time.time_ns() % 10**9:x}"
    link = _Link(bus, run, result)
    await link.start()
    try:
        try:
            await asyncio.wait_for(link.ready.wait(), ready_timeout)
        except TimeoutError:
            ns = bus.subjects.ns
            raise BusError(f"no heartbeat from basal_ganglia on {ns}.sys.heartbeat.basal_ganglia within "
                           f"{ready_timeout:g} s: is a brain running in namespace {ns!r}?") from None
        declaration = EnvActions(actions=names, env=env_token)
        await bus.publish("env.actions", declaration)
        await bus.flush()
        index_of = {a: i for i, a in enumerate(names)}
        rng = np.random.default_rng(seed)
        obs, info = env.reset(seed=seed)
        for ep in range(episodes):
            if ep:
                obs, info = env.reset()
            episode_id = f"{run}-e{ep}"
            t0 = time.monotonic()
            total, steps, terminated, truncated = 0.0, 0, False, False
            while not (terminated or truncated):
                sid = f"{episode_id}-s{steps}"
                vector, bad = encoder(obs)
                result.nonfinite_values += bad
                answer = await link.ask(sid, VectorStimulus(vector=vector, id=sid, episode=episode_id), timeout)
                action = index_of.get(answer[0]) if answer is not None else None
                if answer is not None:
                    result.latencies_ms.append(answer[1])
                if action is None:
                    result.random_actions += 1
                    action = int(rng.integers(len(names)))
                    # Whatever went wrong (a brain restarted, a repertoire replaced): declare again.
                    await bus.publish("env.actions", declaration)
                obs, reward, term, trunc, info = env.step(action)
                steps += 1
                result.steps += 1
                terminated = bool(term)
                truncated = not terminated and (bool(trunc) or (max_steps is not None and steps >= max_steps))
                value = float(reward)
                if not math.isfinite(value):
                    raise BadInput(f"the environment gave a non-finite reward ({value}) at step {steps}")
                total += value
                await bus.publish("feedback.reward", Reward(
                    value=max(-MAX_REWARD, min(MAX_REWARD, value)), stimulus_id=sid, action=names[action],
                    terminal=terminated, truncated=truncated), stimulus_id=sid)
            episode = {"return": total, "steps": steps, "terminated": terminated, "truncated": truncated,
                       "seconds": round(time.monotonic() - t0, 4)}
            result.episodes.append(episode)
            if on_episode is not None:
                done = on_episode(ep, episode, result)
                if inspect.isawaitable(done):
                    await done
            if max_total_steps is not None and result.steps >= max_total_steps:
                break
        await bus.flush()
    finally:
        await link.stop()
