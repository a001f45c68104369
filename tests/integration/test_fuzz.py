"""Thousands of malformed messages at a running actor: none reaches a handler, none kills it.

Hypothesis generates the payloads (random bytes, truncated JSON, wrong types, NaN and Inf, huge
numbers, deep nesting, oversized bodies, broken binary vectors, wrong vector dimensions); the
async part then throws all of them at a running thalamus over a real nats-server.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from actors.actor import ActorState
from bus import Bus, Meta, RegionOutput, SysError, TextStimulus, VectorStimulus, codec
from bus.codec import H_TYPE, H_VEC, MAX_BODY
from bus.errors import DecodeError
from bus.models import MAX_STIMULUS_DIM
from regions.thalamus import Thalamus

DIM = 384  # the thalamus's default dimension
N_EXAMPLES, PER_EXAMPLE = 250, 10  # 2500 payloads from hypothesis (plus the oversized few below)

# A payload: (relative subject, body, headers or None)
Payload = tuple[str, bytes, "dict[str, str] | None"]

subjects = st.sampled_from(["stim.text", "stim.vector"])
field_of = {"stim.text": "text", "stim.vector": "vector"}
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
json_scalars = st.none() | st.booleans() | st.integers() | finite32 | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def good_object(subject: str) -> st.SearchStrategy[dict[str, Any]]:
    if subject == "stim.text":
        return st.fixed_dictionaries({"text": st.text(min_size=1, max_size=50)},
                                     optional={"id": st.just("s-1")})
    return st.fixed_dictionaries({"vector": st.lists(finite32, min_size=1, max_size=8)},
                                 optional={"modality": st.just("image")})


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Payload:
    raw = draw(st.binary(max_size=200))
    at = draw(st.integers(0, len(raw)))
    return draw(subjects), raw[:at] + b"\xff" + raw[at:], None  # 0xff never occurs in UTF-8


@st.composite
def truncated_json(draw: st.DrawFn) -> Payload:
    subject = draw(subjects)
    body = _dump(draw(good_object(subject)))
    return subject, body[: draw(st.integers(1, len(body) - 1))], None


@st.composite
def wrong_types(draw: st.DrawFn) -> Payload:
    subject = draw(subjects)
    if subject == "stim.text":
        value = draw(json_values.filter(lambda v: not isinstance(v, str)))
    else:
        bad_item = (st.text(max_size=5) | st.booleans() | st.none()
                    | st.dictionaries(st.text(max_size=3), st.integers()))
        items = draw(st.lists(finite32, max_size=6))
        items.insert(draw(st.integers(0, len(items))), draw(bad_item))
        value = draw(st.sampled_from([items, "1 2 3", 7, {"x": 1}, None, True]))
    return subject, _dump({field_of[subject]: value}), None


@st.composite
def not_finite(draw: st.DrawFn) -> Payload:
    bad = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", '"NaN"', '"inf"', "1e39", "-3.5e38",
                                "1e400", "1" + "0" * 30]))
    items = [repr(x) for x in draw(st.lists(finite32, max_size=6))]
    items.insert(draw(st.integers(0, len(items))), bad)
    subject = draw(subjects)
    if subject == "stim.text":
        if bad.startswith('"'):
            bad = bad.strip('"')  # "NaN" as a string would be fine text: send the bare literal
        return subject, f'{{"text": {bad}}}'.encode(), None
    return subject, f'{{"vector": [{", ".join(items)}]}}'.encode(), None


@st.composite
def deep_nesting(draw: st.DrawFn) -> Payload:
    depth = draw(st.integers(2, 3000))
    subject = draw(subjects)
    inner = "[" * depth + "1" + "]" * depth
    return subject, f'{{"{field_of[subject]}": {inner}}}'.encode(), None


@st.composite
def bad_shape(draw: st.DrawFn) -> Payload:
    subject = draw(subjects)
    obj = draw(st.sampled_from(["missing", "extra", "not_object", "empty"]))
    if obj == "missing":
        body = _dump(draw(st.sampled_from([{}, {"id": "s-1"}, {"modality": "image"}])))
    elif obj == "extra":
        good = draw(good_object(subject))
        good[draw(st.sampled_from(["junk", "Text", "vectors", "_id"]))] = draw(json_values)
        body = _dump(good)
    elif obj == "not_object":
        not_a_dict = json_values.filter(lambda v: not isinstance(v, dict))
        body = b"{" if subject == "stim.text" else _dump(draw(not_a_dict))
    else:
        body = draw(st.sampled_from([b"", b"   ", b"\n\t "]))
    return subject, body, None


@st.composite
def broken_binary(draw: st.DrawFn) -> Payload:
    subject = draw(subjects)
    n = draw(st.integers(1, 64))
    floats = np.random.default_rng(draw(st.integers(0, 2**32))).standard_normal(n).astype("<f4")
    kind = draw(st.sampled_from(["nan", "malformed", "short", "wrong_type"]))
    headers = {H_VEC: f"vector:f32:{n}"}
    if kind == "nan":
        floats[draw(st.integers(0, n - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif kind == "malformed":
        specs = [f"vector:f64:{n}", "vector:f32", f"vec:f32:{n}", f"vector:f32:{n}:x", "vector:f32:-1",
                 "vector:f32:0", "vector:f32:1e3", "", "::", f"vector;f32;{n}"]
        headers[H_VEC] = draw(st.sampled_from(specs) | ascii_text.filter(lambda s: ":" not in s))
    elif kind == "wrong_type":
        headers[H_TYPE] = draw(st.sampled_from(["reward/1", "text_stimulus/2", "vector_stimulus/9", "x"]))
    body = b'{"modality": "image"}' + floats.tobytes()
    if kind == "short":
        body = body[: draw(st.integers(0, len(body) - 1))]
        headers[H_VEC] = f"vector:f32:{n + 100}"  # shorter than the header says whatever the cut
    return subject, body, headers


@st.composite
def wrong_dimension(draw: st.DrawFn) -> Payload:
    """Decodes fine, but the thalamus rejects it in its handler (BadInput): a vector too long to perceive."""
    n = draw(st.integers(MAX_STIMULUS_DIM + 1, MAX_STIMULUS_DIM + 400))
    vector = np.random.default_rng(n).standard_normal(n).astype(np.float32).tolist()
    return "stim.vector", _dump({"vector": vector, "id": f"dim-{n}"}), None


payload = st.one_of(invalid_utf8(), truncated_json(), wrong_types(), not_finite(), deep_nesting(),
                    bad_shape(), broken_binary(), wrong_dimension())


def generate(n_examples: int, per_example: int) -> list[Payload]:
    """Run hypothesis as a generator: collect the examples of a synchronous @given function."""
    out: list[Payload] = []

    @settings(max_examples=n_examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.lists(payload, min_size=per_example, max_size=per_example))
    def collect(batch: list[Payload]) -> None:
        out.extend(batch)

    collect()
    return out


def oversized() -> list[Payload]:
    big_text = b'{"text": "' + b"x" * MAX_BODY + b'"}'
    big_vector = b'{"vector": [' + b"0.5," * (MAX_BODY // 4) + b"0.5]}"
    return [("stim.text", big_text, None), ("stim.vector", big_vector, None),
            ("stim.text", b"y" * (MAX_BODY + 1), None), ("stim.vector", bytes(MAX_BODY + 1), None)] * 3


def rejected_locally(payload: Payload) -> bool:
    """True if the payload never reaches a handler or the thalamus must reject it (sanity check)."""
    subject, body, headers = payload
    model = TextStimulus if subject == "stim.text" else VectorStimulus
    sent_headers = {k: v.strip() for k, v in headers.items()} if headers else None  # nats-py strips values
    try:
        msg, _ = codec.decode(model, body, sent_headers, subject)
    except DecodeError:
        return True
    return isinstance(msg, VectorStimulus) and msg.vector.size > MAX_STIMULUS_DIM


async def poll(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {within} s")
        await asyncio.sleep(0.01)


async def test_malformed_flood_never_kills_the_thalamus(bus: Bus, other_bus: Bus) -> None:
    t_gen = time.monotonic()
    flood = generate(N_EXAMPLES, PER_EXAMPLE) + oversized()
    random.Random(7).shuffle(flood)
    assert len(flood) >= 2000, f"hypothesis produced only {len(flood)} payloads"
    not_rejected = [p for p in flood if not rejected_locally(p)]
    assert not_rejected == [], f"generator produced acceptable payloads: {not_rejected[:3]}"
    gen_s = time.monotonic() - t_gen

    reports: list[SysError] = []
    outputs: list[tuple[RegionOutput, Meta]] = []

    async def on_report(msg: SysError, meta: Meta) -> None:
        reports.append(msg)

    async def on_output(msg: RegionOutput, meta: Meta) -> None:
        outputs.append((msg, meta))

    await other_bus.subscribe("sys.error", on_report, model=SysError)
    await other_bus.subscribe(bus.subjects.region_out("thalamus"), on_output, model=RegionOutput)
    await other_bus.flush()
    actor = Thalamus("thalamus", bus)
    await actor.start()
    await bus.flush()
    try:
        assert actor.state is ActorState.RUNNING

        # The flood.
        for subject, body, headers in flood:
            await other_bus.publish_raw(subject, body, headers)
        await other_bus.flush()
        sent = len(flood)
        await poll(lambda: actor.stats["rejected"] >= sent, 10.0, f"{sent} rejections")

        # One more bad message once the report limiter has a token again (10 per second):
        # its report carries the count of every report suppressed since the last one.
        await asyncio.sleep(0.15)
        await other_bus.publish_raw("stim.vector", b'{"vector": [NaN]}')
        sent += 1
        await poll(lambda: actor.stats["rejected"] >= sent, 5.0, "the last rejection")
        await poll(lambda: len(reports) + sum(r.suppressed for r in reports) >= sent, 5.0, "the last report")

        # Still alive, everything counted, nothing reached the handler as good input.
        assert actor.state is ActorState.RUNNING and not actor.done.done()
        assert actor.stats["rejected"] == sent
        assert actor.stats["errors"] == 0 and actor.stats["dropped"] == 0
        assert actor.perceived == 0 and outputs == []
        assert actor.heartbeat().rejected == sent

        # Reports: rate limited, well formed, and the suppressed counts add up.
        assert 0 < len(reports) < sent / 10
        assert len(reports) + sum(r.suppressed for r in reports) == sent
        assert reports[-1].suppressed > 0 and reports[-1].reason.startswith("field 'vector': contains NaN")
        stim_subjects = {bus.subjects.stim_text, bus.subjects.stim_vector}
        for r in reports:
            assert r.actor == "thalamus" and r.kind == "bad_input"
            assert r.subject in stim_subjects and r.reason
        reasons = " | ".join(r.reason for r in reports)
        families = ["not valid JSON", "must be a JSON object", "not UTF-8", "is missing", "not expected",
                    "NaN or Inf", "only numbers", "a stimulus vector has length 1 to 4,096", "Bb-Vec",
                    "does not fit this subject", "exceeds the", "valid string", "recursion limit"]
        assert sum(f in reasons for f in families) >= 4, reasons

        # And it still does its job: a good stimulus comes out with the right stimulus id.
        await other_bus.publish("stim.text", TextStimulus(text="a good red apple", id="good-text-1"))
        good_vec = np.random.default_rng(0).standard_normal(DIM).astype(np.float32) * 3
        good_body = json.dumps({"vector": good_vec.tolist(), "id": "good-vec-1"}).encode()
        await other_bus.publish_raw("stim.vector", good_body)
        await poll(lambda: len(outputs) == 2, 5.0, "two percepts")
        by_id = {msg.stimulus_id: (msg, meta) for msg, meta in outputs}
        assert set(by_id) == {"good-text-1", "good-vec-1"}
        for sid, (msg, meta) in by_id.items():
            assert meta.stimulus_id == sid and meta.source == "thalamus"
            assert msg.region == "thalamus" and msg.kind == "percept"
            assert msg.vector is not None and msg.vector.shape == (DIM,)
            assert abs(float(np.linalg.norm(msg.vector)) - 1.0) < 1e-4
        assert by_id["good-text-1"][0].data | {"habituation": 1.0} == {
            "modality": "text", "text": "a good red apple", "habituation": 1.0}
        unit = good_vec / np.linalg.norm(good_vec)
        np.testing.assert_allclose(by_id["good-vec-1"][0].vector, unit, rtol=1e-5, atol=1e-7)
        assert actor.perceived == 2 and actor.stats["rejected"] == sent
        assert gen_s < 15, f"generating the payloads took {gen_s:.1f} s"
    finally:
        await actor.stop()
    assert actor.state is ActorState.STOPPED
