"""The in-memory core of one hippocampal shard: a fixed-capacity vector store of episodes.

Keys live in one preallocated torch matrix (``capacity x dim``, float16 or float32) so that a
million 384-d episodes fit in ~770 MB in float16 and search is a chunked matrix product.
Per-episode metadata is kept in parallel numpy arrays, never in per-episode Python objects:
a Python dict entry plus its boxed ints and strings costs more than the 768-byte float16 key
itself, and the memory budget is 1.2x the raw key bytes.

Slot management is deterministic (a LIFO free-slot stack, then the high-water mark), so replaying
the same sequence of adds and removals from a log rebuilds the identical slot layout.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from memory.episodes import Episode
from memory.scan import float32_chunks, top_k

__all__ = ["MAX_K", "StoreFull", "StoreState", "VectorStore"]

MAX_K = 1000
"""Largest ``k`` a search accepts; recall requests beyond that are a caller bug, not a query."""

_MAX_HORMONES = 32
_MAX_STIMULUS_BYTES = 1024
_MAX_WORLD_EPISODE_BYTES = 128
_LN2 = math.log(2.0)
# Floor inside the log of the eviction value so salience 0 is finite and ordered by age alone.
_VALUE_EPS = 1e-6
_QUERY_BLOCK = 256

IdArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


class _Columns(NamedTuple):
    keys: FloatArray
    time: npt.NDArray[np.float64]
    salience: FloatArray
    reward: FloatArray  # NaN = no reward


class StoreFull(ValueError):
    """Raised by :meth:`VectorStore.add` when the batch does not fit in the free slots."""


@dataclass(slots=True)
class StoreState:
    """A complete, pickle-free description of a store: JSON-able ``meta`` plus numpy ``arrays``."""

    meta: dict[str, Any]
    arrays: dict[str, npt.NDArray[Any]]


class VectorStore:
    """Fixed-capacity episode store with exact top-k search and Hopfield completion.

    Args:
        dim: Key dimension D.
        capacity: Maximum number of live episodes; the key matrix is allocated up front.
        dtype: Storage type of keys, ``"float16"`` (half the memory) or ``"float32"``. Scores
            are always accumulated in float32.
        device: Torch device of the key matrix (``"cpu"``, ``"cuda"``...).
        half_life_s: Age (in the episodes' time unit) over which an episode's eviction value
            halves; see :meth:`eviction_values`.
        reward_weight: Weight of ``|reward|`` next to salience in eviction and replay values.
    """

    def __init__(
        self,
        dim: int,
        capacity: int,
        dtype: Literal["float16", "float32"] = "float16",
        device: str = "cpu",
        *,
        half_life_s: float = 3600.0,
        reward_weight: float = 1.0,
    ) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if capacity <= 0 or capacity >= 2**31:
            raise ValueError(f"capacity must be in [1, 2**31), got {capacity}")
        if dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
        if not (half_life_s > 0 and math.isfinite(half_life_s)):
            raise ValueError(f"half_life_s must be a positive finite number, got {half_life_s}")
        if not (reward_weight >= 0 and math.isfinite(reward_weight)):
            raise ValueError(f"reward_weight must be a non-negative finite number, got {reward_weight}")
        self.dim = dim
        self.capacity = capacity
        self.dtype: Literal["float16", "float32"] = dtype
        self.device = torch.device(device)
        self.half_life_s = float(half_life_s)
        self.reward_weight = float(reward_weight)
        self._torch_dtype = torch.float16 if dtype == "float16" else torch.float32
        self._keys = torch.zeros((capacity, dim), dtype=self._torch_dtype, device=self.device)
        # A numpy view of the same memory on the CPU (for writes that should not leave Python).
        self._keys_np: npt.NDArray[Any] | None = self._keys.numpy() if self.device.type == "cpu" else None
        self._ids = np.full(capacity, -1, dtype=np.int64)
        self._valid = np.zeros(capacity, dtype=np.bool_)
        self._time = np.zeros(capacity, dtype=np.float64)
        self._salience = np.zeros(capacity, dtype=np.float32)
        self._reward = np.full(capacity, np.nan, dtype=np.float32)  # NaN encodes "no reward"
        self._action = np.full(capacity, -1, dtype=np.int32)  # code into _actions, -1 = None
        self._actions: list[str] = []
        self._action_codes: dict[str, int] = {}
        # Stimulus ids are usually unique per episode, so they get a fixed-width byte column
        # (widened on demand) instead of a string table; -1 length encodes None.
        self._stim = np.zeros(capacity, dtype="S1")
        self._stim_len = np.full(capacity, -1, dtype=np.int16)
        # The world episode a step belonged to: the same kind of column (many steps share one
        # id, but ids come and go with the episodes, so a string table would only grow).
        self._world = np.zeros(capacity, dtype="S1")
        self._world_len = np.full(capacity, -1, dtype=np.int16)
        self._hormone_names: list[str] = []
        self._hormones = np.full((capacity, 0), np.nan, dtype=np.float32)
        self._free = np.zeros(capacity, dtype=np.int32)  # LIFO stack of reusable slots
        self._free_n = 0
        self._hw = 0  # slots [0, _hw) have been used at least once
        self._count = 0
        self._next_id = 0
        # Sorted id -> slot index. New ids are normally larger than all earlier ones, so they
        # append in O(batch); stale entries (removed ids) are dropped when the index is rebuilt.
        self._idx_ids = np.zeros(2 * capacity, dtype=np.int64)
        self._idx_slots = np.zeros(2 * capacity, dtype=np.int32)
        self._idx_n = 0

    # ------------------------------------------------------------------ basics

    def __len__(self) -> int:
        return self._count

    def __contains__(self, episode_id: object) -> bool:
        if not isinstance(episode_id, int | np.integer):
            return False
        return bool(self._lookup(np.array([episode_id], dtype=np.int64))[0] >= 0)

    @property
    def free_slots(self) -> int:
        """Number of episodes that can still be added without eviction."""
        return self.capacity - self._count

    @property
    def next_id(self) -> int:
        """The id the next auto-assigned episode will get."""
        return self._next_id

    def ids(self) -> IdArray:
        """Ids of all live episodes, in slot order."""
        return self._ids[: self._hw][self._valid[: self._hw]].copy()

    def memory_bytes(self) -> int:
        """Bytes held by the store's arrays and string tables (excluding fixed interpreter overhead)."""
        total = self._keys.element_size() * self._keys.nelement()
        for arr in (
            self._ids,
            self._valid,
            self._time,
            self._salience,
            self._reward,
            self._action,
            self._stim,
            self._stim_len,
            self._world,
            self._world_len,
            self._hormones,
            self._free,
            self._idx_ids,
            self._idx_slots,
        ):
            total += arr.nbytes
        total += sum(sys.getsizeof(a) + 100 for a in self._actions)  # str + list/dict entries
        total += sum(sys.getsizeof(h) + 8 for h in self._hormone_names)
        return total

    # ------------------------------------------------------------------ adding

    def prepare(self, episodes: Sequence[Episode]) -> list[Episode]:
        """Validate episodes, unit-normalize their keys and assign ids to those with a negative id.

        Call this before writing episodes to the durable log, so that the log holds exactly what
        :meth:`add` will store (and replaying it reproduces the store). Assigned ids are reserved:
        they are never handed out again, even if the episodes are never added.

        Returns:
            New Episode objects (inputs are not modified), keys as float32 unit vectors.

        Raises:
            ValueError: On a wrong key dimension, NaN/Inf or all-zero keys, non-finite or
                out-of-range scalar fields, or a stimulus id or world episode past its byte
                limit; the message names the episode index and field.
        """
        if len(episodes) == 0:
            return []
        cols = self._validate(episodes)
        _string_bytes(episodes)
        ids = self._assign_ids(episodes)
        return [
            Episode(
                episode_id=int(ids[i]),
                key=cols.keys[i],
                stimulus_id=ep.stimulus_id,
                action=ep.action,
                reward=None if ep.reward is None else float(ep.reward),
                hormones=dict(ep.hormones),
                time=float(cols.time[i]),
                salience=float(ep.salience),
                world_episode=ep.world_episode,
            )
            for i, ep in enumerate(episodes)
        ]

    def add(self, episodes: Sequence[Episode], *, prepared: bool = False) -> IdArray:
        """Add a batch of episodes; episodes with a negative id get a fresh one.

        Args:
            episodes: The batch.
            prepared: The episodes are what :meth:`prepare` of this store returned (unit
                float32 keys, checked fields, assigned ids): they are not validated again.

        Returns:
            The ids of the added episodes, in input order.

        Raises:
            StoreFull: If the batch does not fit; nothing is added. Call :meth:`evict` first.
            ValueError: On invalid episodes (see :meth:`prepare`) or ids already present or
                repeated within the batch; nothing is added.
        """
        n = len(episodes)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        if n > self.free_slots:
            raise StoreFull(
                f"store full: batch of {n} episodes but only {self.free_slots} of {self.capacity} slots free"
            )
        cols = self._prepared_columns(episodes) if prepared else self._validate(episodes)
        # Encode strings before touching any array, so a too-long stimulus id adds nothing.
        stim_bytes, world_bytes = _string_bytes(episodes)
        next_id_before = self._next_id
        ids = self._assign_ids(episodes)
        known = self._lookup(ids) >= 0
        if len(np.unique(ids)) != n or bool(known.any()):
            self._next_id = next_id_before
            dup = [int(i) for i in ids[known][:5]]
            raise ValueError(f"duplicate episode ids in add (already stored: {dup} or repeated in the batch)")
        try:
            hormone_cols = self._hormone_columns(episodes)
        except ValueError:
            self._next_id = next_id_before
            raise

        slots = self._take_slots(n)
        if self._keys_np is not None:
            # numpy, not torch: a torch op releases the GIL and getting it back can wait a whole
            # switch interval (5 ms) behind a busy thread; the conversion to float16 rounds the same.
            self._keys_np[slots] = cols.keys
        else:
            slot_t = torch.from_numpy(slots.astype(np.int64)).to(self.device)
            self._keys[slot_t] = torch.from_numpy(cols.keys).to(device=self.device, dtype=self._torch_dtype)
        self._ids[slots] = ids
        self._valid[slots] = True
        self._time[slots] = cols.time
        self._salience[slots] = cols.salience
        self._reward[slots] = cols.reward
        self._action[slots] = [self._action_code(ep.action) for ep in episodes]
        self._stim = _put_strings(self._stim, self._stim_len, slots, stim_bytes)
        self._world = _put_strings(self._world, self._world_len, slots, world_bytes)
        self._hormones[slots] = hormone_cols
        self._count += n
        self._next_id = max(self._next_id, int(ids.max()) + 1)
        self._index_insert(ids, slots)
        return ids

    def _validate(self, episodes: Sequence[Episode]) -> _Columns:
        """Check every field of a batch (vectorized) and return the columns to store."""
        for i, ep in enumerate(episodes):
            if ep.key.shape != (self.dim,):
                raise ValueError(f"episode {i}: key has shape {ep.key.shape}, expected ({self.dim},)")
        keys = self._normalize(np.stack([ep.key for ep in episodes]), what="key", index_hint="episode")
        time = np.array([ep.time for ep in episodes], dtype=np.float64)
        sal = np.array([ep.salience for ep in episodes], dtype=np.float64)
        rew = np.array([np.nan if ep.reward is None else ep.reward for ep in episodes], dtype=np.float64)
        bad = ~np.isfinite(time)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"episode {i}: time must be finite, got {episodes[i].time!r}")
        bad = ~(np.isfinite(sal) & (sal >= 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"episode {i}: salience must be finite and >= 0, got {episodes[i].salience!r}")
        bad = np.isinf(rew) | (np.isnan(rew) & np.array([ep.reward is not None for ep in episodes]))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"episode {i}: reward must be finite or None, got {episodes[i].reward!r}")
        for i, ep in enumerate(episodes):
            for name, value in ep.hormones.items():
                if not math.isfinite(value):
                    raise ValueError(f"episode {i}: hormone {name!r} must be finite, got {value!r}")
        return _Columns(keys, time, sal.astype(np.float32), rew.astype(np.float32))

    def _prepared_columns(self, episodes: Sequence[Episode]) -> _Columns:
        """The columns of episodes that :meth:`prepare` already checked and normalized."""
        return _Columns(
            np.stack([ep.key for ep in episodes]),
            np.array([ep.time for ep in episodes], dtype=np.float64),
            np.array([ep.salience for ep in episodes], dtype=np.float32),
            np.array([np.nan if ep.reward is None else ep.reward for ep in episodes], dtype=np.float32),
        )

    def _assign_ids(self, episodes: Sequence[Episode]) -> IdArray:
        ids = np.array([ep.episode_id for ep in episodes], dtype=np.int64)
        fresh = ids < 0
        n_fresh = int(fresh.sum())
        ids[fresh] = np.arange(self._next_id, self._next_id + n_fresh, dtype=np.int64)
        self._next_id += n_fresh
        return ids

    # ------------------------------------------------------------------ reading

    def get(self, episode_id: int) -> Episode:
        """Return the stored episode (key as the stored, unit-norm float32 vector).

        Raises:
            KeyError: If no live episode has that id.
        """
        slot = int(self._lookup(np.array([episode_id], dtype=np.int64))[0])
        if slot < 0:
            raise KeyError(f"no episode with id {episode_id} in this store")
        return self._episode_at(slot)

    def get_many(self, ids: Sequence[int] | npt.NDArray[np.integer[Any]]) -> list[Episode | None]:
        """Return episodes for ``ids`` (None where absent, e.g. the -1 padding of :meth:`search`)."""
        slots = self._lookup(np.asarray(ids, dtype=np.int64).reshape(-1))
        return [None if s < 0 else self._episode_at(int(s)) for s in slots]

    def _episode_at(self, slot: int) -> Episode:
        reward = float(self._reward[slot])
        code = int(self._action[slot])
        row = self._hormones[slot]
        hormones = {name: float(row[j]) for j, name in enumerate(self._hormone_names) if not np.isnan(row[j])}
        return Episode(
            episode_id=int(self._ids[slot]),
            key=self._key_at(slot),
            stimulus_id=_string_at(self._stim, self._stim_len, slot),
            action=None if code < 0 else self._actions[code],
            reward=None if math.isnan(reward) else reward,
            hormones=hormones,
            time=float(self._time[slot]),
            salience=float(self._salience[slot]),
            world_episode=_string_at(self._world, self._world_len, slot),
        )

    def _key_at(self, slot: int) -> FloatArray:
        if self._keys_np is not None:  # numpy: no torch call (and no GIL hand-off) per hit
            key: FloatArray = self._keys_np[slot].astype(np.float32)
            return key
        out: FloatArray = self._keys[slot].to(device="cpu", dtype=torch.float32).numpy().copy()
        return out

    # ------------------------------------------------------------------ search

    def search(self, queries: npt.ArrayLike | torch.Tensor, k: int) -> tuple[FloatArray, IdArray]:
        """Exact top-k by inner product between normalized queries and the stored unit keys.

        A float16 key matrix is converted to float32 in small cache-resident pieces (see
        `memory.scan`), so it is scored with float32 arithmetic without ever materializing a
        full float32 copy.

        Args:
            queries: ``(n, D)`` (or ``(D,)``, treated as ``n = 1``); normalized here.
            k: Results per query, ``1 <= k <= MAX_K``.

        Returns:
            ``(scores, ids)``, both ``(n, k)``, best first. Where fewer than ``k`` episodes are
            live, the tail is padded with score ``-inf`` and id ``-1``.

        Raises:
            ValueError: On a bad ``k``, wrong query dimension or NaN/Inf/zero queries.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if k > MAX_K:
            raise ValueError(f"k={k} exceeds the maximum of {MAX_K}")
        q = self._queries(queries)
        n = q.shape[0]
        out_scores = np.full((n, k), -np.inf, dtype=np.float32)
        out_ids = np.full((n, k), -1, dtype=np.int64)
        if self._count == 0 or n == 0:
            return out_scores, out_ids
        for b0 in range(0, n, _QUERY_BLOCK):
            scores, slots = self._search_block(q[b0 : b0 + _QUERY_BLOCK], k)
            s_np = scores.cpu().numpy()
            sl_np = slots.cpu().numpy()
            found = np.isfinite(s_np)
            kk = s_np.shape[1]
            out_scores[b0 : b0 + len(s_np), :kk] = np.where(found, s_np, -np.inf)
            out_ids[b0 : b0 + len(s_np), :kk] = np.where(found, self._ids[np.clip(sl_np, 0, None)], -1)
        return out_scores, out_ids

    def _search_block(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return top_k(self._keys, self._valid, self._hw, q, k, all_valid=self._count == self._hw)

    def _chunks(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        return float32_chunks(self._keys, self._valid, self._hw)

    def complete(self, query: npt.ArrayLike | torch.Tensor, beta: float, steps: int = 1) -> FloatArray:
        """Pattern completion by modern-Hopfield retrieval (Ramsauer et al. 2020).

        Each step computes ``xi <- X^T softmax(beta * X xi)`` over the live keys ``X`` and
        renormalizes ``xi`` (keys are unit vectors, so the fixed points are near stored keys).
        The softmax is streamed over the same float32 chunks as :meth:`search`.

        Args:
            query: ``(D,)`` or ``(n, D)`` cue, e.g. a noisy or partial key.
            beta: Inverse temperature; larger snaps harder onto the nearest stored key.
            steps: Number of update steps (>= 1).

        Returns:
            The completed unit vector(s), float32, same shape as ``query``.

        Raises:
            ValueError: On a bad beta/steps/query, or if the store is empty.
        """
        if not (beta > 0 and math.isfinite(beta)):
            raise ValueError(f"beta must be a positive finite number, got {beta}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if self._count == 0:
            raise ValueError("cannot complete a pattern from an empty store")
        single = (query.dim() if isinstance(query, torch.Tensor) else np.ndim(query)) == 1
        xi = self._queries(query)
        for _ in range(steps):
            n = xi.shape[0]
            m = torch.full((n, 1), -math.inf, device=self.device)
            den = torch.zeros((n, 1), device=self.device)
            acc = torch.zeros((n, self.dim), device=self.device)
            for _start, chunk, valid in self._chunks():
                s = beta * (xi @ chunk.T)
                s.masked_fill_(~valid, -math.inf)
                m_new = torch.maximum(m, s.max(dim=1, keepdim=True).values)
                scale = torch.exp(m - m_new)  # rescale earlier sums to the new running max
                p = torch.exp(s - m_new)
                den = den * scale + p.sum(dim=1, keepdim=True)
                acc = acc * scale + p @ chunk
                m = m_new
            xi = acc / den
            xi = xi / xi.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out: FloatArray = xi.cpu().numpy().astype(np.float32)
        return out[0] if single else out

    # ------------------------------------------------------------------ forgetting

    def eviction_values(self, now: float | None = None) -> tuple[IdArray, npt.NDArray[np.float64]]:
        """Value of every live episode; the lowest are evicted first.

        ``value = ln(eps + salience + reward_weight * |reward|) - ln(2) * age / half_life_s``

        i.e. the episode's strength ``salience + reward_weight * |reward|`` decayed by half every
        ``half_life_s`` of age (taken in log space so salience 0 still orders by age). ``age =
        now - time``; ``now`` defaults to the newest stored time, so the store never reads a
        clock and replays evict identically.

        Returns:
            ``(ids, values)`` of the live episodes in slot order.
        """
        live = np.flatnonzero(self._valid[: self._hw])
        if len(live) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        t = self._time[live]
        ref = float(t.max()) if now is None else float(now)
        return self._ids[live].copy(), self._values(live, ref)

    def _values(self, live: npt.NDArray[np.intp], now: float) -> npt.NDArray[np.float64]:
        strength = self._salience[live].astype(np.float64) + self.reward_weight * np.nan_to_num(
            np.abs(self._reward[live].astype(np.float64)), nan=0.0
        )
        age = now - self._time[live]
        out: npt.NDArray[np.float64] = np.log(_VALUE_EPS + strength) - _LN2 * age / self.half_life_s
        return out

    def evict(self, n: int, now: float | None = None) -> IdArray:
        """Remove the ``n`` lowest-value episodes (see :meth:`eviction_values`); their slots are reused.

        Ties go to the older episode, then the lower id, so eviction is deterministic.

        Returns:
            The evicted ids, in eviction order (log them as one removal to replay identically).
        """
        if n < 0:
            raise ValueError(f"evict count must be >= 0, got {n}")
        live = np.flatnonzero(self._valid[: self._hw])
        n = min(n, len(live))
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        ref = float(self._time[live].max()) if now is None else float(now)
        values = self._values(live, ref)
        order = np.lexsort((self._ids[live], self._time[live], values))[:n]
        victims = live[order]
        ids = self._ids[victims].copy()
        self._free_slots(victims)
        return ids

    def prune(self, min_salience: float) -> IdArray:
        """Remove every episode with ``salience < min_salience`` (sleep's weak-memory pruning).

        Returns:
            The removed ids, in slot order.
        """
        if math.isnan(min_salience):
            raise ValueError("min_salience must not be NaN")
        live = np.flatnonzero(self._valid[: self._hw])
        victims = live[self._salience[live] < min_salience]
        ids = self._ids[victims].copy()
        self._free_slots(victims)
        return ids

    def remove(self, ids: Sequence[int] | npt.NDArray[np.integer[Any]]) -> IdArray:
        """Remove episodes by id; unknown ids are ignored.

        Returns:
            The ids actually removed, in the order given.
        """
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        slots = self._lookup(arr)
        hit = slots >= 0
        # Deduplicate while keeping order, so a repeated id does not free its slot twice.
        _, first = np.unique(slots[hit], return_index=True)
        victims = slots[hit][np.sort(first)]
        removed = self._ids[victims].copy()
        self._free_slots(victims.astype(np.intp))
        return removed

    def replay_sample(
        self, n: int, generator: np.random.Generator, *, replace: bool = False
    ) -> list[Episode]:
        """Sample episodes for sleep replay, with probability proportional to
        ``salience + reward_weight * |reward| + 1e-6`` (so salient or rewarded ones replay most).

        Args:
            n: Number of episodes wanted; without replacement at most ``len(self)`` are returned.
            generator: Source of randomness (the caller seeds it for reproducible sleep).
            replace: Sample with replacement.
        """
        if n < 0:
            raise ValueError(f"replay sample size must be >= 0, got {n}")
        live = np.flatnonzero(self._valid[: self._hw])
        if n == 0 or len(live) == 0:
            return []
        w = self._salience[live].astype(np.float64) + self.reward_weight * np.nan_to_num(
            np.abs(self._reward[live].astype(np.float64)), nan=0.0
        )
        w += _VALUE_EPS
        size = n if replace else min(n, len(live))
        picked = generator.choice(live, size=size, replace=replace, p=w / w.sum())
        return [self._episode_at(int(s)) for s in picked]

    # ------------------------------------------------------------------ state

    def export_state(self) -> StoreState:
        """Copy the store's content (slots ``[0, high-water)``) into a :class:`StoreState`."""
        hw = self._hw
        keys = self._keys[:hw].cpu().numpy().copy()
        return StoreState(
            meta={
                "dim": self.dim,
                "capacity": self.capacity,
                "dtype": self.dtype,
                "hw": hw,
                "count": self._count,
                "next_id": self._next_id,
                "actions": list(self._actions),
                "hormone_names": list(self._hormone_names),
                "half_life_s": self.half_life_s,
                "reward_weight": self.reward_weight,
            },
            arrays={
                "keys": keys,
                "ids": self._ids[:hw].copy(),
                "valid": self._valid[:hw].copy(),
                "time": self._time[:hw].copy(),
                "salience": self._salience[:hw].copy(),
                "reward": self._reward[:hw].copy(),
                "action": self._action[:hw].copy(),
                "stim": self._stim[:hw].copy(),
                "stim_len": self._stim_len[:hw].copy(),
                "world_episode": self._world[:hw].copy(),
                "world_episode_len": self._world_len[:hw].copy(),
                "hormones": self._hormones[:hw].copy(),
                "free": self._free[: self._free_n].copy(),
            },
        )

    def load_state(self, state: StoreState) -> None:
        """Replace this store's content with ``state`` (dims must match; capacity may be larger).

        Raises:
            ValueError: If the state does not fit this store or is internally inconsistent.
        """
        meta, arrays = state.meta, state.arrays
        try:
            dim, hw, count = int(meta["dim"]), int(meta["hw"]), int(meta["count"])
            actions = [str(a) for a in meta["actions"]]
            hormone_names = [str(h) for h in meta["hormone_names"]]
            next_id = int(meta["next_id"])
            a = {name: arrays[name] for name in _STATE_ARRAYS}
            # States written before steps had a world episode lack its columns: all None then.
            present = [name in arrays for name in _WORLD_ARRAYS]
            if any(present) and not all(present):
                raise KeyError(f"{_WORLD_ARRAYS[present.index(False)]} (the other world episode array is there)")
            if all(present):
                a.update({name: arrays[name] for name in _WORLD_ARRAYS})
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"store state is missing or has a malformed field: {exc!r}") from exc
        if dim != self.dim:
            raise ValueError(f"store state has dim {dim}, this store has dim {self.dim}")
        if hw > self.capacity:
            raise ValueError(f"store state uses {hw} slots, this store's capacity is {self.capacity}")
        for name in a:
            if name in ("free",):
                continue
            want = (hw, dim) if name == "keys" else (hw, len(hormone_names)) if name == "hormones" else (hw,)
            if a[name].shape != want:
                raise ValueError(f"store state array {name!r} has shape {a[name].shape}, expected {want}")
        valid = a["valid"].astype(np.bool_)
        free = a["free"].astype(np.int32)
        if int(valid.sum()) != count or len(free) != hw - count:
            raise ValueError(
                f"store state is inconsistent: count={count}, valid={int(valid.sum())}, free={len(free)}"
            )
        if len(free) and (free.min() < 0 or free.max() >= hw or bool(valid[free].any())):
            raise ValueError(
                "store state is inconsistent: free-slot stack points at live or out-of-range slots"
            )
        if (len(actions) and a["action"].max(initial=-1) >= len(actions)) or a["action"].min(initial=0) < -1:
            raise ValueError("store state is inconsistent: action codes out of range")

        self._keys.zero_()
        self._keys[:hw] = torch.from_numpy(np.ascontiguousarray(a["keys"])).to(
            device=self.device, dtype=self._torch_dtype
        )
        self._ids.fill(-1)
        self._ids[:hw] = a["ids"]
        self._valid.fill(False)
        self._valid[:hw] = valid
        self._time[:hw] = a["time"]
        self._salience[:hw] = a["salience"]
        self._reward.fill(np.nan)
        self._reward[:hw] = a["reward"]
        self._action.fill(-1)
        self._action[:hw] = a["action"]
        self._actions = actions
        self._action_codes = {s: i for i, s in enumerate(actions)}
        stim = a["stim"]
        self._stim = np.zeros(self.capacity, dtype=stim.dtype if stim.dtype.kind == "S" else "S1")
        self._stim[:hw] = stim
        self._stim_len.fill(-1)
        self._stim_len[:hw] = a["stim_len"]
        world = a.get("world_episode")
        world_dtype = world.dtype if world is not None and world.dtype.kind == "S" else "S1"
        self._world = np.zeros(self.capacity, dtype=world_dtype)
        self._world_len.fill(-1)
        if world is not None:
            self._world[:hw] = world
            self._world_len[:hw] = a["world_episode_len"]
        self._hormone_names = hormone_names
        self._hormones = np.full((self.capacity, len(hormone_names)), np.nan, dtype=np.float32)
        self._hormones[:hw] = a["hormones"]
        self._free[: len(free)] = free
        self._free_n = len(free)
        self._hw = hw
        self._count = count
        self._next_id = next_id
        self._rebuild_index()

    # ------------------------------------------------------------------ internals

    def _normalize(
        self, x: npt.NDArray[np.float32], *, what: str, index_hint: str
    ) -> npt.NDArray[np.float32]:
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            raise ValueError(f"{index_hint} {int(np.flatnonzero(bad)[0])}: {what} contains NaN or Inf")
        # float64 norms: a float32 sum of squares overflows for large but finite components.
        norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
        zero = norms == 0
        if zero.any():
            raise ValueError(f"{index_hint} {int(np.flatnonzero(zero)[0])}: {what} is all zeros")
        out: npt.NDArray[np.float32] = (x / norms[:, None]).astype(np.float32)
        return out

    def _queries(self, queries: npt.ArrayLike | torch.Tensor) -> torch.Tensor:
        if isinstance(queries, torch.Tensor):
            q = queries.detach().to(device="cpu", dtype=torch.float32).numpy()
        else:
            q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (n, {self.dim}) or ({self.dim},), got {q.shape}")
        if q.shape[0] == 0:
            return torch.zeros((0, self.dim), dtype=torch.float32, device=self.device)
        qn = self._normalize(np.ascontiguousarray(q), what="query", index_hint="query")
        return torch.from_numpy(qn).to(self.device)

    def _action_code(self, action: str | None) -> int:
        if action is None:
            return -1
        code = self._action_codes.get(action)
        if code is None:
            code = len(self._actions)
            self._actions.append(action)
            self._action_codes[action] = code
        return code

    def _hormone_columns(self, episodes: Sequence[Episode]) -> npt.NDArray[np.float32]:
        names = {name for ep in episodes for name in ep.hormones}
        new = sorted(names.difference(self._hormone_names))
        if len(self._hormone_names) + len(new) > _MAX_HORMONES:
            raise ValueError(f"too many distinct hormone names (limit {_MAX_HORMONES}): new {new}")
        if new:
            grown = np.full((self.capacity, len(self._hormone_names) + len(new)), np.nan, dtype=np.float32)
            grown[:, : len(self._hormone_names)] = self._hormones
            self._hormones = grown
            self._hormone_names.extend(new)
        col = {name: j for j, name in enumerate(self._hormone_names)}
        out = np.full((len(episodes), len(self._hormone_names)), np.nan, dtype=np.float32)
        for i, ep in enumerate(episodes):
            for name, value in ep.hormones.items():
                out[i, col[name]] = value
        return out

    def _take_slots(self, n: int) -> npt.NDArray[np.intp]:
        # Pop reusable slots first (top of the stack first), then extend the high-water mark;
        # slot choice depends only on the order of operations, never on batch boundaries.
        from_free = min(n, self._free_n)
        reused = self._free[self._free_n - from_free : self._free_n][::-1].astype(np.intp)
        self._free_n -= from_free
        fresh = np.arange(self._hw, self._hw + (n - from_free), dtype=np.intp)
        self._hw += n - from_free
        return np.concatenate((reused, fresh))

    def _free_slots(self, slots: npt.NDArray[np.intp]) -> None:
        if len(slots) == 0:
            return
        self._valid[slots] = False
        self._ids[slots] = -1
        self._stim_len[slots] = -1
        self._world_len[slots] = -1
        self._free[self._free_n : self._free_n + len(slots)] = slots
        self._free_n += len(slots)
        self._count -= len(slots)

    def _lookup(self, ids: IdArray) -> npt.NDArray[np.intp]:
        """Slot of each id, or -1 where the id is not live."""
        n = self._idx_n
        out = np.full(len(ids), -1, dtype=np.intp)
        if n == 0 or len(ids) == 0:
            return out
        pos = np.searchsorted(self._idx_ids[:n], ids)
        inb = pos < n
        pos_c = np.where(inb, pos, 0)
        slots = self._idx_slots[pos_c].astype(np.intp)
        # An index entry is stale once its slot was freed or reused by another id.
        ok = inb & (self._idx_ids[pos_c] == ids) & self._valid[slots] & (self._ids[slots] == ids)
        out[ok] = slots[ok]
        return out

    def _index_insert(self, ids: IdArray, slots: npt.NDArray[np.intp]) -> None:
        n = self._idx_n
        order = np.argsort(ids, kind="stable")
        s_ids, s_slots = ids[order], slots[order]
        fits = n + len(ids) <= len(self._idx_ids)
        if fits and (n == 0 or s_ids[0] > self._idx_ids[n - 1]):
            self._idx_ids[n : n + len(ids)] = s_ids
            self._idx_slots[n : n + len(ids)] = s_slots
            self._idx_n = n + len(ids)
        else:
            self._rebuild_index()

    def _rebuild_index(self) -> None:
        live = np.flatnonzero(self._valid[: self._hw])
        order = np.argsort(self._ids[live], kind="stable")
        n = len(live)
        self._idx_ids[:n] = self._ids[live][order]
        self._idx_slots[:n] = live[order]
        self._idx_n = n


_STATE_ARRAYS = (
    "keys",
    "ids",
    "valid",
    "time",
    "salience",
    "reward",
    "action",
    "stim",
    "stim_len",
    "hormones",
    "free",
)
_WORLD_ARRAYS = ("world_episode", "world_episode_len")


def _string_bytes(episodes: Sequence[Episode]) -> tuple[list[bytes | None], list[bytes | None]]:
    """The UTF-8 stimulus ids and world episodes of a batch (None where absent), within their limits.

    Raises:
        ValueError: If one is not a string or is longer than its byte limit.
    """
    try:
        stim = [None if ep.stimulus_id is None else ep.stimulus_id.encode("utf-8") for ep in episodes]
        world = [None if ep.world_episode is None else ep.world_episode.encode("utf-8") for ep in episodes]
    except AttributeError:  # not a string: name the first such field
        for i, ep in enumerate(episodes):
            for name in ("stimulus_id", "world_episode"):
                value = getattr(ep, name)
                if value is not None and not isinstance(value, str):
                    raise ValueError(
                        f"episode {i}: {name} must be a string or None, got {type(value).__name__}"
                    ) from None
        raise
    for name, values, limit in (
        ("stimulus_id", stim, _MAX_STIMULUS_BYTES),
        ("world_episode", world, _MAX_WORLD_EPISODE_BYTES),
    ):
        if max(map(len, filter(None, values)), default=0) > limit:
            i, raw = next((i, v) for i, v in enumerate(values) if v is not None and len(v) > limit)
            raise ValueError(f"episode {i}: {name} is {len(raw)} bytes, limit {limit}")
    return stim, world


def _put_strings(
    column: npt.NDArray[Any], lengths: npt.NDArray[np.int16], slots: npt.NDArray[np.intp], values: list[bytes | None]
) -> npt.NDArray[Any]:
    """Write ``values`` into a byte column (widened if needed; returned) and their lengths (-1 = None)."""
    width = max((len(v) for v in values if v is not None), default=0)
    if width > column.dtype.itemsize:
        column = column.astype(f"S{width}")
    column[slots] = [b"" if v is None else v for v in values]
    lengths[slots] = [-1 if v is None else len(v) for v in values]
    return column


def _string_at(column: npt.NDArray[Any], lengths: npt.NDArray[np.int16], slot: int) -> str | None:
    n = int(lengths[slot])
    if n < 0:
        return None
    # numpy's S dtype strips trailing NULs; pad back to the recorded length.
    return bytes(column[slot]).ljust(n, b"\x00").decode("utf-8")
