"""Basal-ganglia actor-critic: bandit learning, reversal, repertoire changes, traces, snapshots."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from regions.selection import ActorCritic

DIM = 8
CTX = [1.0] + [0.0] * (DIM - 1)


def _run_bandit(ac: ActorCritic, p: dict[str, float], trials: int, rng: random.Random) -> list[str]:
    chosen = []
    for _ in range(trials):
        c = ac.choose(CTX, beta=4.0)
        ac.learn(1.0 if rng.random() < p[c.action] else -1.0, lr=0.1)
        chosen.append(c.action)
    return chosen


def test_two_armed_bandit_learns_and_reverses() -> None:
    ac = ActorCritic(DIM, ["left", "right"], seed=3)
    rng = random.Random(11)
    first = _run_bandit(ac, {"left": 0.8, "right": 0.2}, 120, rng)
    assert first[-40:].count("left") >= 34
    assert ac.probabilities(CTX, beta=4.0)["left"] > 0.85
    assert ac.value(CTX) > 0.3  # the critic learned that this context pays (0.6 expected)

    second = _run_bandit(ac, {"left": 0.2, "right": 0.8}, 150, rng)
    assert second[-40:].count("right") >= 34
    assert ac.probabilities(CTX, beta=4.0)["right"] > 0.85


def test_rpe_is_reward_minus_value_and_critic_moves_by_lr() -> None:
    ac = ActorCritic(DIM, ["a", "b"], seed=0)
    ctx = [2.0] * DIM  # any scale: the update is normalised by |s|^2
    c = ac.choose(ctx, beta=1.0)
    assert c.value == 0.0
    assert ac.learn(1.0, lr=0.25) == pytest.approx(1.0)
    assert ac.value(ctx) == pytest.approx(0.25, abs=1e-5)
    ac.choose(ctx, beta=1.0)
    assert ac.learn(1.0, lr=0.25) == pytest.approx(0.75, abs=1e-5)


def test_learn_without_a_pending_choice_does_nothing() -> None:
    ac = ActorCritic(DIM, ["a", "b"])
    before = ac.snapshot()
    assert ac.learn(1.0, lr=0.5) == 0.0
    assert ac.snapshot() == before


def test_eligibility_traces_credit_earlier_choices_for_delayed_reward() -> None:
    ac = ActorCritic(DIM, ["a", "b"], trace_decay=0.5, seed=0)
    x1 = [1.0] + [0.0] * (DIM - 1)
    x2 = [0.0, 1.0] + [0.0] * (DIM - 2)
    first = ac.choose(x1, beta=0.0, greedy=True, episode="e", discount=0.9)
    assert ac.learn(0.0, lr=0.2, terminal=False, episode="e") is None  # waits for the next state
    second = ac.choose(x2, beta=0.0, greedy=True, episode="e", discount=0.9)
    assert ac.learn(1.0, lr=0.2, episode="e") == pytest.approx(1.0)
    gain_first = ac.preferences(x1)[first.action]
    gain_second = ac.preferences(x2)[second.action]
    assert gain_second == pytest.approx(0.2, abs=1e-6)
    assert gain_first == pytest.approx(0.9 * 0.5 * gain_second, abs=1e-6)  # decayed by gamma * lambda
    # The terminal reward closed the episode.
    assert ac.open_episodes == [] and ac.learn(1.0, lr=0.2, episode="e") == 0.0


def test_td_error_bootstraps_on_the_next_states_value() -> None:
    ac = ActorCritic(DIM, ["a"], trace_decay=0.0, seed=0)
    x1 = [1.0] + [0.0] * (DIM - 1)
    x2 = [0.0, 1.0] + [0.0] * (DIM - 2)
    ac.choose(x2, beta=0.0, episode="warm")
    ac.learn(1.0, lr=0.5, episode="warm")  # V(x2) = 0.5
    ac.choose(x1, beta=0.0, episode="e")
    assert ac.learn(0.25, lr=0.5, terminal=False, episode="e") is None
    delta = ac.bootstrap(x2, lr=0.5, discount=0.8, episode="e")
    assert delta == pytest.approx(0.25 + 0.8 * 0.5 - 0.0)
    assert ac.value(x1) == pytest.approx(0.5 * delta)
    assert ac.bootstrap(x2, lr=0.5, discount=0.8, episode="e") is None  # the held reward is spent


def test_a_short_chain_converges_to_its_discounted_values() -> None:
    """s0 -> s1 -> s2 -> end, reward 1 on leaving s2: V(s_k) -> gamma^(2 - k)."""
    gamma, states = 0.9, [[1.0 if i == k else 0.0 for i in range(DIM)] for k in range(3)]
    ac = ActorCritic(DIM, ["go"], trace_decay=0.8, seed=0)
    for n in range(300):
        episode = f"run-{n}"
        for k, s in enumerate(states):
            ac.bootstrap(s, lr=0.2, discount=gamma, episode=episode)
            ac.choose(s, beta=0.0, episode=episode, discount=gamma)
            ac.learn(1.0 if k == 2 else 0.0, lr=0.2, terminal=k == 2, episode=episode)
    for k, s in enumerate(states):
        assert ac.value(s) == pytest.approx(gamma ** (2 - k), abs=0.02)
    assert ac.open_episodes == []


def test_truncation_ends_an_episode_without_a_terminal_value() -> None:
    ac = ActorCritic(DIM, ["a"], trace_decay=0.0, seed=0)
    ac.choose(CTX, beta=0.0, episode="warm")
    ac.learn(1.0, lr=1.0, episode="warm")  # V(CTX) = 1
    ac.choose(CTX, beta=0.0, episode="e")
    # Cut by a time limit: the next state is valued as the last one, not as 0.
    assert ac.learn(0.0, lr=0.5, truncated=True, terminal=False, discount=0.9, episode="e") == pytest.approx(-0.1)
    assert "e" not in ac.open_episodes


def test_interleaved_episodes_keep_their_own_traces() -> None:
    ac = ActorCritic(DIM, ["a", "b"], trace_decay=1.0, seed=0)
    x1 = [1.0] + [0.0] * (DIM - 1)
    x2 = [0.0, 1.0] + [0.0] * (DIM - 2)
    one = ac.choose(x1, beta=0.0, greedy=True, episode="one")
    ac.choose(x2, beta=0.0, greedy=True, episode="two")
    ac.learn(1.0, lr=0.5, episode="one")
    assert ac.preferences(x1)[one.action] == pytest.approx(0.5)
    assert ac.preferences(x2) == {"a": 0.0, "b": 0.0}  # episode two's choice was not credited
    assert ac.open_episodes == ["two"]
    assert ac.end_episode("two") and not ac.end_episode("two")


def test_set_actions_keeps_persisting_weights() -> None:
    ac = ActorCritic(DIM, ["a", "b"], seed=1)
    _run_bandit(ac, {"a": 1.0, "b": 0.0}, 30, random.Random(0))
    prefs = ac.preferences(CTX)
    assert prefs["a"] > prefs["b"]
    ac.set_actions(["c", "b", "a"])
    new = ac.preferences(CTX)
    assert ac.actions == ["c", "b", "a"]
    assert new["a"] == prefs["a"] and new["b"] == prefs["b"]
    assert new["c"] == 0.0
    ac.set_actions(["a"])
    assert ac.preferences(CTX) == {"a": prefs["a"]}
    with pytest.raises(ValueError):
        ac.set_actions(["x", "x"])


def test_bias_and_beta_shape_the_softmax() -> None:
    ac = ActorCritic(DIM, ["a", "b", "c"])
    uniform = ac.probabilities(CTX, beta=0.0)
    assert all(p == pytest.approx(1 / 3) for p in uniform.values())
    biased = ac.probabilities(CTX, beta=5.0, bias={"a": 2.0, "gone": 9.0, "b": math.nan})
    z = math.exp(2.0) + 2.0
    assert biased["a"] == pytest.approx(math.exp(2.0) / z, abs=1e-6)
    assert biased["b"] == pytest.approx(1.0 / z, abs=1e-6)
    c = ac.choose(CTX, beta=5.0, bias={"c": 50.0})
    assert c.action == "c" and c.index == 2 and c.confidence == pytest.approx(1.0)


def test_snapshot_restore_gives_identical_choices() -> None:
    a = ActorCritic(DIM, ["x", "y", "z"], seed=5)
    _run_bandit(a, {"x": 0.5, "y": 0.6, "z": 0.2}, 20, random.Random(1))
    a.choose(CTX, beta=2.0)  # leave a pending choice and live traces in the snapshot
    b = ActorCritic(DIM, seed=99)
    b.restore(json.loads(json.dumps(a.snapshot())))
    rng_a, rng_b = random.Random(2), random.Random(2)
    assert a.learn(1.0, lr=0.1) == b.learn(1.0, lr=0.1)
    seq_a = _run_bandit(a, {"x": 0.5, "y": 0.6, "z": 0.2}, 30, rng_a)
    seq_b = _run_bandit(b, {"x": 0.5, "y": 0.6, "z": 0.2}, 30, rng_b)
    assert seq_a == seq_b
    assert a.snapshot() == b.snapshot()


def test_same_seed_same_choices_and_tensor_contexts() -> None:
    a, b = ActorCritic(DIM, ["p", "q"], seed=4), ActorCritic(DIM, ["p", "q"], seed=4)
    ctx = torch.ones(DIM)
    assert [a.choose(ctx, 1.0).action for _ in range(20)] == [b.choose(ctx, 1.0).action for _ in range(20)]


def test_bad_use_is_rejected() -> None:
    ac = ActorCritic(DIM)
    with pytest.raises(RuntimeError):
        ac.choose(CTX, beta=1.0)
    ac.set_actions(["a"])
    with pytest.raises(ValueError):
        ac.choose([1.0, 2.0], beta=1.0)
    with pytest.raises(ValueError):
        ac.choose([math.nan] * DIM, beta=1.0)
    with pytest.raises(ValueError):
        ac.choose(CTX, beta=-1.0)
    with pytest.raises(ValueError):
        ActorCritic(DIM).restore({**ac.snapshot(), "dim": DIM + 1})


def test_snapshots_carry_open_episodes_their_traces_and_held_rewards() -> None:
    a = ActorCritic(DIM, ["go", "stop"], trace_decay=0.9, seed=2)
    x1 = [1.0] + [0.0] * (DIM - 1)
    x2 = [0.0, 1.0] + [0.0] * (DIM - 2)
    a.choose(x1, beta=1.0, episode="open", discount=0.9)
    a.learn(0.5, lr=0.3, terminal=False, episode="open")  # held until the next state
    a.choose(x2, beta=1.0)  # and a one-step trial's pending choice
    b = ActorCritic(DIM, seed=7)
    b.restore(json.loads(json.dumps(a.snapshot())))
    assert b.open_episodes == a.open_episodes == ["open", None]
    assert a.bootstrap(x2, lr=0.3, discount=0.9, episode="open") == b.bootstrap(x2, lr=0.3, discount=0.9,
                                                                                 episode="open")
    assert a.learn(1.0, lr=0.3) == b.learn(1.0, lr=0.3)
    assert a.snapshot() == b.snapshot()


def test_a_snapshot_from_before_episodes_restores_as_the_one_step_episode() -> None:
    a = ActorCritic(DIM, ["x", "y"], seed=1)
    a.choose(CTX, beta=1.0)
    old = a.snapshot()
    (episode,) = old.pop("episodes")
    old.update(trace_critic=episode["trace_critic"], trace_actor=episode["trace_actor"], pending=episode["pending"])
    b = ActorCritic(DIM, seed=1)
    b.restore(old)
    assert b.open_episodes == [None]
    assert b.learn(1.0, lr=0.5) == a.learn(1.0, lr=0.5)
