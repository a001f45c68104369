"""The one codec: models ↔ (body, headers). Nothing else in brainbus encodes or decodes.

Wire format (documented for non-Python clients in `brainbus schema`):

* Body: a UTF-8 JSON object with the model's fields. From outside, that is all there is: plain
  JSON with no headers works on every public subject (and a plain UTF-8 body on `stim.text` and
  `sys.ctl.*`).
* Vectors inside the brain: the JSON object leaves out its vector fields; their raw little-endian
  bytes follow the JSON, in the order of the `Bb-Vec` header: `name:dtype:length[,...]` with dtype
  `f32` or `f16`. So a 384-d embedding costs 1536 bytes plus a few dozen of JSON.
* Metadata rides in NATS headers: `Bb-Type` (`type/version`), `Bb-Id` (message id), `Bb-Src`
  (source actor), `Bb-Ts` (unix time in microseconds), `Bb-Sid` (stimulus id it belongs to).
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson
from pydantic import ValidationError

from bus.errors import DecodeError
from bus.models import Message, model_for_type

__all__ = [
    "H_ID",
    "H_SID",
    "H_SRC",
    "H_TS",
    "H_TYPE",
    "H_VEC",
    "MAX_BODY",
    "Meta",
    "decode",
    "encode",
    "encode_wire",
    "decode_any",
    "format_validation_error",
    "to_json",
]

H_TYPE, H_ID, H_SRC, H_TS, H_SID, H_VEC = "Bb-Type", "Bb-Id", "Bb-Src", "Bb-Ts", "Bb-Sid", "Bb-Vec"
MAX_BODY = 256 * 1024
_DTYPES: dict[str, np.dtype[Any]] = {"f32": np.dtype("<f4"), "f16": np.dtype("<f2")}
M = TypeVar("M", bound=Message)

# Message ids: a per-process prefix and a counter — unique, ordered, and far cheaper than uuid4.
_ID_PREFIX = f"{os.getpid():x}{int(time.time() * 1000) & 0xFFFFFF:x}-"
_ids = itertools.count(1)


@dataclass(slots=True)
class Meta:
    """Metadata of a received message (from headers, where present)."""

    subject: str
    reply: str | None = None
    type: str | None = None
    msg_id: str | None = None
    source: str | None = None
    ts: float | None = None
    stimulus_id: str | None = None
    size: int = 0


def encode(
    model: Message, *, source: str | None = None, stimulus_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """Encode a model as (body, headers) for publishing."""
    body, vec_spec = _body(model)
    headers = {H_TYPE: type(model).TAG, H_ID: f"{_ID_PREFIX}{next(_ids):x}",
               H_TS: str(time.time_ns() // 1000)}
    if source:
        headers[H_SRC] = source
    if stimulus_id:
        headers[H_SID] = stimulus_id
    if vec_spec:
        headers[H_VEC] = vec_spec
    return body, headers


def encode_wire(model: Message, *, source: str, stimulus_id: str | None = None) -> tuple[bytes, bytes]:
    """`encode` with the headers as a ready NATS header block: the publish hot path.

    Every value in it is a validated token or generated here, so no CR/LF can break the block.
    """
    if stimulus_id and ("\r" in stimulus_id or "\n" in stimulus_id):
        raise ValueError(f"stimulus id {stimulus_id!r} contains a line break")
    body, vec_spec = _body(model)
    block = (
        f"NATS/1.0\r\n{H_TYPE}: {type(model).TAG}\r\n{H_ID}: {_ID_PREFIX}{next(_ids):x}\r\n"
        f"{H_TS}: {time.time_ns() // 1000}\r\n{H_SRC}: {source}\r\n"
    )
    if stimulus_id:
        block += f"{H_SID}: {stimulus_id}\r\n"
    if vec_spec:
        block += f"{H_VEC}: {vec_spec}\r\n"
    return body, (block + "\r\n").encode()


def _body(model: Message) -> tuple[bytes, str]:
    """JSON of the non-vector fields, then the vectors' raw bytes; and the `Bb-Vec` spec."""
    cls = type(model)
    serializer = cls.__pydantic_serializer__
    if not cls.VECTOR_FIELDS:
        return serializer.to_json(model), ""
    vectors = [(n, getattr(model, n)) for n in cls.VECTOR_FIELDS]
    vectors = [(n, a) for n, a in vectors if a is not None]
    if not vectors:
        return serializer.to_json(model), ""
    parts = [serializer.to_json(model, exclude={n for n, _ in vectors})]
    specs = []
    for name, arr in vectors:
        if arr.dtype == np.float16:
            specs.append(f"{name}:f16:{arr.size}")
            parts.append(arr.astype("<f2", copy=False).tobytes())
        else:
            specs.append(f"{name}:f32:{arr.size}")
            parts.append(arr.astype("<f4", copy=False).tobytes())
    return b"".join(parts), ",".join(specs)


def decode(
    model: type[M], data: bytes, headers: dict[str, str] | None, subject: str, reply: str | None = None
) -> tuple[M, Meta]:
    """Decode a body into `model`; raise DecodeError with a reason a person can act on."""
    if len(data) > MAX_BODY:
        raise DecodeError(f"payload of {len(data)} bytes exceeds the {MAX_BODY} byte limit", subject=subject)
    if headers:
        type_tag = headers.get(H_TYPE)
        if type_tag is not None and type_tag != model.TAG:
            raise DecodeError(
                f"message type {type_tag!r} does not fit this subject (expected {model.TAG!r})",
                subject=subject,
            )
        ts = headers.get(H_TS)
        meta = Meta(subject, reply or None, type_tag, headers.get(H_ID), headers.get(H_SRC),
                    _timestamp(ts, subject) if ts else None, headers.get(H_SID), len(data))
        vec_spec = headers.get(H_VEC)
    else:
        meta = Meta(subject, reply or None, size=len(data))
        vec_spec = None
    try:
        if vec_spec:
            obj = _decode_with_vectors(model, data, vec_spec, subject)
            result = model.model_validate(obj)
        elif data[:1] == b"{" or _first_byte(data) == b"{":
            result = model.model_validate_json(data)
        elif model.PLAIN_TEXT_FIELD:
            result = model.model_validate({model.PLAIN_TEXT_FIELD: _plain_text(data, subject)})
        else:
            raise DecodeError(_not_an_object(data), subject=subject)
    except ValidationError as exc:
        raise DecodeError(format_validation_error(exc, data), subject=subject) from None
    if meta.stimulus_id is None and model.STIMULUS_FIELD:
        meta.stimulus_id = getattr(result, model.STIMULUS_FIELD)
    return result, meta


def decode_any(data: bytes, headers: dict[str, str] | None, subject: str) -> Message | None:
    """Decode by the `Bb-Type` header alone (for tools that print any message); None if untyped."""
    type_tag = (headers or {}).get(H_TYPE)
    if not type_tag:
        return None
    cls = model_for_type(type_tag.split("/", 1)[0])
    if cls is None:
        return None
    return decode(cls, data, headers, subject)[0]


def to_json(model: Message) -> bytes:
    """A model as plain JSON (vectors as arrays): what `brainbus sub --json` prints."""
    return type(model).__pydantic_serializer__.to_json(model)


def format_validation_error(exc: ValidationError, data: bytes = b"") -> str:
    """Turn a pydantic error into one sentence naming each field and what was wrong."""
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "json_invalid":
            parts.append(f"body is not valid JSON ({err['ctx'].get('error', err['msg'])})")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            parts.append(f"field {loc!r} is missing")
        elif err["type"] == "extra_forbidden":
            parts.append(f"field {loc!r} is not expected")
        else:
            parts.append(f"field {loc!r}: {msg} (got {_short(err.get('input'))})")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


_VecSpec = tuple[tuple[tuple[str, "np.dtype[Any]", int], ...], int]
_spec_cache: dict[tuple[type[Message], str], _VecSpec] = {}


def _vector_spec(model: type[Message], spec: str, subject: str) -> _VecSpec:
    """Parse a `Bb-Vec` header (cached: a brain sends the same few specs over and over)."""
    key = (model, spec)
    parsed = _spec_cache.get(key)
    if parsed is not None:
        return parsed
    fields = []
    total = 0
    try:
        for item in spec.split(","):
            name, dtype_name, length = item.split(":")
            dtype, n = _DTYPES[dtype_name], int(length)
            if name not in model.VECTOR_FIELDS or not 0 < n <= 65536:
                raise ValueError(name)
            fields.append((name, dtype, n))
            total += dtype.itemsize * n
    except (ValueError, KeyError):
        raise DecodeError(f"header {H_VEC} {spec!r} is malformed", subject=subject) from None
    parsed = (tuple(fields), total)
    if len(_spec_cache) < 1024:
        _spec_cache[key] = parsed
    return parsed


def _decode_with_vectors(model: type[Message], data: bytes, spec: str, subject: str) -> dict[str, Any]:
    fields, total = _vector_spec(model, spec, subject)
    if total > len(data):
        raise DecodeError(f"body of {len(data)} bytes is shorter than {H_VEC} needs ({total})",
                          subject=subject)
    head = len(data) - total
    try:
        obj = orjson.loads(data[:head])
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"body is not valid JSON ({exc})", subject=subject) from None
    if not isinstance(obj, dict):
        raise DecodeError("body must be a JSON object", subject=subject)
    offset = head
    for name, dtype, n in fields:
        arr = np.frombuffer(data, dtype=dtype, count=n, offset=offset)
        offset += dtype.itemsize * n
        # A writable float32 copy: torch and in-place maths must never see a read-only buffer.
        obj[name] = arr.astype(np.float32)
    return obj


def _timestamp(text: str, subject: str) -> float:
    try:
        return int(text) / 1e6
    except ValueError:
        raise DecodeError(f"header {H_TS} {text!r} is not a whole number of microseconds",
                          subject=subject) from None


def _first_byte(data: bytes) -> bytes:
    return data.lstrip()[:1]


def _plain_text(data: bytes, subject: str) -> str:
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise DecodeError("body is neither a JSON object nor UTF-8 text", subject=subject) from None


def _not_an_object(data: bytes) -> str:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "body is not UTF-8 JSON"
    return "body must be a JSON object"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
