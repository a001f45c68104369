"""Tests for regions.competition: the global-workspace competition."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from regions.competition import Bid, Verdict, Workspace


def _vec(i: int, d: int = 8) -> NDArray[np.float32]:
    v = np.zeros(d, dtype=np.float32)
    v[i] = 1.0
    return v


def _bid(
    source: str, salience: float, axis: int, stimulus_id: str | None = None, kind: str = "percept"
) -> Bid:
    return Bid(source=source, kind=kind, salience=salience, content=_vec(axis), stimulus_id=stimulus_id)


def _ws(
    capacity: int = 1,
    refractory_s: float = 0.1,
    inhibition_of_return_s: float = 2.0,
    ior_penalty: float = 0.8,
) -> Workspace:
    return Workspace(
        capacity=capacity,
        ignition_threshold=0.5,
        refractory_s=refractory_s,
        inhibition_of_return_s=inhibition_of_return_s,
        ior_penalty=ior_penalty,
    )


def test_single_capacity_picks_the_most_salient_and_reports_losers() -> None:
    ws = _ws()
    ws.submit(_bid("vision", 0.7, 0), now=0.0)
    ws.submit(_bid("language", 0.9, 1), now=0.0)
    ws.submit(_bid("hippocampus", 0.6, 2, kind="recall"), now=0.0)
    d = ws.compete(now=0.0)
    assert d.cycle == 1 and d.ignited
    assert d.winner is not None and d.winner.source == "language"
    assert [(o.bid.source, o.verdict) for o in d.losers] == [
        ("vision", Verdict.CAPACITY),
        ("hippocampus", Verdict.CAPACITY),
    ]
    assert [o.effective_salience for o in d.losers] == pytest.approx([0.7, 0.6])
    assert any(r.startswith("ignition") for r in d.reasons)
    assert any("capacity 1 taken" in r for r in d.reasons)
    assert ws.pending == 0  # bids are consumed by the cycle
    log = d.to_log()
    assert log["winners"][0]["source"] == "language" and len(log["losers"]) == 2


def test_capacity_k_admits_top_k_in_order() -> None:
    ws = _ws(capacity=2)
    for i, s in enumerate([0.55, 0.95, 0.75, 0.65]):
        ws.submit(_bid(f"r{i}", s, i), now=0.0)
    d = ws.compete(now=0.0)
    assert [o.bid.source for o in d.winners] == ["r1", "r2"]
    assert [o.bid.source for o in d.losers] == ["r3", "r0"]
    assert all(o.verdict is Verdict.CAPACITY for o in d.losers)


def test_threshold_blocks_ignition_and_shift_moves_it() -> None:
    ws = _ws(refractory_s=0.0)
    ws.submit(_bid("vision", 0.45, 0), now=0.0)
    d = ws.compete(now=0.0)
    assert not d.ignited and d.winners == ()
    assert d.losers[0].verdict is Verdict.BELOW_THRESHOLD
    assert any("no ignition" in r for r in d.reasons)
    # Lowering the threshold (e.g. high norepinephrine) lets the same bid ignite.
    ws.submit(_bid("vision", 0.45, 0), now=1.0)
    d = ws.compete(now=1.0, threshold_shift=-0.1)
    assert d.ignited and d.threshold == pytest.approx(0.4)
    # Raising it blocks a bid that would pass the base threshold.
    ws.submit(_bid("language", 0.6, 3), now=2.0)
    d = ws.compete(now=2.0, threshold_shift=+0.2)
    assert not d.ignited and d.losers[0].verdict is Verdict.BELOW_THRESHOLD


def test_refractory_period_blocks_new_ignition_then_releases() -> None:
    ws = _ws(refractory_s=0.3)
    ws.submit(_bid("vision", 0.9, 0), now=0.0)
    assert ws.compete(now=0.0).ignited
    ws.submit(_bid("language", 0.99, 1), now=0.1)
    d = ws.compete(now=0.1)
    assert not d.ignited
    assert d.losers[0].verdict is Verdict.REFRACTORY
    assert any(r.startswith("refractory") for r in d.reasons)
    # Refractory bids are lost (attentional blink), and no ignition was recorded.
    assert ws.pending == 0 and ws.last_ignition_at == 0.0
    ws.submit(_bid("language", 0.99, 1), now=0.35)
    d = ws.compete(now=0.35)
    assert d.ignited and d.winner is not None and d.winner.source == "language"
    assert ws.ignitions == 2


def test_inhibition_of_return_suppresses_recent_content_and_fades() -> None:
    ws = _ws(refractory_s=0.0, inhibition_of_return_s=2.0, ior_penalty=0.8)
    ws.submit(_bid("vision", 0.9, 0), now=0.0)
    assert ws.compete(now=0.0).ignited
    # Same content again (cosine 0.99), still strong: inhibited, a weaker new content wins.
    near_copy = _vec(0) + 0.1 * _vec(1)
    ws.submit(Bid("vision", "percept", 0.9, near_copy), now=0.5)
    ws.submit(_bid("language", 0.6, 2), now=0.5)
    d = ws.compete(now=0.5)
    assert d.winner is not None and d.winner.source == "language"
    inhibited = d.losers[0]
    assert inhibited.verdict is Verdict.INHIBITED
    # 0.9 * (1 - 0.8 * (1 - 0.5 / 2)) = 0.36
    assert inhibited.effective_salience == pytest.approx(0.36, abs=1e-3)
    assert "cycle 1" in inhibited.detail
    # After the window the old content competes at full salience again.
    ws.submit(_bid("vision", 0.9, 0), now=2.6)
    ws.submit(_bid("language", 0.6, 3), now=2.6)
    d = ws.compete(now=2.6)
    assert d.winner is not None and d.winner.source == "vision"
    assert d.winners[0].effective_salience == pytest.approx(0.9)


def test_inhibition_of_return_by_stimulus_id_even_with_different_vectors() -> None:
    ws = _ws(refractory_s=0.0)
    ws.submit(_bid("language", 0.9, 0, stimulus_id="s-1"), now=0.0)
    ws.compete(now=0.0)
    ws.submit(_bid("vision", 0.9, 5, stimulus_id="s-1"), now=0.1)
    d = ws.compete(now=0.1)
    assert not d.ignited
    assert d.losers[0].verdict is Verdict.INHIBITED and "same stimulus s-1" in d.losers[0].detail


def test_near_duplicates_cannot_fill_capacity() -> None:
    ws = _ws(capacity=2)
    ws.submit(_bid("vision", 0.9, 0), now=0.0)
    ws.submit(_bid("vision-copy", 0.85, 0), now=0.0)
    ws.submit(_bid("language", 0.6, 1), now=0.0)
    d = ws.compete(now=0.0)
    assert [o.bid.source for o in d.winners] == ["vision", "language"]
    assert d.losers[0].verdict is Verdict.DUPLICATE


def test_ties_are_broken_deterministically_regardless_of_arrival_order() -> None:
    bids = [_bid("b-region", 0.8, 0), _bid("a-region", 0.8, 1), _bid("c-region", 0.8, 2)]
    orders = []
    for perm in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        ws = _ws(capacity=2)
        for i in perm:
            ws.submit(bids[i], now=0.0)
        d = ws.compete(now=0.0)
        orders.append(([o.bid.source for o in d.winners], [o.bid.source for o in d.losers]))
    assert orders[0] == (["a-region", "b-region"], ["c-region"])
    assert orders.count(orders[0]) == 3


def test_empty_cycle_and_overflow_are_explained() -> None:
    ws = Workspace(capacity=1, ignition_threshold=0.5, max_pending=2)
    d = ws.compete(now=0.0)
    assert not d.ignited and d.reasons == ("no bids",) and d.cycle == 1
    assert ws.submit(_bid("a", 0.6, 0), now=1.0)
    assert ws.submit(_bid("b", 0.7, 1), now=1.0)
    assert not ws.submit(_bid("weak", 0.1, 2), now=1.0)  # weaker than everything pending
    assert ws.submit(_bid("strong", 0.9, 3), now=1.0)  # evicts "a"
    d = ws.compete(now=1.0)
    assert d.dropped == 2 and any(r.startswith("overflow") for r in d.reasons)
    assert {o.bid.source for o in (*d.winners, *d.losers)} == {"b", "strong"}


def test_invalid_bids_and_parameters_are_rejected() -> None:
    with pytest.raises(ValueError):
        Bid("x", "percept", float("nan"), _vec(0))
    with pytest.raises(ValueError):
        Bid("x", "percept", 0.5, np.array([np.inf, 0.0], dtype=np.float32))
    with pytest.raises(ValueError):
        Workspace(capacity=0)
    with pytest.raises(ValueError):
        Workspace(ior_penalty=1.5)


def test_an_episode_about_a_stimulus_wins_after_and_beside_its_percept() -> None:
    """The same-stimulus rules (duplicate, inhibition of return) hold within one kind only: a
    recalled episode whose key equals its cue's percept is new evidence, not a return."""
    ws = _ws(capacity=2, refractory_s=0.0)
    ws.submit(_bid("language", 0.9, 0, stimulus_id="s-1"), now=0.0)
    assert ws.compete(now=0.0).ignited
    # After the percept won: the episode (same vector, same stimulus) is not inhibited ...
    ws.submit(_bid("episodic", 0.8, 0, stimulus_id="s-1", kind="episode"), now=0.1)
    d = ws.compete(now=0.1)
    assert d.winner is not None and d.winner.kind == "episode"
    assert d.winners[0].effective_salience == pytest.approx(0.8)
    # ... while a second percept bid of that stimulus still is.
    ws.submit(_bid("vision", 0.9, 5, stimulus_id="s-1"), now=0.2)
    d = ws.compete(now=0.2)
    assert not d.ignited and d.losers[0].verdict is Verdict.INHIBITED
    # In the same cycle, percept and episode of one stimulus both win; two episodes do not.
    ws.submit(_bid("language", 0.9, 1, stimulus_id="s-2"), now=5.0)
    ws.submit(_bid("episodic", 0.8, 1, stimulus_id="s-2", kind="episode"), now=5.0)
    ws.submit(_bid("episodic", 0.7, 2, stimulus_id="s-2", kind="episode"), now=5.0)
    d = ws.compete(now=5.0)
    assert [o.bid.kind for o in d.winners] == ["percept", "episode"]
    assert [o.verdict for o in d.losers] == [Verdict.DUPLICATE]
