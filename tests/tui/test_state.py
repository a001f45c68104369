"""Unit tests of the TUI's plain state: traffic rates, flows, heartbeat health, the CLI parser."""

from __future__ import annotations

import argparse

import pytest

import tui
from bus import codec
from bus.models import Heartbeat, MotorAction, Reward
from tui import cli
from tui.state import BrainState
from tui.traffic import TrafficCounter, find_stimulus_id


def test_exports() -> None:
    assert tui.__all__ == ["BrainApp", "BrainState"]


def test_traffic_rates_and_the_subject_cap() -> None:
    t = TrafficCounter(window_s=2.0, max_subjects=3)
    t.roll(0.0)
    for _ in range(10):
        t.note("a")
    for s in ("b", "c", "d", "e"):
        t.note(s)
    t.roll(1.0)
    rates = {s: r for s, r, _ in t.top(10)}
    assert rates["a"] == 10.0
    assert rates[TrafficCounter.OTHER] == 2.0  # 'd' and 'e' folded into one bucket
    t.roll(5.0)  # nothing for a while: rates fall to 0, totals stay
    assert t.rate_total == 0.0
    assert ("a", 0.0, 10) in t.top(10)


def test_stimulus_id_from_a_plain_json_body() -> None:
    assert find_stimulus_id(b'{"action": "left", "stimulus_id": "abc-1", "confidence": 0.5}') == "abc-1"
    assert find_stimulus_id(b'{"text": "hi", "id" : "s 2"}') is None  # not a valid id
    assert find_stimulus_id(b'{"episode_id": 3}') is None


def feed(state: BrainState, subject: str, msg: object, t: float, sid: str | None = None) -> None:
    body, headers = codec.encode(msg, source="x", stimulus_id=sid)  # type: ignore[arg-type]
    state.ingest(f"brain.{subject}", headers, body, t)


def test_heartbeat_rates_dead_and_hung() -> None:
    state = BrainState("brain")
    for t, n, busy in ((0.0, 0, 0.0), (1.0, 50, 0.0)):
        feed(state, "sys.heartbeat.a", Heartbeat(actor="a", kind="k", state="running", pid=1, msgs_in=n,
                                                 uptime_s=10 + t, stats={"busy_s": busy}), t)
        feed(state, "sys.heartbeat.b", Heartbeat(actor="b", kind="k", state="running", pid=1,
                                                 uptime_s=10 + t, stats={"busy_s": 6.0 * t}), t)
        state.refresh(t + 0.1)
    a, b = state.actors["a"], state.actors["b"]
    assert a.rate_in == 50.0 and a.health == "ok"
    assert b.health == "hung"
    state.refresh(1.0 + 3.5)  # three intervals without a heartbeat
    assert a.health == "dead"


def test_rewards_attach_to_their_action_and_unknown_plain_json_is_ignored() -> None:
    state = BrainState("brain")
    feed(state, "motor.action", MotorAction(action="left", stimulus_id="s1", confidence=0.5), 1.0)
    feed(state, "feedback.reward", Reward(value=1.0, stimulus_id="s1", action="left"), 1.1)
    state.ingest("brain.motor.action", None, b'{"action": 3}', 1.2)  # bad: counted, not shown
    state.refresh(2.0)
    assert [(a.action, a.reward) for a in state.actions] == [("left", 1.0)]
    assert state.counts["undecodable"] == 1
    assert state.reward_rate() == (1.0, 1.0, 1)
    assert [s.subject for s in state.flows.steps("s1")] == ["motor.action", "feedback.reward"]


def test_cli_parser() -> None:
    parser = argparse.ArgumentParser(prog="brainbus")
    sub = parser.add_subparsers(dest="command")
    cli.add_parser(sub)
    args = parser.parse_args(["tui", "--nats", "nats://h:4222", "--namespace", "b2"])
    assert (args.command, args.nats, args.namespace, args.refresh) == ("tui", "nats://h:4222", "b2", 4.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["tui", "--refresh", "0"])
