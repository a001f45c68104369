"""Message models of every public subject (DESIGN §3) and the registry that maps subjects to them.

Each model is a pydantic v2 class registered with `@message(pattern)`; the codec uses the registry
to decode plain JSON from outside (no headers) and checks the `Bb-Type` header of our own messages.
Vectors are `Vector` fields: JSON arrays from outside, raw float32 bytes inside (see `bus.codec`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
)

from bus.subjects import match

__all__ = [
    "CTL_VERBS",
    "EPISODE_ID",
    "MAX_REASON",
    "MAX_REWARD",
    "MAX_STIMULUS_DIM",
    "STIMULUS_ID",
    "Bid",
    "Broadcast",
    "CtlReply",
    "CtlRequest",
    "EnvActions",
    "Heartbeat",
    "MemHit",
    "MemRecall",
    "MemRecallReply",
    "MemReplay",
    "MemStore",
    "MemStoreAck",
    "Message",
    "MotorAction",
    "NeuromodEvent",
    "NeuromodLevels",
    "RegionOutput",
    "Reward",
    "SysError",
    "TextStimulus",
    "Vector",
    "VectorStimulus",
    "message",
    "shorten",
    "model_for_subject",
    "model_for_type",
    "registered",
]

MAX_DIM = 8192
#: The longest vector a stimulus may carry (the thalamus maps any length into the brain's space).
MAX_STIMULUS_DIM = 4096
#: The largest reward magnitude accepted (the brain scales rewards itself).
MAX_REWARD = 10_000.0
#: The longest `reason` a `SysError` carries.
MAX_REASON = 500
MAX_TEXT = 10_000
_F32 = np.dtype(np.float32)
_F32_MAX = float(np.finfo(np.float32).max)
_FLOAT_ONLY = {float}
_ONES = np.full(MAX_DIM, 2.0**-14, dtype=np.float32)
# The weights of the finiteness check, one view per vector length (made when first seen).
_SCALED_ONES: dict[int, np.ndarray] = {}


def finite_check_weights(size: int) -> np.ndarray | None:
    """The weights `w` for which `math.isfinite(v.dot(w))` tells whether a float32 vector `v` of
    this size is all finite; None for a size no vector may have.

    One dot product checks them all: scaled by 2^-14, at most 8192 float32 values cannot overflow
    the sum, and any NaN or Inf makes it non-finite (a single BLAS call, several times cheaper
    than `np.isfinite(v).all()`). +Inf and -Inf together make NaN, with numpy's "invalid"
    RuntimeWarning: a caller that runs with warnings as errors treats that warning as non-finite.
    """
    weights = _SCALED_ONES.get(size)
    if weights is None and 0 < size <= MAX_DIM:
        weights = _SCALED_ONES[size] = _ONES[:size]
    return weights


def _to_vector(value: Any) -> np.ndarray:
    """Validate a vector: a 1-D array of finite numbers (list from JSON, ndarray from binary)."""
    if type(value) is np.ndarray and value.dtype is _F32 and value.ndim == 1:
        weights = finite_check_weights(value.size)
        if weights is not None:
            try:
                finite = math.isfinite(value.dot(weights))
            except RuntimeWarning:  # +Inf and -Inf together ("invalid"), where warnings are errors
                finite = False
            if not finite:
                raise ValueError("contains NaN or Inf (or a number too large for float32)")
            return value
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, list | tuple):
        kinds = set(map(type, value))
        if kinds == _FLOAT_ONLY and len(value) <= MAX_DIM:
            # A JSON array of decimals: nothing to rule out but NaN, Inf and numbers too large for
            # float32, so one conversion and a range check. float64 first: a float32 conversion
            # would warn about the large ones. Whatever fails the check, the general path judges.
            arr = np.array(value, np.float64)
            if -_F32_MAX <= arr.min() and arr.max() <= _F32_MAX:  # NaN fails both comparisons
                return arr.astype(np.float32)
        # No dtype here on purpose: numpy would silently parse "1.5" or "NaN" strings as floats.
        arr = np.asarray(value)
        if arr.dtype.kind in "iuf" and bool in kinds:
            # numpy turns [1, true] into [1, 1] and [0.5, false] into [0.5, 0.0]: not numbers.
            raise ValueError("must contain only numbers (got a boolean)")
    else:
        raise ValueError(f"must be an array of numbers, got {type(value).__name__}")
    if arr.dtype.kind not in "iuf":
        raise ValueError("must contain only numbers")
    if arr.size == 0:
        raise ValueError("is empty (length 0): a vector needs at least one number")
    if arr.ndim != 1 or not 0 < arr.size <= MAX_DIM:
        raise ValueError(f"must be a flat array of 1..{MAX_DIM} numbers, got shape {arr.shape}")
    if arr.dtype != np.float32:
        with np.errstate(over="ignore"):  # too-large values become Inf and are rejected below
            arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("contains NaN or Inf (or a number too large for float32)")
    return arr


_VECTOR_DESCRIPTION = ("float32 vector: a JSON array of finite numbers from outside; inside the brain raw "
                       "little-endian bytes appended to the body (see the Bb-Vec header).")
Vector = Annotated[
    np.ndarray,
    PlainValidator(_to_vector),
    PlainSerializer(lambda a: a.tolist(), return_type=list[float], when_used="json"),
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "number"},
            "maxItems": MAX_DIM,
            "description": _VECTOR_DESCRIPTION,
        }
    ),
]
Token = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")]
StimulusId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
#: An episode of a world: the steps (stimuli) that share it are one task, learnt across steps.
EpisodeId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
#: What an `EpisodeId` may be, for checks outside a model (an outcome's data).
EPISODE_ID = re.compile(r"[\x21-\x7e]{1,128}")
#: What a `StimulusId` may be, for checks outside a model (a `Bb-Sid` header).
STIMULUS_ID = re.compile(r"[\x21-\x7e]{1,128}")
ActionName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
#: A vector of a stimulus: what `Vector` is, within the stimulus contract's length.
StimulusVector = Annotated[
    np.ndarray,
    PlainValidator(_to_vector),
    PlainSerializer(lambda a: a.tolist(), return_type=list[float], when_used="json"),
    WithJsonSchema({"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": MAX_STIMULUS_DIM,
                    "description": _VECTOR_DESCRIPTION}),
]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]

_REGISTRY: dict[str, type[Message]] = {}
_BY_PATTERN: list[tuple[str, type[Message]]] = []
M = TypeVar("M", bound="Message")


class Message(BaseModel):
    """Base of every bus message. `TYPE`/`VERSION` travel in the `Bb-Type` header."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, arbitrary_types_allowed=True, frozen=False
    )
    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    #: `TYPE/VERSION`, the value of the `Bb-Type` header (filled in by `@message`).
    TAG: ClassVar[str] = ""
    SUBJECT: ClassVar[str] = ""
    #: Models whose subject also accepts a plain UTF-8 body, mapped to this field.
    PLAIN_TEXT_FIELD: ClassVar[str | None] = None
    #: Names of the `Vector` fields, filled in by `@message`.
    VECTOR_FIELDS: ClassVar[tuple[str, ...]] = ()
    #: The field naming the stimulus this message belongs to, if any (filled in by `@message`).
    STIMULUS_FIELD: ClassVar[str | None] = None

    @classmethod
    def type_tag(cls) -> str:
        return f"{cls.TYPE}/{cls.VERSION}"


def message(pattern: str, type_name: str) -> Callable[[type[M]], type[M]]:
    """Register a model for a relative subject pattern (`stim.text`, `region.*.out`)."""

    def register(cls: type[M]) -> type[M]:
        if type_name in _REGISTRY:
            raise TypeError(f"message type {type_name!r} is registered twice")
        cls.TYPE = type_name
        cls.TAG = f"{type_name}/{cls.VERSION}"
        cls.SUBJECT = pattern
        cls.VECTOR_FIELDS = tuple(
            name for name, field in cls.model_fields.items() if _holds_vector(field.annotation)
        )
        cls.STIMULUS_FIELD = next((n for n in ("stimulus_id", "id") if n in cls.model_fields), None)
        _REGISTRY[type_name] = cls
        _BY_PATTERN.append((pattern, cls))
        return cls

    return register


def _holds_vector(annotation: Any) -> bool:
    if annotation is np.ndarray:
        return True
    return any(_holds_vector(arg) for arg in get_args(annotation))


def model_for_type(type_name: str) -> type[Message] | None:
    return _REGISTRY.get(type_name)


def model_for_subject(relative_subject: str) -> type[Message] | None:
    """The model registered for a concrete relative subject (`stim.text`), if any."""
    for pattern, cls in _BY_PATTERN:
        if match(pattern, relative_subject):
            return cls
    return None


def registered() -> list[type[Message]]:
    return list(_REGISTRY.values())


# ---------------------------------------------------------------- world → brain


@message("stim.text", "text_stimulus")
class TextStimulus(Message):
    """Text for the brain to perceive. A plain UTF-8 body is accepted as the text."""

    PLAIN_TEXT_FIELD: ClassVar[str | None] = "text"
    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
    id: StimulusId | None = None
    episode: EpisodeId | None = None


@message("stim.vector", "vector_stimulus")
class VectorStimulus(Message):
    """A vector for the brain to perceive (an image embedding, a sensor reading, a world's state).

    Any length from 1 to `MAX_STIMULUS_DIM`: the thalamus maps it into the brain's space.
    """

    vector: StimulusVector
    modality: Token = "vector"
    id: StimulusId | None = None
    episode: EpisodeId | None = None


@message("env.actions", "env_actions")
class EnvActions(Message):
    """An environment declares the action repertoire the brain chooses from."""

    actions: Annotated[list[ActionName], Field(min_length=1, max_length=256)]
    env: Token | None = None


@message("feedback.reward", "reward")
class Reward(Message):
    """Reward (positive) or punishment (negative) for an action.

    `terminal` (default true: a one-step trial) ends the episode of the stimulus it answers;
    false means more steps follow, and the brain's value of the next stimulus completes the
    temporal-difference error. `truncated` ends the episode without a terminal value (a time
    limit). `episode` names the episode where `stimulus_id` does not.
    """

    value: Annotated[float, Field(ge=-MAX_REWARD, le=MAX_REWARD, allow_inf_nan=False)]
    stimulus_id: StimulusId | None = None
    action: ActionName | None = None
    terminal: bool = True
    truncated: bool = False
    episode: EpisodeId | None = None


# ---------------------------------------------------------------- brain → world


@message("motor.action", "motor_action")
class MotorAction(Message):
    """An action the brain takes, naming the stimulus it answers."""

    model_config = ConfigDict(extra="allow")
    action: ActionName
    stimulus_id: StimulusId
    confidence: Unit
    source: str = "motor"


# ---------------------------------------------------------------- inside the brain


@message("gw.bid", "bid")
class Bid(Message):
    """A candidate for the global workspace."""

    source: Token
    kind: Token
    salience: Annotated[float, Field(ge=0.0, le=10.0)]
    content: Vector
    stimulus_id: StimulusId | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


@message("gw.broadcast", "broadcast")
class Broadcast(Message):
    """The winner of a workspace cycle, sent to every region."""

    cycle: Annotated[int, Field(ge=0)]
    source: Token
    salience: float
    kind: Token
    content: Vector
    stimulus_id: StimulusId | None = None
    beat: list[dict[str, Any]] = Field(default_factory=list)
    detail: dict[str, Any] = Field(default_factory=dict)


@message("neuromod.levels", "neuromod_levels")
class NeuromodLevels(Message):
    """Hormone levels in [0, 1]; more hormones may follow as extra fields."""

    model_config = ConfigDict(extra="allow")
    dopamine: Unit
    serotonin: Unit
    norepinephrine: Unit
    acetylcholine: Unit
    baseline: dict[str, float] = Field(default_factory=dict)
    frozen: bool = False


@message("neuromod.event", "neuromod_event")
class NeuromodEvent(Message):
    """Something that should move hormones: a reward (with its prediction error), novelty,
    surprise (unexpected uncertainty) or stress. `value` is the reward in [-1, 1] for `reward`,
    else a magnitude in [0, 1]."""

    kind: Literal["reward", "novelty", "surprise", "stress"]
    value: Annotated[float, Field(ge=-1.0, le=1.0)]
    rpe: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    source: Token | None = None
    stimulus_id: StimulusId | None = None


@message("mem.store", "mem_store")
class MemStore(Message):
    """Store one episode (request/reply: the answer is a `MemStoreAck`)."""

    key: Vector
    stimulus_id: StimulusId | None = None
    action: ActionName | None = None
    reward: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None
    salience: Annotated[float, Field(ge=0.0, le=10.0)] = 1.0
    hormones: dict[str, float] = Field(default_factory=dict)
    #: The world episode the step was part of (the stimulus's `episode`), if any.
    episode: EpisodeId | None = None


@message("mem.store_ack", "mem_store_ack")
class MemStoreAck(Message):
    """The answer to a `MemStore`: durable once sent with `ok` (the shard fsynced its log first).

    A rejected store (wrong dimension, zero vector, disk failure) has `ok=False`, `episode_id=-1`
    and a reason in `error`.
    """

    shard: Token
    episode_id: Annotated[int, Field(ge=-1)]
    ok: bool = True
    error: str | None = None


@message("mem.recall", "mem_recall")
class MemRecall(Message):
    """Recall the top-k episodes most similar to `query` (request/reply, scatter-gather)."""

    query: Vector
    k: Annotated[int, Field(ge=1, le=1000)] = 10
    #: Also send each hit's key (the stored, normalized vector): what a recalled episode brings
    #: back to the workspace. Off by default: keys cost ~8 bytes of JSON per dimension per hit.
    with_keys: bool = False


class MemHit(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    shard: str
    episode_id: int
    score: float
    stimulus_id: str | None = None
    action: str | None = None
    reward: float | None = None
    salience: float | None = None
    time: float | None = None
    #: The world episode the stored step was part of, if it had one.
    episode: str | None = None
    #: The episode's key, only when the recall asked for them (`with_keys`).
    key: list[float] | None = None


@message("mem.recall_reply", "mem_recall_reply")
class MemRecallReply(Message):
    """One shard's local top-k (from a shard), or the merged answer (from `memory.recall`).

    `error` is set, with no hits, when the request was rejected (wrong dimension, NaN, bad k).
    """

    hits: list[MemHit]
    shards_asked: int = 0
    shards_answered: int = 0
    partial: bool = False
    shard: str | None = None
    episodes: int | None = None
    error: str | None = None


@message("mem.replay", "mem_replay")
class MemReplay(Message):
    """One episode replayed during sleep (DESIGN 6.10): shards publish a sample of their episodes,
    the basal ganglia and the sensory cortex learn from them offline (consolidation)."""

    key: Vector
    action: ActionName | None = None
    reward: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None
    salience: Annotated[float, Field(ge=0.0)] = 0.0
    episode_id: Annotated[int, Field(ge=-1)] = -1
    shard: str | None = None
    stimulus_id: StimulusId | None = None


@message("region.*.out", "region_output")
class RegionOutput(Message):
    """A region's output: what it computed about a stimulus."""

    region: Token
    kind: Token
    stimulus_id: StimulusId | None = None
    vector: Vector | None = None
    data: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------- system


@message("sys.heartbeat.*", "heartbeat")
class Heartbeat(Message):
    """Liveness and statistics of one actor, published every heartbeat interval."""

    actor: str
    kind: str
    state: str
    pid: int
    group: str = "main"
    msgs_in: int = 0
    msgs_out: int = 0
    mailbox: int = 0
    mailbox_capacity: int = 0
    dropped: int = 0
    rejected: int = 0
    errors: int = 0
    restarts: int = 0
    latency_ms_p50: float = 0.0
    latency_ms_max: float = 0.0
    uptime_s: float = 0.0
    stats: dict[str, Any] = Field(default_factory=dict)


@message("sys.error", "sys_error")
class SysError(Message):
    """A rejected message or a handler failure, reported once per event (rate limited).

    Reports are bounded whatever the input was: a subject of at most 256 characters and a reason
    of at most `MAX_REASON` (`shorten` cuts longer ones), so no input is echoed at length.
    """

    actor: str
    subject: Annotated[str, Field(max_length=256)]
    reason: Annotated[str, Field(max_length=MAX_REASON)]
    kind: Literal["bad_input", "handler_error", "overflow", "no_actions", "crash", "escalation"] = (
        "bad_input"
    )
    stimulus_id: StimulusId | None = None
    suppressed: int = Field(default=0, description="similar reports dropped by rate limiting since the last")


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    note = f"... ({len(text)} characters)"
    return text[:max(0, limit - len(note))] + note


CTL_VERBS = ("pause", "resume", "restart", "sleep", "wake", "snapshot", "status")


@message("sys.ctl.*", "ctl_request")
class CtlRequest(Message):
    """An operator's control request. A plain body (`pause`) is accepted as the verb."""

    PLAIN_TEXT_FIELD: ClassVar[str | None] = "verb"
    verb: Literal["pause", "resume", "restart", "sleep", "wake", "snapshot", "status"]
    args: dict[str, Any] = Field(default_factory=dict)


@message("sys.ctl_reply", "ctl_reply")
class CtlReply(Message):
    actor: str
    verb: str
    ok: bool
    state: str
    detail: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
