"""Tests for regions.habituation: the thalamus's short-term, stimulus-specific habituation."""

from __future__ import annotations

import numpy as np
import pytest

from regions.habituation import Habituation


def test_habituation_falls_with_repetition_and_recovers_with_time() -> None:
    h = Habituation(rate=0.3, recovery_tau_s=10.0, match_threshold=0.9, min_gain=0.05)
    rng = np.random.default_rng(9)
    v = rng.standard_normal(32)
    gains = [h.gain(v, now=0.1 * i) for i in range(6)]
    assert gains[0] == 1.0
    assert all(b < a for a, b in zip(gains, gains[1:], strict=False))
    assert gains[-1] < 0.3
    # A near-copy shares the habituation; an unrelated stimulus does not.
    near = v + 0.05 * rng.standard_normal(32)
    assert h.gain(near, now=0.7, record=False) < 0.3
    assert h.gain(rng.standard_normal(32), now=0.7) == 1.0
    # Spontaneous recovery: a few time constants later the gain is nearly back.
    recovered = h.gain(v, now=60.0, record=False)
    assert recovered > 0.95
    # Peeking (record=False) did not habituate.
    assert h.gain(v, now=60.0) == pytest.approx(recovered)


def test_habituation_by_key_and_bounded_memory() -> None:
    h = Habituation(rate=0.5, recovery_tau_s=5.0, max_prototypes=3, min_gain=0.1)
    assert h.gain_key("stim-a", now=0.0) == 1.0
    assert h.gain_key("stim-a", now=0.0) == pytest.approx(0.5)
    assert h.gain_key("stim-a", now=0.0) == pytest.approx(0.25)
    for _ in range(10):
        g = h.gain_key("stim-a", now=0.0)
    assert g == pytest.approx(0.1)  # floored at min_gain
    for i in range(5):
        h.gain(np.eye(4)[i % 4] + 0.0, now=float(i))
    assert len(h) == 3  # oldest/most recovered prototypes were forgotten
    h.reset()
    assert len(h) == 0 and h.gain_key("stim-a", now=0.0) == 1.0


def test_habituation_forgets_the_most_recovered_prototype() -> None:
    rng = np.random.default_rng(11)
    basis = np.linalg.qr(rng.standard_normal((32, 32)))[0].astype(np.float32)
    hab = Habituation(rate=0.3, recovery_tau_s=5.0, max_prototypes=6, match_threshold=0.9, prototype_lr=0.0)
    now = 0.0
    for _ in range(40):  # six stimuli, each exposed a different number of times at different moments
        now += float(rng.uniform(0.1, 2.0))
        hab.gain(basis[int(rng.integers(6))], now=now)
    assert len(hab) == 6
    now += 1.0
    recovered = [hab.gain(basis[i], now=now, record=False) for i in range(6)]  # gain = 1 - level
    most_recovered = int(np.argmax(recovered))
    hab.gain(basis[6], now=now)  # a seventh stimulus takes the most recovered one's place
    after = [hab.gain(basis[i], now=now, record=False) for i in range(6)]
    assert after[most_recovered] == 1.0  # forgotten: new again
    assert [a for i, a in enumerate(after) if i != most_recovered] == pytest.approx(
        [r for i, r in enumerate(recovered) if i != most_recovered])
