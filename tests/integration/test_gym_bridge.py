"""Gymnasium worlds played by a real brain over the bus: the bridge (bus.gym_bridge), `brainbus gym`
and `brainbus bench worlds`, each against `brainbus run` subprocesses with the small config."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

gymnasium = pytest.importorskip("gymnasium")

from gymnasium import Env, spaces  # noqa: E402

from bus import Bus, EmbeddedServer  # noqa: E402
from bus.gym_bridge import UnsupportedSpace, action_names, observation_encoder, run_episodes  # noqa: E402

BRAINBUS = Path(sys.executable).parent / "brainbus"
REPO = Path(__file__).resolve().parents[2]
SMALL = REPO / "configs" / "small.yaml"
_ns = itertools.count(1)


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "NATS_URL" and not k.startswith("BRAINBUS_")}
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), e.get("PYTHONPATH", "")) if p)
    return e


def gym_cli(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BRAINBUS), "gym", *args], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=timeout)


class Brain:
    """`brainbus run --config configs/small.yaml` in `cwd` (on `url` when given, else its own server)."""

    def __init__(self, cwd: Path, url: str | None = None, namespace: str | None = None) -> None:
        self.cwd = cwd
        args = ["run", "--config", str(SMALL), "--data-dir", str(cwd / "data"), "--log-level", "warning"]
        if url:
            args += ["--nats", url]
        if namespace:
            args += ["--namespace", namespace]
        self.log = open(cwd / "brain.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(BRAINBUS), *args], cwd=cwd, env=env(), stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True)

    def wait_runtime_file(self, within: float = 20) -> None:
        deadline = time.monotonic() + within
        while not (self.cwd / ".brainbus" / "runtime.json").exists():
            assert self.proc.poll() is None, f"the brain exited: {(self.cwd / 'brain.log').read_text()}"
            assert time.monotonic() < deadline, "no runtime file"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


@pytest.fixture(scope="module")
def shared_brain(nats_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A small brain on the session's server: (url, namespace)."""
    ns = f"gym{os.getpid() % 10000}x{next(_ns)}"
    brain = Brain(tmp_path_factory.mktemp("gym-brain"), nats_server.url, ns)
    try:
        yield nats_server.url, ns
    finally:
        brain.stop()


# ---------------------------------------------------------------- spaces and names (no brain)


def test_observations_become_vectors() -> None:
    v, bad = observation_encoder(spaces.Discrete(5))(3)
    assert v.tolist() == [0, 0, 0, 1, 0] and v.dtype == np.float32 and bad == 0
    v, _ = observation_encoder(spaces.Discrete(3, start=-1))(-1)
    assert v.tolist() == [1, 0, 0]
    enc = observation_encoder(spaces.MultiDiscrete([2, 3]))
    assert enc.size == 5 and enc([1, 2])[0].tolist() == [0, 1, 0, 0, 1]
    enc = observation_encoder(spaces.Box(-np.inf, np.inf, (2, 2)))
    v, bad = enc(np.array([[1.5, np.inf], [np.nan, -2.0]]))
    assert enc.size == 4 and v.tolist() == [1.5, 0.0, 0.0, -2.0] and bad == 2
    assert observation_encoder(spaces.MultiBinary(3))([1, 0, 1])[0].tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="outside"):
        observation_encoder(spaces.Discrete(2))(2)


@pytest.mark.parametrize("space", [
    spaces.Dict({"a": spaces.Discrete(2)}),
    spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3))),
    spaces.Text(5),
    spaces.Graph(node_space=spaces.Discrete(2), edge_space=None),
    spaces.Discrete(5000),
])
def test_unsupported_observation_spaces_are_refused_by_name(space: Any) -> None:
    with pytest.raises(UnsupportedSpace, match="observation space") as err:
        observation_encoder(space)
    assert type(space).__name__ in str(err.value)


def test_action_names_are_the_worlds_own() -> None:
    import bench.tmaze  # noqa: F401

    def names(env_id: str, **kw: Any) -> list[str]:
        env = gymnasium.make(env_id, **kw)
        try:
            return action_names(env)
        finally:
            env.close()

    assert names("FrozenLake-v1") == ["left", "down", "right", "up"]
    assert names("Taxi-v4") == ["south", "north", "east", "west", "pickup", "dropoff"]
    assert names("CartPole-v1") == ["left", "right"]
    assert names("brainbus/TMaze-v0") == ["left", "right", "forward"]
    assert names("FrozenLake-v1", map_name="8x8") == ["left", "down", "right", "up"]
    with pytest.raises(UnsupportedSpace, match="action space Box"):
        names("Pendulum-v1")


def test_an_unnamed_world_gets_a0_to_an() -> None:
    class Plain(Env[Any, Any]):
        observation_space = spaces.Discrete(2)
        action_space = spaces.Discrete(3)

    assert action_names(Plain()) == ["a0", "a1", "a2"]


@pytest.mark.parametrize(("args", "says"), [
    (["Blackjack-v1"], "observation space Tuple(Discrete(32), Discrete(11), Discrete(2)) is not supported"),
    (["Pendulum-v1"], "action space Box"),
    (["NoSuchWorld-v0"], "environment 'NoSuchWorld-v0'"),
    (["CartPole-v1", "--env-kwarg", "colour=1"], "unexpected keyword argument 'colour'"),
    (["CartPole-v1", "--episodes", "0"], "--episodes: must be at least 1"),
    (["CartPole-v1", "--max-steps", "x"], "--max-steps: 'x' is not a whole number"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    r = gym_cli(*args, "--nats", "nats://127.0.0.1:9", cwd=tmp_path, timeout=60)
    assert r.returncode == 2, r.stderr
    assert says in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# ---------------------------------------------------------------- against a brain


def test_cli_plays_frozenlake_with_a_brain_found_by_its_runtime_file(tmp_path: Path) -> None:
    brain = Brain(tmp_path)  # its own embedded server, with credentials in .brainbus/runtime.json
    try:
        brain.wait_runtime_file()
        out = tmp_path / "episodes.json"
        r = gym_cli("FrozenLake-v1", "--episodes", "5", "--max-steps", "20", "--seed", "3",
                    "--env-kwarg", "is_slippery=false", "--out", str(out), cwd=tmp_path)
    finally:
        brain.stop()
    assert r.returncode == 0, r.stderr + r.stdout
    assert "FrozenLake-v1: 5 episodes" in r.stdout
    data = orjson.loads(out.read_bytes())
    assert data["env_id"] == "FrozenLake-v1" and data["seed"] == 3
    assert len(data["episodes"]) == 5
    for e in data["episodes"]:
        assert set(e) == {"return", "steps", "terminated", "truncated", "seconds"}
        assert isinstance(e["return"], float) and isinstance(e["steps"], int) and isinstance(e["seconds"], float)
        assert e["terminated"] != e["truncated"]
        assert 1 <= e["steps"] <= 20
        assert e["truncated"] == (e["steps"] == 20)
    # Every step got its action in time, from the brain.
    assert data["steps"] == sum(e["steps"] for e in data["episodes"])
    assert data["timeouts"] == 0 and data["random_actions"] == 0
    assert data["latency_ms"]["n"] == data["steps"]
    assert data["brain_errors"] == {}
    assert data["actions"] == ["left", "down", "right", "up"]


async def test_run_episodes_answers_every_step_of_a_tmaze(shared_brain: tuple[str, str]) -> None:
    url, ns = shared_brain
    seen: list[tuple[int, dict[str, Any]]] = []

    async def on_episode(index: int, episode: dict[str, Any], result: Any) -> None:
        seen.append((index, episode))

    result = await run_episodes("brainbus/TMaze-v0", episodes=6, seed=1, nats_url=url, namespace=ns,
                                on_episode=on_episode, env_kwargs={"corridor": 2})
    assert not result.interrupted
    assert [i for i, _ in seen] == list(range(6)) and [e for _, e in seen] == result.episodes
    assert result.steps == sum(e["steps"] for e in result.episodes)
    assert len(result.latencies_ms) == result.steps
    assert result.timeouts == result.random_actions == 0
    assert result.brain_errors == {}
    assert result.obs_size == 4 and result.actions == ["left", "right", "forward"]
    for e in result.episodes:
        assert e["steps"] >= 4  # cue, two corridor steps, the junction
        assert e["terminated"] or e["truncated"]
        assert -2.0 < e["return"] <= 1.0  # a turn (+1 or -1), less 0.1 per wait at the junction
    p50 = result.latency_ms(50)
    assert p50 is not None and 0 < p50 < 2000


async def test_cartpole_vectors_and_the_step_budget(shared_brain: tuple[str, str]) -> None:
    url, ns = shared_brain
    result = await run_episodes("CartPole-v1", episodes=50, seed=0, max_steps=30, nats_url=url, namespace=ns,
                                max_total_steps=40)
    assert 1 <= len(result.episodes) < 50 and result.steps >= 40
    assert result.timeouts == 0 and result.brain_errors == {}
    assert all(e["steps"] <= 30 for e in result.episodes)


async def test_a_silent_brain_costs_timeouts_and_random_actions_never_a_hang(bus: Bus) -> None:
    """Heartbeats but no answers: each step is sent twice, then a random action is taken."""
    stop = asyncio.Event()

    async def beat() -> None:
        while not stop.is_set():
            await bus.publish_raw("sys.heartbeat.basal_ganglia", b"{}")
            await asyncio.sleep(0.05)

    beating = asyncio.create_task(beat())
    try:
        t0 = time.monotonic()
        result = await run_episodes("brainbus/TMaze-v0", episodes=1, seed=0, max_steps=2, nats_url=bus.url,
                                    namespace=bus.subjects.ns, env_kwargs={"corridor": 0}, timeout=0.2)
        took = time.monotonic() - t0
    finally:
        stop.set()
        await beating
    assert result.steps == 2 and result.timeouts == 4 and result.random_actions == 2
    assert result.latencies_ms == [] and len(result.episodes) == 1
    assert took < 5


async def test_no_brain_at_all_is_an_error_naming_the_namespace(bus: Bus) -> None:
    from bus.errors import BusError

    with pytest.raises(BusError, match=f"namespace '{bus.subjects.ns}'"):
        await run_episodes("CartPole-v1", episodes=1, nats_url=bus.url, namespace=bus.subjects.ns,
                           ready_timeout=0.3)


def test_ctrl_c_writes_what_was_done_and_exits_130(shared_brain: tuple[str, str], tmp_path: Path) -> None:
    url, ns = shared_brain
    out = tmp_path / "partial.json"
    proc = subprocess.Popen([str(BRAINBUS), "gym", "CartPole-v1", "--episodes", "100000", "--out", str(out),
                             "--nats", url, "--namespace", ns], cwd=tmp_path, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "(interrupted)" in stdout
    data = orjson.loads(out.read_bytes())
    assert data["interrupted"] is True and data["env_id"] == "CartPole-v1"
    assert all(set(e) == {"return", "steps", "terminated", "truncated", "seconds"} for e in data["episodes"])
    assert "Traceback" not in stderr


@pytest.mark.slow
async def test_bench_worlds_quick_on_one_world_with_an_ablation(tmp_path: Path) -> None:
    from bench.worlds import run_worlds_bench

    out = tmp_path / "worlds.json"
    results = await run_worlds_bench(out, quick=True, worlds=["tmaze_k2"], ablations=["no_working_memory"])
    data = orjson.loads(out.read_bytes())
    agents = data["worlds"]["tmaze_k2"]["agents"]
    assert set(agents) == {"brain", "brain: no_working_memory", "q_learning", "random"}
    for name, row in agents.items():
        assert "skipped" not in row and "failed" not in row, (name, row)
        assert row["episodes_run"] == 100 and 0 <= row["success_rate"] <= 1
    assert agents["brain"]["timeouts"] == 0 and agents["brain"]["latency_ms_p50"] > 0
    assert agents["q_learning"]["mean_return"] > 0.5
    assert out.with_suffix(".png").stat().st_size > 1000
    assert results["worlds"]["tmaze_k2"]["step_limit"] == 10
