"""Exact scans of a store's key matrix: top-k by inner product, and float32 chunks for streaming.

A float16 key matrix is scored with float32 arithmetic. On the CPU the float16 -> float32
conversion, not the multiply, used to dominate: converting 32 MiB chunks and then multiplying
reads every chunk back from main memory twice. Converting small, cache-resident pieces into one
reused float32 buffer and multiplying each piece while it is still in cache reads the float16
matrix once, i.e. half the bytes a float32 matrix would need (measured at 250,000 x 384 on one
core: ~26 ms with 2,048-row pieces, 60 ms with 32 MiB chunks, 35 ms for the same keys in float32).

Scores of a whole segment go into one float32 row per query and a single ``topk`` runs per
segment, so the per-piece Python work is two torch calls.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["float32_chunks", "top_k"]

# Rows converted per piece: 2^19 float32 elements (2 MiB) stay in a core's cache next to the
# float16 source; measured fastest between 1,024 and 4,096 rows of 384-d keys.
_PIECE_ELEMENTS = 1 << 19
# Scores held at once (64 MiB): a single query scores a 10^6-row shard in one segment; a block
# of 256 queries goes 65,536 rows at a time.
_SCORE_ELEMENTS = 1 << 24
# Rows per chunk for callers that do several operations per chunk (Hopfield completion): the
# Python cost per chunk matters more there than cache residency.
_CHUNK_ELEMENTS = 1 << 23


def top_k(
    keys: torch.Tensor, valid: npt.NDArray[np.bool_], used: int, q: torch.Tensor, k: int, *, all_valid: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ``min(k, used)`` scores of ``q @ keys[:used].T`` per query row, and their row indices.

    Args:
        keys: ``(capacity, D)`` float16 or float32 key matrix.
        valid: Liveness of each row; rows that are not live score ``-inf``.
        used: Rows ``[0, used)`` are scanned (> 0).
        q: ``(n, D)`` float32 queries (n > 0).
        all_valid: Every row below ``used`` is live (skips the mask).

    Returns:
        ``(scores, rows)``, both ``(n, min(k, used))``, best first.
    """
    n, dim = q.shape
    segment = max(1, _SCORE_ELEMENTS // n)
    piece = max(1, _PIECE_ELEMENTS // dim)
    convert = keys.dtype != torch.float32
    buf = torch.empty((min(piece, used), dim), dtype=torch.float32, device=keys.device) if convert else None
    scores = torch.empty((n, min(segment, used)), dtype=torch.float32, device=keys.device)
    best_s: torch.Tensor | None = None
    best_i: torch.Tensor | None = None
    for s0 in range(0, used, segment):
        s1 = min(s0 + segment, used)
        seg = scores[:, : s1 - s0]
        if buf is None:
            torch.mm(q, keys[s0:s1].T, out=seg)
        else:
            for p0 in range(s0, s1, piece):
                p1 = min(p0 + piece, s1)
                chunk = buf[: p1 - p0]
                chunk.copy_(keys[p0:p1])
                if n == 1:
                    torch.mv(chunk, q[0], out=seg[0, p0 - s0 : p1 - s0])
                else:
                    seg[:, p0 - s0 : p1 - s0] = q @ chunk.T
        if not all_valid:
            dead = torch.from_numpy(~valid[s0:s1]).to(keys.device)
            seg.masked_fill_(dead, -math.inf)
        cs, ci = torch.topk(seg, min(k, s1 - s0), dim=1)
        ci += s0
        if best_s is None or best_i is None:
            best_s, best_i = cs, ci
        else:
            merged_s = torch.cat((best_s, cs), dim=1)
            merged_i = torch.cat((best_i, ci), dim=1)
            best_s, pos = torch.topk(merged_s, min(k, merged_s.shape[1]), dim=1)
            best_i = torch.gather(merged_i, 1, pos)
    assert best_s is not None and best_i is not None  # used > 0 means at least one segment
    return best_s, best_i


def float32_chunks(
    keys: torch.Tensor, valid: npt.NDArray[np.bool_], used: int
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield ``(start, float32 chunk, valid mask)`` over rows ``[0, used)``, skipping empty chunks.

    One float32 buffer is reused for every chunk: allocating a fresh one per chunk costs page
    faults that were measured to double the scan time on CPU.
    """
    dim = keys.shape[1]
    rows = max(1, _CHUNK_ELEMENTS // dim)
    buf: torch.Tensor | None = None
    for start in range(0, used, rows):
        stop = min(start + rows, used)
        valid_np = valid[start:stop]
        if not valid_np.any():
            continue
        src = keys[start:stop]
        if keys.dtype == torch.float32:
            chunk = src
        else:
            if buf is None:
                buf = torch.empty((min(rows, used), dim), dtype=torch.float32, device=keys.device)
            chunk = buf[: stop - start]
            chunk.copy_(src)
        yield start, chunk, torch.from_numpy(valid_np).to(keys.device)
