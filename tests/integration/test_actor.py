"""The Actor base class against a real nats-server: handlers, mailbox, ticks, heartbeats, control."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from actors.actor import Actor, ActorState, RestartRequested, every, on
from bus import Bus, Meta, codec
from bus.models import (
    CtlReply,
    CtlRequest,
    Heartbeat,
    Message,
    RegionOutput,
    SysError,
    TextStimulus,
    VectorStimulus,
)
from tests.actors_for_tests import Counter, Echo, EchoOptions, SubjectLogger, Ticker, eventually


class Inbox:
    """A typed subscription handler that keeps what it gets."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, Meta]] = []

    async def __call__(self, msg: Any, meta: Meta) -> None:
        self.items.append((msg, meta))

    @property
    def msgs(self) -> list[Any]:
        return [m for m, _ in self.items]


async def listen(bus: Bus, subject: str, model: type[Message]) -> Inbox:
    inbox = Inbox()
    await bus.subscribe(subject, inbox, model=model)
    await bus.flush()
    return inbox


async def ctl(bus: Bus, actor: str, verb: str) -> CtlReply:
    return await bus.request(f"sys.ctl.{actor}", CtlRequest.model_validate({"verb": verb}), CtlReply,
                             timeout=2.0)


async def say(bus: Bus, *texts: str) -> None:
    for text in texts:
        await bus.publish("stim.text", TextStimulus(text=text))
    await bus.flush()


Spawn = Callable[..., Any]


@pytest.fixture
async def spawn(bus: Bus) -> AsyncIterator[Spawn]:
    """Build and start an actor on `bus`; every actor started is stopped at the end of the test."""
    started: list[Actor] = []

    async def make(cls: type[Actor], name: str, options: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("heartbeat_interval", 0.1)
        actor = cls(name, bus, options, **kwargs)
        await actor.start()
        started.append(actor)
        await bus.flush()  # the server has its subscriptions before anyone publishes
        return actor

    yield make
    for actor in started:
        await actor.stop(grace=0.5)
        if actor.done.done() and not actor.done.cancelled():
            actor.done.exception()  # retrieved: no "exception was never retrieved" noise


# ---------------------------------------------------------------- handlers


async def test_typed_handler_receives_model_and_meta(spawn: Spawn, other_bus: Bus, namespace: str) -> None:
    echo = await spawn(Echo, "echo")
    await other_bus.publish("stim.text", TextStimulus(text="hello", id="s1"), stimulus_id="s1")
    await other_bus.publish_raw("stim.text", b'{"text": "plain json"}')  # what an outside client sends
    await other_bus.flush()
    await eventually(lambda: len(echo.seen) == 2, what="two texts handled")
    first, second = echo.seen
    assert isinstance(first, TextStimulus) and first.text == "hello" and first.id == "s1"
    assert isinstance(second, TextStimulus) and second.text == "plain json"
    meta = echo.metas[0]
    assert meta.subject == f"{namespace}.stim.text"
    assert meta.source == "test-other"
    assert meta.stimulus_id == "s1"
    assert echo.stats["msgs_in"] == 2 and echo.stats["rejected"] == 0


async def test_message_annotation_decodes_each_subject_with_its_registered_model(
    spawn: Spawn, other_bus: Bus
) -> None:
    logger = await spawn(SubjectLogger, "logger")
    await other_bus.publish("stim.text", TextStimulus(text="words"))
    await other_bus.publish("stim.vector", VectorStimulus(vector=np.ones(8, dtype=np.float32)))
    await other_bus.flush()
    await eventually(lambda: len(logger.got) == 2, what="both stimuli")
    by_subject = {subject.rsplit(".", 1)[-1]: msg for subject, msg in logger.got}
    assert isinstance(by_subject["text"], TextStimulus) and by_subject["text"].text == "words"
    assert isinstance(by_subject["vector"], VectorStimulus) and by_subject["vector"].vector.shape == (8,)


def test_handler_without_model_annotation_is_rejected_at_class_creation() -> None:
    with pytest.raises(TypeError, match=r"NoModel\.heard: annotate its message parameter"):

        class NoModel(Actor):
            @on("stim.text")
            async def heard(self, msg, meta):  # type: ignore[no-untyped-def]
                pass

    with pytest.raises(TypeError, match=r"NotAModel\.heard: annotate its message parameter"):

        class NotAModel(Actor):
            @on("stim.text")
            async def heard(self, msg: int, meta: Meta) -> None:
                pass


def test_handler_or_tick_that_is_not_async_is_rejected_at_class_creation() -> None:
    with pytest.raises(TypeError, match=r"SyncHandler\.heard: a handler must be an async method"):

        class SyncHandler(Actor):
            @on("stim.text")
            def heard(self, msg: TextStimulus, meta: Meta) -> None:
                pass

    with pytest.raises(TypeError, match=r"SyncTick\.tock: a tick must be an async method"):

        class SyncTick(Actor):
            @every(1.0)
            def tock(self) -> None:
                pass

    with pytest.raises(TypeError, match=r"takes \(self, msg, meta\)"):

        class OneArg(Actor):
            @on("stim.text")
            async def heard(self, msg: TextStimulus) -> None:
                pass

    with pytest.raises(ValueError, match="positive"):
        every(0)


async def test_ticks_run_periodically(spawn: Spawn) -> None:
    ticker = await spawn(Ticker, "ticker")
    await eventually(lambda: ticker.ticks >= 5, what="five ticks")
    assert ticker.stats["errors"] == 0


async def test_ticks_wait_while_paused(spawn: Spawn, other_bus: Bus) -> None:
    ticker = await spawn(Ticker, "ticker")
    await eventually(lambda: ticker.ticks >= 1, what="a first tick")
    assert (await ctl(other_bus, "ticker", "pause")).state == "paused"
    await asyncio.sleep(0.05)  # a tick already due may still finish
    paused_at = ticker.ticks
    await asyncio.sleep(0.15)  # ~7 tick intervals
    assert ticker.ticks == paused_at
    await ctl(other_bus, "ticker", "resume")
    await eventually(lambda: ticker.ticks >= paused_at + 3, what="ticks after resume")


# ---------------------------------------------------------------- mailbox overflow


@pytest.mark.parametrize(("policy", "kept", "msgs_in"), [
    ("drop_oldest", ["m2", "m3", "m4"], 5),
    ("drop_newest", ["m0", "m1", "m2"], 3),
])
async def test_mailbox_overflow_is_counted_reported_and_in_heartbeats(
    spawn: Spawn, bus: Bus, other_bus: Bus, namespace: str, policy: str, kept: list[str], msgs_in: int
) -> None:
    errors = await listen(bus, "sys.error", SysError)
    beats = await listen(bus, "sys.heartbeat.echo", Heartbeat)
    echo = await spawn(Echo, "echo", mailbox_capacity=3, overflow=policy)
    await ctl(other_bus, "echo", "pause")
    await say(other_bus, *(f"m{i}" for i in range(5)))
    await eventually(lambda: echo.stats["dropped"] == 2 and echo.mailbox_depth == 3, what="two drops")
    assert echo.stats["msgs_in"] == msgs_in
    assert echo.seen == []  # paused: nothing handled yet

    await eventually(lambda: sum(e.kind == "overflow" for e in errors.msgs) == 2, what="two overflow reports")
    for err in errors.msgs:
        assert err.kind == "overflow" and err.actor == "echo"
        assert err.subject == f"{namespace}.stim.text"
        assert policy in err.reason and "mailbox full (3)" in err.reason
    await eventually(lambda: any(hb.dropped == 2 for hb in beats.msgs), what="a heartbeat with dropped=2")
    hb = next(hb for hb in beats.msgs if hb.dropped == 2)
    assert hb.mailbox_capacity == 3 and hb.mailbox == 3 and hb.state == "paused"

    await ctl(other_bus, "echo", "resume")
    await eventually(lambda: len(echo.seen) == 3, what="the kept messages")
    assert [m.text for m in echo.seen] == kept
    assert echo.stats["dropped"] == 2


# ---------------------------------------------------------------- rejection, replies


async def test_bad_input_is_rejected_and_reported_and_the_actor_keeps_running(
    spawn: Spawn, bus: Bus, other_bus: Bus, namespace: str
) -> None:
    errors = await listen(bus, "sys.error", SysError)
    echo = await spawn(Echo, "echo")
    await other_bus.publish("stim.text", TextStimulus(text="bad", id="b1"), stimulus_id="b1")
    await other_bus.publish_raw("stim.text", b'{"text": 5}')  # fails to decode: never reaches the handler
    await say(other_bus, "fine")
    await eventually(lambda: len(echo.seen) == 1 and len(errors.items) == 2, what="one handled, two rejected")
    assert echo.seen[0].text == "fine"
    assert echo.stats["rejected"] == 2 and echo.stats["errors"] == 0
    assert echo.state is ActorState.RUNNING and not echo.done.done()
    handler_err, decode_err = sorted(errors.msgs, key=lambda e: "refuses" not in e.reason)
    assert handler_err.kind == "bad_input" and handler_err.actor == "echo"
    assert "echo refuses the text 'bad'" in handler_err.reason and handler_err.stimulus_id == "b1"
    assert handler_err.subject == f"{namespace}.stim.text"
    assert decode_err.kind == "bad_input" and "text" in decode_err.reason


async def test_handler_crash_is_reported_and_completes_done(spawn: Spawn, bus: Bus, other_bus: Bus) -> None:
    errors = await listen(bus, "sys.error", SysError)
    echo = await spawn(Echo, "echo")
    await say(other_bus, "crash echo")
    await eventually(echo.done.done, what="the actor to crash")
    exc = echo.done.exception()
    assert isinstance(exc, RuntimeError) and "echo was told to crash" in str(exc)
    assert echo.state is ActorState.CRASHED and echo.stats["errors"] == 1
    await eventually(lambda: len(errors.items) == 1, what="a crash report")
    assert errors.msgs[0].kind == "crash" and "RuntimeError: echo was told to crash" in errors.msgs[0].reason


async def test_a_handler_that_returns_a_model_answers_a_request(spawn: Spawn, other_bus: Bus) -> None:
    echo = await spawn(Echo, "echo")
    reply = await other_bus.request("stim.text", TextStimulus(text="ping", id="r1"), RegionOutput,
                                    timeout=2.0, stimulus_id="r1")
    assert reply.region == "echo" and reply.kind == "echo"
    assert reply.data == {"text": "ping"} and reply.stimulus_id == "r1"
    assert echo.stats["msgs_out"] == 2  # the published output and the reply


# ---------------------------------------------------------------- heartbeats


async def test_heartbeats_carry_stats(spawn: Spawn, bus: Bus, other_bus: Bus) -> None:
    beats = await listen(bus, "sys.heartbeat.echo", Heartbeat)
    await spawn(Echo, "echo", mailbox_capacity=50, group="senses", restarts=2)
    await say(other_bus, "a", "b", "bad")
    await eventually(lambda: any(hb.msgs_in == 3 and hb.rejected == 1 for hb in beats.msgs),
                     what="a heartbeat counting the messages")
    hb = next(hb for hb in beats.msgs if hb.msgs_in == 3)
    assert (hb.actor, hb.kind, hb.group, hb.pid) == ("echo", "echo", "senses", os.getpid())
    assert hb.state == "running" and hb.mailbox_capacity == 50 and hb.restarts == 2
    assert hb.msgs_out == 2 and hb.errors == 0 and hb.latency_ms_max >= hb.latency_ms_p50 >= 0
    assert "busy_s" in hb.stats
    uptimes = [b.uptime_s for b in beats.msgs]
    assert len(uptimes) >= 2 and uptimes == sorted(uptimes) and uptimes[-1] > 0


async def test_extra_stats_and_subject_of_heartbeats(spawn: Spawn, bus: Bus) -> None:
    beats = await listen(bus, "sys.heartbeat.*", Heartbeat)
    await spawn(Ticker, "ticker")
    await spawn(Counter, "counter")
    await eventually(lambda: {hb.actor for hb in beats.msgs} == {"ticker", "counter"},
                     what="heartbeats of both actors")
    for hb, meta in beats.items:
        assert meta.subject.endswith(f".sys.heartbeat.{hb.actor}")
        assert meta.source == hb.actor


# ---------------------------------------------------------------- control


async def test_pause_queues_and_resume_handles(spawn: Spawn, other_bus: Bus) -> None:
    echo = await spawn(Echo, "echo")
    reply = await ctl(other_bus, "echo", "pause")
    assert (reply.actor, reply.verb, reply.ok, reply.state) == ("echo", "pause", True, "paused")
    assert echo.state is ActorState.PAUSED
    await say(other_bus, "one", "two", "three")
    await eventually(lambda: echo.mailbox_depth == 3, what="three queued messages")
    await asyncio.sleep(0.05)
    assert echo.seen == [] and echo.mailbox_depth == 3
    reply = await ctl(other_bus, "echo", "resume")
    assert reply.ok and reply.state == "running"
    await eventually(lambda: len(echo.seen) == 3, what="the queued messages handled")
    assert [m.text for m in echo.seen] == ["one", "two", "three"] and echo.mailbox_depth == 0


async def test_sleep_and_wake(spawn: Spawn, other_bus: Bus) -> None:
    await spawn(Echo, "echo")
    assert (await ctl(other_bus, "echo", "sleep")).state == "sleeping"
    assert (await ctl(other_bus, "echo", "wake")).state == "running"


async def test_status_and_snapshot(spawn: Spawn, other_bus: Bus) -> None:
    counter = await spawn(Counter, "counter")
    await say(other_bus, "x", "y")
    await eventually(lambda: counter.count == 2, what="two counted")
    status = await ctl(other_bus, "counter", "status")
    assert status.ok and status.verb == "status"
    assert status.data["actor"] == "counter" and status.data["kind"] == "counter"
    assert status.data["state"] == "running" and status.data["msgs_in"] == 2
    assert status.data["pid"] == os.getpid()
    snap = await ctl(other_bus, "counter", "snapshot")
    assert snap.ok and snap.data == {"keys": ["count"]}
    assert counter.snapshot() == {"count": 2}


async def test_unknown_verb_is_reported_and_answered_with_an_error(
    spawn: Spawn, bus: Bus, other_bus: Bus, namespace: str
) -> None:
    errors = await listen(bus, "sys.error", SysError)
    echo = await spawn(Echo, "echo")
    for body in (b'{"verb": "explode"}', b"explode"):
        answer = await other_bus.nc.request(f"{namespace}.sys.ctl.echo", body, timeout=2.0)
        reply, _ = codec.decode(CtlReply, answer.data, answer.headers, answer.subject)
        assert reply.ok is False and reply.actor == "echo" and reply.state == "running"
        assert "verb" in reply.detail and "explode" in reply.detail
    await eventually(lambda: len(errors.items) == 2, what="two sys.error reports")
    for err in errors.msgs:
        assert err.actor == "echo" and err.kind == "bad_input"
        assert err.subject == f"{namespace}.sys.ctl.echo" and "explode" in err.reason
    assert echo.state is ActorState.RUNNING and echo.stats["rejected"] == 2


async def test_ctl_all_is_answered_by_every_actor(spawn: Spawn, other_bus: Bus) -> None:
    await spawn(Echo, "echo")
    await spawn(Counter, "counter")
    await spawn(Ticker, "ticker")
    replies = await other_bus.gather("sys.ctl.all", CtlRequest(verb="pause"), CtlReply, expect=3,
                                     timeout=3.0)
    assert sorted(r.actor for r, _ in replies) == ["counter", "echo", "ticker"]
    assert all(r.ok and r.verb == "pause" and r.state == "paused" for r, _ in replies)
    replies = await other_bus.gather("sys.ctl.all", CtlRequest(verb="resume"), CtlReply, expect=3,
                                     timeout=3.0)
    assert {r.state for r, _ in replies} == {"running"} and len(replies) == 3


async def test_restart_verb_completes_done_with_restart_requested(spawn: Spawn, other_bus: Bus) -> None:
    echo = await spawn(Echo, "echo")
    reply = await ctl(other_bus, "echo", "restart")
    assert reply.ok and reply.detail == "restarting"
    await eventually(echo.done.done, what="done to complete")
    assert isinstance(echo.done.exception(), RestartRequested)


# ---------------------------------------------------------------- stop


async def test_stop_drains_the_mailbox_within_grace(spawn: Spawn, other_bus: Bus) -> None:
    echo = await spawn(Echo, "echo", EchoOptions(delay=0.01))
    await ctl(other_bus, "echo", "pause")
    await say(other_bus, *(f"q{i}" for i in range(10)))
    await eventually(lambda: echo.mailbox_depth == 10, what="ten queued")
    await echo.stop(grace=3.0)
    assert [m.text for m in echo.seen] == [f"q{i}" for i in range(10)]
    assert echo.stats["dropped"] == 0 and echo.state is ActorState.STOPPED
    assert echo.done.done() and echo.done.result() is None
    await say(other_bus, "after stop")  # intake is closed
    await asyncio.sleep(0.05)
    assert echo.stats["msgs_in"] == 10


async def test_stop_abandons_what_the_grace_period_cannot_drain(spawn: Spawn, other_bus: Bus) -> None:
    echo = await spawn(Echo, "echo", EchoOptions(delay=0.5))
    await say(other_bus, *(f"q{i}" for i in range(5)))
    await eventually(lambda: echo.stats["msgs_in"] == 5 and echo.busy_for() > 0, what="five in, one in hand")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await echo.stop(grace=0.1)
    assert loop.time() - t0 < 0.45  # did not wait for the slow handler
    assert echo.seen == [] and echo.stats["dropped"] == 4  # four queued abandoned, one cancelled in hand
    assert echo.state is ActorState.STOPPED and echo.busy_for() == 0.0


async def test_an_actor_starts_only_once(spawn: Spawn) -> None:
    from bus.errors import ActorError

    echo = await spawn(Echo, "echo")
    with pytest.raises(ActorError, match="already started"):
        await echo.start()


class SwallowsOneCancel(Echo):
    """Has a background task that survives its first cancellation (as a task whose asyncio.wait_for
    swallowed it does on Python 3.11) and then waits for something that never comes."""

    kind = "swallows_one_cancel"

    async def on_start(self) -> None:
        await super().on_start()
        self._spawn(self._stubborn(), f"{self.name}.stubborn")

    async def _stubborn(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        await asyncio.Event().wait()


async def test_stop_ends_a_task_that_swallowed_its_cancellation(spawn: Spawn) -> None:
    actor = await spawn(SwallowsOneCancel, "stubborn")
    await asyncio.wait_for(actor.stop(grace=0.1), 5)
    assert actor.state is ActorState.STOPPED
