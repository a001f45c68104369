"""The codec (models ↔ bytes), the subject rules, and the schema export."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
import orjson
import pytest
from pydantic import AfterValidator, model_validator

from bus import codec
from bus.codec import (
    H_ID,
    H_SID,
    H_SRC,
    H_TS,
    H_TYPE,
    H_VEC,
    MAX_BODY,
    Headers,
    decode,
    decode_any,
    encode,
    encode_wire,
    parse_header_block,
    to_json,
    trace_fields,
)
from bus.errors import DecodeError, SubjectError
from bus.models import (
    Bid,
    Broadcast,
    CtlReply,
    CtlRequest,
    EnvActions,
    Heartbeat,
    MemHit,
    MemRecall,
    MemRecallReply,
    MemReplay,
    MemStore,
    MemStoreAck,
    Message,
    MotorAction,
    NeuromodEvent,
    NeuromodLevels,
    RegionOutput,
    Reward,
    SysError,
    TextStimulus,
    Vector,
    VectorStimulus,
    model_for_subject,
    model_for_type,
    registered,
)
from bus.schema import write_schema
from bus.subjects import Subjects, match, validate_subject, validate_token

SUBJ = "brain.test"


def vec(n: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


# One valid instance of every registered model, as rich as the model allows.
EXAMPLES: dict[type[Message], Callable[[], Message]] = {
    TextStimulus: lambda: TextStimulus(text="a red apple ✓", id="s-1"),
    VectorStimulus: lambda: VectorStimulus(vector=vec(384), modality="image", id="s-2"),
    EnvActions: lambda: EnvActions(actions=["left", "right", "ui:click.ok"], env="grid"),
    Reward: lambda: Reward(value=-0.75, stimulus_id="s-1", action="left"),
    MotorAction: lambda: MotorAction(action="left", stimulus_id="s-1", confidence=0.9, margin=0.3),
    Bid: lambda: Bid(source="valence", kind="value", salience=2.5, content=vec(), stimulus_id="s-1",
                     detail={"why": ["x", 1]}),
    Broadcast: lambda: Broadcast(cycle=7, source="valence", salience=2.5, kind="value", content=vec(),
                                 stimulus_id="s-1", beat=[{"source": "a", "salience": 1.0}],
                                 detail={"n": 2}),
    NeuromodLevels: lambda: NeuromodLevels(dopamine=0.1, serotonin=0.2, norepinephrine=0.3,
                                           acetylcholine=0.4, baseline={"dopamine": 0.5}, frozen=True,
                                           oxytocin=0.6),
    NeuromodEvent: lambda: NeuromodEvent(kind="novelty", value=-0.2, source="valence", stimulus_id="s-1"),
    MemStore: lambda: MemStore(key=vec(32), stimulus_id="s-1", action="left", reward=1.0, salience=3.0,
                               hormones={"dopamine": 0.5}),
    MemStoreAck: lambda: MemStoreAck(shard="shard-0", episode_id=12),
    MemRecall: lambda: MemRecall(query=vec(32), k=5, with_keys=True),
    MemRecallReply: lambda: MemRecallReply(
        hits=[MemHit(shard="shard-0", episode_id=1, score=0.5, stimulus_id="s-1", action="left", reward=0.1,
                     key=[0.5, -0.25])],
        shards_asked=2, shards_answered=1, partial=True),
    MemReplay: lambda: MemReplay(key=vec(32), action="left", reward=-0.5, salience=1.5, episode_id=3,
                                 shard="shard-0", stimulus_id="s-1"),
    RegionOutput: lambda: RegionOutput(region="thalamus", kind="percept", stimulus_id="s-1", vector=vec(384),
                                       data={"modality": "text"}),
    Heartbeat: lambda: Heartbeat(actor="thalamus", kind="thalamus", state="running", pid=42, msgs_in=3,
                                 latency_ms_p50=0.25, stats={"perceived": 3}),
    SysError: lambda: SysError(actor="thalamus", subject="brain.stim.text", reason="bad", suppressed=4,
                               stimulus_id="s-1"),
    CtlRequest: lambda: CtlRequest(verb="snapshot", args={"path": "/tmp/x"}),
    CtlReply: lambda: CtlReply(actor="thalamus", verb="status", ok=True, state="running", data={"a": [1]}),
}


def assert_same(a: Message, b: Message) -> None:
    """Models equal field by field (numpy arrays compared exactly, bit for bit)."""
    assert type(a) is type(b)
    da, db = dict(a), dict(b)
    assert da.keys() == db.keys()
    for name, value in da.items():
        if isinstance(value, np.ndarray):
            assert isinstance(db[name], np.ndarray) and db[name].dtype == np.float32
            assert value.tobytes() == db[name].tobytes(), name
        else:
            assert value == db[name], name
    assert a.model_extra == b.model_extra


def reason_of(model: type[Message], data: bytes, headers: Headers = None) -> str:
    with pytest.raises(DecodeError) as info:
        decode(model, data, headers, SUBJ)
    assert info.value.subject == SUBJ
    assert str(info.value) == f"{SUBJ}: {info.value.reason}"
    return info.value.reason


# ---------------------------------------------------------------- round trips


def test_every_registered_model_has_an_example() -> None:
    assert set(registered()) == set(EXAMPLES)


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
def test_round_trip_with_headers(cls: type[Message]) -> None:
    original = EXAMPLES[cls]()
    body, headers = encode(original, source="tester", stimulus_id="s-1")
    assert headers[H_TYPE] == f"{cls.TYPE}/{cls.VERSION}"
    assert headers[H_SRC] == "tester" and headers[H_SID] == "s-1" and headers[H_ID]
    assert headers[H_TS]
    assert (H_VEC in headers) == any(getattr(original, n) is not None for n in cls.VECTOR_FIELDS)
    decoded, meta = decode(cls, body, headers, SUBJ, reply="_INBOX.1")
    assert_same(original, decoded)
    assert (meta.subject, meta.reply, meta.source, meta.stimulus_id) == (SUBJ, "_INBOX.1", "tester", "s-1")
    assert meta.type == cls.type_tag() and meta.size == len(body)
    assert meta.ts is not None and abs(meta.ts - time.time()) < 60  # unix time in seconds
    assert decode_any(body, headers, SUBJ) is not None


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
def test_round_trip_as_plain_json(cls: type[Message]) -> None:
    """What an outside client does: the JSON of `to_json`, no headers at all."""
    original = EXAMPLES[cls]()
    decoded, meta = decode(cls, to_json(original), None, SUBJ)
    assert_same(original, decoded)
    assert meta.type is None and meta.source is None


def test_stimulus_id_comes_from_body_when_no_header() -> None:
    _, meta = decode(Reward, b'{"value": 0.5, "stimulus_id": "abc"}', None, SUBJ)
    assert meta.stimulus_id == "abc"
    _, meta = decode(TextStimulus, b'{"text": "x", "id": "t-9"}', None, SUBJ)
    assert meta.stimulus_id == "t-9"
    _, meta = decode(TextStimulus, b'{"text": "x", "id": "t-9"}', {H_SID: "from-header"}, SUBJ)
    assert meta.stimulus_id == "from-header"


def test_vector_encoding_is_compact_and_exact() -> None:
    v = vec(384, seed=5)
    v[0] = np.float32(1e-45)  # a subnormal survives too
    body, headers = encode(VectorStimulus(vector=v))
    assert headers[H_VEC] == "vector:f32:384"
    assert body.endswith(v.astype("<f4").tobytes())
    json_part = body[: -384 * 4]
    assert orjson.loads(json_part) == {"modality": "vector", "id": None, "episode": None}
    assert len(body) < 384 * 4 + 64
    out = decode(VectorStimulus, body, headers, SUBJ)[0].vector
    assert out.tobytes() == v.tobytes() and out.flags.writeable


def test_f16_vectors_decode_to_float32() -> None:
    v = np.array([0.5, -2.0, 1024.0], dtype="<f2")
    out = decode(VectorStimulus, b"{}" + v.tobytes(), {H_VEC: "vector:f16:3"}, SUBJ)[0].vector
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [0.5, -2.0, 1024.0])


def test_plain_text_bodies() -> None:
    assert decode(TextStimulus, b"  hello world\n", None, SUBJ)[0] == TextStimulus(text="hello world")
    assert decode(TextStimulus, "héllo".encode(), None, SUBJ)[0].text == "héllo"
    assert decode(CtlRequest, b"pause", None, SUBJ)[0] == CtlRequest(verb="pause")
    # Other subjects accept JSON objects only.
    assert reason_of(Reward, b"0.5") == "body must be a JSON object"


def test_model_registry_lookup() -> None:
    assert model_for_subject("stim.text") is TextStimulus
    assert model_for_subject("region.visual.out") is RegionOutput
    assert model_for_subject("sys.heartbeat.thalamus") is Heartbeat
    assert model_for_subject("sys.ctl.all") is CtlRequest
    assert model_for_subject("region.visual") is None
    assert model_for_subject("no.such.subject") is None
    assert model_for_type("text_stimulus") is TextStimulus
    assert model_for_type("nope") is None
    assert decode_any(b'{"text": "x"}', None, SUBJ) is None  # untyped: nothing to go by
    assert decode_any(b"{}", {H_TYPE: "nope/1"}, SUBJ) is None


# ---------------------------------------------------------------- decode errors


def test_not_utf8() -> None:
    assert reason_of(Reward, b"\xff\xfe{}") == "body is not UTF-8 JSON"
    assert reason_of(TextStimulus, b"caf\xe9") == "body is neither a JSON object nor UTF-8 text"


def test_not_json() -> None:
    reason = reason_of(Reward, b'{"value": 0.5')
    assert reason.startswith("body is not valid JSON (") and "EOF" in reason
    assert reason_of(Reward, b'{"value": 0.5} trailing').startswith("body is not valid JSON (trailing")
    assert reason_of(TextStimulus, b"{not json}").startswith("body is not valid JSON")
    assert "recursion limit" in reason_of(TextStimulus, b'{"text": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"42", b"null", b"", b"   "])
def test_json_that_is_not_an_object(body: bytes) -> None:
    assert reason_of(Reward, body) == "body must be a JSON object"


def test_wrong_types() -> None:
    assert reason_of(TextStimulus, b'{"text": 5}') == "field 'text': Input should be a valid string (got 5)"
    reason = reason_of(Reward, b'{"value": "lots"}')
    assert reason.startswith("field 'value': Input should be a valid number") and "'lots'" in reason
    reason = reason_of(EnvActions, b'{"actions": "left"}')
    assert reason == "field 'actions': Input should be a valid array (got 'left')"
    reason = reason_of(NeuromodEvent, b'{"kind": "joy", "value": 0}')
    assert reason.startswith("field 'kind': Input should be 'reward', ") and reason.endswith("(got 'joy')")
    reason = reason_of(EnvActions, b'{"actions": ["ok", "not ok", 3]}')
    assert "field 'actions.1'" in reason and "field 'actions.2'" in reason


def test_many_errors_are_summarised() -> None:
    reason = reason_of(Heartbeat, b'{"actor": 1, "kind": 2, "state": 3, "pid": "x", "msgs_in": "y"}')
    assert reason.count("field ") == 3 and reason.endswith("; and 2 more")


def test_missing_fields() -> None:
    assert reason_of(Reward, b"{}") == "field 'value' is missing"
    assert reason_of(MotorAction, b'{"action": "left"}') == (
        "field 'stimulus_id' is missing; field 'confidence' is missing"
    )


def test_unexpected_field() -> None:
    assert reason_of(Reward, b'{"value": 0, "bonus": 1}') == "field 'bonus' is not expected"
    assert reason_of(TextStimulus, b'{"text": "x", "txt": "y"}') == "field 'txt' is not expected"


NAN_OR_INF = "contains NaN or Inf (or a number too large for float32)"


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e39", b"-1e400"])
def test_nan_inf_and_huge_numbers_in_json_vectors(literal: bytes) -> None:
    reason = reason_of(VectorStimulus, b'{"vector": [0.5, ' + literal + b"]}")
    assert reason.startswith(f"field 'vector': {NAN_OR_INF}")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b'"NaN"', b'"Infinity"', b'"-inf"'])
def test_nan_and_inf_in_number_fields(literal: bytes) -> None:
    reason = reason_of(Reward, b'{"value": ' + literal + b"}")
    assert reason.startswith("field 'value': Input should be a finite number")


def test_nan_strings_in_vectors_are_not_numbers() -> None:
    assert reason_of(VectorStimulus, b'{"vector": ["NaN", "1.5"]}') == (
        "field 'vector': must contain only numbers (got ['NaN', '1.5'])"
    )


def test_too_large_number() -> None:
    reason = reason_of(Reward, b'{"value": 1e39}')
    assert reason == "field 'value': Input should be less than or equal to 10000 (got 1e+39)"
    assert reason_of(VectorStimulus, b'{"vector": [1' + b"0" * 40 + b"]}").startswith(
        "field 'vector': must contain only numbers")  # an integer beyond 64 bits


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_in_binary_vectors(bad: float) -> None:
    v = vec(8)
    v[3] = bad
    reason = reason_of(VectorStimulus, b"{}" + v.tobytes(), {H_VEC: "vector:f32:8"})
    assert reason.startswith(f"field 'vector': {NAN_OR_INF}")
    h = v.astype("<f2")
    assert reason_of(VectorStimulus, b"{}" + h.tobytes(), {H_VEC: "vector:f16:8"}).startswith(
        f"field 'vector': {NAN_OR_INF}")


@pytest.mark.parametrize(("items", "got"), [
    (b'["a", "b"]', "['a', 'b']"),
    (b"[true, false]", "[True, False]"),
    (b"[1, true]", "[1, True]"),
    (b"[0.5, false, 2]", "[0.5, False, 2]"),
    (b"[1, null]", "[1, None]"),
    (b'[1, {"a": 2}]', "[1, {'a': 2}]"),
])
def test_vector_of_non_numbers(items: bytes, got: str) -> None:
    reason = reason_of(VectorStimulus, b'{"vector": ' + items + b"}")
    assert reason.startswith("field 'vector': must contain only numbers") and reason.endswith(f"(got {got})")


def test_vector_shapes() -> None:
    assert "is empty (length 0)" in reason_of(VectorStimulus, b'{"vector": []}')
    assert "got shape (2, 2)" in reason_of(VectorStimulus, b'{"vector": [[1, 2], [3, 4]]}')
    assert reason_of(VectorStimulus, b'{"vector": "1 2 3"}').startswith(
        "field 'vector': must be an array of numbers, got str")
    too_long = b"{}" + np.ones(8193, "<f4").tobytes()
    reason = reason_of(VectorStimulus, too_long, {H_VEC: "vector:f32:8193"})
    assert "1..8192 numbers, got shape (8193,)" in reason


def test_too_large_body() -> None:
    body = orjson.dumps({"text": "x" * MAX_BODY})
    assert reason_of(TextStimulus, body) == f"payload of {len(body)} bytes exceeds the {MAX_BODY} byte limit"
    at_limit = b'{"vector": [' + b"0," * ((MAX_BODY - 20) // 2) + b"0]}"
    assert len(at_limit) <= MAX_BODY
    assert "8192" in reason_of(VectorStimulus, at_limit)  # under the byte limit: the dimension limit bites


def test_text_limits() -> None:
    assert reason_of(TextStimulus, b"   ") == "field 'text': String should have at least 1 character (got '')"
    assert "at most 10000 characters" in reason_of(TextStimulus, b"x" * 10_001)
    assert "should match pattern" in reason_of(TextStimulus, b'{"text": "x", "id": "has space"}')


def test_wrong_type_header_for_subject() -> None:
    body, headers = encode(TextStimulus(text="hi"))
    assert reason_of(Reward, body, headers) == (
        "message type 'text_stimulus/1' does not fit this subject (expected 'reward/1')"
    )
    assert "does not fit" in reason_of(TextStimulus, body, {**headers, H_TYPE: "text_stimulus/2"})


def test_bad_timestamp_header() -> None:
    reason = reason_of(Reward, b'{"value": 0}', {H_TS: "yesterday"})
    assert reason.startswith("header Bb-Ts 'yesterday' is not a")


@pytest.mark.parametrize("spec", [
    "vector", "vector:f32", "vector:f32:4:1", "vector:f64:4", "vector:f32:four", "vector:f32:0",
    "vector:f32:-4", "vector:f32:65537", "other:f32:4", "vector:f32:4,", "vector:f32:4,,",
])
def test_malformed_vec_header(spec: str) -> None:
    body = b"{}" + np.ones(4, "<f4").tobytes()
    assert reason_of(VectorStimulus, body, {H_VEC: spec}).startswith(f"header Bb-Vec {spec!r} is malformed")


def test_vec_header_on_a_model_without_vectors() -> None:
    assert "malformed" in reason_of(Reward, b'{"value": 0}' + bytes(16), {H_VEC: "vector:f32:4"})


def test_body_shorter_than_vec_header() -> None:
    body = b"{}" + np.ones(4, "<f4").tobytes()
    assert reason_of(VectorStimulus, body, {H_VEC: "vector:f32:5"}) == (
        f"body of {len(body)} bytes is shorter than Bb-Vec needs (20)"
    )
    # Exactly as long as the vector bytes: no JSON left in front of them.
    reason = reason_of(VectorStimulus, np.ones(4, "<f4").tobytes(), {H_VEC: "vector:f32:4"})
    assert reason.startswith("body is not valid JSON")


def test_json_part_of_a_binary_body_must_be_an_object() -> None:
    body = b"[1]" + np.ones(4, "<f4").tobytes()
    assert reason_of(VectorStimulus, body, {H_VEC: "vector:f32:4"}) == "body must be a JSON object"
    body = b'{"modality": 5}' + np.ones(4, "<f4").tobytes()
    assert reason_of(VectorStimulus, body, {H_VEC: "vector:f32:4"}).startswith("field 'modality'")


def test_binary_vector_with_both_infinities() -> None:
    """+Inf and -Inf together make the finiteness check's sum "invalid": still a plain rejection."""
    v = vec(8)
    v[1], v[5] = np.inf, -np.inf
    reason = reason_of(VectorStimulus, b"{}" + v.tobytes(), {H_VEC: "vector:f32:8"})
    assert reason.startswith(f"field 'vector': {NAN_OR_INF}")


def test_json_vectors_of_floats_convert_like_any_array() -> None:
    """The quick conversion of all-float JSON arrays gives what numpy's general one gives."""
    values = np.random.default_rng(3).standard_normal(384) * 1e3
    values[:4] = [1e-46, -3.4e38, 3.4028234663852886e38, 0.1]  # below float32's range; at its edges
    out = decode(VectorStimulus, orjson.dumps({"vector": values.tolist()}), None, SUBJ)[0].vector
    assert out.dtype == np.float32 and out.flags.writeable and out.flags.owndata
    assert out.tobytes() == values.astype(np.float32).tobytes()
    # Integers, alone or with floats, take the general path: the same numbers.
    out = decode(VectorStimulus, b'{"vector": [1, 0.5, -2]}', None, SUBJ)[0].vector
    np.testing.assert_array_equal(out, np.array([1, 0.5, -2], np.float32))
    # Just above float32's largest number, yet rounding to it: accepted, as numpy's cast does.
    out = decode(VectorStimulus, b'{"vector": [3.4028235e38, 1.0]}', None, SUBJ)[0].vector
    assert out[0] == np.finfo(np.float32).max


@pytest.mark.parametrize("head", [b'{"vector": [1.0, 2.0]}', b'{"vector": "x"}', b'{"vector": null}'])
def test_vector_both_in_the_json_and_in_the_bytes(head: bytes) -> None:
    body = head + vec(4).tobytes()
    assert reason_of(VectorStimulus, body, {H_VEC: "vector:f32:4"}) == (
        "field 'vector' is both in the JSON and in the Bb-Vec header")
    body = b'{"region": "r", "kind": "k", ' + head[1:] + vec(4).tobytes()
    assert reason_of(RegionOutput, body, {H_VEC: "vector:f32:4"}) == (
        "field 'vector' is both in the JSON and in the Bb-Vec header")


def test_a_vector_named_twice_in_the_header() -> None:
    body = b"{}" + vec(8).tobytes()
    spec = "vector:f32:4,vector:f32:4"
    assert reason_of(VectorStimulus, body, {H_VEC: spec}).startswith(f"header Bb-Vec {spec!r} is malformed")


REQUIRED_VECTOR = [VectorStimulus, Bid, Broadcast, MemStore, MemRecall, MemReplay]


@pytest.mark.parametrize("cls", [*REQUIRED_VECTOR, RegionOutput], ids=lambda c: c.__name__)
def test_binary_vectors_decode_as_the_model_validates_them(cls: type[Message]) -> None:
    """Our JSON-then-bytes bodies are validated in two steps (the JSON, then each vector): the same
    model, the same set fields, as the model's own validator gives for the whole as a dict."""
    original = EXAMPLES[cls]()
    (name,) = cls.VECTOR_FIELDS
    body, block = encode_wire(original, source="tester")
    decoded = decode(cls, body, block, SUBJ)[0]
    head = body[: -getattr(original, name).nbytes]
    whole = cls.model_validate({**orjson.loads(head), name: getattr(original, name)})
    assert_same(whole, decoded)
    assert decoded.model_fields_set == whole.model_fields_set
    # The model itself is untouched: its own validator still requires the vector.
    assert cls.__pydantic_complete__
    if cls is not RegionOutput:
        assert reason_of(cls, head) == f"field {name!r} is missing"
        assert reason_of(cls, head, {H_TYPE: cls.TAG}) == f"field {name!r} is missing"


@pytest.mark.parametrize("cls", REQUIRED_VECTOR, ids=lambda c: c.__name__)
def test_json_in_front_of_vector_bytes_is_validated_on_its_own(cls: type[Message]) -> None:
    """The quick path is there for every model with vectors (pydantic-core could quietly hand back
    the model's own validator, which requires the vector, and every message would take the slow one)."""
    head = codec._head_validator(cls)
    assert head is not None and head[0] is not cls.__pydantic_validator__
    assert head[1] == set(cls.VECTOR_FIELDS)
    body, _ = encode_wire(EXAMPLES[cls](), source="x")
    (name,) = cls.VECTOR_FIELDS
    assert getattr(head[0].validate_json(body[: -getattr(EXAMPLES[cls](), name).nbytes]), name) is None
    assert codec._head_validator(RegionOutput) == (RegionOutput.__pydantic_validator__, frozenset())
    assert codec._head_validator(_Checked) is None and codec._head_validator(_Paired) is None


def test_a_head_validator_that_still_requires_the_vector_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "_unshared_validator", lambda model, schema: model.__pydantic_validator__)
    assert codec._build_head_validator(MemStore) is None
    assert codec._build_head_validator(RegionOutput) is not None  # its own validator, no change needed


def test_optional_vector_absent_or_present() -> None:
    for vector in (None, vec(384)):
        original = RegionOutput(region="cortex", kind="embedding", vector=vector)
        body, block = encode_wire(original, source="tester")
        assert (b"Bb-Vec" in block) == (vector is not None)
        decoded = decode(RegionOutput, body, block, SUBJ)[0]
        assert_same(original, decoded)
        assert decoded.model_fields_set == {"region", "kind", "stimulus_id", "vector", "data"}


def test_f16_vectors_from_a_header_block() -> None:
    v = np.array([0.5, -2.0, 1024.0, 65504.0], dtype="<f2")
    block = block_of(f"{H_TYPE}: {MemStore.TAG}", f"{H_SRC}: x", f"{H_ID}: 1", f"{H_TS}: 1",
                     f"{H_VEC}: key:f16:4")
    msg = decode(MemStore, b'{"salience": 2}' + v.tobytes(), block, SUBJ)[0]
    assert msg.key.dtype == np.float32 and msg.key.flags.writeable and msg.salience == 2.0
    np.testing.assert_array_equal(msg.key, v.astype(np.float32))
    assert msg.model_fields_set == {"key", "salience"}


@pytest.mark.parametrize(("head", "expected"), [
    (b'{"salience": 99}', "field 'salience': Input should be less than or equal to 10 (got 99)"),
    (b'{"salience": 1, "junk": 1}', "field 'junk' is not expected"),
    (b'{"salience": 1', "body is not valid JSON ("),
    (b"[1]", "body must be a JSON object"),
])
def test_bad_json_in_front_of_vector_bytes(head: bytes, expected: str) -> None:
    body, block = encode_wire(MemStore(key=vec(4)), source="x")
    assert reason_of(MemStore, head + body[-16:], block).startswith(expected)


def _unit_norm(v: np.ndarray) -> np.ndarray:
    if abs(float(np.linalg.norm(v)) - 1.0) > 1e-3:
        raise ValueError("must have unit length")
    return v


class _Checked(Message):
    """A model whose vector has a check of its own (not registered: a test double)."""

    TAG: ClassVar[str] = "checked/1"
    VECTOR_FIELDS: ClassVar[tuple[str, ...]] = ("v",)
    v: Annotated[Vector, AfterValidator(_unit_norm)]
    n: int = 0


class _Paired(Message):
    """A model that looks at its fields together (not registered)."""

    TAG: ClassVar[str] = "paired/1"
    VECTOR_FIELDS: ClassVar[tuple[str, ...]] = ("v",)
    v: Vector
    n: int

    @model_validator(mode="after")
    def _length_matches(self) -> _Paired:
        if self.v.size != self.n:
            raise ValueError("n must be the vector's length")
        return self


def test_models_with_more_checks_keep_them_on_binary_vectors() -> None:
    unit = np.array([0.6, 0.8], dtype=np.float32)
    assert decode(_Checked, b'{"n": 1}' + unit.tobytes(), {H_VEC: "v:f32:2"}, SUBJ)[0].n == 1
    assert reason_of(_Checked, b"{}" + (unit * 2).tobytes(), {H_VEC: "v:f32:2"}).startswith(
        "field 'v': must have unit length")
    assert decode(_Paired, b'{"n": 2}' + unit.tobytes(), {H_VEC: "v:f32:2"}, SUBJ)[0].n == 2
    assert "n must be the vector's length" in reason_of(_Paired, b'{"n": 3}' + unit.tobytes(), {H_VEC: "v:f32:2"})


# ---------------------------------------------------------------- header blocks (the direct path)


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
@pytest.mark.parametrize("stimulus_id", [None, "s-1"])
def test_header_block_round_trip(cls: type[Message], stimulus_id: str | None) -> None:
    """A block from `encode_wire`, read as received, gives what its parsed headers give."""
    original = EXAMPLES[cls]()
    body, block = encode_wire(original, source="tester", stimulus_id=stimulus_id)
    headers = parse_header_block(block)
    assert headers is not None and headers[H_SRC] == "tester" and headers.get(H_SID) == stimulus_id
    from_block, meta = decode(cls, body, block, SUBJ, reply="_INBOX.1")
    from_dict, meta_dict = decode(cls, body, headers, SUBJ, reply="_INBOX.1")
    assert_same(original, from_block)
    assert_same(from_dict, from_block)
    assert meta == meta_dict
    assert (meta.type, meta.source, meta.reply, meta.size) == (cls.type_tag(), "tester", "_INBOX.1", len(body))
    assert meta.ts is not None and abs(meta.ts - time.time()) < 60


def test_message_ids_are_unique() -> None:
    ids = {parse_header_block(encode_wire(Reward(value=0.0), source="x")[1])[H_ID]  # type: ignore[index]
           for _ in range(1000)}
    assert len(ids) == 1000


def block_of(*lines: str) -> bytes:
    return ("NATS/1.0\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode()


def test_header_blocks_of_other_clients() -> None:
    """Blocks in another order, with more headers or other spellings are read like a dict."""
    v = vec(8)
    body = b'{"modality": "image"}' + v.tobytes()
    for block in (
        block_of(f"{H_VEC}: vector:f32:8", f"{H_TYPE}: vector_stimulus/1", f"{H_SID}: s-9", "Trace: abc"),
        block_of(f"{H_TYPE}:vector_stimulus/1", f"{H_VEC}:vector:f32:8", f"{H_SID}:  s-9"),
    ):
        msg, meta = decode(VectorStimulus, body, block, SUBJ)
        assert msg.vector.tobytes() == v.tobytes() and msg.modality == "image"
        assert (meta.type, meta.stimulus_id, meta.source) == ("vector_stimulus/1", "s-9", None)


def test_header_block_errors_are_the_same_as_for_dicts() -> None:
    body, block = encode_wire(TextStimulus(text="hi"), source="x")
    assert reason_of(Reward, body, block) == (
        "message type 'text_stimulus/1' does not fit this subject (expected 'reward/1')")
    stale = block_of(f"{H_TYPE}: reward/1", f"{H_SRC}: x", f"{H_ID}: 1", f"{H_TS}: yesterday")
    assert reason_of(Reward, b'{"value": 0}', stale).startswith(
        "header Bb-Ts 'yesterday' is not a")
    v = vec(8)
    v[7] = np.inf
    body, block = encode_wire(VectorStimulus(vector=vec(8)), source="x")
    assert reason_of(VectorStimulus, body[:-32] + v.tobytes(), block).startswith(
        f"field 'vector': {NAN_OR_INF}")
    assert reason_of(VectorStimulus, b"{}", block) == "body of 2 bytes is shorter than Bb-Vec needs (32)"


@pytest.mark.parametrize("bad", ["s-1\r\nBb-Type: reward/1", "s\n", "\r"])
def test_line_breaks_cannot_enter_a_header_block(bad: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        encode_wire(Reward(value=0.0), source="x", stimulus_id=bad)
    with pytest.raises(ValueError, match="line break"):
        encode_wire(Reward(value=0.0), source=bad)


def test_decode_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="is missing"):
        decode(Reward, b"{}", None, SUBJ)


# ---------------------------------------------------------------- subjects


@pytest.mark.parametrize("token", ["brain", "a", "a_b-c9", "0", "x" * 64])
def test_valid_tokens(token: str) -> None:
    assert validate_token(token) == token


@pytest.mark.parametrize("token", ["", "Brain", "a.b", "a b", "*", ">", "é", "a/b", "a\n", "a\r\n", "\na"])
def test_invalid_tokens(token: str) -> None:
    with pytest.raises(SubjectError, match="must be lowercase letters, digits"):
        validate_token(token, what="actor name")


def test_namespace_is_validated() -> None:
    with pytest.raises(SubjectError, match="namespace 'My.Brain'"):
        Subjects("My.Brain")


@pytest.mark.parametrize("subject", ["a", "brain.stim.text", "brain.region.visual_1.out"])
def test_valid_subjects(subject: str) -> None:
    assert validate_subject(subject) == subject
    assert validate_subject(subject, wildcards=True) == subject


@pytest.mark.parametrize(("subject", "message"), [
    ("", "must be 1..256 characters, got 0"),
    ("a." * 200 + "a", "must be 1..256 characters, got 401"),
    ("brain..text", "token '' must be lowercase"),
    ("brain.stim.", "token '' must be lowercase"),
    (".brain", "token '' must be lowercase"),
    ("brain.Stim", "token 'Stim' must be lowercase"),
    ("brain.st im", "token 'st im' must be lowercase"),
    ("brain.stim.text\n", r"token 'text\n' must be lowercase"),  # would break the NATS protocol line
    ("brain.*", "a wildcard is not allowed here"),
    ("brain.>", "a wildcard is not allowed here"),
])
def test_invalid_concrete_subjects(subject: str, message: str) -> None:
    with pytest.raises(SubjectError, match=re.escape(message)):
        validate_subject(subject)


def test_wildcard_rules() -> None:
    for pattern in ("brain.*", "brain.>", ">", "*", "brain.*.out", "brain.*.>", "*.*.*"):
        assert validate_subject(pattern, wildcards=True) == pattern
    for pattern in ("brain.>.out", ">.a", "brain.>.>"):
        with pytest.raises(SubjectError, match="'>' must be the last token"):
            validate_subject(pattern, wildcards=True)
    for pattern in ("brain.st*", "brain.a>", "brain.**"):
        with pytest.raises(SubjectError, match="must be lowercase"):
            validate_subject(pattern, wildcards=True)


def test_subjects_full_and_relative() -> None:
    s = Subjects("brain")
    assert s.full("stim.text") == "brain.stim.text"
    assert s.full("brain.stim.text") == "brain.stim.text"  # full subjects pass through
    assert s.full("brainy.stim") == "brain.brainy.stim"  # a prefix of a token is not the namespace
    assert s.full("other.stim.text") == "brain.other.stim.text"
    assert s.full("region.*.out", wildcards=True) == "brain.region.*.out"
    assert s.full(">", wildcards=True) == "brain.>"
    with pytest.raises(SubjectError, match="wildcard"):
        s.full("region.*.out")
    with pytest.raises(SubjectError):
        s.full("Stim.Text")
    assert s.relative("brain.stim.text") == "stim.text"
    assert s.relative("brain.region.visual.out") == "region.visual.out"
    for outside in ("other.stim.text", "brainy.stim", "brain"):
        with pytest.raises(SubjectError, match="outside namespace 'brain'"):
            s.relative(outside)
    assert s.relative(s.full("mem.recall")) == "mem.recall"


def test_named_subjects() -> None:
    s = Subjects("t7")
    assert (s.stim_text, s.stim_vector) == ("t7.stim.text", "t7.stim.vector")
    assert (s.motor_action, s.sys_error, s.mem_recall) == ("t7.motor.action", "t7.sys.error", "t7.mem.recall")
    assert s.region_out("thalamus") == "t7.region.thalamus.out"
    assert s.heartbeat("wm") == "t7.sys.heartbeat.wm" and s.heartbeats == "t7.sys.heartbeat.*"
    assert s.ctl("wm") == "t7.sys.ctl.wm" and s.ctl_all == "t7.sys.ctl.all"
    assert s.all == "t7.>" and s.stim == "t7.stim.>"
    with pytest.raises(SubjectError, match="region name 'Bad.Name'"):
        s.region_out("Bad.Name")
    with pytest.raises(SubjectError, match="actor name"):
        s.ctl("*")


@pytest.mark.parametrize(("pattern", "subject", "expected"), [
    ("a.b.c", "a.b.c", True),
    ("a.b.c", "a.b.d", False),
    ("a.b", "a.b.c", False),
    ("a.b.c", "a.b", False),
    ("a.*.c", "a.x.c", True),
    ("a.*.c", "a.x.y.c", False),
    ("a.*", "a", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("a.>", "a.b", True),
    ("a.>", "a.b.c.d", True),
    ("a.>", "a", False),
    (">", "a.b", True),
    ("*.b.>", "a.b.c", True),
    ("*.b.>", "a.c.c", False),
])
def test_match(pattern: str, subject: str, expected: bool) -> None:
    assert match(pattern, subject) is expected


# ---------------------------------------------------------------- schema export


def test_write_schema(tmp_path: Path) -> None:
    written = write_schema(tmp_path / "schema")
    names = {p.name for p in written}
    for cls in registered():
        path = tmp_path / "schema" / f"{cls.TYPE}.schema.json"
        assert path.name in names
        schema = orjson.loads(path.read_bytes())
        assert schema["title"] == cls.__name__
        assert set(schema["properties"]) == set(cls.model_fields)
        assert schema["additionalProperties"] is (cls.model_config.get("extra") == "allow")
    vector_schema = orjson.loads((tmp_path / "schema" / "vector_stimulus.schema.json").read_bytes())
    assert vector_schema["properties"]["vector"]["type"] == "array"
    assert "Bb-Vec" in vector_schema["properties"]["vector"]["description"]
    assert vector_schema["required"] == ["vector"]

    api = orjson.loads((tmp_path / "schema" / "asyncapi.json").read_bytes())
    assert api["asyncapi"].startswith("3.")
    addresses = {ch["address"]: ch for ch in api["channels"].values()}
    assert {"brain.stim.text", "brain.motor.action", "brain.region.{token}.out"} <= set(addresses)
    assert set(addresses["brain.stim.text"]["messages"]) == {"text_stimulus"}
    assert set(addresses["brain.motor.action"]["messages"]) == {"motor_action"}
    assert api["operations"]["stim_text_send"]["action"] == "send"
    assert api["operations"]["motor_action_receive"]["action"] == "receive"
    assert set(api["components"]["messages"]) == {cls.TYPE for cls in registered()}
    assert api["components"]["messages"]["text_stimulus"]["headers"]["properties"][H_TYPE] == {
        "const": "text_stimulus/1"}

    wire = (tmp_path / "schema" / "wire.md").read_text()
    assert wire.startswith("# brainbus wire format") and "Bb-Vec" in wire and "f32" in wire


def test_schema_of_outside_messages_rejects_what_the_codec_rejects() -> None:
    """The exported schema and the codec agree on the basics an outside client relies on."""
    schema = TextStimulus.model_json_schema()
    assert schema["required"] == ["text"] and schema["additionalProperties"] is False
    reward = Reward.model_json_schema()["properties"]["value"]
    assert (reward["minimum"], reward["maximum"]) == (-10000.0, 10000.0)
    assert decode(Reward, b'{"value": -1}', None, SUBJ)[0].value == -1.0
    assert "less than or equal to 10000" in reason_of(Reward, b'{"value": 10000.5}')


def test_trace_fields_read_type_source_and_stimulus_from_any_headers() -> None:
    """What an observer indexes every message by, from our block, another client's, or none."""
    _, block = encode_wire(Reward(value=1.0), source="amygdala", stimulus_id="s-7")
    assert trace_fields(block) == (Reward.TAG, "amygdala", "s-7")
    _, block = encode_wire(Reward(value=1.0), source="amygdala")
    assert trace_fields(block) == (Reward.TAG, "amygdala", None)
    foreign = b"NATS/1.0\r\nBb-Sid:x1\r\nOther: 1\r\n\r\n"
    assert trace_fields(foreign) == (None, None, "x1")
    assert trace_fields({H_SRC: "agent", H_SID: "x2"}) == (None, "agent", "x2")
    assert trace_fields(None) == (None, None, None)


def test_every_reference_in_the_asyncapi_document_resolves_inside_it() -> None:
    """AsyncAPI parsers resolve `$ref` from the document's root: a nested model's schema must be there."""
    from bus.schema import asyncapi

    doc = asyncapi()
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    refs.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert any("MemHit" in ref for ref in refs)
    for ref in refs:
        node: object = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
            node = node[part]
