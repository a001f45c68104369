"""Short-term, stimulus-specific habituation for the thalamus gate (pure compute, no bus code).

A gain drops each time a similar vector (or the same key) is seen and recovers exponentially with
time (over tens of seconds; the thalamus's default time constant is 30 s), unlike a cortex's
learned familiarity (regions.plasticity), which lasts.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Any

import numpy as np
from numpy.typing import NDArray

from regions.vectors import unit

__all__ = ["Habituation"]


class _Trace:
    __slots__ = ("level", "last")

    def __init__(self, level: float, last: float) -> None:
        self.level = level
        self.last = last


class Habituation:
    """Stimulus-specific short-term habituation for gating.

    Each remembered stimulus (a prototype vector, or a key such as a stimulus hash) has a
    habituation level ``h`` in ``[0, 1)``. Between exposures ``h`` decays as
    ``h * exp(-dt / recovery_tau_s)`` (spontaneous recovery); each exposure moves it by
    ``h += rate * (1 - h)``. The gain for a stimulus is ``max(min_gain, 1 - h)``, read *before* the
    exposure counts, so the first presentation always has gain 1.

    Vectors match a prototype when their cosine is at least ``match_threshold``; a match also nudges
    the prototype towards the vector, so slowly drifting repetitions keep habituating. Unmatched
    vectors create a prototype; when full, the most recovered prototype (lowest ``h``, then oldest)
    is forgotten.

    Args:
        rate: Habituation per exposure, in ``(0, 1]``.
        recovery_tau_s: Time constant of recovery, seconds.
        match_threshold: Cosine at or above which two vectors count as the same stimulus.
        max_prototypes: Prototypes (and, separately, keys) remembered.
        min_gain: Floor of the gain, so a habituated stimulus is attenuated, never deleted.
        prototype_lr: How far a matched prototype moves towards the new vector.
    """

    def __init__(
        self,
        rate: float = 0.3,
        recovery_tau_s: float = 30.0,
        match_threshold: float = 0.9,
        max_prototypes: int = 512,
        min_gain: float = 0.05,
        prototype_lr: float = 0.1,
    ) -> None:
        if not 0 < rate <= 1:
            raise ValueError(f"rate must be in (0, 1], got {rate}")
        if recovery_tau_s <= 0:
            raise ValueError(f"recovery_tau_s must be > 0, got {recovery_tau_s}")
        if not -1 <= match_threshold <= 1:
            raise ValueError(f"match_threshold must be in [-1, 1], got {match_threshold}")
        if max_prototypes < 1:
            raise ValueError(f"max_prototypes must be >= 1, got {max_prototypes}")
        if not 0 <= min_gain <= 1:
            raise ValueError(f"min_gain must be in [0, 1], got {min_gain}")
        if not 0 <= prototype_lr <= 1:
            raise ValueError(f"prototype_lr must be in [0, 1], got {prototype_lr}")
        self.rate = rate
        self.recovery_tau_s = recovery_tau_s
        self.match_threshold = match_threshold
        self.max_prototypes = max_prototypes
        self.min_gain = min_gain
        self.prototype_lr = prototype_lr
        # Prototypes live in rows 0..n-1 of preallocated arrays, with each one's habituation level
        # and last exposure: matching and forgetting are then one vector operation each (a
        # stream of novel stimuli keeps the memory full, and this runs for every stimulus).
        self._protos: NDArray[np.float32] | None = None
        self._levels = np.zeros(max_prototypes, dtype=np.float64)
        self._last = np.zeros(max_prototypes, dtype=np.float64)
        # log(level) + last / tau: every level recovers by the same factor over time, so the order
        # of the recovered levels never changes, and the one to forget is this one's minimum
        # (no exponential of every level for each novel stimulus).
        self._forget_order = np.zeros(max_prototypes, dtype=np.float64)
        self._n = 0
        self._keys: OrderedDict[str, _Trace] = OrderedDict()

    def __len__(self) -> int:
        return self._n

    def _recovered(self, trace: _Trace, now: float) -> float:
        dt = max(0.0, now - trace.last)
        return trace.level * math.exp(-dt / self.recovery_tau_s)

    def _expose(self, trace: _Trace, now: float, record: bool) -> float:
        level = self._recovered(trace, now)
        gain = max(self.min_gain, 1.0 - level)
        if record:
            trace.level = level + self.rate * (1.0 - level)
            trace.last = max(now, trace.last)
        return gain

    def gain(self, vector: NDArray[np.floating[Any]], now: float | None = None, record: bool = True) -> float:
        """Gain for a vector stimulus, then count this exposure.

        Args:
            vector: The stimulus (any non-zero 1-D vector; compared by cosine).
            now: Monotonic time in seconds (defaults to ``time.monotonic()``).
            record: If false, only peek: nothing is created or habituated.

        Returns:
            Gain in ``[min_gain, 1]``.
        """
        t = time.monotonic() if now is None else now
        u = unit(vector)
        if u is None or not np.isfinite(u).all():
            raise ValueError("habituation needs a finite, non-zero vector")
        if self._protos is not None and self._protos.shape[1] != u.shape[0]:
            raise ValueError(f"vector dim {u.shape[0]} != prototype dim {self._protos.shape[1]}")
        if self._protos is not None and self._n:
            sims = self._protos[: self._n] @ u
            best = int(np.argmax(sims))
            if float(sims[best]) >= self.match_threshold:
                trace = _Trace(float(self._levels[best]), float(self._last[best]))
                g = self._expose(trace, t, record)
                if record:
                    self._levels[best], self._last[best] = trace.level, trace.last
                    self._forget_order[best] = self._order_key(trace.level, trace.last)
                    if self.prototype_lr > 0:
                        moved = (1.0 - self.prototype_lr) * self._protos[best] + self.prototype_lr * u
                        self._protos[best] = moved / max(math.sqrt(float(moved @ moved)), 1e-12)
                return g
        if record:
            self._add_prototype(u, t)
        return 1.0

    def _add_prototype(self, u: NDArray[np.float32], now: float) -> None:
        if self._protos is None:
            self._protos = np.zeros((self.max_prototypes, u.shape[0]), dtype=np.float32)
        if self._n < self.max_prototypes:
            slot = self._n
            self._n += 1
        else:
            # Forget the most recovered prototype (lowest level now), the least recently seen
            # among equals, then the first.
            order = self._forget_order
            tied = np.flatnonzero(order == order.min())
            slot = int(tied[0] if tied.size == 1 else tied[np.argmin(self._last[tied])])
        self._protos[slot] = u
        self._levels[slot] = self.rate
        self._last[slot] = now
        self._forget_order[slot] = self._order_key(self.rate, now)

    def _order_key(self, level: float, last: float) -> float:
        return math.log(level) + last / self.recovery_tau_s if level > 0 else -math.inf

    def gain_key(self, key: str, now: float | None = None, record: bool = True) -> float:
        """Gain for a keyed stimulus (e.g. a content hash), then count this exposure.

        Args:
            key: Identity of the stimulus.
            now: Monotonic time in seconds (defaults to ``time.monotonic()``).
            record: If false, only peek.

        Returns:
            Gain in ``[min_gain, 1]``.
        """
        t = time.monotonic() if now is None else now
        trace = self._keys.get(key)
        if trace is None:
            if record:
                self._keys[key] = _Trace(level=self.rate, last=t)
                if len(self._keys) > self.max_prototypes:
                    # Least recently seen key goes first.
                    self._keys.popitem(last=False)
            return 1.0
        g = self._expose(trace, t, record)
        if record:
            self._keys.move_to_end(key)
        return g

    def reset(self) -> None:
        """Forget every stimulus (e.g. after sleep)."""
        self._protos = None
        self._n = 0
        self._keys.clear()
