"""Prefrontal working memory: gating by salience, leak, context layout, snapshots."""

from __future__ import annotations

import json
import math

import pytest
import torch

from regions.working_memory import WorkingMemory

DIM = 6


def _unit(i: int) -> torch.Tensor:
    v = torch.zeros(DIM)
    v[i] = 1.0
    return v


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_gate_grows_with_salience() -> None:
    wm = WorkingMemory(DIM)
    gates = [wm.gate(s) for s in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert gates == sorted(gates)
    assert gates[0] < 0.1 and gates[2] == pytest.approx(0.5) and gates[-1] > 0.9


def test_salient_content_overwrites_and_weak_content_does_not() -> None:
    strong = WorkingMemory(DIM)
    strong.update(_unit(0), 1.0)
    strong.update(_unit(1), 1.0)
    assert _cos(strong.state(), _unit(1)) > 0.95

    weak = WorkingMemory(DIM)
    weak.update(_unit(0), 1.0)
    weak.update(_unit(1), 0.0)
    assert _cos(weak.state(), _unit(0)) > 0.95
    assert float(torch.linalg.vector_norm(weak.state())) == pytest.approx(1.0, abs=1e-6)


def test_leak_fades_old_content_faster() -> None:
    def held_after(leak: float) -> float:
        wm = WorkingMemory(DIM, leak=leak)
        wm.update(_unit(0), 1.0)
        wm.update(_unit(1), 0.5)
        return _cos(wm.state(), _unit(0))

    assert held_after(0.3) < held_after(1.0)


def test_context_keeps_the_current_percept_and_the_history() -> None:
    wm = WorkingMemory(DIM)
    assert wm.context_dim == 2 * DIM
    wm.update(3.0 * _unit(0), 1.0)
    wm.update(_unit(2), 0.0)  # a low-salience percept: barely enters h, but is what is answered
    ctx = wm.context()
    assert ctx.shape == (2 * DIM,)
    assert float(torch.linalg.vector_norm(ctx)) == pytest.approx(1.0, abs=1e-6)
    assert _cos(ctx[:DIM], _unit(2)) == pytest.approx(1.0)
    assert _cos(ctx[DIM:], _unit(0)) > 0.95
    wm.update(_unit(4), 1.0, is_percept=False)  # a recalled memory: history only
    assert _cos(wm.context()[:DIM], _unit(2)) == pytest.approx(1.0)
    assert _cos(wm.context()[DIM:], _unit(4)) > 0.9
    ctx.zero_()  # context() hands out a copy
    assert float(torch.linalg.vector_norm(wm.context())) > 0.9


def test_snapshot_restore_round_trips_through_json() -> None:
    a = WorkingMemory(DIM)
    a.update([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 0.7)
    a.update(_unit(5), 0.4)
    b = WorkingMemory(DIM)
    b.restore(json.loads(json.dumps(a.snapshot())))
    assert torch.equal(a.context(), b.context())
    a.update(_unit(1), 0.6)
    b.update(_unit(1), 0.6)
    assert torch.equal(a.context(), b.context())
    b.clear()
    assert float(torch.linalg.vector_norm(b.context())) == 0.0


def test_bad_input_is_rejected() -> None:
    wm = WorkingMemory(DIM)
    with pytest.raises(ValueError):
        wm.update(_unit(0), math.nan)
    with pytest.raises(ValueError):
        wm.update([1.0, 2.0], 0.5)
    with pytest.raises(ValueError):
        WorkingMemory(DIM, leak=0.0)
    assert wm.updates == 0
