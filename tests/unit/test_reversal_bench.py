"""The reversal bench's scoring: stable accuracy per phase and recovery, from a teacher's JSON."""

from __future__ import annotations

from bench.reversal import score_seed


def test_stable_accuracy_is_the_second_half_of_each_phase() -> None:
    def trial(phase: int, right: bool) -> dict[str, object]:
        return {"kind": "train", "phase": phase, "action": "a" if right else "b", "correct": "a"}

    first = [trial(0, False)] * 10 + [trial(0, True)] * 9 + [trial(0, False)]  # late half: 9 of 10
    second = [trial(1, False)] * 10 + [trial(1, True)] * 5 + [trial(1, False)] * 5  # late half: 5 of 10
    probe = {"kind": "probe", "phase": 0, "action": "b", "correct": "a"}
    teacher = {"trials": [*first, probe, *second],
               "phases": [{"trials_to_criterion": 12}, {"trials_to_criterion": None}]}
    scored = score_seed(teacher)
    assert scored["stable_accuracy"] == [0.9, 0.5]
    assert scored["worst_stable_accuracy"] == 0.5
    assert scored["trials_to_criterion"] == [None]
