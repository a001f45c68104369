"""The micro-batcher in front of a text encoder (regions.encoders): an asyncio actor can ``await``
one text at a time while the encoder sees batches (MiniLM is ~4x faster per text in batches), and
the event loop never blocks on the forward pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from regions.encoders import Encoder

__all__ = ["BatcherClosedError", "BatcherStats", "MicroBatcher"]


def _timed_encode(encoder: Encoder, texts: list[str]) -> tuple[NDArray[np.float32], float]:
    """`encoder.encode(texts)` in a worker thread, and the CPU time that thread spent on it."""
    start = time.thread_time()
    out = encoder.encode(texts)
    return out, time.thread_time() - start


class BatcherClosedError(RuntimeError):
    """Raised to waiters when the batcher is closed before their text was encoded."""


@dataclass(frozen=True, slots=True)
class BatcherStats:
    """A snapshot of :class:`MicroBatcher` counters.

    Attributes:
        batches: Encoder calls made.
        items: Texts encoded (successfully or not) across all batches.
        errors: Batches whose encoder call raised.
        max_batch_size: Largest batch seen.
        encode_seconds: Total wall time spent inside the encoder.
        pending: Requests waiting for the next batch at snapshot time.
        encode_cpu_seconds: CPU time of the encoder threads while encoding (what the encoders
            take from the cores the rest of the brain shares). Each call's own thread is
            counted: with torch on one thread (the brain's `torch_threads: 1`), that is all of it.
    """

    batches: int
    items: int
    errors: int
    max_batch_size: int
    encode_seconds: float
    pending: int
    encode_cpu_seconds: float = 0.0

    @property
    def mean_batch_size(self) -> float:
        """Average texts per encoder call (0.0 before the first batch)."""
        return self.items / self.batches if self.batches else 0.0


_Request = tuple[str, "asyncio.Future[NDArray[np.float32]]"]


class MicroBatcher:
    """Coalesces concurrent ``await encode(text)`` calls into encoder batches.

    A background task waits for the first request and for a free encoder, then keeps collecting
    until ``max_batch`` requests are pending or ``max_wait_s`` has passed, and hands the batch to
    that encoder on its own single-thread executor (the event loop never blocks; no encoder is
    ever called from two threads at once, which torch models, Hugging Face tokenizers and the
    hashing cache rely on). With several encoders (copies of one model), several batches are
    encoded at once, one per thread: on a CPU that uses the cores better than one batch over
    several torch threads (each torch op then runs on one thread, with no threads waiting for
    each other). While every encoder is busy, new requests pile up, so batches grow by
    themselves under load. Each waiter gets its own row (a copy, so one result does not pin the
    whole batch in memory). An encoder exception is set on every future of that batch. Callers
    cancelled while waiting are skipped.

    The background task starts lazily on the first call, inside the running loop.

    Args:
        encoders: The encoder to drive, or several interchangeable ones (one worker each).
        max_batch: Maximum texts per encoder call.
        max_wait_s: How long the first request of a batch may wait for company.
    """

    def __init__(self, encoders: Encoder | Sequence[Encoder], max_batch: int = 64,
                 max_wait_s: float = 0.002) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.encoders: list[Encoder] = list(encoders) if isinstance(encoders, Sequence) else [encoders]
        if not self.encoders:
            raise ValueError("MicroBatcher needs at least one encoder")
        if len({e.dim for e in self.encoders}) != 1:
            raise ValueError("the encoders of one MicroBatcher must have the same dim")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._pending: list[_Request] = []
        self._has_work: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._free: asyncio.Queue[int] | None = None  # indexes of the encoders not busy
        self._executors: list[ThreadPoolExecutor] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._closed = False
        self._batches = 0
        self._items = 0
        self._errors = 0
        self._max_seen = 0
        self._encode_seconds = 0.0
        self._encode_cpu_seconds = 0.0

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    @property
    def stats(self) -> BatcherStats:
        """Current counters."""
        return BatcherStats(
            batches=self._batches,
            items=self._items,
            errors=self._errors,
            max_batch_size=self._max_seen,
            encode_seconds=self._encode_seconds,
            pending=len(self._pending),
            encode_cpu_seconds=self._encode_cpu_seconds,
        )

    def _ensure_started(self) -> None:
        if self._task is not None:
            return
        self._has_work = asyncio.Event()
        self._full = asyncio.Event()
        self._free = asyncio.Queue()
        for i in range(len(self.encoders)):
            self._executors.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"encoder-{i}"))
            self._free.put_nowait(i)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def encode(self, text: str) -> NDArray[np.float32]:
        """Encode one text, batched with whatever else arrives at the same time.

        Args:
            text: The text to encode.

        Returns:
            A float32 vector of shape ``(encoder.dim,)``.

        Raises:
            BatcherClosedError: If the batcher is (or gets) closed first.
            Exception: Whatever the encoder raised for this text's batch.
        """
        if self._closed:
            raise BatcherClosedError("micro-batcher is closed")
        if not isinstance(text, str):
            raise TypeError(f"text is {type(text).__name__}, expected str")
        self._ensure_started()
        assert self._has_work is not None and self._full is not None
        fut: asyncio.Future[NDArray[np.float32]] = asyncio.get_running_loop().create_future()
        self._pending.append((text, fut))
        self._has_work.set()
        if len(self._pending) >= self.max_batch:
            self._full.set()
        return await fut

    async def _run(self) -> None:
        assert self._has_work is not None and self._full is not None and self._free is not None
        while True:
            await self._has_work.wait()
            worker = await self._free.get()  # the batch keeps growing while every encoder is busy
            if len(self._pending) < self.max_batch and self.max_wait_s > 0:
                self._full.clear()
                try:
                    async with asyncio.timeout(self.max_wait_s):
                        await self._full.wait()
                except TimeoutError:
                    pass
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            if not self._pending:
                self._has_work.clear()
            # Waiters cancelled while queued need no encoding.
            batch = [(t, f) for t, f in batch if not f.done()]
            if not batch:
                self._free.put_nowait(worker)
                continue
            task = asyncio.get_running_loop().create_task(self._encode(worker, batch), name=f"encode-{worker}")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _encode(self, worker: int, batch: list[_Request]) -> None:
        assert self._free is not None
        texts = [t for t, _ in batch]
        start = time.perf_counter()
        try:
            out, cpu = await asyncio.get_running_loop().run_in_executor(
                self._executors[worker], _timed_encode, self.encoders[worker], texts)
            self._encode_cpu_seconds += cpu
            if out.shape[0] != len(texts):
                raise RuntimeError(f"encoder returned {out.shape[0]} rows for {len(texts)} texts")
        except Exception as exc:
            self._errors += 1
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        except BaseException:
            # Cancelled (close()) mid-batch: the waiters must not hang; then re-raise.
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(BatcherClosedError("micro-batcher closed during encoding"))
            raise
        else:
            for i, (_, fut) in enumerate(batch):
                if not fut.done():
                    fut.set_result(np.array(out[i], dtype=np.float32, copy=True))
        finally:
            self._batches += 1
            self._items += len(batch)
            self._max_seen = max(self._max_seen, len(batch))
            self._encode_seconds += time.perf_counter() - start
            self._free.put_nowait(worker)

    async def close(self) -> None:
        """Stop the batcher; pending waiters get :class:`BatcherClosedError`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        tasks = [t for t in (task, *self._in_flight) if t is not None]
        try:
            for t in tasks:
                t.cancel()
            for t in tasks:
                try:
                    await t
                except asyncio.CancelledError:
                    # The task's own cancellation is expected; if *we* are being cancelled, re-raise.
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise
        finally:
            pending, self._pending = self._pending, []
            for _, fut in pending:
                if not fut.done():
                    fut.set_exception(BatcherClosedError("micro-batcher closed"))
            for executor in self._executors:
                executor.shutdown(wait=False, cancel_futures=True)
            self._executors.clear()
