"""The bus on a real nats-server: typed pub/sub, outside JSON, vectors, request/reply, gather, state."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
import pytest
import structlog

from bus import (
    Bus,
    BusError,
    ConnState,
    EmbeddedServer,
    MemRecall,
    MemRecallReply,
    Message,
    Meta,
    NoRespondersError,
    RegionOutput,
    RequestTimeout,
    Reward,
    TextStimulus,
    VectorStimulus,
    codec,
)
from bus._nats import FastClient
from bus.models import CtlReply, CtlRequest, EnvActions, MemHit, MotorAction
from tests.actors_for_tests import eventually

Received = list[tuple[Any, Meta]]


def collector() -> tuple[Received, Callable[[Any, Meta], Awaitable[None]]]:
    got: Received = []

    async def handler(msg: Any, meta: Meta) -> None:
        got.append((msg, meta))

    return got, handler


async def wait_for(predicate: Callable[[], bool], within: float = 3.0) -> None:
    """Poll `predicate` in short steps; fail the test if it stays false past `within` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.005)


async def settle(*buses: Bus) -> None:
    """Make sure everything published so far has reached the server (and subscribers' SUBs too)."""
    for b in buses:
        await b.flush()


# ---------------------------------------------------------------- typed publish → subscribe


async def test_typed_publish_subscribe_relative_subject(bus: Bus, other_bus: Bus) -> None:
    got, handler = collector()
    await bus.subscribe("stim.text", handler, model=TextStimulus)
    await settle(bus)
    await other_bus.publish("stim.text", TextStimulus(text="hello", id="s-1"), stimulus_id="s-1")
    await wait_for(lambda: len(got) == 1)
    msg, meta = got[0]
    assert isinstance(msg, TextStimulus)
    assert (msg.text, msg.id) == ("hello", "s-1")
    assert meta.subject == f"{bus.subjects.ns}.stim.text"
    assert meta.type == TextStimulus.type_tag()
    assert meta.source == "test-other"
    assert meta.stimulus_id == "s-1"
    assert meta.msg_id
    assert meta.ts is not None and abs(meta.ts - time.time()) < 60


async def test_publish_and_subscribe_with_full_subjects(bus: Bus, other_bus: Bus) -> None:
    got, handler = collector()
    full = bus.subjects.feedback_reward
    sub = await bus.subscribe(full, handler, model=Reward)
    assert sub.pattern == full
    await settle(bus)
    await other_bus.publish(full, Reward(value=-0.5, action="left"))
    await wait_for(lambda: len(got) == 1)
    assert got[0][0] == Reward(value=-0.5, action="left")
    assert got[0][1].subject == full


async def test_wildcards_and_model_from_registry(bus: Bus, other_bus: Bus) -> None:
    star, star_handler = collector()
    rest, rest_handler = collector()
    await bus.subscribe("region.*.out", star_handler)  # model=None: RegionOutput from the registry
    await bus.subscribe("stim.>", rest_handler)  # one subscription, a different model per subject
    await settle(bus)
    await other_bus.publish(bus.subjects.region_out("visual"), RegionOutput(region="visual", kind="percept"))
    await other_bus.publish(bus.subjects.region_out("audio"), RegionOutput(region="audio", kind="percept"))
    await other_bus.publish("region.visual.extra", RegionOutput(region="visual", kind="x"))  # not `*.out`
    await other_bus.publish("stim.text", TextStimulus(text="a"))
    await other_bus.publish("stim.vector", VectorStimulus(vector=np.ones(4, np.float32)))
    await wait_for(lambda: len(star) == 2 and len(rest) == 2)
    await settle(other_bus, bus)
    assert sorted(m.region for m, _ in star) == ["audio", "visual"]
    assert all(isinstance(m, RegionOutput) for m, _ in star)
    by_type = {type(m): m for m, _ in rest}
    assert set(by_type) == {TextStimulus, VectorStimulus}
    assert by_type[TextStimulus].text == "a"
    np.testing.assert_array_equal(by_type[VectorStimulus].vector, np.ones(4, np.float32))


async def test_bad_message_goes_to_on_bad_not_handler(bus: Bus, other_bus: Bus) -> None:
    got, handler = collector()
    bad: list[tuple[str, str]] = []

    def on_bad(exc: Any, meta: Meta) -> None:
        bad.append((exc.reason, meta.subject))

    await bus.subscribe("feedback.reward", handler, on_bad=on_bad)
    await settle(bus)
    await other_bus.publish_raw("feedback.reward", b'{"value": 10001}')
    await other_bus.publish_raw("feedback.reward", b'{"value": 0.25}')
    await wait_for(lambda: len(got) == 1 and len(bad) == 1)
    assert got[0][0].value == 0.25
    reason, subject = bad[0]
    assert "'value'" in reason and "less than or equal to 10000" in reason
    assert subject == bus.subjects.feedback_reward


async def test_subject_without_model_is_rejected(bus: Bus, other_bus: Bus) -> None:
    got, handler = collector()
    bad: list[str] = []
    await bus.subscribe("nothing.here", handler, on_bad=lambda exc, meta: bad.append(exc.reason))
    await settle(bus)
    await other_bus.publish_raw("nothing.here", b"{}")
    await wait_for(lambda: len(bad) == 1)
    assert got == []
    assert "no message model is registered" in bad[0]


# ---------------------------------------------------------------- plain JSON from outside


async def test_plain_json_without_headers_decodes(bus: Bus, other_bus: Bus) -> None:
    got, handler = collector()
    await bus.subscribe(">", handler)
    await settle(bus)
    await other_bus.publish_raw("stim.text", orjson.dumps({"text": "from outside", "id": "ext-1"}))
    await other_bus.publish_raw("stim.vector", orjson.dumps({"vector": [0.5, -1, 2], "modality": "image"}))
    await other_bus.publish_raw("env.actions", b'{"actions": ["left", "right"], "env": "grid"}')
    await other_bus.publish_raw("feedback.reward", b'{"value": 1, "stimulus_id": "ext-1"}')
    await wait_for(lambda: len(got) == 4)
    by_type = {type(m): (m, meta) for m, meta in got}
    text, meta = by_type[TextStimulus]
    assert (text.text, text.id) == ("from outside", "ext-1")
    assert meta.type is None and meta.source is None  # no headers at all
    assert meta.stimulus_id == "ext-1"  # taken from the body's id
    vec = by_type[VectorStimulus][0]
    assert vec.modality == "image"
    assert vec.vector.dtype == np.float32
    np.testing.assert_array_equal(vec.vector, np.array([0.5, -1, 2], np.float32))
    assert by_type[EnvActions][0] == EnvActions(actions=["left", "right"], env="grid")
    reward, reward_meta = by_type[Reward]
    assert reward.value == 1.0 and reward_meta.stimulus_id == "ext-1"


async def test_plain_utf8_body_on_stim_text(bus: Bus, other_bus: Bus) -> None:
    got, handler = collector()
    await bus.subscribe("stim.text", handler)
    await settle(bus)
    await other_bus.publish_raw("stim.text", "  une pomme rouge, s'il vous plaît \n".encode())
    await wait_for(lambda: len(got) == 1)
    msg, meta = got[0]
    assert msg == TextStimulus(text="une pomme rouge, s'il vous plaît")
    assert meta.stimulus_id is None


# ---------------------------------------------------------------- vectors


async def test_vector_round_trip_binary_is_exact(bus: Bus, other_bus: Bus) -> None:
    vec = np.random.default_rng(1).standard_normal(384).astype(np.float32)
    vec[:3] = [np.finfo(np.float32).max, np.finfo(np.float32).tiny, -0.0]
    got, handler = collector()
    await bus.subscribe("region.*.out", handler)
    await settle(bus)
    await other_bus.publish(bus.subjects.region_out("thalamus"),
                            RegionOutput(region="thalamus", kind="percept", vector=vec, stimulus_id="v1"))
    await wait_for(lambda: len(got) == 1)
    out = got[0][0].vector
    assert out.dtype == np.float32 and out.shape == (384,)
    assert out.tobytes() == vec.tobytes()  # bit for bit, signed zero included
    out[0] = 1.0  # the decoded array is writable (not a view of the message buffer)


async def test_vector_round_trip_json_list(bus: Bus, other_bus: Bus) -> None:
    vec = np.random.default_rng(2).standard_normal(384).astype(np.float32)
    got, handler = collector()
    await bus.subscribe("stim.vector", handler)
    await settle(bus)
    # An outside client writes the float32 values as JSON numbers (shortest repr round-trips float32).
    await other_bus.publish_raw("stim.vector", orjson.dumps({"vector": vec.tolist()}))
    await wait_for(lambda: len(got) == 1)
    out = got[0][0].vector
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, vec)
    expected_json = {"vector": vec.tolist(), "modality": "vector", "id": None, "episode": None}
    assert codec.to_json(got[0][0]) == orjson.dumps(expected_json)


async def test_vector_message_size_on_the_wire(bus: Bus, other_bus: Bus) -> None:
    vec = np.random.default_rng(3).standard_normal(384).astype(np.float32)
    msg = RegionOutput(region="thalamus", kind="percept", vector=vec, stimulus_id="thalamus-1a2b-17",
                       data={"modality": "text"})
    body, headers = codec.encode(msg, source="thalamus", stimulus_id="thalamus-1a2b-17")
    header_bytes = sum(len(k) + len(v) + 4 for k, v in headers.items()) + len("NATS/1.0\r\n\r\n")
    assert len(body) + header_bytes < 1536 + 256
    assert headers[codec.H_VEC] == "vector:f32:384"
    # And what really crosses the wire, as a raw subscriber sees it.
    seen: list[int] = []

    async def raw(m: Any) -> None:
        seen.append(len(m.data) + sum(len(k) + len(v) + 4 for k, v in (m.headers or {}).items()))

    await bus.subscribe_raw("region.thalamus.out", raw)
    await settle(bus)
    await other_bus.publish(bus.subjects.region_out("thalamus"), msg, stimulus_id="thalamus-1a2b-17")
    await wait_for(lambda: len(seen) == 1)
    assert 1536 < seen[0] < 1536 + 256


# ---------------------------------------------------------------- request / reply


async def responder(b: Bus, subject: str, reply: Callable[[Any], Message | None],
                    model: type[Message] | None = None) -> list[Meta]:
    """Subscribe a responder on `subject`; `reply(msg)` returns the answer (None: stay silent)."""
    metas: list[Meta] = []

    async def handle(msg: Any, meta: Meta) -> None:
        metas.append(meta)
        answer = reply(msg)
        if answer is not None:
            await b.respond(meta, answer, source="responder")

    await b.subscribe(subject, handle, model=model)
    await b.flush()
    return metas


async def test_request_reply(bus: Bus, other_bus: Bus) -> None:
    metas = await responder(other_bus, "sys.ctl.thalamus", lambda req: CtlReply(
        actor="thalamus", verb=req.verb, ok=True, state="running", detail="x" * len(req.args)))
    reply = await bus.request("sys.ctl.thalamus", CtlRequest(verb="status", args={"a": 1}), CtlReply,
                              timeout=2.0, stimulus_id="sid-9")
    assert reply == CtlReply(actor="thalamus", verb="status", ok=True, state="running", detail="x")
    assert len(metas) == 1
    assert metas[0].reply and metas[0].stimulus_id == "sid-9" and metas[0].source == "test"


async def test_respond_without_reply_subject_is_a_noop(bus: Bus, other_bus: Bus) -> None:
    metas = await responder(other_bus, "sys.ctl.thalamus", lambda req: CtlReply(
        actor="thalamus", verb=req.verb, ok=True, state="running"))
    seen: list[Any] = []

    async def raw(m: Any) -> None:
        seen.append(m)

    await bus.subscribe_raw("sys.>", raw)
    await settle(bus)
    await bus.publish("sys.ctl.thalamus", CtlRequest(verb="pause"))  # a plain publish: nobody to answer
    await wait_for(lambda: len(metas) == 1 and len(seen) == 1)
    await settle(other_bus, bus)
    assert metas[0].reply is None
    assert [m.subject for m in seen] == [bus.subjects.ctl("thalamus")]


async def test_request_without_responder(bus: Bus) -> None:
    t0 = time.monotonic()
    with pytest.raises(NoRespondersError) as info:
        await bus.request("sys.ctl.nobody", CtlRequest(verb="status"), CtlReply, timeout=2.0)
    assert time.monotonic() - t0 < 1.0  # the server says so at once: no waiting for the deadline
    assert info.value.subject == bus.subjects.ctl("nobody")
    assert bus.subjects.ctl("nobody") in str(info.value)
    assert isinstance(info.value, BusError)


async def test_request_to_a_silent_responder_times_out(bus: Bus, other_bus: Bus) -> None:
    metas = await responder(other_bus, "sys.ctl.mute", lambda req: None)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as info:  # RequestTimeout is also a TimeoutError
        await bus.request("sys.ctl.mute", CtlRequest(verb="status"), CtlReply, timeout=0.2)
    elapsed = time.monotonic() - t0
    assert isinstance(info.value, RequestTimeout) and isinstance(info.value, BusError)
    assert 0.15 < elapsed < 1.5
    assert info.value.timeout == 0.2 and info.value.subject == bus.subjects.ctl("mute")
    assert "within 0.2 s" in str(info.value)
    assert len(metas) == 1  # it did get the request


# ---------------------------------------------------------------- scatter-gather


def shard_reply(shard: str) -> Callable[[MemRecall], MemRecallReply]:
    def reply(req: MemRecall) -> MemRecallReply:
        return MemRecallReply(hits=[MemHit(shard=shard, episode_id=i, score=float(req.query[0]))
                                    for i in range(req.k)])

    return reply


async def test_gather_collects_all_expected_replies_fast(bus: Bus, other_bus: Bus) -> None:
    for shard in ("s0", "s1", "s2"):
        await responder(other_bus, "mem.recall", shard_reply(shard))
    t0 = time.monotonic()
    request = MemRecall(query=np.full(8, 0.5, np.float32), k=2)
    replies = await bus.gather("mem.recall", request, MemRecallReply, expect=3, timeout=5.0)
    assert time.monotonic() - t0 < 1.0  # returned on the third reply, not at the deadline
    assert len(replies) == 3
    assert sorted(r.hits[0].shard for r, _ in replies) == ["s0", "s1", "s2"]
    assert all(len(r.hits) == 2 and r.hits[0].score == 0.5 for r, _ in replies)
    assert all(meta.source == "responder" for _, meta in replies)


async def test_gather_returns_partial_answer_at_deadline(bus: Bus, other_bus: Bus) -> None:
    await responder(other_bus, "mem.recall", shard_reply("s0"))
    await responder(other_bus, "mem.recall", shard_reply("s1"))
    silent = await responder(other_bus, "mem.recall", lambda req: None)
    t0 = time.monotonic()
    replies = await bus.gather("mem.recall", MemRecall(query=[1.0]), MemRecallReply, expect=3, timeout=0.3)
    elapsed = time.monotonic() - t0
    assert 0.25 < elapsed < 1.5
    assert sorted(r.hits[0].shard for r, _ in replies) == ["s0", "s1"]
    assert len(silent) == 1  # the third shard got the request and stayed silent


async def test_gather_with_nobody_subscribed_returns_at_once(bus: Bus) -> None:
    t0 = time.monotonic()
    replies = await bus.gather("mem.recall", MemRecall(query=[1.0]), MemRecallReply, expect=3, timeout=2.0)
    assert replies == []
    assert time.monotonic() - t0 < 1.0


# ---------------------------------------------------------------- connection


async def test_state_events_end_in_closed(nats_server: EmbeddedServer, namespace: str) -> None:
    b = Bus(nats_server.url, namespace=namespace, name="stateful")
    states: list[ConnState] = []
    b.on_state(states.append)
    assert b.state is ConnState.NEW and not b.connected
    await b.connect()
    assert b.connected
    await b.publish("motor.action", MotorAction(action="left", stimulus_id="s", confidence=0.5))
    await b.close()
    assert states == [ConnState.CONNECTED, ConnState.CLOSED]
    assert b.state is ConnState.CLOSED and not b.connected
    with pytest.raises(BusError, match="not connected"):
        await b.publish("stim.text", TextStimulus(text="late"))


async def test_on_state_unsubscribe(nats_server: EmbeddedServer, namespace: str) -> None:
    b = Bus(nats_server.url, namespace=namespace)
    states: list[ConnState] = []
    stop = b.on_state(states.append)
    await b.connect()
    stop()
    await b.close()
    assert states == [ConnState.CONNECTED]


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on exit: nothing listens there


async def test_connect_to_dead_port_raises_bus_error() -> None:
    url = f"nats://127.0.0.1:{_dead_port()}"
    b = Bus(url, namespace="dead")
    t0 = time.monotonic()
    with pytest.raises(BusError) as info:
        await asyncio.wait_for(b.connect(timeout=1.0), 10)
    assert time.monotonic() - t0 < 5.0
    assert url in str(info.value)
    assert "no servers available" not in str(info.value)  # the real cause is named
    assert b.state is ConnState.CLOSED


async def test_connecting_twice_raises(nats_server: EmbeddedServer, namespace: str) -> None:
    async with Bus(nats_server.url, namespace=namespace, name="twice") as b:
        with pytest.raises(BusError, match="already connected once"):
            await b.connect()
        assert b.connected  # the first connection is untouched
    with pytest.raises(BusError, match="already connected once"):
        await b.connect()  # nor can a closed bus be reopened


async def test_flush_covers_subscriptions_made_before_it(bus: Bus, other_bus: Bus, monkeypatch: Any) -> None:
    """`flush()` returns only after the server has seen what came before it (its PING queues behind).

    Otherwise a subscription made just before `flush()` may not be registered yet and the first
    messages published to it are lost.
    """
    transport = bus.nc._transport
    wire: list[bytes] = []
    write, writelines = transport.write, transport.writelines

    def spy_write(data: bytes) -> None:
        wire.append(bytes(data))
        write(data)

    def spy_writelines(lines: list[bytes]) -> None:
        wire.extend(bytes(line) for line in lines)
        writelines(lines)

    monkeypatch.setattr(transport, "write", spy_write)
    monkeypatch.setattr(transport, "writelines", spy_writelines)
    got, handler = collector()
    for i in range(50):
        await bus.subscribe(f"region.r{i}.out", handler)
    await bus.flush()
    sent = b"".join(wire)
    assert sent.count(b"SUB ") == 50 and sent.rstrip().endswith(b"PING")
    monkeypatch.undo()
    await other_bus.publish("region.r49.out", RegionOutput(region="r49", kind="x"))
    await wait_for(lambda: len(got) == 1)


# ---------------------------------------------------------------- direct delivery and the fast parser


async def test_direct_delivery_of_a_mixed_burst(bus: Bus, other_bus: Bus) -> None:
    """Typed, plain and foreign-header messages of every size arrive whole, decoded, in order.

    Vectors up to 8192-d (32 KiB, the size of one socket read) make messages straddle reads.
    """
    got: list[tuple[Any, Meta]] = []
    bad: list[str] = []
    await bus.subscribe_direct("region.*.out", lambda m, meta: got.append((m, meta)),
                               on_bad=lambda exc, meta: bad.append(exc.reason))
    await settle(bus)
    sent: list[tuple[str, int]] = []
    for i in range(300):
        dim = (1, 384, 8192, 5000)[i % 4]
        vec = np.full(dim, i, np.float32)
        subject = bus.subjects.region_out(f"r{i % 3}")
        if i % 5 == 0:  # an outside client: plain JSON, no headers
            await other_bus.publish_raw(subject, orjson.dumps({"region": "x", "kind": "plain", "data": {"i": i}}))
            sent.append(("plain", i))
        elif i % 7 == 0:  # an outside client with headers of its own: a dict, not our block
            await other_bus.publish_raw(subject, orjson.dumps({"region": "x", "kind": "foreign", "data": {"i": i}}),
                                        headers={"Trace-Id": f"t{i}", codec.H_SID: f"f-{i}"})
            sent.append(("foreign", i))
        else:
            await other_bus.publish(subject, RegionOutput(region="x", kind="typed", vector=vec, data={"i": i}),
                                    stimulus_id=f"s-{i}", reply=f"_INBOX.reply.{i}" if i % 2 else None)
            sent.append(("typed", i))
    await other_bus.publish_raw(bus.subjects.region_out("r0"), b'{"region": "x", "kind": 5}')
    await wait_for(lambda: len(got) == len(sent) and len(bad) == 1, within=10)
    assert [(m.kind, m.data["i"]) for m, _ in got] == sent
    for (msg, meta), (kind, i) in zip(got, sent, strict=True):
        assert meta.subject == bus.subjects.region_out(f"r{i % 3}")
        if kind == "typed":
            assert msg.vector.shape == ((1, 384, 8192, 5000)[i % 4],) and (msg.vector == i).all()
            assert (meta.source, meta.stimulus_id, meta.type) == ("test-other", f"s-{i}", "region_output/1")
            assert meta.reply == (f"_INBOX.reply.{i}" if i % 2 else None)
        else:
            assert msg.vector is None and meta.source is None
            assert meta.stimulus_id == (f"f-{i}" if kind == "foreign" else None)
    assert "field 'kind'" in bad[0]


class _RecordingClient(FastClient):
    """A FastClient that records what its parser hands to nats-py's own message path."""

    def __init__(self) -> None:
        super().__init__()
        self.to_nats: list[tuple[int, bytes, bytes, bytes, bytes | None]] = []

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any) -> None:
        if sid in self._direct:
            await super()._process_msg(sid, subject, reply, data, headers)
        else:
            self.to_nats.append((sid, subject, reply, data, headers))


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 1000, 1 << 20])
async def test_fast_parser_at_every_split_point(chunk: int) -> None:
    """Protocol lines and payloads cut anywhere between two reads parse the same."""
    nc = _RecordingClient()
    direct: list[tuple[str, str, bytes, Any]] = []
    nc._direct[1] = (lambda *m: direct.append(m), True)
    nc._direct[2] = (lambda *m: direct.append(m), False)  # headers parsed into a dict
    block = b"NATS/1.0\r\nA: 1\r\n\r\n"
    status = b"NATS/1.0 503\r\n\r\n"
    stream = b"".join([
        b"MSG a.b 1 5\r\nhello\r\n",
        b"+OK\r\n",
        b"HMSG a.c 1 _INBOX.x %d %d\r\n%bbody\r\n" % (len(block), len(block) + 4, block),
        b"MSG a.d 9 _INBOX.y 0\r\n\r\n",  # not a direct subscription: nats-py's own path
        b"HMSG a.e 2 %d %d\r\n%bxy\r\n" % (len(block), len(block) + 2, block),
        b"HMSG a.f 1 %d %d\r\n%b\r\n" % (len(status), len(status), status),  # a status line
        b"MSG a.g 1 3\r\n\r\n\r\r\n",  # a payload with CR and LF in it
    ])
    for i in range(0, len(stream), chunk):
        await nc._ps.parse(stream[i:i + chunk])
    assert direct == [
        ("a.b", "", b"hello", None),
        ("a.c", "_INBOX.x", b"body", block),
        ("a.e", "", b"xy", {"A": "1"}),
        ("a.f", "", b"", {"Status": "503"}),
        ("a.g", "", b"\r\n\r", None),
    ]
    assert nc.to_nats == [(9, b"a.d", b"_INBOX.y", b"", None)]
    assert not nc._ps.buf and nc.stats["in_msgs"] == 5


async def test_closing_while_the_server_is_away_drops_the_unsent_and_returns(tmp_path: Any) -> None:
    server = EmbeddedServer(data_dir=tmp_path / "nats", jetstream=False)
    await server.start()
    bus = Bus(server.url, namespace="away", name="leaving")
    await bus.connect()
    try:
        await bus.flush()
        server.kill()
        assert server.proc is not None
        await server.proc.wait()
        await eventually(lambda: bus.state is ConnState.RECONNECTING, what="the bus to notice the outage")
        await bus.publish("stim.text", TextStimulus(text="never delivered"))  # waits in the buffer
        assert bus.nc._pending_data_size > 0
    finally:
        started = time.monotonic()
        # (On Python 3.12 writing it to the lost connection raised TypeError out of `close`.)
        with structlog.testing.capture_logs() as logs:
            await bus.close()
        await server.stop()
    assert bus.state is ConnState.CLOSED and time.monotonic() - started < 5
    dropped = [e for e in logs if e["event"] == "bus.close_dropped_pending"]
    assert len(dropped) == 1 and dropped[0]["messages"] == 1 and dropped[0]["bytes"] > 100
