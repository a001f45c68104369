"""The reversal task generator (examples/reversal_teacher.py) and the bench's reference agents."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from bench.cognition import (
    QLearner,
    RandomAgent,
    Step,
    phase_measures,
    simulate,
    steps_from_trials,
    tune_q_learner,
)

TEACHER = Path(__file__).resolve().parents[2] / "examples" / "reversal_teacher.py"


def _load_teacher() -> ModuleType:
    # examples/ is not an installed package: load the script by path, as the bench runs it.
    spec = importlib.util.spec_from_file_location("reversal_teacher", TEACHER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["reversal_teacher"] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


rt = _load_teacher()


def test_sequence_is_a_function_of_the_seed() -> None:
    a, maps_a = rt.make_trials(3, 40, 2)
    b, maps_b = rt.make_trials(3, 40, 2)
    c, _ = rt.make_trials(4, 40, 2)
    assert [(t.word, t.u, t.correct) for t in a] == [(t.word, t.u, t.correct) for t in b]
    assert maps_a == maps_b
    assert [t.word for t in a] != [t.word for t in c]


def test_phases_probes_and_balance() -> None:
    trials, mappings = rt.make_trials(1, 80, 2)
    assert len(mappings) == 3
    for phase in range(3):
        train = [t for t in trials if t.phase == phase and t.kind == "train"]
        probes = [t for t in trials if t.phase == phase and t.kind == "probe"]
        assert len(train) == 80
        # two full shuffled passes over the 40 training words: every word exactly twice
        assert sorted(t.word for t in train) == sorted(
            [w for c in rt.CATEGORIES.values() for w in c["train"]] * 2)
        # every held-out word once, at the end of the phase, scored against that phase's mapping
        assert sorted(t.word for t in probes) == sorted(w for c in rt.CATEGORIES.values() for w in c["test"])
        assert max(t.i for t in train) < min(t.i for t in probes)
        assert all(t.correct == mappings[phase][t.category] for t in train + probes)


def test_held_out_words_are_never_trained() -> None:
    train = {w for c in rt.CATEGORIES.values() for w in c["train"]}
    test = {w for c in rt.CATEGORIES.values() for w in c["test"]}
    assert len(rt.CATEGORIES) >= 4
    assert all(len(c["train"]) >= 8 and len(c["test"]) >= 4 for c in rt.CATEGORIES.values())
    assert not train & test
    # and no held-out word contains a training word of 4+ letters (no lexical shortcut)
    assert not [(w, v) for w in test for v in train if len(v) >= 4 and v in w]


@pytest.mark.parametrize("n_actions", [2, 4])
def test_every_reversal_changes_every_answer(n_actions: int) -> None:
    _, mappings = rt.make_trials(7, 10, 3, n_actions=n_actions)
    for before, after in zip(mappings, mappings[1:], strict=False):
        assert all(before[c] != after[c] for c in before)
    assert set(mappings[0].values()) == set(rt.ACTIONS[:n_actions])


def test_trials_to_criterion() -> None:
    assert rt.trials_to_criterion([True] * 10) == 10
    assert rt.trials_to_criterion([False] * 5 + [True] * 8) == 13
    assert rt.trials_to_criterion([True, False] * 20) is None


def _steps(n: int, reversals: int, seed: int = 0) -> list[Step]:
    trials, _ = rt.make_trials(seed, n, reversals, probes=False)
    return steps_from_trials([vars(t) for t in trials])


def test_step_outcome_follows_the_draw() -> None:
    s = Step(0, "fruit", "press_a", u=0.5)
    assert s.rewarded("press_a") and not s.rewarded("press_b") and not s.rewarded(None)
    s = Step(0, "fruit", "press_a", u=0.1)
    assert s.rewarded("press_b")  # a wrong action is still rewarded with p = 0.2


def test_q_learner_update_and_greedy_choice() -> None:
    q = QLearner(alpha=0.5, epsilon=0.0, seed=0)
    q.learn("fruit", "press_c", 1.0)
    assert q.q["fruit"]["press_c"] == pytest.approx(0.5)
    assert all(q.act("fruit") == "press_c" for _ in range(20))
    q.learn("fruit", "press_c", -1.0)
    assert q.q["fruit"]["press_c"] == pytest.approx(-0.25)
    assert q.act("fruit") != "press_c"  # below the untried actions now


def test_q_learner_approaches_the_ceiling_and_beats_random() -> None:
    steps = _steps(200, 0)
    q_rate = sum(simulate(QLearner(0.2, 0.0, seed=1), steps)[1]) / len(steps)
    rnd = sum(simulate(RandomAgent(seed=1), steps)[1]) / len(steps)
    assert q_rate > 0.7
    assert abs(rnd - 0.35) < 0.08


def test_tuning_picks_a_grid_point_no_worse_than_a_fixed_one() -> None:
    steps = _steps(60, 1)
    alpha, eps, rate = tune_q_learner(steps, seeds=5)
    fixed = sum(sum(simulate(QLearner(0.1, 0.2, s), steps)[1]) / len(steps) for s in range(5)) / 5
    assert rate >= fixed
    assert 0 < alpha <= 1 and 0 <= eps < 1


def test_phase_measures() -> None:
    steps = [Step(0, "fruit", "press_a", 0.5)] * 20 + [Step(1, "fruit", "press_b", 0.5)] * 20
    actions: list[str | None] = ["press_a"] * 20 + ["press_a"] * 5 + ["press_b"] * 15
    outcomes = [s.rewarded(a) for s, a in zip(steps, actions, strict=True)]
    p0, p1 = phase_measures(steps, actions, outcomes)
    assert p0["reward_rate"] == 1.0 and p0["trials_to_criterion"] == 10
    assert p1["reward_rate"] == 0.75 and p1["trials_to_criterion"] == 13
    assert p1["late_rewarded"] == 10 and p1["late_trials"] == 10
