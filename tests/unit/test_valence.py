"""Amygdala: expectation, stress from punishment streaks, decay, events to the hormones."""

from __future__ import annotations

import json
import random

import pytest

from neuromod.dynamics import HormoneSystem
from regions.valence import Amygdala


def test_stress_rises_with_a_punishment_streak_and_decays() -> None:
    amy = Amygdala(tau=30.0)
    levels = []
    for _ in range(8):
        report = amy.observe(-1.0)
        levels.append(report.stress)
        assert any(e.kind == "stress" and e.value > 0.0 for e in report.events)
    assert all(later > earlier for earlier, later in zip(levels, levels[1:], strict=False))
    assert 0.7 < levels[-1] <= 1.0
    amy.step(30.0)
    assert amy.stress == pytest.approx(levels[-1] / 2.718281828, rel=1e-6)
    amy.step(4 * 30.0)
    assert amy.stress < 0.01 * levels[-1]


def test_rewards_relieve_stress_and_send_no_stress_event() -> None:
    amy = Amygdala()
    for _ in range(4):
        amy.observe(-1.0)
    before = amy.stress
    report = amy.observe(1.0)
    assert report.stress < before
    assert all(e.kind != "stress" for e in report.events)


def test_expectation_tracks_outcomes_and_a_change_is_surprising() -> None:
    amy = Amygdala(expectation_rate=0.1)
    for _ in range(60):
        expected = amy.observe(0.6)
    assert amy.expectation == pytest.approx(0.6, abs=0.01)
    assert expected.events == []  # an expected reward is neither stressful nor surprising
    shock = amy.observe(-1.0)
    assert shock.valence == -1.0
    assert shock.prediction_error == pytest.approx(-1.6, abs=0.02)
    # One punishment is a stressor, not yet a change of the world ...
    assert {e.kind for e in shock.events} == {"stress"}
    # ... punishment after punishment is: surprise (unexpected uncertainty) within a few trials.
    reports = [amy.observe(-1.0) for _ in range(3)]
    assert "surprise" in {e.kind for e in reports[-1].events}
    assert reports[-1].surprise > 0.4 and reports[-1].arousal >= reports[-1].surprise


def test_noise_of_a_stable_task_is_expected_uncertainty_not_surprise() -> None:
    """The right answer rewarded 80% of the time: its punishments are noise, never a change."""
    amy, rng = Amygdala(), random.Random(3)
    outcomes = [1.0 if rng.random() < 0.8 else -1.0 for _ in range(400)]
    surprises = sum(1 for r in outcomes if any(e.kind == "surprise" for e in amy.observe(r).events))
    assert surprises <= 12, surprises  # runs of punishments happen, rarely (taken singly: ~80 of 400)
    after = [amy.observe(-1.0 if rng.random() < 0.8 else 1.0) for _ in range(6)]  # reversed payoffs
    assert any(e.kind == "surprise" for report in after for e in report.events)


def test_events_drive_the_hormone_system() -> None:
    amy, hs = Amygdala(), HormoneSystem()
    base = hs.baselines()
    for _ in range(6):
        for event in amy.observe(-1.0).events:
            hs.apply(event)
        hs.step(1.0)
    assert hs.levels()["norepinephrine"] > base["norepinephrine"]
    assert hs.levels()["serotonin"] < base["serotonin"]


def test_snapshot_restore_round_trips_through_json() -> None:
    a = Amygdala()
    for v in (0.5, -1.0, -0.5, 1.0, -1.0):
        a.observe(v)
    b = Amygdala()
    b.restore(json.loads(json.dumps(a.snapshot())))
    assert b.observe(-0.3) == a.observe(-0.3)


def test_bad_input_is_rejected() -> None:
    amy = Amygdala()
    with pytest.raises(ValueError):
        amy.observe(float("inf"))
    with pytest.raises(ValueError):
        amy.step(-1.0)
    assert amy.outcomes == 0
