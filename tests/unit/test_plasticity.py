"""Tests for regions.plasticity: the Hebbian feature map."""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.typing import NDArray

from regions.plasticity import HebbianRule, OjaFeatureMap


def _dominant_data(n: int, d: int, seed: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Zero-mean data with one strong direction ``u`` (std 1.0) over isotropic noise (std 0.2)."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    x = rng.standard_normal((n, d)) * 0.2 + np.outer(rng.standard_normal(n), u)
    return x, u


def _subspace_data(n: int, d: int, rank: int, seed: int) -> NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, d))
    z: NDArray[np.float64] = rng.standard_normal((n, rank)) @ basis
    unit: NDArray[np.float64] = z / np.linalg.norm(z, axis=1, keepdims=True)
    return unit


def _train(fmap: OjaFeatureMap, x: NDArray[np.float64], batch: int) -> None:
    for i in range(0, len(x), batch):
        fmap.learn(x[i : i + batch])


def test_sanger_first_unit_converges_to_dominant_direction() -> None:
    x, u = _dominant_data(1000, 32, seed=0)
    fmap = OjaFeatureMap(32, 4, lr=0.5, seed=1, rule="sanger")
    w0 = fmap.weight[0].numpy().copy()
    assert abs(w0 @ u) < 0.5  # random start, not aligned by luck
    _train(fmap, x, batch=10)
    w = fmap.weight.numpy()
    cos = abs(w[0] @ u) / np.linalg.norm(w[0])
    assert cos > 0.9
    # Oja's decay term keeps the learning rows bounded near unit norm.
    assert 0.8 < np.linalg.norm(w[0]) < 1.2
    assert np.all(np.linalg.norm(w, axis=1) < 1.5)


def test_oja_subspace_rule_captures_dominant_direction() -> None:
    x, u = _dominant_data(1000, 32, seed=5)
    fmap = OjaFeatureMap(32, 3, lr=0.5, seed=2, rule="oja")
    _train(fmap, x, batch=10)
    w = fmap.weight.numpy()
    # Symmetric rule: rows form an orthonormal basis of the principal subspace, in no order,
    # so check that u lies in their span.
    q, _ = np.linalg.qr(w.T)
    assert np.linalg.norm(q.T @ u) > 0.9
    np.testing.assert_allclose(w @ w.T, np.eye(3), atol=0.15)


def test_forward_shapes_and_batch_consistency() -> None:
    fmap = OjaFeatureMap(16, 4, seed=0)
    x = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    batch = fmap.forward(x)
    assert batch.shape == (5, 4) and batch.dtype == np.float32
    single = fmap.forward(x[2])
    assert single.shape == (4,)
    np.testing.assert_allclose(single, batch[2], atol=1e-5)
    with pytest.raises(ValueError):
        fmap.forward(np.zeros(15))
    with pytest.raises(ValueError):
        fmap.forward(np.full(16, np.nan))


def test_novelty_of_a_repeated_input_falls_and_unseen_input_stays_novel() -> None:
    rng = np.random.default_rng(3)
    fmap = OjaFeatureMap(128, 8, lr=0.1, seed=0)
    x = rng.standard_normal(128)
    x /= np.linalg.norm(x)
    other = rng.standard_normal(128)
    other /= np.linalg.norm(other)
    first = fmap.novelty(x)
    assert 0.8 < first <= 1.0  # 8 random features cannot explain a random 128-d input
    trace = [fmap.learn(x) for _ in range(40)]
    assert trace[0] == pytest.approx(first)
    assert all(b <= a + 1e-6 for a, b in zip(trace, trace[1:], strict=False))  # monotone habituation
    assert fmap.novelty(x) < 0.3
    assert fmap.novelty(other) > 0.8
    assert fmap.novelty(np.zeros(128)) == 0.0


def test_lr_scale_zero_freezes_weights_and_scales_learning() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal(64)
    x /= np.linalg.norm(x)
    frozen = OjaFeatureMap(64, 4, lr=0.1, seed=0)
    before = frozen.weight.clone()
    frozen.learn(x, lr_scale=0.0)
    assert bool((frozen.weight == before).all())
    slow, fast = OjaFeatureMap(64, 4, lr=0.05, seed=0), OjaFeatureMap(64, 4, lr=0.05, seed=0)
    for _ in range(10):
        slow.learn(x, lr_scale=0.2)
        fast.learn(x, lr_scale=2.0)
    assert fast.novelty(x) < slow.novelty(x)
    with pytest.raises(ValueError):
        fast.learn(x, lr_scale=-1.0)


def test_prune_dead_units_beyond_input_rank() -> None:
    # Inputs live in a 2-D subspace; Sanger's surplus units go silent and can be pruned.
    x = _subspace_data(1000, 16, rank=2, seed=6)
    fmap = OjaFeatureMap(16, 5, lr=0.5, seed=2)
    assert fmap.prune_dead(threshold=0.02) == 0  # nobody is judged before min_samples
    _train(fmap, x, batch=5)
    usage = fmap.usage.numpy()
    assert usage[:2].min() > 0.2  # the two principal units carry the energy
    pruned = fmap.prune_dead(threshold=0.02, min_samples=200)
    assert pruned == 3
    assert fmap.pruned_total == 3 and fmap.n_alive == 5  # recycled, still alive
    np.testing.assert_allclose(np.linalg.norm(fmap.weight.numpy()[2:], axis=1), 1.0, atol=1e-5)
    assert fmap.novelty(x[:50]) < 0.1  # the live units were untouched
    assert fmap.prune_dead(threshold=0.02) == 0  # fresh units have a clean record


def test_prune_without_reinit_silences_units() -> None:
    x = _subspace_data(1000, 16, rank=2, seed=7)
    fmap = OjaFeatureMap(16, 4, lr=0.5, seed=3)
    _train(fmap, x, batch=5)
    assert fmap.prune_dead(threshold=0.02, reinit=False) == 2
    assert fmap.n_alive == 2
    out = fmap.forward(np.random.default_rng(0).standard_normal(16))
    assert np.all(out[~fmap.alive.numpy()] == 0.0)
    fmap.learn(x[:10])
    assert bool((fmap.weight[~fmap.alive] == 0).all())  # silenced units stay silent


@pytest.mark.parametrize("rule", ["sanger", "oja"])
def test_observe_then_consolidate_is_the_rule_of_one_step(rule: HebbianRule) -> None:
    x = _subspace_data(1, 32, 3, seed=5)[0].astype(np.float32) * 1.5
    queued = OjaFeatureMap(32, 4, lr=0.2, seed=1, rule=rule)
    reference = OjaFeatureMap(32, 4, lr=0.2, seed=1, rule=rule)
    novelty = queued.observe(x, lr_scale=0.5)
    assert queued.queued == 1
    np.testing.assert_array_equal(queued.weight.numpy(), reference.weight.numpy())  # nothing applied yet
    assert queued.consolidate() == 1 and queued.queued == 0
    # The batch path of `learn` (torch) computes the same rule for one input.
    assert novelty == pytest.approx(reference.learn(x[None, :], lr_scale=0.5), abs=1e-6)
    np.testing.assert_allclose(queued.weight.numpy(), reference.weight.numpy(), atol=1e-6)
    np.testing.assert_allclose(queued.usage.numpy(), reference.usage.numpy(), atol=1e-7)
    assert queued.unit_samples.tolist() == reference.unit_samples.tolist() == [1, 1, 1, 1]


def test_a_consolidated_batch_matches_steps_taken_one_by_one() -> None:
    x = _subspace_data(24, 32, 4, seed=6).astype(np.float32)
    batched, stepwise = OjaFeatureMap(32, 4, lr=0.01, seed=2), OjaFeatureMap(32, 4, lr=0.01, seed=2)
    novelties = [batched.observe(row) for row in x]
    for row in x:
        stepwise.learn(row)
    assert batched.queued == 24
    # Every novelty was computed with the weights as they were before the batch.
    assert novelties[-1] == pytest.approx(OjaFeatureMap(32, 4, lr=0.01, seed=2).novelty(x[-1]), abs=1e-6)
    start = batched.weight.numpy().copy()
    batched.consolidate()
    moved = np.abs(stepwise.weight.numpy() - start).max()
    # The sum of the steps differs from their sequence only by terms of order lr^2.
    assert np.abs(batched.weight.numpy() - stepwise.weight.numpy()).max() < 0.05 * moved
    assert batched.samples == stepwise.samples == 24


def test_observe_queues_a_bounded_batch_and_snapshot_and_learn_apply_it() -> None:
    x = _subspace_data(OjaFeatureMap.MAX_QUEUED + 5, 16, 3, seed=7).astype(np.float32)
    fmap = OjaFeatureMap(16, 3, lr=0.05, seed=3)
    for row in x:
        fmap.observe(row)
    assert fmap.queued == 5  # the first MAX_QUEUED were applied when the next one came
    fmap.snapshot()
    assert fmap.queued == 0
    fmap.observe(x[0])
    fmap.learn(x[:2])  # a batch through torch: the queued step goes first
    assert fmap.queued == 0 and fmap.samples == len(x) + 3
    fmap.observe(x[0], lr_scale=0.0)  # learning off: statistics only
    before = fmap.weight.numpy().copy()
    assert fmap.consolidate() == 1
    np.testing.assert_array_equal(fmap.weight.numpy(), before)
    with pytest.raises(ValueError):
        fmap.observe(x[0], lr_scale=float("nan"))
    with pytest.raises(ValueError):
        fmap.observe(np.full(16, np.nan, dtype=np.float32))


def test_snapshot_roundtrip_is_json_and_exact() -> None:
    x, _ = _dominant_data(200, 16, seed=8)
    fmap = OjaFeatureMap(16, 3, lr=0.05, seed=4)
    _train(fmap, x, batch=10)
    snap = fmap.snapshot()
    restored = OjaFeatureMap.restore(json.loads(json.dumps(snap)))
    probe = x[:7]
    np.testing.assert_array_equal(restored.forward(probe), fmap.forward(probe))
    assert restored.samples == fmap.samples == 200
    np.testing.assert_array_equal(restored.usage.numpy(), fmap.usage.numpy())
    bad = dict(snap, weight=snap["weight"][:2])
    with pytest.raises(ValueError):
        OjaFeatureMap.restore(bad)
