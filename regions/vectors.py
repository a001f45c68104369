"""Vector arithmetic on what the world sends: any finite float32 vector, however large or small."""

from __future__ import annotations

import numpy as np

__all__ = ["unit"]


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
