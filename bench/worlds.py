"""`brainbus bench worlds`: Gymnasium worlds played by the brain over the bus, against references.

Every world is played, through the public contract only (`bus.gym_bridge`), by a fresh brain
process (`brainbus run`, configs/small.yaml: the hashing encoder, as world states come as
vectors), and in process by two references on the same seed, the same number of episodes and the
same step limits (bench.qlearning):

* tabular Q-learning given the true discrete state (which the T-maze's observations hide), its
  learning rate and epsilon decay tuned by a small grid on seeds of its own;
* a random agent.

Worlds (full budget; `--quick` in brackets): FrozenLake-v1 4x4 without slipping, 500 episodes
[100, at most 30 steps each], and with slipping, 500 [60, at most 30 steps]; Taxi-v4, 2000 episodes
[40, at most 50 steps]; the cued T-maze (bench.tmaze) with corridors of 1 to 4 steps, 500 episodes
each [100]; CartPole-v1, 1000 episodes [40, at most 200 steps]. A brain run stops early past its
world's step budget (Taxi, CartPole: 200,000 steps), and the references then play as many episodes
as it did. At about 5 ms a step the full run takes one to two hours, the quick one two minutes.

Ablations, each a brain started with config overrides (`ABLATIONS`), on some of the worlds
(`ABLATION_WORLDS`): the TD discount fixed at its low end (serotonin frozen low), no working
memory (the context is the percept alone), no eligibility traces. An ablation whose overrides the
brain's config does not accept is reported as skipped, with the reason.

Measures, for every agent on every world, from its episodes' returns (the window is the last 100
episodes, or a fifth of a shorter run, at least 10):

* success rate over the window: the goal reached (FrozenLake, T-maze: a positive return), the
  passenger delivered (Taxi: terminated), the pole kept up for 95% of the step limit (CartPole);
* mean return over the window;
* episodes to reach 90% of the final level: the first episode at which the trailing mean return
  (same window) has covered 90% of the way from the first window's mean to the last window's
  (none when the last is not above the first);
* for the brain, per-step latency (stimulus sent -> its action received) p50 and p99, in ms, and
  the steps whose action did not come in time (`timeouts`).

It prints a table with a sparkline of each learning curve, and writes the JSON and the curves as a
PNG beside it (matplotlib, when installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

__all__ = ["ABLATIONS", "ABLATION_WORLDS", "WORLDS", "World", "run_worlds_bench", "score", "sparkline"]

REPO = Path(__file__).resolve().parent.parent
BRAIN_CONFIG = REPO / "configs" / "small.yaml"
SEED = 0
TUNE_SEEDS = (1001, 1002)

#: Ablation name -> per-actor option overrides on top of the brain's config. Change them here
#: when the brain's options change; a set the config does not accept is reported as skipped.
ABLATIONS: dict[str, dict[str, dict[str, Any]]] = {
    # Serotonin sets the TD discount (gamma = 0.5 + 0.49 * 5-HT): frozen at its low end.
    "discount_fixed_low": {"basal_ganglia": {"discount": 0.5}},
    # The prefrontal context carries the percept alone: no history, no cue held.
    "no_working_memory": {"prefrontal": {"working_memory": False}},
    # Credit only to the last choice: eligibility traces decay at once.
    "no_traces": {"basal_ganglia": {"trace_decay": 0.0}},
}
#: The worlds each ablation is run on, full and quick.
ABLATION_WORLDS = {False: ("frozenlake", "tmaze_k2", "tmaze_k4", "cartpole"), True: ("frozenlake", "tmaze_k2")}


def _goal(e: dict[str, Any], limit: int) -> bool:
    return float(e["return"]) > 0


def _delivered(e: dict[str, Any], limit: int) -> bool:
    return bool(e["terminated"])


def _balanced(e: dict[str, Any], limit: int) -> bool:
    return int(e["steps"]) >= 0.95 * limit


@dataclass(frozen=True)
class World:
    """One world of the benchmark and its budgets."""

    name: str
    env_id: str
    kwargs: dict[str, Any]
    episodes: int
    quick_episodes: int
    success: Callable[[dict[str, Any], int], bool]
    #: What `success` means, for the report.
    goal: str
    max_steps: int | None = None  # per episode; None: the world's own time limit
    quick_max_steps: int | None = None
    step_budget: int | None = None  # a brain run stops after the episode that reaches it
    extra: dict[str, Any] = field(default_factory=dict)

    def budget(self, quick: bool) -> tuple[int, int | None]:
        """(episodes, step limit per episode) of a run."""
        return (self.quick_episodes, self.quick_max_steps) if quick else (self.episodes, self.max_steps)

    def make(self) -> Any:
        import gymnasium

        import bench.tmaze  # noqa: F401 (registers the T-maze)

        return gymnasium.make(self.env_id, **self.kwargs)

    def step_limit(self, quick: bool) -> int:
        """The step limit an episode actually has (ours, else the world's own)."""
        own = self.budget(quick)[1]
        if own is not None:
            return own
        env = self.make()
        try:
            limit = env.spec.max_episode_steps if env.spec is not None else None
            return int(limit or getattr(env.unwrapped, "max_steps", 0) or 10**9)
        finally:
            env.close()


WORLDS: list[World] = [
    World("frozenlake", "FrozenLake-v1", {"is_slippery": False}, 500, 100, _goal, "goal reached",
          quick_max_steps=30),
    World("frozenlake_slippery", "FrozenLake-v1", {"is_slippery": True}, 500, 60, _goal, "goal reached",
          quick_max_steps=30),
    World("taxi", "Taxi-v4", {}, 2000, 40, _delivered, "passenger delivered", quick_max_steps=50,
          step_budget=200_000),
    *[World(f"tmaze_k{k}", "brainbus/TMaze-v0", {"corridor": k}, 500, 100, _goal, "turned as cued")
      for k in range(1, 5)],
    World("cartpole", "CartPole-v1", {}, 1000, 40, _balanced, "pole up for 95% of the limit",
          quick_max_steps=200, step_budget=200_000),
]


# ---------------------------------------------------------------- measures


def window(n: int) -> int:
    """The episodes of the final level: the last 100, or a fifth of a shorter run (at least 10)."""
    return max(1, min(n, 100, max(10, n // 5)))


def trailing_mean(values: list[float], w: int) -> np.ndarray:
    """The mean of the last `w` values at each episode (fewer at the start)."""
    x = np.asarray(values, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(0, idx - w)
    return np.asarray((c[idx] - c[lo]) / (idx - lo))


def episodes_to_90(returns: list[float], w: int) -> int | None:
    """The first episode at which the trailing mean covers 90% of the way from the first window's
    mean to the last window's; None when the last is not above the first."""
    if len(returns) < 2 * w:
        w = max(1, len(returns) // 2)
    if not returns or w < 1:
        return None
    start, final = float(np.mean(returns[:w])), float(np.mean(returns[-w:]))
    if final <= start:
        return None
    threshold = start + 0.9 * (final - start)
    curve = trailing_mean(returns, w)
    for i in range(w - 1, len(curve)):
        if curve[i] >= threshold - 1e-12:
            return i + 1
    return len(returns)


def score(world: World, episodes: list[dict[str, Any]], quick: bool, limit: int) -> dict[str, Any]:
    """The measures of one agent's episodes on `world`."""
    n = len(episodes)
    if n == 0:
        return {"episodes_run": 0, "success_rate": None, "mean_return": None, "episodes_to_90": None,
                "window": 0, "returns": [], "curve": []}
    w = window(n)
    returns = [float(e["return"]) for e in episodes]
    last = episodes[-w:]
    curve = trailing_mean(returns, w)
    step = max(1, n // 200)
    return {
        "episodes_run": n,
        "window": w,
        "success_rate": sum(world.success(e, limit) for e in last) / len(last),
        "mean_return": float(np.mean(returns[-w:])),
        "episodes_to_90": episodes_to_90(returns, w),
        "mean_steps": float(np.mean([e["steps"] for e in episodes])),
        "returns": [round(r, 4) for r in returns],
        "curve": [round(float(c), 4) for c in curve[::step]],
        "curve_step": step,
    }


BARS = "▁▂▃▄▅▆▇█"


def sparkline(curve: list[float], lo: float, hi: float, width: int = 24) -> str:
    """A curve as `width` block characters between `lo` and `hi`."""
    if not curve:
        return ""
    chunks = np.array_split(np.asarray(curve, dtype=np.float64), min(width, len(curve)))
    span = hi - lo if hi > lo else 1.0
    out = []
    for chunk in chunks:
        level = (float(chunk.mean()) - lo) / span
        out.append(BARS[min(len(BARS) - 1, max(0, int(level * (len(BARS) - 1) + 0.5)))])
    return "".join(out)


# ---------------------------------------------------------------- the brain as a process


def brain_config(namespace: str, data_dir: Path, overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """configs/small.yaml with per-actor option overrides."""
    config: dict[str, Any] = yaml.safe_load(BRAIN_CONFIG.read_text())
    config["namespace"] = namespace
    config["data_dir"] = str(data_dir)
    config.setdefault("supervisor", {})["heartbeat_interval"] = 0.5
    for actor, options in overrides.items():
        spec = config["actors"][actor]
        spec["options"] = {**(spec.get("options") or {}), **options}
    return config


def check_config(path: Path) -> str | None:
    """Why the brain would refuse the config at `path`, or None."""
    from actors.config import load_config
    from bus.errors import BadInput

    try:
        load_config(path)
    except BadInput as exc:
        return " ".join(str(exc).split())
    return None


class _Brain:
    """`brainbus run` in its own process, against the bench's server."""

    def __init__(self, url: str, namespace: str, config: Path, workdir: Path) -> None:
        self.url, self.namespace, self.config, self.workdir = url, namespace, config, workdir
        self.proc: asyncio.subprocess.Process | None = None
        self.log = workdir / "brain.log"

    async def __aenter__(self) -> _Brain:
        env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
        with open(self.log, "wb") as log:  # noqa: ASYNC230 (opened once, before the run)
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "actors.cli", "run", "--nats", self.url, "--namespace", self.namespace,
                "--config", str(self.config), "--data-dir", str(self.workdir / "data"),
                "--log-level", os.environ.get("BENCH_BRAIN_LOG", "warning"),
                cwd=self.workdir, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT)
        return self

    @property
    def dead(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    def tail(self, n: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    async def __aexit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class BrainDied(RuntimeError):
    """The brain process exited during a run."""


async def run_brain_world(url: str, namespace: str, world: World, quick: bool, overrides: dict[str, dict[str, Any]],
                          workdir: Path, limit: int) -> dict[str, Any]:
    """A fresh brain with `overrides` plays `world`; its scored episodes, or why it was skipped."""
    from bench.brain_process import wait_ready
    from bus.gym_bridge import RunResult, run_episodes

    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "brain.yaml"
    config = brain_config(namespace, workdir / "data", overrides)
    config_path.write_text(yaml.safe_dump(config))
    refused = check_config(config_path)
    if refused is not None:
        return {"skipped": f"the brain's config does not accept {overrides}: {refused}"}
    episodes, max_steps = world.budget(quick)
    async with _Brain(url, namespace, config_path, workdir) as brain:
        import nats

        nc = await nats.connect(url)
        try:
            await wait_ready(nc, namespace, list(config["actors"]), timeout=60)
        except Exception as exc:
            raise BrainDied(f"brain for {world.name} not ready: {exc}\n{brain.tail()}") from None
        finally:
            await nc.close()

        def watch(index: int, episode: dict[str, Any], result: RunResult) -> None:
            if brain.dead:
                raise BrainDied(f"the brain exited during {world.name}:\n{brain.tail()}")

        env = world.make()
        try:
            result = await run_episodes(env, episodes=episodes, seed=SEED, max_steps=max_steps, nats_url=url,
                                        namespace=namespace, on_episode=watch, env_token=world.name.replace("_", "-"),
                                        max_total_steps=None if quick else world.step_budget)
        finally:
            env.close()
    out = score(world, result.episodes, quick, limit)
    out.update({"latency_ms_p50": result.latency_ms(50), "latency_ms_p99": result.latency_ms(99),
                "steps": result.steps, "timeouts": result.timeouts, "random_actions": result.random_actions,
                "brain_errors": result.brain_errors, "seconds": round(result.seconds, 1),
                "interrupted": result.interrupted})
    return out


# ---------------------------------------------------------------- the run


def _references(world: World, episodes: int, quick: bool, limit: int) -> dict[str, dict[str, Any]]:
    from bench.qlearning import config_dict, run_q_learning, run_random, tune

    max_steps = world.budget(quick)[1]
    seeds = TUNE_SEEDS[:1] if quick or world.name == "cartpole" else TUNE_SEEDS
    best, _ = tune(world.make, episodes=episodes, seeds=seeds, max_steps=max_steps)
    q = score(world, run_q_learning(world.make, episodes=episodes, seed=SEED, max_steps=max_steps, config=best),
              quick, limit)
    q["config"] = config_dict(best)
    rnd = score(world, run_random(world.make, episodes=episodes, seed=SEED, max_steps=max_steps), quick, limit)
    return {"q_learning": q, "random": rnd}


def _line(world: str, agent: str, row: dict[str, Any], started: float) -> None:
    if "skipped" in row:
        what = f"skipped: {row['skipped'][:160]}"
    elif "failed" in row:
        what = f"FAILED: {row['failed'].splitlines()[0][:160]}"
    else:
        what = (f"{row['episodes_run']} episodes, success {row['success_rate']:.2f}, "
                f"return {row['mean_return']:.2f}")
        if row.get("latency_ms_p50") is not None:
            what += f", p50 {row['latency_ms_p50']:.1f} ms"
    print(f"  {world:<20} {agent:<28} {what}  [{time.monotonic() - started:.0f} s]", flush=True)


async def run_worlds_bench(out: Path, *, quick: bool, worlds: list[str] | None = None,
                           ablations: list[str] | None = None) -> dict[str, Any]:
    """Play every world with the brain, its ablations and the references; print and write JSON + PNG.

    Args:
        out: The JSON results file (the PNG goes beside it).
        quick: Small budgets (a smoke run of a few minutes).
        worlds: A subset of the world names (default: all).
        ablations: A subset of `ABLATIONS` (default: all).
    """
    try:
        import gymnasium  # noqa: F401
    except ImportError:
        from bus.errors import BadInput

        raise BadInput("bench worlds needs gymnasium: install the gym extra (pip install -e '.[gym]')") from None
    from bus import EmbeddedServer

    chosen = [w for w in WORLDS if worlds is None or w.name in worlds]
    ablation_names = list(ABLATIONS) if ablations is None else ablations
    started = time.monotonic()
    results: dict[str, Any] = {
        "benchmark": "worlds", "quick": quick, "seed": SEED, "brain_config": BRAIN_CONFIG.name,
        "ablations": {a: ABLATIONS[a] for a in ablation_names}, "worlds": {},
    }
    print(f"worlds: {len(chosen)} worlds, brain ({BRAIN_CONFIG.name}) vs tabular Q-learning (true state) vs "
          f"random; ablations {', '.join(ablation_names) or 'none'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="brainbus-worlds-") as tmp:
        async with EmbeddedServer(data_dir=Path(tmp) / "nats", jetstream=False) as server:
            n_brain = 0
            for world in chosen:
                episodes, max_steps = world.budget(quick)
                limit = world.step_limit(quick)
                entry: dict[str, Any] = {"env_id": world.env_id, "kwargs": world.kwargs, "episodes": episodes,
                                         "max_steps": max_steps, "step_limit": limit, "success": world.goal,
                                         "agents": {}}
                results["worlds"][world.name] = entry
                conditions: list[tuple[str, dict[str, dict[str, Any]]]] = [("brain", {})]
                conditions += [(f"brain: {a}", ABLATIONS[a]) for a in ablation_names
                               if world.name in ABLATION_WORLDS[quick]]
                for agent, overrides in conditions:
                    n_brain += 1
                    try:
                        row = await run_brain_world(server.url, f"w{n_brain}", world, quick, overrides,
                                                    Path(tmp) / f"b{n_brain}", limit)
                    except BrainDied as exc:
                        row = {"failed": str(exc)}
                    if overrides:
                        row["overrides"] = overrides
                    entry["agents"][agent] = row
                    _line(world.name, agent, row, started)
                    if row.get("interrupted"):
                        break
                brain_row = entry["agents"].get("brain", {})
                ref_episodes = brain_row.get("episodes_run") or episodes
                for agent, row in _references(world, ref_episodes, quick, limit).items():
                    entry["agents"][agent] = row
                    _line(world.name, agent, row, started)
                if any(r.get("interrupted") for r in entry["agents"].values()):
                    results["interrupted"] = True
                    break
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    print_report(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    png = plot(results, out.with_suffix(".png"))
    if png is not None:
        print(f"learning curves: {png}")
    return results


# ---------------------------------------------------------------- report


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def print_report(results: dict[str, Any]) -> None:
    """One row per world and agent, with a sparkline of its learning curve."""
    head = (f"{'world':<20} {'agent':<28} {'eps':>5} {'success':>8} {'return':>9} {'ep→90%':>7} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'t/o':>4}  curve (trailing mean return)")
    print()
    print(head)
    print("-" * len(head))
    for name, entry in results["worlds"].items():
        agents = entry["agents"]
        curves = [c for r in agents.values() for c in r.get("curve", [])]
        lo, hi = (min(curves), max(curves)) if curves else (0.0, 1.0)
        for agent, r in agents.items():
            if "skipped" in r or "failed" in r:
                why = r.get("skipped") or r.get("failed", "")
                print(f"{name:<20} {agent:<28} {'skipped' if 'skipped' in r else 'FAILED'}: {why.splitlines()[0][:90]}")
                continue
            print(f"{name:<20} {agent:<28} {r['episodes_run']:>5} {_f(r['success_rate']):>8} "
                  f"{_f(r['mean_return'], '.3f'):>9} {_f(r['episodes_to_90'], 'd'):>7} "
                  f"{_f(r.get('latency_ms_p50'), '.1f'):>7} {_f(r.get('latency_ms_p99'), '.1f'):>7} "
                  f"{r.get('timeouts', 0) if 'timeouts' in r else '':>4}  {sparkline(r['curve'], lo, hi)}")
        print(f"{'':<20} success = {entry['success']}; curve scale {lo:.2f} .. {hi:.2f}")
    print("success and return over the last 100 episodes (a fifth of a shorter run); ep→90% = episodes until "
          "the trailing mean covers 90% of the way to the final level; p50/p99 = stimulus -> action through the "
          "brain; t/o = steps without an action in time")
    print(f"({results.get('elapsed_s', 0):.0f} s in all)")


def plot(results: dict[str, Any], path: Path) -> Path | None:
    """The learning curves as a PNG (one panel per world); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    worlds = list(results["worlds"].items())
    if not worlds:
        return None
    cols = min(3, len(worlds))
    rows = math.ceil(len(worlds) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
    # One colour per agent across the panels: the brain, its ablations, then the references.
    colours = {"brain": "C0", "q_learning": "C1", "random": "C7"}
    for i, ablation in enumerate(results["ablations"]):
        colours[f"brain: {ablation}"] = f"C{2 + i % 5}"
    for ax, (name, entry) in zip(axes.flat, worlds, strict=False):
        for agent, r in entry["agents"].items():
            if not r.get("curve"):
                continue
            x = np.arange(len(r["curve"])) * r.get("curve_step", 1) + 1
            style = {"q_learning": "--", "random": ":"}.get(agent, "-")
            ax.plot(x, r["curve"], style, color=colours.get(agent), label=agent,
                    linewidth=1.6 if agent == "brain" else 1.0)
        ax.set_title(f"{name} ({entry['env_id']})", fontsize=9)
        ax.set_xlabel("episode", fontsize=8)
        ax.set_ylabel("trailing mean return", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(worlds):]:
        ax.axis("off")
    fig.suptitle(f"brainbus bench worlds{' --quick' if results['quick'] else ''}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    asyncio.run(run_worlds_bench(Path("bench-results/worlds.json"), quick="--quick" in sys.argv))
