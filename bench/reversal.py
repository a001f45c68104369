"""`brainbus bench reversal`: does a learnt mapping hold, in every seed? Reversal learning over seeds.

The reversal task of `brainbus bench cognition` (examples/reversal_teacher.py: 4 categories of 10
words, 4 actions, the category's action rewarded with p = 0.8 and punished otherwise), long
phases of 300 trials with one reversal between them, taught to a fresh default brain (MiniLM where
installed) once per seed, 5 seeds (2 with `--quick`, with phases of 100 trials).

Measures per seed: the *stable accuracy* of each phase, the fraction of correct actions in its
second half (a learner that has the mapping keeps it while 20% of its correct answers are
punished: that noise is expected, not a change), and the trials to criterion (8 of 10 correct)
after the reversal. The report gives each seed, the mean and the worst: a mapping that collapses
in one seed of five shows in the worst, not in the mean.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.cognition import Settings, pick_encoder, run_condition
from bus import EmbeddedServer

__all__ = ["run_reversal_bench", "score_seed"]

SEEDS, QUICK_SEEDS = 5, 2
TRIALS, QUICK_TRIALS = 300, 100


def score_seed(teacher: dict[str, Any]) -> dict[str, Any]:
    """Stable accuracy per phase and trials to criterion after each reversal, from the teacher's JSON."""
    train = [t for t in teacher["trials"] if t["kind"] == "train"]
    stable = []
    for phase in sorted({t["phase"] for t in train}):
        trials = [t for t in train if t["phase"] == phase]
        late = trials[len(trials) // 2:]
        stable.append(sum(t["action"] == t["correct"] for t in late) / len(late))
    recovery = [p["trials_to_criterion"] for p in teacher["phases"][1:]]
    return {"stable_accuracy": stable, "worst_stable_accuracy": min(stable), "trials_to_criterion": recovery}


async def run_reversal_bench(out: Path, *, quick: bool) -> dict[str, Any]:
    seeds = range(QUICK_SEEDS if quick else SEEDS)
    settings = [Settings(trials_per_phase=QUICK_TRIALS if quick else TRIALS, reversals=1, seed=s, probes=False)
                for s in seeds]
    encoder = pick_encoder()
    started = time.monotonic()
    print(f"reversal: {len(settings)} seeds, {settings[0].trials_per_phase} trials per phase, one reversal, "
          f"{encoder} encoder", flush=True)
    per_seed = []
    with tempfile.TemporaryDirectory(prefix="brainbus-reversal-") as tmp:
        async with EmbeddedServer(data_dir=Path(tmp) / "nats", jetstream=False) as server:
            for s in settings:
                t0 = time.monotonic()
                run = await run_condition(server.url, f"rev{s.seed}", "full", encoder, s, Path(tmp) / f"seed{s.seed}")
                scored = {"seed": s.seed, **score_seed(run)}
                per_seed.append(scored)
                print(f"  seed {s.seed}: stable accuracy {', '.join(f'{a:.3f}' for a in scored['stable_accuracy'])}; "
                      f"trials to criterion after the reversal {scored['trials_to_criterion']}  "
                      f"[{time.monotonic() - t0:.0f} s]", flush=True)
    worst = [r["worst_stable_accuracy"] for r in per_seed]
    recovery = [float(t) if t is not None else float(settings[0].trials_per_phase)
                for r in per_seed for t in r["trials_to_criterion"]]
    accuracy = {"mean": statistics.fmean(worst), "worst": min(worst)}
    reversal = {"mean": statistics.fmean(recovery), "worst": max(recovery)}
    results = {
        "benchmark": "reversal", "quick": quick, "encoder": encoder,
        "trials_per_phase": settings[0].trials_per_phase, "seeds": per_seed,
        "worst_stable_accuracy": accuracy, "trials_to_criterion": reversal,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(f"stable accuracy (each seed's worst phase): mean {accuracy['mean']:.3f}, "
          f"worst {accuracy['worst']:.3f} (target: worst >= 0.90)")
    print(f"trials to criterion after the reversal: mean {reversal['mean']:.1f}, worst {reversal['worst']:.0f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return results
