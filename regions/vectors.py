"""Vector arithmetic on what the world sends: any finite float32 vector, however large or small."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

__all__ = ["WorldMap", "unit"]


def unit(vector: np.ndarray) -> np.ndarray | None:
    """`vector` scaled to length 1 (float32), or None for an all-zero vector.

    Finite float32 values can still overflow a squared length (1e20 squared is past float32's
    range), so the vector is first divided by its largest magnitude: the length is then computed
    on values within [-1, 1], where it cannot overflow.
    """
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    peak = float(np.abs(v).max()) if v.size else 0.0
    if peak == 0.0:
        return None
    scaled = v / np.float32(peak)
    length = float(np.sqrt(np.dot(scaled.astype(np.float64), scaled.astype(np.float64))))
    return (scaled / np.float32(length)).astype(np.float32, copy=False)


class WorldMap:
    """Maps a vector of any length into the brain's space of `dim` dimensions: a world's state.

    A random Fourier feature map (Rahimi & Recht, 2007): ``unit(cos(W x + b))`` with ``W`` drawn
    from N(0, 1/bandwidth^2) and ``b`` from U(0, 2 pi), fixed per input length by the seed. The
    cosine between two percepts approximates ``exp(-|x - y|^2 / (2 bandwidth^2))``: the same vector
    always gives the same percept, vectors much closer than `bandwidth` look alike (a smooth map,
    as for a pole's angle), and one-hot codes (distance sqrt 2) come out nearly orthogonal, so a
    world's discrete states are told apart. Magnitude counts: [1, 0] and [2, 0] differ, and an
    all-zero vector is a state like any other.
    """

    def __init__(self, dim: int, *, seed: int = 0, bandwidth: float = 0.5, cached: int = 8) -> None:
        if dim <= 0 or bandwidth <= 0:
            raise ValueError(f"dim and bandwidth must be positive, got {dim} and {bandwidth}")
        self.dim, self.seed, self.bandwidth, self.cached = dim, seed, bandwidth, cached
        # (W, b) per input length, the most recently used last; an agent trying many lengths
        # costs time, never more than `cached` maps of memory.
        self._maps: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def _map(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        found = self._maps.get(n)
        if found is not None:
            self._maps.move_to_end(n)
            return found
        rng = np.random.default_rng([self.seed, n])
        w = (rng.standard_normal((self.dim, n)) / self.bandwidth).astype(np.float32)
        b = rng.uniform(0.0, 2.0 * np.pi, self.dim).astype(np.float32)
        self._maps[n] = (w, b)
        while len(self._maps) > self.cached:
            self._maps.popitem(last=False)
        return w, b

    def __call__(self, vector: np.ndarray) -> np.ndarray:
        x = np.asarray(vector, dtype=np.float64).reshape(-1)
        w, b = self._map(x.size)
        # In float64 and modulo 2 pi: a finite input never overflows, and large values keep
        # their phase (cos of a huge float32 argument would be noise of the rounding).
        phase = np.mod(w.astype(np.float64) @ x + b, 2.0 * np.pi)
        features = np.cos(phase).astype(np.float32)
        percept = unit(features)
        if percept is None:  # cannot happen with dim >= 2 in practice; never divide by zero
            percept = np.full(self.dim, 1.0 / np.sqrt(self.dim), dtype=np.float32)
        return percept
