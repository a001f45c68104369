"""Hormone dynamics: baselines, inputs, exact integration, bounds, freezing, modulation."""

from __future__ import annotations

import json
import math
import random

import pytest

from neuromod.dynamics import (
    DEFAULT_MODULATION,
    DEFAULT_PARAMS,
    HORMONES,
    HormoneParams,
    HormoneSystem,
    NeuromodEvent,
    modulation,
)

MAX_TAU = max(p.tau for p in DEFAULT_PARAMS.values())


def _perturb(hs: HormoneSystem) -> None:
    hs.reward(1.0, 1.5)
    hs.novelty(1.0)
    hs.surprise(1.0)
    hs.stress(1.0)
    for _ in range(10):
        hs.reward(-1.0, -2.0)


def test_starts_at_baseline() -> None:
    hs = HormoneSystem()
    assert set(HORMONES) == {"dopamine", "serotonin", "norepinephrine", "acetylcholine"}
    assert hs.levels() == hs.baselines()


def test_positive_rpe_bursts_and_negative_rpe_dips_dopamine() -> None:
    hs = HormoneSystem()
    base = hs.baselines()["dopamine"]
    hs.reward(1.0, 1.0)
    burst = hs.levels()["dopamine"]
    assert burst > base + 0.2
    hs.step(10.0)  # ten phasic time constants: the burst is gone
    assert hs.levels()["dopamine"] == pytest.approx(base, abs=1e-3)
    hs.reward(-1.0, -1.0)
    assert hs.levels()["dopamine"] < base - 0.2


def test_levels_return_to_baseline_within_five_tau() -> None:
    hs = HormoneSystem()
    _perturb(hs)
    moved = {h: abs(hs.levels()[h] - hs.baselines()[h]) for h in HORMONES}
    assert max(moved.values()) > 0.1
    hs.step(5 * MAX_TAU)
    for h in HORMONES:
        assert hs.levels()[h] == pytest.approx(hs.baselines()[h], abs=0.01), h


def test_integration_is_independent_of_step_size() -> None:
    coarse, fine = HormoneSystem(), HormoneSystem()
    _perturb(coarse)
    _perturb(fine)
    coarse.step(3.0)
    for _ in range(30):
        fine.step(0.1)
    for h in HORMONES:
        assert fine.tonic()[h] == pytest.approx(coarse.tonic()[h], abs=1e-12)
        assert fine.phasic()[h] == pytest.approx(coarse.phasic()[h], abs=1e-12)


def test_levels_never_leave_unit_interval_under_extreme_inputs() -> None:
    hs = HormoneSystem()
    rng = random.Random(7)
    seen_low = seen_high = False
    for _ in range(400):
        kind = rng.choice(["reward", "novelty", "surprise", "stress", "step"])
        if kind == "reward":
            hs.reward(rng.uniform(-5, 5), rng.uniform(-10, 10))
        elif kind == "step":
            hs.step(rng.uniform(0.0, 3.0))
        else:
            hs.apply(NeuromodEvent(kind=kind, value=rng.uniform(-2, 5)))  # type: ignore[arg-type]
        for v in hs.levels().values():
            assert 0.0 <= v <= 1.0
            seen_low |= v < 0.02
            seen_high |= v > 0.98
    # The inputs were strong enough to drive levels to the edges, so the saturation was exercised.
    assert seen_low and seen_high


def test_frozen_stays_exactly_at_baseline() -> None:
    hs = HormoneSystem(frozen=True)
    _perturb(hs)
    hs.step(0.5)
    assert hs.levels() == hs.baselines()
    hs.frozen = False
    assert hs.levels() == hs.baselines()  # unfreezing starts from baseline, not from stale input
    hs.novelty(1.0)
    assert hs.levels()["acetylcholine"] > hs.baselines()["acetylcholine"]
    hs.frozen = True
    assert hs.levels() == hs.baselines()


def test_novelty_surprise_and_stress_move_the_right_hormones() -> None:
    base = HormoneSystem().baselines()
    nov = HormoneSystem()
    nov.novelty(1.0)
    assert nov.levels()["norepinephrine"] > base["norepinephrine"]
    assert nov.levels()["acetylcholine"] > base["acetylcholine"]
    assert nov.levels()["dopamine"] == base["dopamine"]

    sur = HormoneSystem()
    sur.surprise(1.0)
    assert sur.levels()["norepinephrine"] > base["norepinephrine"]
    assert sur.tonic()["norepinephrine"] > base["norepinephrine"]

    st = HormoneSystem()
    st.stress(1.0)
    assert st.levels()["norepinephrine"] > base["norepinephrine"]
    assert st.levels()["serotonin"] < base["serotonin"]
    st.step(5.0)  # a stressor outlasts the phasic transients: it acts on the tonic parts
    assert st.levels()["norepinephrine"] > base["norepinephrine"] + 0.05
    assert st.levels()["serotonin"] < base["serotonin"] - 0.05


def test_serotonin_tracks_average_reward() -> None:
    good, bad = HormoneSystem(), HormoneSystem()
    base = good.baselines()["serotonin"]
    for _ in range(30):
        good.reward(1.0, 0.0)
        bad.reward(-1.0, 0.0)
        good.step(1.0)
        bad.step(1.0)
    assert good.levels()["serotonin"] > base + 0.1
    assert bad.levels()["serotonin"] < base - 0.1
    assert good.levels()["dopamine"] == pytest.approx(good.baselines()["dopamine"])  # rpe 0: no DA


def test_apply_dispatches_like_the_methods() -> None:
    a, b = HormoneSystem(), HormoneSystem()
    a.reward(0.5, 0.7)
    a.novelty(0.3)
    a.surprise(0.6)
    a.stress(0.4)
    for ev in (
        NeuromodEvent("reward", 0.5, rpe=0.7),
        NeuromodEvent("novelty", 0.3),
        NeuromodEvent("surprise", 0.6),
        NeuromodEvent("stress", 0.4),
    ):
        b.apply(ev)
    assert a.snapshot() == b.snapshot()


def test_bad_input_is_rejected() -> None:
    hs = HormoneSystem()
    with pytest.raises(ValueError):
        hs.novelty(math.nan)
    with pytest.raises(ValueError):
        hs.reward(1.0, math.inf)
    with pytest.raises(ValueError):
        hs.step(-1.0)
    with pytest.raises(ValueError):
        HormoneSystem({"adrenaline": HormoneParams(0.5, 10.0, 1.0)})
    assert hs.levels() == hs.baselines()


def test_snapshot_restore_round_trips_through_json() -> None:
    a = HormoneSystem()
    _perturb(a)
    a.step(0.7)
    b = HormoneSystem()
    b.restore(json.loads(json.dumps(a.snapshot())))
    assert b.levels() == a.levels()
    for hs in (a, b):
        hs.novelty(0.5)
        hs.step(2.0)
    assert b.levels() == a.levels()


def test_modulation_mapping() -> None:
    hs = HormoneSystem()
    at_base = modulation(hs.levels())
    assert at_base.motor_threshold_shift == pytest.approx(0.0)
    assert at_base.ignition_threshold_shift == pytest.approx(0.0)
    assert at_base.encoding_mode == "retrieval"
    assert at_base.rpe_gain == pytest.approx(1.0)

    lo = modulation({**hs.levels(), "norepinephrine": 0.0})
    hi = modulation({**hs.levels(), "norepinephrine": 1.0})
    assert lo.inverse_temperature == pytest.approx(1.0)
    assert hi.inverse_temperature == pytest.approx(DEFAULT_MODULATION.beta_max)
    assert hi.ignition_threshold_shift < 0.0 < lo.ignition_threshold_shift

    patient = modulation({**hs.levels(), "serotonin": 0.9})
    vigorous = modulation({**hs.levels(), "dopamine": 0.9})
    assert patient.motor_threshold_shift > 0.0 > vigorous.motor_threshold_shift
    assert patient.discount > at_base.discount

    hs.novelty(1.0)
    encoding = modulation(hs.levels())
    assert encoding.encoding_mode == "encoding" and encoding.encoding
    assert encoding.learning_rate > at_base.learning_rate
    hs.step(15.0)  # the ACh transient is over: back to retrieval
    assert modulation(hs.levels()).encoding_mode == "retrieval"
    assert json.loads(json.dumps(encoding.as_dict()))["encoding_mode"] == "encoding"
