"""Tests for regions.encoders (hashing encoder, MiniLM: slow) and regions.microbatch (the asyncio micro-batcher)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from regions.encoders import Encoder, HashingEncoder, MiniLMEncoder, make_encoder
from regions.microbatch import BatcherClosedError, MicroBatcher


def _cos(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_hashing_is_deterministic_across_instances() -> None:
    texts = ["The quick brown fox", "jumps over the lazy dog", ""]
    a = HashingEncoder(dim=256, seed=3).encode(texts)
    b = HashingEncoder(dim=256, seed=3).encode(texts)
    assert a.shape == (3, 256)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    # A different seed is a different projection.
    c = HashingEncoder(dim=256, seed=4).encode(texts)
    assert not np.allclose(a, c)


def test_hashing_rows_are_unit_norm_even_for_degenerate_text() -> None:
    texts = ["hello world", "", "   ", "?!", "a", "Ünïcödé wörds ok"]
    out = HashingEncoder().encode(texts)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_hashing_similar_texts_are_closer_than_unrelated() -> None:
    enc = HashingEncoder()
    a, b, c = enc.encode(["a dog runs in the park", "the dogs were running in a park", "tax policy reform"])
    assert _cos(a, b) > _cos(a, c) + 0.3
    # Case and punctuation do not change the code.
    x, y = enc.encode(["Hello, World!", "hello world"])
    assert _cos(x, y) > 0.999


def test_hashing_batch_equals_single() -> None:
    enc = HashingEncoder(dim=128)
    texts = ["one", "two words", "three little words"]
    batch = enc.encode(texts)
    singles = np.vstack([enc.encode([t]) for t in texts])
    np.testing.assert_allclose(batch, singles, atol=1e-6)
    assert enc.encode([]).shape == (0, 128)


def test_hashing_rejects_a_bare_string() -> None:
    with pytest.raises(TypeError):
        HashingEncoder().encode("not a list")


def test_make_encoder() -> None:
    enc = make_encoder("hashing", dim=64)
    assert isinstance(enc, Encoder)
    assert enc.dim == 64
    lm = make_encoder("minilm", dim=384, device="cpu")
    assert lm.dim == 384
    assert isinstance(lm, MiniLMEncoder) and not lm.loaded  # lazy: constructing it loads nothing
    with pytest.raises(ValueError):
        make_encoder("minilm", dim=128)
    with pytest.raises(ValueError):
        make_encoder("word2vec", dim=64)  # type: ignore[arg-type]


@pytest.mark.slow
def test_minilm_semantics_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = MiniLMEncoder(device="cpu")
    out = enc.encode(["apple", "banana", "truck"])
    assert out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
    apple, banana, truck = out
    assert _cos(apple, banana) > _cos(apple, truck)
    assert enc.loaded and enc.load_seconds is not None


class _CountingEncoder:
    """Hashing encoder that records batch sizes and the threads it runs on."""

    def __init__(self) -> None:
        self.inner = HashingEncoder(dim=32)
        self.sizes: list[int] = []
        self.threads: set[int] = set()

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.sizes.append(len(texts))
        self.threads.add(threading.get_ident())
        return self.inner.encode(texts)


class _FailingEncoder:
    dim = 8

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if any("bad" in t for t in texts):
            raise RuntimeError("encoder exploded")
        return np.ones((len(texts), 8), dtype=np.float32)


class _SlowEncoder:
    dim = 4

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.started.set()
        self.release.wait(5.0)
        return np.zeros((len(texts), 4), dtype=np.float32)


async def test_batcher_batches_concurrent_requests_and_matches_direct_encoding() -> None:
    enc = _CountingEncoder()
    batcher = MicroBatcher(enc, max_batch=64, max_wait_s=0.005)
    texts = [f"text number {i}" for i in range(50)]
    try:
        results = await asyncio.gather(*(batcher.encode(t) for t in texts))
    finally:
        await batcher.close()
    stats = batcher.stats
    assert stats.items == 50
    assert stats.mean_batch_size > 1
    assert sum(enc.sizes) == 50 and max(enc.sizes) <= 64
    assert threading.get_ident() not in enc.threads  # never on the event-loop thread
    # Each waiter got its own text's vector, in the right order.
    np.testing.assert_allclose(np.vstack(results), enc.inner.encode(texts), atol=1e-6)


async def test_batcher_respects_max_batch() -> None:
    enc = _CountingEncoder()
    batcher = MicroBatcher(enc, max_batch=8, max_wait_s=0.005)
    try:
        await asyncio.gather(*(batcher.encode(f"t{i}") for i in range(30)))
    finally:
        await batcher.close()
    assert max(enc.sizes) <= 8
    assert batcher.stats.max_batch_size == max(enc.sizes)
    assert batcher.stats.batches == len(enc.sizes) >= 4


async def test_batcher_propagates_errors_to_every_waiter_and_keeps_working() -> None:
    batcher = MicroBatcher(_FailingEncoder(), max_batch=16, max_wait_s=0.005)
    try:
        results = await asyncio.gather(
            batcher.encode("fine"),
            batcher.encode("bad one"),
            batcher.encode("also fine"),
            return_exceptions=True,
        )
        # The three were batched together, so all three share the failure.
        assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)
        assert batcher.stats.errors == 1
        # The batcher survives a failed batch.
        ok = await batcher.encode("good")
        np.testing.assert_array_equal(ok, np.ones(8, dtype=np.float32))
    finally:
        await batcher.close()


async def test_batcher_does_not_block_the_loop_and_close_fails_waiters() -> None:
    enc = _SlowEncoder()
    batcher = MicroBatcher(enc, max_batch=4, max_wait_s=0.0)
    first = asyncio.ensure_future(batcher.encode("stuck"))
    await asyncio.to_thread(enc.started.wait, 2.0)
    # The encoder is blocked in its thread, yet the loop still runs other tasks.
    ticks = 0
    for _ in range(5):
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 5 and not first.done()
    queued = asyncio.ensure_future(batcher.encode("queued"))
    await asyncio.sleep(0)
    await batcher.close()
    enc.release.set()
    for fut in (first, queued):
        with pytest.raises(BatcherClosedError):
            await fut
    with pytest.raises(BatcherClosedError):
        await batcher.encode("after close")


async def test_cancelled_waiter_does_not_break_the_batch() -> None:
    enc = _CountingEncoder()
    batcher = MicroBatcher(enc, max_batch=64, max_wait_s=0.05)
    try:
        doomed = asyncio.ensure_future(batcher.encode("cancel me"))
        kept = asyncio.ensure_future(batcher.encode("keep me"))
        await asyncio.sleep(0)
        doomed.cancel()
        vec = await kept
        assert doomed.cancelled()
        np.testing.assert_allclose(vec, enc.inner.encode(["keep me"])[0], atol=1e-6)
        assert enc.sizes == [1]  # the cancelled request was never encoded
    finally:
        await batcher.close()


class _GatedEncoder(_CountingEncoder):
    """Counts how many of its kind encode at once; each call waits until two run (or 1 s)."""

    running = 0
    most = 0
    both = threading.Barrier(2)

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        with _lock:
            _GatedEncoder.running += 1
            _GatedEncoder.most = max(_GatedEncoder.most, _GatedEncoder.running)
        try:
            with contextlib.suppress(threading.BrokenBarrierError):
                _GatedEncoder.both.wait(timeout=1.0)
            return super().encode(texts)
        finally:
            with _lock:
                _GatedEncoder.running -= 1


_lock = threading.Lock()


async def test_batcher_with_several_encoders_encodes_batches_side_by_side() -> None:
    encoders = [_GatedEncoder(), _GatedEncoder()]
    batcher = MicroBatcher(encoders, max_batch=8, max_wait_s=0.002)
    texts = [f"text number {i}" for i in range(40)]
    try:
        results = await asyncio.gather(*(batcher.encode(t) for t in texts))
    finally:
        await batcher.close()
    assert _GatedEncoder.most == 2  # two batches were in the encoders at the same time
    assert all(e.sizes for e in encoders) and sum(sum(e.sizes) for e in encoders) == 40
    assert encoders[0].threads.isdisjoint(encoders[1].threads)  # each copy on its own thread
    np.testing.assert_allclose(np.vstack(results), encoders[0].inner.encode(texts), atol=1e-6)
    with pytest.raises(ValueError, match="same dim"):
        MicroBatcher([_CountingEncoder(), _FailingEncoder()])
    with pytest.raises(ValueError, match="at least one"):
        MicroBatcher([])


class _TimedEncoder(_CountingEncoder):
    """Takes 20 ms per batch: busy on the CPU, or asleep (no CPU at all)."""

    def __init__(self, busy: bool) -> None:
        super().__init__()
        self.busy = busy

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if self.busy:
            start = time.thread_time()
            while time.thread_time() - start < 0.02:
                pass
        else:
            time.sleep(0.02)
        return super().encode(texts)


@pytest.mark.parametrize("busy", [True, False])
async def test_batcher_counts_the_cpu_time_of_its_encoder_threads(busy: bool) -> None:
    batcher = MicroBatcher(_TimedEncoder(busy), max_batch=4, max_wait_s=0.0)
    try:
        await asyncio.gather(*(batcher.encode(f"text {i}") for i in range(12)))
    finally:
        await batcher.close()
    stats = batcher.stats
    assert stats.encode_seconds >= 0.02 * stats.batches * 0.9
    if busy:
        assert stats.encode_cpu_seconds >= 0.02 * stats.batches * 0.9
    else:  # waiting is not CPU: what the thalamus reports is what the encoders take from the cores
        assert stats.encode_cpu_seconds < 0.005 * stats.batches


def test_encoder_workers_auto_is_one_per_usable_core_capped_and_one_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from regions.thalamus import MAX_AUTO_ENCODERS, ThalamusOptions, encoder_copies, usable_cpus

    assert ThalamusOptions().encoder_workers == "auto"
    assert ThalamusOptions(encoder_workers=3).encoder_workers == 3
    for bad in (0, 17, "many"):
        with pytest.raises(ValidationError, match="encoder_workers"):
            ThalamusOptions(encoder_workers=bad)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(12)), raising=False)
    assert usable_cpus(MAX_AUTO_ENCODERS) == MAX_AUTO_ENCODERS
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert usable_cpus(MAX_AUTO_ENCODERS) == 3
    assert usable_cpus(1) == 1
    assert encoder_copies("auto", "cpu") == 3
    assert encoder_copies(5, "cpu") == 5
    monkeypatch.setattr("regions.thalamus.resolve_device", lambda device: "cuda")
    assert encoder_copies("auto", "auto") == 1  # one copy on a GPU
