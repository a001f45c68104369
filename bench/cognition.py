"""`brainbus bench cognition`: probabilistic reversal learning, taught over the bus by an outside agent.

For each condition a fresh brain runs as its own process (`python -m actors.cli run`) on an
embedded nats-server, and the teacher (`examples/reversal_teacher.py`, raw nats-py only) runs as
another process: the brain is reached only through the public subjects. Conditions, in one run:

* ``full``: configs/default.yaml with the MiniLM sentence encoder in the thalamus (hashing when
  MiniLM is not installed; the report says which);
* ``frozen_hormones``: the same with every hormone pinned at its baseline (`hormones.frozen`);
* ``no_workspace``: the same with the workspace competition bypassed (`workspace.compete: false`).

Then, on the same server, two experiments with their ablations: attention under a distractor
(bench.attention: the full brain vs the workspace bypassed, where the reversal task cannot tell
them apart), and the hippocampus's (bench.episodic, configs/memory.yaml): one-shot learning with
and without the hippocampus, retention of a task after a conflicting one with and without a sleep.

Every condition gets the same trial sequence (same seed). The references are computed here, in
process, on exactly those trials with the same outcome draws (common random numbers):

* a random agent (uniform over the four actions; 0.35 expected reward rate);
* an oracle tabular Q-learner that is *given* the true category of every word (so it faces only the
  reversal problem, not perception), with its learning rate and epsilon tuned by a grid on this
  very sequence: the strongest simple reference, which makes the ratio conservative for the brain.

Measures (definitions shared by brain and references): reward rate per phase (trials without an
answer count as unrewarded); the *stable-phase* reward rate = the second halves of all phases
pooled; trials to criterion (8 of the last 10 choices correct) in each phase, phases after the
first being the recovery from a reversal (a phase that never reaches it counts as its length and is
flagged); accuracy on held-out words of each category, probed without reward at the end of every
phase (unanswered probes count as wrong).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from bench.attention import attention_targets, print_attention, run_attention_bench
from bench.episodic import episodic_targets, print_episodic, run_episodic_bench
from bus import EmbeddedServer

__all__ = ["QLearner", "Step", "run_cognition_bench", "simulate", "steps_from_trials", "tune_q_learner"]

REPO = Path(__file__).resolve().parent.parent
TEACHER = REPO / "examples" / "reversal_teacher.py"
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"
ACTIONS = ("press_a", "press_b", "press_c", "press_d")
P_CORRECT, P_WRONG = 0.8, 0.2
CRITERION_K, CRITERION_N = 8, 10
ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
EPSILONS = (0.0, 0.02, 0.05, 0.1, 0.2)
TUNE_SEEDS, EVAL_SEEDS = 40, 200

#: condition name -> per-actor option overrides on top of configs/default.yaml
CONDITIONS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {},
    "frozen_hormones": {"hormones": {"frozen": True}},
    "no_workspace": {"workspace": {"compete": False}},
}


@dataclass(frozen=True)
class Settings:
    """Size of one bench run."""

    trials_per_phase: int
    reversals: int
    seed: int = 1
    iti_s: float = 0.05
    timeout_s: float = 2.0
    n_actions: int = 4  # 2 = the easier variant (two categories per action), for smoke tests
    words: int = 10  # training words per category
    probes: bool = True


QUICK = Settings(trials_per_phase=80, reversals=1)
FULL = Settings(trials_per_phase=160, reversals=3)


# ---------------------------------------------------------------- in-process reference agents


@dataclass(frozen=True)
class Step:
    """One rewarded training trial as the references see it."""

    phase: int
    category: str
    correct: str
    u: float

    def rewarded(self, action: str | None) -> bool:
        """The outcome the teacher would give ``action`` on this trial (None = unanswered)."""
        if action is None:
            return False
        return self.u < (P_CORRECT if action == self.correct else P_WRONG)


def steps_from_trials(trials: list[dict[str, Any]]) -> list[Step]:
    """The training trials of a teacher JSON ``trials`` list (probes are not rewarded: left out)."""
    return [Step(int(t["phase"]), str(t["category"]), str(t["correct"]), float(t["u"]))
            for t in trials if t["kind"] == "train"]


@dataclass
class QLearner:
    """Tabular epsilon-greedy Q-learning over (category, action); ties broken at random.

    The bandit update ``Q <- Q + alpha (r - Q)`` with r = +-1: each trial is its own episode.
    """

    alpha: float
    epsilon: float
    seed: int = 0
    q: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def act(self, category: str) -> str:
        row = self.q.setdefault(category, dict.fromkeys(ACTIONS, 0.0))
        if self.rng.random() < self.epsilon:
            return self.rng.choice(ACTIONS)
        best = max(row.values())
        return self.rng.choice([a for a in ACTIONS if row[a] == best])

    def learn(self, category: str, action: str, reward: float) -> None:
        row = self.q.setdefault(category, dict.fromkeys(ACTIONS, 0.0))
        row[action] += self.alpha * (reward - row[action])


class RandomAgent:
    """Uniform choice among the actions."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def act(self, category: str) -> str:
        return self.rng.choice(ACTIONS)

    def learn(self, category: str, action: str, reward: float) -> None:
        """A random agent learns nothing."""


def simulate(agent: QLearner | RandomAgent, steps: list[Step]) -> tuple[list[str], list[bool]]:
    """Run ``agent`` on ``steps``; returns its actions and outcomes."""
    actions, outcomes = [], []
    for s in steps:
        a = agent.act(s.category)
        r = s.rewarded(a)
        agent.learn(s.category, a, 1.0 if r else -1.0)
        actions.append(a)
        outcomes.append(r)
    return actions, outcomes


def tune_q_learner(steps: list[Step], seeds: int = TUNE_SEEDS) -> tuple[float, float, float]:
    """Grid-search (alpha, epsilon) by mean reward rate over ``seeds`` runs; returns (alpha, eps, rate)."""
    best = (0.0, 0.0, -1.0)
    for alpha in ALPHAS:
        for eps in EPSILONS:
            rate = statistics.fmean(sum(simulate(QLearner(alpha, eps, seed), steps)[1]) / len(steps)
                                    for seed in range(seeds))
            if rate > best[2]:
                best = (alpha, eps, rate)
    return best


def _criterion(correct: list[bool]) -> int | None:
    for t in range(CRITERION_N, len(correct) + 1):
        if sum(correct[t - CRITERION_N:t]) >= CRITERION_K:
            return t
    return None


def phase_measures(steps: list[Step], actions: list[str | None],
                   outcomes: list[bool]) -> list[dict[str, Any]]:
    """Reward rate, stable (second-half) reward rate and trials to criterion, per phase."""
    out = []
    for p in sorted({s.phase for s in steps}):
        idx = [i for i, s in enumerate(steps) if s.phase == p]
        late = idx[len(idx) // 2:]
        crit = _criterion([actions[i] == steps[i].correct for i in idx])
        out.append({"phase": p, "trials": len(idx),
                    "reward_rate": sum(outcomes[i] for i in idx) / len(idx),
                    "late_rewarded": sum(outcomes[i] for i in late), "late_trials": len(late),
                    "trials_to_criterion": crit, "criterion_reached": crit is not None,
                    "trials_to_criterion_or_len": crit if crit is not None else len(idx)})
    return out


def _agent_summary(steps: list[Step], make: Any, seeds: int) -> dict[str, Any]:
    """Mean phase measures of an in-process agent over ``seeds`` runs on the same steps."""
    runs = []
    for seed in range(seeds):
        actions, outcomes = simulate(make(seed), steps)
        runs.append(phase_measures(steps, list(actions), outcomes))
    phases = []
    for p, _ in enumerate(runs[0]):
        rows = [r[p] for r in runs]
        phases.append({
            "phase": p,
            "reward_rate": statistics.fmean(r["reward_rate"] for r in rows),
            "late_reward_rate": statistics.fmean(r["late_rewarded"] / r["late_trials"] for r in rows),
            "trials_to_criterion": statistics.fmean(r["trials_to_criterion_or_len"] for r in rows),
            "criterion_reached": statistics.fmean(float(r["criterion_reached"]) for r in rows),
        })
    stable = statistics.fmean(sum(r["late_rewarded"] for r in run) / sum(r["late_trials"] for r in run)
                              for run in runs)
    return {"phases": phases, "stable_reward_rate": stable,
            "reward_rate": statistics.fmean(p["reward_rate"] for p in phases),
            "recovery_trials": _mean([p["trials_to_criterion"] for p in phases[1:]])}


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


# ---------------------------------------------------------------- the brain and the teacher as processes


def _config_for(condition: str, namespace: str, data_dir: Path, encoder: str) -> dict[str, Any]:
    """configs/default.yaml with this condition's option overrides."""
    config: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["namespace"] = namespace
    config["data_dir"] = str(data_dir)
    overrides: dict[str, dict[str, Any]] = {"thalamus": {"encoder": encoder}, **CONDITIONS[condition]}
    for actor, options in overrides.items():
        spec = config["actors"][actor]
        spec["options"] = {**(spec.get("options") or {}), **options}
    return config


def pick_encoder() -> str:
    """MiniLM when the thalamus supports it and its weights are installed, else hashing."""
    try:
        from regions.encoders import MiniLMEncoder
        from regions.thalamus import ThalamusOptions

        ThalamusOptions.model_validate({"encoder": "minilm"})
        MiniLMEncoder.model_path()
    except Exception:  # any missing piece (option, package, weights) means the fallback encoder
        return "hashing"
    return "minilm"


async def _stop(proc: asyncio.subprocess.Process, grace: float = 20.0) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _prepare(workdir: Path, condition: str, namespace: str, encoder: str) -> tuple[Path, Any, Any]:
    """Write the condition's config; open the brain's and the teacher's log files."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "brain.yaml"
    cfg.write_text(yaml.safe_dump(_config_for(condition, namespace, workdir / "data", encoder)))
    return cfg, open(workdir / "brain.log", "wb"), open(workdir / "teacher.log", "wb")  # noqa: SIM115


def _read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


async def run_condition(url: str, namespace: str, condition: str, encoder: str, settings: Settings,
                        workdir: Path) -> dict[str, Any]:
    """One fresh brain process under ``condition`` taught by one teacher process; the teacher's JSON."""
    cfg, blog, tlog = _prepare(workdir, condition, namespace, encoder)
    result_file = workdir / "teacher.json"
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    s = settings
    rc: int | None = None
    try:
        brain = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "actors.cli", "run", "--nats", url, "--namespace", namespace,
            "--config", str(cfg), "--data-dir", str(workdir / "data"), "--log-level", "warning",
            cwd=workdir, env=env, stdout=blog, stderr=asyncio.subprocess.STDOUT)
        try:
            teacher = await asyncio.create_subprocess_exec(
                sys.executable, "-u", str(TEACHER), "--nats", url, "--namespace", namespace,
                "--trials", str(s.trials_per_phase), "--reversals", str(s.reversals), "--seed", str(s.seed),
                "--iti", str(s.iti_s), "--timeout", str(s.timeout_s), "--json", str(result_file),
                "--actions", str(s.n_actions), "--words", str(s.words),
                *([] if s.probes else ["--no-probes"]),
                cwd=workdir, env=env, stdout=tlog, stderr=asyncio.subprocess.STDOUT)
            # Generous: brain start-up (MiniLM load) plus every trial timing out.
            n_trials = (s.trials_per_phase + 24) * (s.reversals + 1)
            try:
                rc = await asyncio.wait_for(teacher.wait(), 180 + n_trials * (s.timeout_s + s.iti_s))
            except TimeoutError:
                await _stop(teacher, 5)
        finally:
            await _stop(brain)
    finally:
        blog.close()
        tlog.close()
    if rc != 0 or not result_file.exists():
        raise RuntimeError(f"condition {condition}: the teacher failed (exit {rc})\n--- teacher ---\n"
                           f"{_tail(workdir / 'teacher.log')}\n--- brain ---\n{_tail(workdir / 'brain.log')}")
    return _read_json(result_file)


# ---------------------------------------------------------------- scoring and report


def score_brain(teacher: dict[str, Any]) -> dict[str, Any]:
    """Phase measures and probe accuracy of a brain run from the teacher's JSON."""
    trials: list[dict[str, Any]] = teacher["trials"]
    train = [t for t in trials if t["kind"] == "train"]
    probes = [t for t in trials if t["kind"] == "probe"]
    steps = steps_from_trials(trials)
    actions = [t["action"] for t in train]
    phases = phase_measures(steps, actions, [bool(t["rewarded"]) for t in train])
    stable = sum(p["late_rewarded"] for p in phases) / sum(p["late_trials"] for p in phases)
    # The seen-word accuracy over the same late windows: the reference for the held-out probes.
    late_correct: list[bool] = []
    for p in range(len(phases)):
        in_phase = [t for t in train if t["phase"] == p]
        late_correct += [t["action"] == t["correct"] for t in in_phase[len(in_phase) // 2:]]
    latencies = [float(t["latency_ms"]) for t in trials if t["latency_ms"] is not None]
    return {
        "phases": [{**p, "late_reward_rate": p["late_rewarded"] / p["late_trials"],
                    "probe_accuracy": _probe_acc([t for t in probes if t["phase"] == p["phase"]])}
                   for p in phases],
        "reward_rate": sum(bool(t["rewarded"]) for t in train) / len(train),
        "stable_reward_rate": stable,
        "recovery_trials": _mean([float(p["trials_to_criterion_or_len"]) for p in phases[1:]]),
        "recoveries_reached": sum(p["criterion_reached"] for p in phases[1:]),
        "unseen_accuracy": _probe_acc(probes),
        "unseen_probes": len(probes),
        "seen_late_accuracy": sum(late_correct) / max(1, len(late_correct)),
        "answered": sum(t["answered"] for t in trials) / len(trials),
        "latency_ms_p50": statistics.median(latencies) if latencies else None,
        "elapsed_s": teacher.get("elapsed_s"),
        "hormones": _hormone_profile(train),
    }


def _probe_acc(probes: list[dict[str, Any]]) -> float | None:
    return sum(t["action"] == t["correct"] for t in probes) / len(probes) if probes else None


def _hormone_profile(train: list[dict[str, Any]], early: int = 20) -> dict[str, dict[str, float]]:
    """Mean hormone levels in the first ``early`` trials after each reversal vs the rest of the phases."""
    after: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for p in sorted({t["phase"] for t in train}):
        rows = [t for t in train if t["phase"] == p and t.get("levels")]
        (after if p > 0 else rest).extend(rows[:early])
        rest.extend(rows[early:])
    out: dict[str, dict[str, float]] = {}
    for name, rows in (("after_reversal", after), ("otherwise", rest)):
        if rows:
            out[name] = {h: round(statistics.fmean(r["levels"][h] for r in rows), 3)
                         for h in rows[0]["levels"]}
    return out


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def print_report(results: dict[str, Any]) -> None:
    """The table: one row per agent, phases as columns, then the targets."""
    n_phases = results["settings"]["reversals"] + 1
    head = (f"{'agent':<24}" + "".join(f"{'R' + str(p) if p else 'R init':>8}" for p in range(n_phases))
            + f"{'stable':>8}{'vs Q':>7}" + "".join(f"{'ttc' + str(p):>7}" for p in range(n_phases))
            + f"{'unseen':>8}{'seen':>7}{'answ':>6}")
    print(f"reversal learning: {n_phases} phases x {results['settings']['trials_per_phase']} trials, "
          f"4 categories, 4 actions, p = {P_CORRECT}/{P_WRONG}, encoder {results['encoder']}, "
          f"seed {results['settings']['seed']}")
    print(head)
    print("-" * len(head))
    q_stable = results["q_learner"]["stable_reward_rate"]
    rows: list[tuple[str, dict[str, Any], bool]] = [
        (f"brain: {name}", r, True) for name, r in results["conditions"].items()]
    rows += [("Q oracle (labels)", results["q_learner"], False), ("random", results["random"], False),
             ("ceiling", {"phases": [{"reward_rate": P_CORRECT}] * n_phases, "stable_reward_rate": P_CORRECT},
              False)]
    for name, r, is_brain in rows:
        line = f"{name:<24}" + "".join(f"{_f(p['reward_rate']):>8}" for p in r["phases"])
        line += f"{_f(r['stable_reward_rate']):>8}{_f(r['stable_reward_rate'] / q_stable):>7}"
        if "trials_to_criterion" in r["phases"][0]:
            for p in r["phases"]:
                ttc = p["trials_to_criterion"]
                if is_brain and ttc is None:
                    line += f"{'>' + str(p['trials']):>7}"
                else:
                    line += f"{_f(ttc, '.0f'):>7}"
        else:
            line += " " * 7 * n_phases
        if is_brain:
            line += f"{_f(r['unseen_accuracy']):>8}{_f(r['seen_late_accuracy']):>7}{_f(r['answered']):>6}"
        print(line)
    print("R = reward rate per phase (R1.. after each reversal), stable = second halves pooled, "
          "ttc = trials to criterion (8/10 correct),\nunseen = accuracy on held-out words (no reward), "
          "seen = accuracy on trained words in the same late windows, answ = fraction answered")
    q = results["q_learner"]
    print(f"Q oracle: alpha {q['alpha']}, epsilon {q['epsilon']} (grid-tuned on this sequence), "
          f"mean of {EVAL_SEEDS} runs")
    if "attention" in results:
        print_attention(results["attention"])
    if "episodic" in results:
        print_episodic(results["episodic"])
    for t in results["targets"]:
        print(f"  [{'met' if t['met'] else 'MISSED'}] {t['name']}: {t['value']} (target {t['target']})")


def _targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    cond = results["conditions"]
    full = cond["full"]
    ratio = full["stable_reward_rate"] / results["q_learner"]["stable_reward_rate"]
    out = [
        {"name": "full brain stable reward rate / Q oracle", "value": round(ratio, 3), "target": ">= 0.9",
         "met": ratio >= 0.9},
        {"name": "full brain accuracy on unseen words", "value": _f(full["unseen_accuracy"]),
         "target": ">= 0.80", "met": (full["unseen_accuracy"] or 0.0) >= 0.8},
    ]
    if "frozen_hormones" in cond and full["recovery_trials"] is not None:
        frozen = cond["frozen_hormones"]["recovery_trials"]
        out.append({"name": "trials to criterion after reversal: dynamic vs frozen hormones",
                    "value": f"{full['recovery_trials']:.1f} vs {frozen:.1f}", "target": "dynamic < frozen",
                    "met": full["recovery_trials"] < frozen})
    return out


async def run_cognition_bench(out: Path, *, quick: bool, settings: Settings | None = None,
                              conditions: list[str] | None = None,
                              encoder: str | None = None, extras: bool = True) -> dict[str, Any]:
    """Run every condition against its own brain process, score the references, print and write JSON.

    Args:
        out: The JSON results file.
        quick: Fewer trials (one reversal) for a smoke run.
        settings: Override the trial counts (tests).
        conditions: A subset of :data:`CONDITIONS` (default: all).
        encoder: ``minilm`` or ``hashing`` (default: MiniLM when available).
        extras: Also run the attention and the episodic-memory experiments.
    """
    settings = settings or (QUICK if quick else FULL)
    encoder = encoder or pick_encoder()
    names = conditions or list(CONDITIONS)
    started = time.monotonic()
    runs: dict[str, dict[str, Any]] = {}
    attention_results: dict[str, Any] = {}
    episodic_results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="brainbus-cognition-") as tmp:
        async with EmbeddedServer(data_dir=Path(tmp) / "nats", jetstream=False) as server:
            for i, name in enumerate(names):
                t0 = time.monotonic()
                runs[name] = await run_condition(server.url, f"cog{i}", name, encoder, settings,
                                                 Path(tmp) / name)
                print(f"  {name}: {time.monotonic() - t0:.0f} s")
            if extras:
                t0 = time.monotonic()
                attention_results = await run_attention_bench(server.url, Path(tmp) / "attention", encoder=encoder,
                                                              trials=100 if quick else 200)
                print(f"  attention under a distractor: {time.monotonic() - t0:.0f} s")
                t0 = time.monotonic()
                episodic_results = await run_episodic_bench(server.url, Path(tmp) / "episodic", encoder=encoder)
                print(f"  episodic memory and sleep: {time.monotonic() - t0:.0f} s")
    steps = steps_from_trials(runs[names[0]]["trials"])
    alpha, eps, _ = tune_q_learner(steps)
    q_learner = {"alpha": alpha, "epsilon": eps,
                 **_agent_summary(steps, lambda s: QLearner(alpha, eps, s), EVAL_SEEDS)}
    results: dict[str, Any] = {
        "benchmark": "cognition",
        "encoder": encoder,
        "settings": {"trials_per_phase": settings.trials_per_phase, "reversals": settings.reversals,
                     "seed": settings.seed, "iti_s": settings.iti_s, "timeout_s": settings.timeout_s,
                     "criterion": [CRITERION_K, CRITERION_N], "quick": quick},
        "conditions": {name: score_brain(run) for name, run in runs.items()},
        "q_learner": q_learner,
        "random": _agent_summary(steps, RandomAgent, EVAL_SEEDS),
        "mappings": runs[names[0]]["mappings"],
    }
    results["targets"] = _targets(results)
    if extras:
        results["attention"] = attention_results
        results["episodic"] = episodic_results
        results["targets"] += attention_targets(attention_results) + episodic_targets(episodic_results)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["teacher_runs"] = runs
    print_report(results)
    _write(out, results)
    return results


def _write(out: Path, results: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    asyncio.run(run_cognition_bench(Path("bench-results/cognition.json"), quick="--quick" in sys.argv))
