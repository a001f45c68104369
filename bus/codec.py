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
  brainbus writes them in the order Type, Src, Id, Ts, Sid, Vec and reads that order fastest;
  any order, and other headers besides, are accepted.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from math import isfinite
from typing import Any, TypeVar, cast

import numpy as np
import orjson
from pydantic import ValidationError
from pydantic_core import SchemaError, SchemaValidator

from bus.errors import DecodeError
from bus.models import STIMULUS_ID, Message, _to_vector, finite_check_weights, model_for_type

__all__ = [
    "H_ID",
    "H_SID",
    "H_SRC",
    "H_TS",
    "H_TYPE",
    "H_VEC",
    "HDR_START",
    "Headers",
    "MALFORMED",
    "MAX_BODY",
    "MAX_HEADERS",
    "Meta",
    "decode",
    "encode",
    "decode_any",
    "encode_wire",
    "parse_header_block",
    "format_validation_error",
    "to_json",
    "trace_fields",
]

H_TYPE, H_ID, H_SRC, H_TS, H_SID, H_VEC = "Bb-Type", "Bb-Id", "Bb-Src", "Bb-Ts", "Bb-Sid", "Bb-Vec"
MAX_BODY = 256 * 1024
#: The largest header block accepted (bytes). brainbus writes ~150; the bound keeps what a sender
#: puts in headers out of reports, logs and caches, where it would be echoed or kept.
MAX_HEADERS = 4096
#: The key a receiver puts in a message's headers when the block could not be read at all (a
#: status line that is not UTF-8...); `decode` rejects such a message. A parsed header name can
#: never contain a colon, so no sender can spell it.
MALFORMED = ":malformed"
HDR_START = b"NATS/1.0\r\n"
_F16, _F32 = np.dtype("<f2"), np.dtype("<f4")
_DTYPES: dict[str, np.dtype[Any]] = {"f32": _F32, "f16": _F16}
M = TypeVar("M", bound=Message)

# Message ids: a per-process prefix and a counter — unique, ordered, and far cheaper than uuid4.
_ID_PREFIX = f"{os.getpid():x}{int(time.time() * 1000) & 0xFFFFFF:x}-"
_ids = itertools.count(1)
_time_ns = time.time_ns


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
    """Encode a model as (body, headers) for publishing (headers in `encode_wire`'s order)."""
    body, vec_line = _body(model)
    headers = {H_TYPE: type(model).TAG}
    if source:
        headers[H_SRC] = source
    headers[H_ID] = f"{_ID_PREFIX}{next(_ids):x}"
    headers[H_TS] = str(time.time_ns() // 1000)
    if stimulus_id:
        headers[H_SID] = stimulus_id
    if vec_line:
        headers[H_VEC] = vec_line[len(H_VEC) + 2:-2].decode()
    return body, headers


def encode_wire(model: Message, *, source: str, stimulus_id: str | None = None) -> tuple[bytes, bytes]:
    """`encode` with the headers as a ready NATS header block: the publish hot path.

    The block's lines always come in one order (type, source, id, time, stimulus, vectors), so
    its start is cached per (type, source) and `decode` reads it back with one regex match.
    Every value in it is a validated token or generated here, so no CR/LF can break the block.
    """
    cls = type(model)
    head = _heads.get((cls, source)) or _head(cls, source)
    body, vec_line = _body(model)
    sid_line = (_sid_lines.get(stimulus_id) or _sid_line(stimulus_id)) if stimulus_id else b""
    return body, _BLOCK % (head, next(_ids), _time_ns() // 1000, sid_line, vec_line)


# The fixed start of a header block per (message type, source), ending where the id's counter goes.
_heads: dict[tuple[type[Message], str], bytes] = {}
_BLOCK = f"%b%x\r\n{H_TS}: %d\r\n%b%b\r\n".encode()
_sid_lines: dict[str, bytes] = {}
_vec_lines: dict[tuple[str, str, int] | str, bytes] = {}


def _head(cls: type[Message], source: str) -> bytes:
    if not source or "\r" in source or "\n" in source:
        raise ValueError(f"source {source!r} must be a non-empty name without line breaks")
    head = f"NATS/1.0\r\n{H_TYPE}: {cls.TAG}\r\n{H_SRC}: {source}\r\n{H_ID}: {_ID_PREFIX}".encode()
    if len(_heads) < 4096:
        _heads[(cls, source)] = head
    return head


def _sid_line(stimulus_id: str) -> bytes:
    line = _sid_lines.get(stimulus_id)
    if line is None:
        if "\r" in stimulus_id or "\n" in stimulus_id:
            raise ValueError(f"stimulus id {stimulus_id!r} contains a line break")
        line = f"{H_SID}: {stimulus_id}\r\n".encode()
        if len(_sid_lines) >= 4096:  # stimulus ids come and go: keep only the recent ones
            _sid_lines.clear()
        _sid_lines[stimulus_id] = line
    return line


def _body(model: Message) -> tuple[bytes, bytes]:
    """JSON of the non-vector fields, then the vectors' raw bytes; and the `Bb-Vec` header line."""
    cls = type(model)
    serializer = cls.__pydantic_serializer__
    names = cls.VECTOR_FIELDS
    if not names:
        return serializer.to_json(model), b""
    if len(names) == 1:  # every model so far: no lists, no joins
        name = names[0]
        arr = getattr(model, name)
        if arr is None:
            return serializer.to_json(model), b""
        if arr.dtype is _F32:  # what the `Vector` validator makes: the bytes as they are
            raw, spec = arr.tobytes(), (name, "f32", arr.size)
        else:
            raw, spec = _vector_bytes(name, arr)
        return (serializer.to_json(model, exclude=_EXCLUDE.get(name) or _exclude(name)) + raw,
                _vec_lines.get(spec) or _vec_line(spec))
    vectors = [(n, a) for n in names if (a := getattr(model, n)) is not None]
    if not vectors:
        return serializer.to_json(model), b""
    parts = [serializer.to_json(model, exclude={n for n, _ in vectors})]
    specs = []
    for name, arr in vectors:
        raw, spec = _vector_bytes(name, arr)
        parts.append(raw)
        specs.append(":".join(map(str, spec)))
    return b"".join(parts), _vec_line(",".join(specs))


# `exclude` arguments of one vector field, made once (field names are few).
_EXCLUDE: dict[str, set[str]] = {}


def _exclude(name: str) -> set[str]:
    return _EXCLUDE.setdefault(name, {name})


def _vector_bytes(name: str, arr: np.ndarray) -> tuple[bytes, tuple[str, str, int]]:
    if arr.dtype == _F16:
        return arr.astype(_F16, copy=False).tobytes(), (name, "f16", arr.size)
    return arr.astype(_F32, copy=False).tobytes(), (name, "f32", arr.size)


def _vec_line(spec: tuple[str, str, int] | str) -> bytes:
    """The `Bb-Vec` line of one vector `(name, dtype, length)`, or of several (a spec string)."""
    line = _vec_lines.get(spec)
    if line is None:
        text = spec if isinstance(spec, str) else ":".join(map(str, spec))
        line = f"{H_VEC}: {text}\r\n".encode()
        if len(_vec_lines) < 1024:
            _vec_lines[spec] = line
    return line


# A header block as `encode_wire` writes it: one match reads all the metadata. `.` stops at a line's
# end (`\n`), so `(.*)\r\n` is one value, and matches almost twice as fast as `([^\r\n]*)`.
_OWN_BLOCK = re.compile(
    rf"NATS/1\.0\r\n{H_TYPE}: (.*)\r\n{H_SRC}: (.*)\r\n{H_ID}: (.*)\r\n"
    rf"{H_TS}: ([0-9]{{1,19}})\r\n(?:{H_SID}: (.*)\r\n)?(?:{H_VEC}: (.*)\r\n)?\r\n"
)
def parse_header_block(block: bytes) -> dict[str, str] | None:
    """Split a plain `NATS/1.0` header block written as `Name: value` lines; None if it is not one."""
    try:
        return dict(line.split(": ", 1) for line in block[len(HDR_START):-4].decode().split("\r\n"))  # type: ignore[misc]
    except (ValueError, UnicodeDecodeError):
        return None


def _lenient_headers(block: bytes) -> dict[str, str]:
    """Any other `NATS/1.0` block (`Name:value`, odd bytes): read the way nats-py reads it."""
    out = {}
    for line in block[len(HDR_START):].split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip():
            out[name.strip().decode(errors="replace")] = value.strip().decode(errors="replace")
    return out



def _block_dict(block: bytes) -> dict[str, str]:
    """Any header block as a dict: the plain `Name: value` form quickly, anything else leniently."""
    return parse_header_block(block) or _lenient_headers(block)


Headers = Mapping[str, str] | bytes | None


def trace_fields(headers: Headers) -> tuple[str | None, str | None, str | None]:
    """(type tag, source, stimulus id) from the headers, without decoding the body: for observers
    that index every message (the TUI's flow view). A block the codec wrote is read with one match."""
    if not headers:
        return None, None, None
    if type(headers) is bytes:
        own = _OWN_BLOCK.fullmatch(headers.decode("utf-8", "replace"))
        if own is not None:
            return own.group(1), own.group(2), own.group(5)
        headers = _block_dict(headers)
    assert not isinstance(headers, bytes)
    return headers.get(H_TYPE), headers.get(H_SRC), headers.get(H_SID)


def decode(
    model: type[M], data: bytes, headers: Headers, subject: str, reply: str | None = None
) -> tuple[M, Meta]:
    """Decode a body into `model`; raise DecodeError with a reason a person can act on.

    `headers` is a dict, or a plain `NATS/1.0` header block as received (the direct delivery
    path: a block `encode_wire` wrote is read with one regex match, no dict).
    """
    size = len(data)
    if size > MAX_BODY:
        raise DecodeError(f"payload of {size} bytes exceeds the {MAX_BODY} byte limit", subject=subject)
    vec_spec: str | None = None
    if type(headers) is bytes:
        if len(headers) > MAX_HEADERS:
            raise DecodeError(f"header block of {len(headers)} bytes exceeds the {MAX_HEADERS} byte limit",
                              subject=subject)
        own = _OWN_BLOCK.fullmatch(headers.decode("utf-8", "replace"))
    else:
        own = None
    if own is not None:
        type_tag, source, msg_id, ts, stimulus_id, vec_spec = own.groups()
        if type_tag != model.TAG:
            raise DecodeError(_wrong_type(type_tag, model), subject=subject)
        if stimulus_id is not None and not STIMULUS_ID.fullmatch(stimulus_id):
            raise DecodeError(_bad_stimulus_id(stimulus_id), subject=subject)
        meta = Meta(subject, reply or None, type_tag, msg_id, source, int(ts) / 1e6, stimulus_id, size)
        # Our own message, with or without vectors: the common cases, straight on.
        if vec_spec is not None or data[:1] == b"{":
            try:
                if vec_spec is None:
                    result = model.__pydantic_validator__.validate_json(data)
                else:
                    result = _decode_with_vectors(model, data, vec_spec, subject)
            except ValidationError as exc:
                raise DecodeError(format_validation_error(exc, data), subject=subject) from None
            if stimulus_id is None and model.STIMULUS_FIELD:
                meta.stimulus_id = getattr(result, model.STIMULUS_FIELD)
            return result, meta
    elif not headers:
        meta = Meta(subject, reply or None, size=len(data))
    else:
        if isinstance(headers, bytes):
            headers = _block_dict(headers)
        else:
            _check_header_dict(headers, subject)
        type_tag = headers.get(H_TYPE)
        if type_tag is not None and type_tag != model.TAG:
            raise DecodeError(_wrong_type(type_tag, model), subject=subject)
        ts = headers.get(H_TS)
        stimulus_id = headers.get(H_SID)
        if stimulus_id is not None and not STIMULUS_ID.fullmatch(stimulus_id):
            raise DecodeError(_bad_stimulus_id(stimulus_id), subject=subject)
        meta = Meta(subject, reply or None, type_tag, headers.get(H_ID), headers.get(H_SRC),
                    _timestamp(ts, subject) if ts else None, stimulus_id, len(data))
        vec_spec = headers.get(H_VEC)
    validator = model.__pydantic_validator__
    try:
        if vec_spec:
            result = _decode_with_vectors(model, data, vec_spec, subject)
        elif data[:1] == b"{" or _first_byte(data) == b"{":
            result = validator.validate_json(data)
        elif model.PLAIN_TEXT_FIELD:
            result = validator.validate_python({model.PLAIN_TEXT_FIELD: _plain_text(data, subject)})
        else:
            raise DecodeError(_not_an_object(data), subject=subject)
    except ValidationError as exc:
        raise DecodeError(format_validation_error(exc, data), subject=subject) from None
    if meta.stimulus_id is None and model.STIMULUS_FIELD:
        meta.stimulus_id = getattr(result, model.STIMULUS_FIELD)
    return result, meta


def _wrong_type(type_tag: str, model: type[Message]) -> str:
    return f"message type {_short(type_tag)} does not fit this subject (expected {model.TAG!r})"


def _bad_stimulus_id(value: str) -> str:
    return (f"header {H_SID} {_short(value)} ({len(value)} characters) is not a stimulus id: "
            "1 to 128 printable ASCII characters without spaces")


def _check_header_dict(headers: Mapping[str, str], subject: str) -> None:
    """The limits a header block gets in `decode`, for headers a client already split (a dict)."""
    reason = headers.get(MALFORMED)
    if reason is not None:
        raise DecodeError(f"header block is malformed ({reason})", subject=subject)
    size = sum(len(name) + len(value) + 4 for name, value in headers.items())
    if size > MAX_HEADERS:
        raise DecodeError(f"header block of about {size} bytes exceeds the {MAX_HEADERS} byte limit",
                          subject=subject)


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


# A parsed `Bb-Vec` header: the vectors (name, dtype, length, weights of their finiteness check),
# their total bytes, and the validator of the JSON in front of them (None where that spec takes
# the dict path, see `_head_validator`).
_VecField = tuple[str, "np.dtype[Any]", int, "np.ndarray | None"]
_VecSpec = tuple[tuple[_VecField, ...], int, SchemaValidator | None]
_spec_cache: dict[tuple[type[Message], str], _VecSpec] = {}
# A `Bb-Vec` value: at most 8 vectors, nothing around the tokens (so cached keys stay small).
_VEC_SPEC = re.compile(r"[a-z_]{1,32}:f(?:32|16):[0-9]{1,5}(?:,[a-z_]{1,32}:f(?:32|16):[0-9]{1,5}){0,7}")


def _vector_spec(model: type[Message], spec: str, subject: str) -> _VecSpec:
    """Parse a `Bb-Vec` header (cached: a brain sends the same few specs over and over)."""
    key = (model, spec)
    parsed = _spec_cache.get(key)
    if parsed is not None:
        return parsed
    if not _VEC_SPEC.fullmatch(spec):
        raise DecodeError(f"header {H_VEC} {_short(spec)} is malformed: expected name:f32|f16:length[,...]",
                          subject=subject)
    fields = []
    named: set[str] = set()
    total = 0
    try:
        for item in spec.split(","):
            name, dtype_name, length = item.split(":")
            dtype, n = _DTYPES[dtype_name], int(length)
            if name not in model.VECTOR_FIELDS or name in named or not 0 < n <= 65536:
                raise ValueError(name)
            fields.append((name, dtype, n, finite_check_weights(n)))
            named.add(name)
            total += dtype.itemsize * n
    except (ValueError, KeyError):
        raise DecodeError(f"header {H_VEC} {_short(spec)} is malformed", subject=subject) from None
    head = _head_validator(model)
    # That validator lets required vectors be absent: fit only for a spec that brings them all.
    parsed = (tuple(fields), total, head[0] if head is not None and head[1] <= named else None)
    if len(_spec_cache) < 1024:
        _spec_cache[key] = parsed
    return parsed


_head_validators: dict[type[Message], tuple[SchemaValidator, frozenset[str]] | None] = {}


def _head_validator(model: type[Message]) -> tuple[SchemaValidator, frozenset[str]] | None:
    """The validator of the JSON in front of a model's vector bytes, and the names of the vector
    fields it lets be absent although the model requires them; None where the model takes the dict
    path.

    Validating that JSON with one `validate_json`, then each vector with the `Vector` validator, is
    about twice as fast as building a dict for `validate_python`. It is the same validation only
    where each vector field is checked by `_to_vector` alone and nothing looks at the fields together
    (a model validator, a custom `__init__`, `model_post_init`): any other model gets None. Where
    every vector field is optional, that validator is the model's own; otherwise it is the model's
    schema with a default of None for each required vector field, which the codec replaces with the
    vector from the body before anyone sees the model.
    """
    if model in _head_validators:
        return _head_validators[model]
    try:
        head = _build_head_validator(model)
    except (KeyError, TypeError, SchemaError):  # a schema laid out otherwise: the dict path serves
        head = None
    _head_validators[model] = head
    return head


def _build_head_validator(model: type[Message]) -> tuple[SchemaValidator, frozenset[str]] | None:
    schema: Any = model.__pydantic_core_schema__
    if (schema["type"] != "model" or schema["schema"]["type"] != "model-fields"
            or schema.get("custom_init") or schema.get("post_init")):
        return None
    fields = dict(schema["schema"]["fields"])
    required = set()
    for name in model.VECTOR_FIELDS:
        field = fields[name]
        inner = field["schema"]
        optional = inner["type"] == "default"
        if optional:
            inner = inner["schema"]
        if inner["type"] == "nullable":
            inner = inner["schema"]
        if inner["type"] != "function-plain" or inner["function"]["function"] is not _to_vector:
            return None
        if not optional:
            required.add(name)
            fields[name] = {**field, "schema": {"type": "default", "schema": field["schema"], "default": None}}
    # (A plugin may wrap the model's validator; the wrapper validates the same way.)
    validator = cast(SchemaValidator, model.__pydantic_validator__)
    if required:
        validator = _unshared_validator(model, {**schema, "schema": {**schema["schema"], "fields": fields}})
        try:
            validator.validate_python({})
        except ValidationError as exc:
            if any(err["type"] == "missing" and err["loc"][0] in required for err in exc.errors()):
                return None  # the change did not take: every message would fail here first
    return validator, frozenset(required)


def _unshared_validator(model: type[Message], schema: Any) -> SchemaValidator:
    """A validator of a changed schema of `model`. pydantic-core builds any schema that names a
    finished model class with that class's own validator (its "prebuilt" one), which would drop the
    changes; it does so only for a class marked complete, so the mark is lifted meanwhile."""
    complete = model.__pydantic_complete__
    model.__pydantic_complete__ = False
    try:
        return SchemaValidator(schema)
    finally:
        model.__pydantic_complete__ = complete


def _decode_with_vectors(model: type[M], data: bytes, spec: str, subject: str) -> M:
    """A body of JSON and vector bytes: validated in two steps where the model allows (see
    `_head_validator`), else as one dict. Any failure is reported by the dict path, so a message
    reads the same whichever path it took."""
    fields, total, head = _spec_cache.get((model, spec)) or _vector_spec(model, spec, subject)
    start = len(data) - total
    if start < 0:
        raise DecodeError(f"body of {len(data)} bytes is shorter than {H_VEC} needs ({total})",
                          subject=subject)
    if head is not None:
        try:
            result: M = head.validate_json(data[:start])
            values, given = result.__dict__, result.__pydantic_fields_set__
            offset = start
            for name, dtype, n, weights in fields:
                # Also in the JSON, too long, or not finite: the dict path says which.
                if name in given or weights is None:
                    break
                # A writable float32 copy: torch and in-place maths must never see a read-only buffer.
                arr = np.frombuffer(data, dtype, n, offset)
                arr = arr.copy() if dtype is _F32 else arr.astype(_F32)
                if not isfinite(arr.dot(weights)):  # what `_to_vector` checks, without the call
                    break
                values[name] = arr
                given.add(name)
                offset += dtype.itemsize * n
            else:
                return result
        except (ValidationError, ValueError, RuntimeWarning):  # (see `finite_check_weights`)
            pass
    try:
        obj = orjson.loads(data[:start])
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"body is not valid JSON ({exc})", subject=subject) from None
    if type(obj) is not dict:
        raise DecodeError("body must be a JSON object", subject=subject)
    offset = start
    for name, dtype, n, _ in fields:
        if name in obj:
            raise DecodeError(f"field {name!r} is both in the JSON and in the {H_VEC} header", subject=subject)
        arr = np.frombuffer(data, dtype, n, offset)
        obj[name] = arr.copy() if dtype is _F32 else arr.astype(_F32)
        offset += dtype.itemsize * n
    return model.__pydantic_validator__.validate_python(obj)  # type: ignore[no-any-return]


def _timestamp(text: str, subject: str) -> float:
    try:
        return int(text) / 1e6
    except ValueError:
        raise DecodeError(f"header {H_TS} {_short(text)} is not a whole number of microseconds",
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
