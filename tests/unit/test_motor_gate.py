"""Motor gate: go/no-go, starvation, homeostatic go-rate, hormonal shift, snapshots."""

from __future__ import annotations

import json
import random

import pytest

from neuromod.dynamics import HormoneSystem, modulation
from regions.motor_gate import MotorGate


def test_rescale_against_chance() -> None:
    assert MotorGate.rescale(0.25, 4) == pytest.approx(0.0)
    assert MotorGate.rescale(1.0, 4) == pytest.approx(1.0)
    assert MotorGate.rescale(0.75, 2) == pytest.approx(0.5)
    assert MotorGate.rescale(0.6, None) == pytest.approx(0.6)


def test_confident_choice_goes_and_unconfident_waits() -> None:
    gate = MotorGate(base=0.5)
    assert gate.decide(0.95, n_actions=2).go
    held = MotorGate(base=0.5).decide(0.55, n_actions=2)
    assert not held.go and held.confidence == pytest.approx(0.1)


def test_threshold_falls_when_starved_and_an_action_is_forced() -> None:
    gate = MotorGate(base=0.8, patience=2, starvation_step=0.05, max_nogo=6)
    decisions = [gate.decide(0.5, n_actions=2) for _ in range(7)]  # always chance level: c = 0
    thresholds = [d.threshold for d in decisions]
    assert all(later < earlier for earlier, later in zip(thresholds[2:], thresholds[3:], strict=False))
    assert [d.go for d in decisions] == [False] * 6 + [True]
    assert decisions[-1].forced
    assert gate.nogo_streak == 0
    # Starvation relief ends with the go: the threshold is back near the (adapted) base.
    assert gate.threshold() > thresholds[-1]


def test_adaptation_tracks_the_target_go_rate() -> None:
    for target in (0.5, 0.9):
        gate = MotorGate(base=0.5, target_rate=target, adapt_rate=0.02)
        rng = random.Random(3)
        gos = [gate.decide(rng.random()).go for _ in range(1500)]
        assert sum(gos[-500:]) / 500 == pytest.approx(target, abs=0.05)


def test_serotonin_raises_and_dopamine_lowers_the_threshold() -> None:
    calm = HormoneSystem()
    patient = modulation({**calm.levels(), "serotonin": 1.0})
    vigorous = modulation({**calm.levels(), "dopamine": 1.0})
    c = 0.47
    assert MotorGate(base=0.35).decide(c, shift=modulation(calm.levels()).motor_threshold_shift).go
    assert not MotorGate(base=0.35).decide(c, shift=patient.motor_threshold_shift).go
    assert MotorGate(base=0.6).decide(c, shift=vigorous.motor_threshold_shift).go
    assert not MotorGate(base=0.6).decide(c).go


def test_snapshot_restore_gives_identical_decisions() -> None:
    a = MotorGate()
    rng = random.Random(8)
    for _ in range(50):
        a.decide(rng.random())
    b = MotorGate()
    b.restore(json.loads(json.dumps(a.snapshot())))
    seq = [rng.random() for _ in range(50)]
    assert [a.decide(c) for c in seq] == [b.decide(c) for c in seq]


def test_bad_input_is_rejected() -> None:
    gate = MotorGate()
    with pytest.raises(ValueError):
        gate.decide(float("nan"))
    with pytest.raises(ValueError):
        MotorGate(base=1.5)
    assert gate.decisions == 0
