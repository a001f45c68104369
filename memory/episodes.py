"""Episodes: the unit a hippocampal shard stores, and their compact byte form for the log.

An episode is what the workspace broadcast (its embedding ``key``), what was done about it
(``action``), how it turned out (``reward``), the hormonal context at the time, how salient it
was, and the world episode it was a step of (if any). The byte form is a small orjson header
followed by the raw little-endian float32 key, so a 384-d episode costs about 1.6 KB in the log
instead of the ~8 KB a JSON list of floats would.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

__all__ = ["Episode"]

# Layout of the byte form: u32 header length (little endian), the JSON header, then dim float32s.
_HEADER_LEN = struct.Struct("<I")
_KEY_DTYPE = np.dtype("<f4")


@dataclass(slots=True, eq=False)
class Episode:
    """One episodic memory.

    Attributes:
        episode_id: Shard-unique id; a negative id asks the store to assign one.
        key: The content vector (1-D, coerced to float32). The store keeps it unit-normalized.
        stimulus_id: Id of the stimulus that caused the broadcast, if any.
        action: The action taken in that context, if any.
        reward: The outcome, or None when no outcome was observed.
        hormones: Neuromodulator levels at encoding time, by name.
        time: Encoding time in seconds (the caller's clock; the store only compares times).
        salience: Non-negative importance; drives eviction, pruning and replay.
        world_episode: Id of the world's episode the step belonged to (the stimulus's
            ``episode``), if any. Not to be confused with ``episode_id``, this memory's own id.
    """

    episode_id: int
    key: npt.NDArray[Any]
    stimulus_id: str | None = None
    action: str | None = None
    reward: float | None = None
    hormones: dict[str, float] = field(default_factory=dict)
    time: float = 0.0
    salience: float = 0.0
    world_episode: str | None = None

    def __post_init__(self) -> None:
        key = self.key
        # The common case (a shard's decoded key, a store's prepared row) is already a 1-D
        # contiguous float32 array: one type check instead of two array constructions.
        if type(key) is np.ndarray and key.dtype == np.float32 and key.ndim == 1 and key.flags.c_contiguous:
            return
        key = np.asarray(key, dtype=np.float32)
        if key.ndim != 1:
            raise ValueError(f"Episode.key must be a 1-D vector, got shape {key.shape}")
        self.key = np.ascontiguousarray(key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Episode):
            return NotImplemented
        return (
            self.episode_id == other.episode_id
            and self.stimulus_id == other.stimulus_id
            and self.action == other.action
            and self.reward == other.reward
            and self.hormones == other.hormones
            and self.time == other.time
            and self.salience == other.salience
            and self.world_episode == other.world_episode
            and bool(np.array_equal(self.key, other.key))
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, holds an array

    def with_id(self, episode_id: int) -> Episode:
        """Return a copy with another id (the key array is shared, not copied)."""
        return replace(self, episode_id=episode_id)

    def to_bytes(self) -> bytes:
        """Serialize to ``u32 header_len | orjson header | float32 key``.

        The world episode is written (header key ``"e"``) only when there is one, so an episode
        without one has the same bytes as before the field existed.

        Raises:
            ValueError: If a scalar field is not finite (JSON cannot carry NaN/Inf, and orjson
                would silently turn them into null).
        """
        time, salience, reward = float(self.time), float(self.salience), self.reward
        if reward is not None:
            reward = float(reward)
        # A NaN or Inf term makes the sum non-finite (so can an overflow of finite terms): only
        # then does the loop below run, to name the culprit.
        if not math.isfinite(time + salience + (reward or 0.0) + sum(self.hormones.values())):
            for name, value in (("time", time), ("salience", salience), ("reward", reward)):
                if value is not None and not math.isfinite(value):
                    raise ValueError(f"Episode.{name} must be finite to serialize, got {value!r}")
            for hname, hvalue in self.hormones.items():
                if not math.isfinite(hvalue):
                    raise ValueError(f"Episode.hormones[{hname!r}] must be finite to serialize, got {hvalue!r}")
        header: dict[str, Any] = {
            "id": int(self.episode_id),
            "d": int(self.key.shape[0]),
            "s": self.stimulus_id,
            "a": self.action,
            "r": reward,
            "h": {k: float(v) for k, v in self.hormones.items()} if self.hormones else {},
            "t": time,
            "l": salience,
        }
        if self.world_episode is not None:
            header["e"] = self.world_episode
        head = orjson.dumps(header)
        return b"".join(
            (_HEADER_LEN.pack(len(head)), head, self.key.astype(_KEY_DTYPE, copy=False).tobytes())
        )

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Episode:
        """Parse the form written by :meth:`to_bytes`.

        Raises:
            ValueError: If the bytes are truncated, the header is not valid JSON, or the key
                length does not match the header's dimension.
        """
        view = memoryview(data)
        if len(view) < _HEADER_LEN.size:
            raise ValueError(f"episode bytes too short for a header length: {len(view)} bytes")
        (head_len,) = _HEADER_LEN.unpack_from(view, 0)
        start = _HEADER_LEN.size
        if start + head_len > len(view):
            raise ValueError(f"episode header length {head_len} runs past the end ({len(view)} bytes)")
        try:
            header = orjson.loads(view[start : start + head_len])
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"episode header is not valid JSON: {exc}") from exc
        if not isinstance(header, dict):
            raise ValueError("episode header is not a JSON object")
        try:
            dim = int(header["d"])
            key_bytes = view[start + head_len :]
            want = dim * _KEY_DTYPE.itemsize
            if len(key_bytes) != want:
                raise ValueError(f"episode key has {len(key_bytes)} bytes, expected {want} for dim {dim}")
            # Copy so the episode owns a writable array independent of the log buffer.
            key = np.frombuffer(key_bytes, dtype=_KEY_DTYPE).astype(np.float32)
            reward = header["r"]
            world = header.get("e")  # absent in records written before episodes had it
            if world is not None and not isinstance(world, str):
                raise ValueError(f"episode header field 'e' must be a string or null, got {world!r}")
            return cls(
                episode_id=int(header["id"]),
                key=key,
                stimulus_id=header["s"],
                action=header["a"],
                reward=None if reward is None else float(reward),
                hormones={str(k): float(v) for k, v in header["h"].items()},
                time=float(header["t"]),
                salience=float(header["l"]),
                world_episode=world,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"episode header is missing or has a malformed field: {exc!r}") from exc
