"""What an agent controls, sent at running actors on a real nats-server: header names and values
(lengths, encodings, status lines), raw protocol lines, finite numbers at float32's extremes.
Each message is rejected or perceived, counted, and reported in a bounded report; no actor dies
and no connection goes deaf.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import numpy as np
import pytest

from actors.actor import Actor, ActorState, on
from bus import Bus, EmbeddedServer, Meta, RegionOutput, SysError, TextStimulus, codec
from bus.codec import MAX_HEADERS
from bus.models import MAX_REASON
from regions.thalamus import Thalamus
from tests.integration.test_fuzz import poll

DIM = 384


def raw_hpub(url: str, subject: bytes, header: bytes, payload: bytes) -> bytes:
    """One HPUB over a raw socket, as any client could write it; returns what the server said."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as s:
        s.recv(65536)  # INFO
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')
        s.sendall(b"HPUB %s %d %d\r\n" % (subject, len(header), len(header) + len(payload))
                  + header + payload + b"\r\nPING\r\n")
        got = b""
        while b"PONG" not in got and b"-ERR" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        return got


class Watch:
    """The thalamus's reports and percepts, as an observer sees them."""

    def __init__(self) -> None:
        self.reports: list[SysError] = []
        self.percepts: list[RegionOutput] = []

    async def start(self, bus: Bus, observer: Bus) -> None:
        async def on_report(msg: SysError, meta: Meta) -> None:
            self.reports.append(msg)

        async def on_percept(msg: RegionOutput, meta: Meta) -> None:
            self.percepts.append(msg)

        await observer.subscribe("sys.error", on_report, model=SysError)
        await observer.subscribe(bus.subjects.region_out("thalamus"), on_percept, model=RegionOutput)
        await observer.flush()


async def answers(thalamus: Thalamus, other_bus: Bus, watch: Watch, sid: str, within: float = 2.0) -> None:
    await other_bus.publish("stim.text", TextStimulus(text=f"are you there {sid}", id=sid))
    await poll(lambda: any(p.stimulus_id == sid for p in watch.percepts), within, f"a percept of {sid}")


@pytest.fixture
async def thalamus(bus: Bus, other_bus: Bus) -> Thalamus:
    actor = Thalamus("thalamus", bus)
    await actor.start()
    await bus.flush()
    yield actor
    await actor.stop()


async def test_huge_header_values_are_rejected_with_a_bounded_report(
        thalamus: Thalamus, bus: Bus, other_bus: Bus, nats_server: EmbeddedServer) -> None:
    watch = Watch()
    await watch.start(bus, other_bus)
    ns = bus.subjects.ns.encode()
    sent = 0
    # A stimulus id of 600 KB on a vector the brain must refuse (two numbers, not 384).
    await other_bus.publish_raw("stim.vector", b'{"vector":[1.0,2.0]}', {"Bb-Sid": "S" * 600_000})
    # A type tag of ~1 MB and a text no one minds: too big for nats-py's own check, so raw.
    for name, value in ((b"Bb-Type", b"T" * 900_000), (b"X-Pad", b"p" * 5000), (b"Bb-Src", b"s" * 70_000)):
        block = b"NATS/1.0\r\n" + name + b": " + value + b"\r\n\r\n"
        said = raw_hpub(nats_server.url, ns + b".stim.text", block, b'{"text":"hello"}')
        assert b"PONG" in said, said[:200]
    sent = 4
    await poll(lambda: thalamus.stats["rejected"] >= sent, 5.0, f"{sent} rejections")
    await poll(lambda: len(watch.reports) >= sent, 5.0, f"{sent} reports")
    for report in watch.reports:
        assert len(report.reason) <= MAX_REASON and report.stimulus_id is None
        assert "exceeds the" in report.reason or "stimulus id" in report.reason, report.reason
    assert thalamus.state is ActorState.RUNNING and thalamus.stats["errors"] == 0
    await answers(thalamus, other_bus, watch, "after-huge-headers")


async def test_stimulus_ids_in_headers_are_held_to_the_id_rule(thalamus: Thalamus, bus: Bus, other_bus: Bus) -> None:
    watch = Watch()
    await watch.start(bus, other_bus)
    for bad in ("x" * 129, "with space", "ütf"):
        await other_bus.publish_raw("stim.text", b'{"text":"hi"}', {"Bb-Sid": bad})
    await poll(lambda: len(watch.reports) >= 3, 5.0, "three reports")
    assert all("is not a stimulus id" in r.reason for r in watch.reports)
    assert thalamus.perceived == 0


async def test_a_status_line_that_is_not_utf8_costs_one_message(
        thalamus: Thalamus, bus: Bus, other_bus: Bus, nats_server: EmbeddedServer) -> None:
    watch = Watch()
    await watch.start(bus, other_bus)
    ns = bus.subjects.ns.encode()
    for block in (b"NATS/1.0 503 \xff\xfe\r\n\r\n", b"NATS/1.0 \xff\r\nA: b\r\n\r\n",
                  b"NATS/1.0 100 Idle\r\n\xc3\x28: \xff\r\n\r\n"):
        raw_hpub(nats_server.url, ns + b".stim.text", block, b'{"text":"status"}')
    # The connection is not deaf: the next stimulus is perceived at once, not after a reconnect.
    await answers(thalamus, other_bus, watch, "after-status-line", within=2.0)
    assert bus.nc.stats["reconnects"] == 0
    assert thalamus.stats["rejected"] >= 1
    assert all(r.kind == "bad_input" for r in watch.reports)


async def test_a_subject_that_is_not_utf8_does_not_stop_a_wildcard_reader(
        bus: Bus, other_bus: Bus, nats_server: EmbeddedServer) -> None:
    seen: list[str] = []

    async def on_any(msg: object) -> None:
        seen.append(msg.subject)  # type: ignore[attr-defined]

    ns = bus.subjects.ns
    await bus.nc.subscribe(f"{ns}.>", cb=on_any)
    await bus.flush()
    raw_hpub(nats_server.url, f"{ns}.x".encode() + b"\xff", b"NATS/1.0\r\nA: b\r\n\r\n", b"{}")
    await other_bus.publish_raw("fine", b"{}")
    await poll(lambda: f"{ns}.fine" in seen, 2.0, "the next message")
    assert bus.nc.stats["reconnects"] == 0


def extreme_vectors(n: int, seed: int = 3) -> list[list[float]]:
    """Vectors mixing float32's largest, smallest and subnormal magnitudes, both signs, and zeros."""
    big, tiny = float(np.finfo(np.float32).max), float(np.finfo(np.float32).smallest_subnormal)
    pool = np.array([big, -big, 1e20, -1e20, 1e19, tiny, -tiny, 1e-38, 0.0, 1.0, -3.5])
    rng = np.random.default_rng(seed)
    out = [pool[rng.integers(0, len(pool), DIM)].tolist() for _ in range(n)]
    return [v for v in out if any(v)]


async def test_finite_extremes_are_perceived_never_crash(thalamus: Thalamus, bus: Bus, other_bus: Bus) -> None:
    watch = Watch()
    await watch.start(bus, other_bus)
    big = np.finfo(np.float32).max
    vectors = [[1e20] * DIM, [-1e20] * DIM, [float(big)] * DIM, [float(-big), float(big)] * (DIM // 2),
               [1e-45] * DIM, [0.0] * (DIM - 1) + [1e-45]] + extreme_vectors(40)
    for i, vector in enumerate(vectors):
        await other_bus.publish_raw("stim.vector", json.dumps({"vector": vector, "id": f"x{i}"}).encode())
    await poll(lambda: len(watch.percepts) >= len(vectors), 10.0, f"{len(vectors)} percepts")
    for percept in watch.percepts:
        assert percept.vector is not None and np.isfinite(percept.vector).all()
        assert abs(float(np.linalg.norm(percept.vector)) - 1.0) < 1e-3
    assert thalamus.state is ActorState.RUNNING and thalamus.restarts == 0 and thalamus.stats["errors"] == 0


async def test_padded_vector_specs_are_refused_and_not_kept(thalamus: Thalamus, bus: Bus, other_bus: Bus) -> None:
    watch = Watch()
    await watch.start(bus, other_bus)
    before = len(codec._spec_cache)
    body = b"{}" + np.ones(DIM, "<f4").tobytes()
    for i in range(50):
        spec = "vector:f32:" + " " * (3000 + i) + str(DIM)
        await other_bus.publish_raw("stim.vector", body, {"Bb-Vec": spec})
    await poll(lambda: thalamus.stats["rejected"] >= 50, 5.0, "50 rejections")
    assert len(codec._spec_cache) == before
    assert all(len(r.reason) <= MAX_REASON for r in watch.reports)
    assert MAX_HEADERS < 3000 or all("malformed" in r.reason for r in watch.reports)


class Fragile(Actor):
    """Fails on the texts it is told to fail on, like a handler meeting content it cannot take."""

    kind = "fragile"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.handled: list[str] = []

    @on("stim.text")
    async def heard(self, msg: TextStimulus, meta: Meta) -> None:
        if msg.text.startswith("poison"):
            raise ZeroDivisionError(f"cannot take {msg.text!r}")
        self.handled.append(msg.text)


async def test_one_message_that_fails_its_handler_does_not_crash_the_actor(bus: Bus, other_bus: Bus) -> None:
    reports: list[SysError] = []

    async def on_report(msg: SysError, meta: Meta) -> None:
        reports.append(msg)

    await other_bus.subscribe("sys.error", on_report, model=SysError)
    await other_bus.flush()
    actor = Fragile("fragile", bus)
    await actor.start()
    await bus.flush()
    try:
        for text in ("poison one", "fine one", "poison two", "poison three", "fine two"):
            await other_bus.publish("stim.text", TextStimulus(text=text))
        await poll(lambda: actor.handled == ["fine one", "fine two"], 5.0, "the good texts handled")
        await poll(lambda: len(reports) == 3, 5.0, "three reports")
        assert actor.state is ActorState.RUNNING and not actor.done.done()
        assert actor.stats["errors"] == 3
        assert {r.kind for r in reports} == {"handler_error"}
        assert reports[0].reason == "ZeroDivisionError: cannot take 'poison one'"
        assert reports[0].subject == bus.subjects.stim_text

        # A fault of the actor fails message after message: that still crashes it.
        for i in range(Fragile.failures_to_crash):
            await other_bus.publish("stim.text", TextStimulus(text=f"poison {i}"))
        await poll(actor.done.done, 5.0, "the crash")
        assert isinstance(actor.done.exception(), ZeroDivisionError)
        await poll(lambda: reports[-1].kind == "crash", 5.0, "a crash report")
    finally:
        await actor.stop()


async def test_a_publish_whose_headers_and_body_pass_the_limit_fails_alone(bus: Bus, other_bus: Bus) -> None:
    """The server counts headers in its payload limit and disconnects a client that passes it."""
    limit = bus.nc.max_payload
    with pytest.raises(Exception, match="payload"):
        await bus.nc.publish(bus.resolve("stim.text"), b"x" * (limit - 100), headers={"A": "b" * 200})
    await other_bus.flush()
    assert bus.nc.is_connected
    await bus.flush()
