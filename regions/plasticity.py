"""Local plasticity for sensory regions (pure compute, no bus code).

* :class:`OjaFeatureMap` — a linear feature map learned online with Sanger's generalized Hebbian
  rule (or Oja's symmetric subspace rule). Learning is local: each weight changes from its own
  pre- and post-synaptic activity plus a decay term, no back-propagation. The rows stay bounded
  (they converge to unit norm) and span the principal directions of the input. Novelty is the
  fraction of the input the map cannot reconstruct, so whatever the map has learned becomes
  familiar (habituation through learning).
* :class:`Habituation` — short-term, stimulus-specific adaptation for the thalamus gate: a gain
  that drops each time a similar vector (or the same key) is seen and recovers exponentially with
  time.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

__all__ = ["Habituation", "HebbianRule", "OjaFeatureMap"]

HebbianRule = Literal["sanger", "oja"]

ArrayIn = NDArray[np.floating[Any]] | torch.Tensor | list[float] | list[list[float]]


class OjaFeatureMap:
    """Online principal-subspace feature map with local Hebbian learning.

    Features are ``y = W x`` with ``W`` of shape ``(n_features, in_dim)``. :meth:`learn` applies,
    averaged over a batch,

    * Sanger (default): ``dW = lr * (y x^T - tril(y y^T) W)`` — unit ``i`` learns from the input
      minus what units ``0..i`` already explain, so the rows converge to the leading eigenvectors of
      the input's second-moment matrix, in order;
    * Oja subspace: ``dW = lr * (y x^T - (y y^T) W)`` — the rows converge to an orthonormal basis of
      the same principal subspace, without ordering.

    The decay term keeps every row near unit norm without any explicit normalisation (the
    normalisation below is only a guard against a numerically unstable learning rate). Inputs are
    not centred: for unit-norm embeddings the first unit then tracks the mean direction, the "gist"
    of what the region has seen, which is useful as a feature.

    Novelty (see :meth:`novelty`) is the relative reconstruction error ``|x - W^T W x|^2 / |x|^2``
    clipped to ``[0, 1]`` — exactly the quantity the Hebbian rule descends, so an input the region
    keeps learning from becomes less novel, and one outside the learned subspace stays novel.

    Unit usage is tracked as an exponential moving average of each unit's share of the input energy
    (``y_i^2 / |x|^2``); :meth:`prune_dead` resets or silences units whose share stays below a
    threshold (surplus units of Sanger's rule end up orthogonal to the input and never fire).

    Args:
        in_dim: Input width.
        n_features: Number of feature units.
        lr: Base learning rate (the caller scales it, e.g. by acetylcholine).
        seed: Seed for the initial weights and for re-initialised units.
        rule: ``"sanger"`` or ``"oja"``.
        usage_decay: Per-sample weight of the usage moving average.
        device: Torch device for the weights.
    """

    #: Most inputs `observe` queues before it applies their steps itself.
    MAX_QUEUED = 32

    def __init__(
        self,
        in_dim: int,
        n_features: int,
        lr: float = 0.01,
        seed: int = 0,
        rule: HebbianRule = "sanger",
        usage_decay: float = 0.01,
        device: str = "cpu",
    ) -> None:
        if in_dim < 1 or n_features < 1:
            raise ValueError(f"in_dim and n_features must be >= 1, got {in_dim}, {n_features}")
        if n_features > in_dim:
            raise ValueError(f"n_features ({n_features}) cannot exceed in_dim ({in_dim})")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if rule not in ("sanger", "oja"):
            raise ValueError(f"rule must be 'sanger' or 'oja', got {rule!r}")
        if not 0 < usage_decay <= 1:
            raise ValueError(f"usage_decay must be in (0, 1], got {usage_decay}")
        self.in_dim = in_dim
        self.n_features = n_features
        self.lr = float(lr)
        self.seed = seed
        self.rule: HebbianRule = rule
        self.usage_decay = float(usage_decay)
        self.device = torch.device(device)
        self._on_cpu = self.device.type == "cpu"
        self._gen = torch.Generator(device="cpu")
        self._gen.manual_seed(seed)
        self.weight = self._random_rows(n_features)
        self.alive = torch.ones(n_features, dtype=torch.bool, device=self.device)
        # Start usage at the share a random unit would get, so young units are not pruned at once.
        self.usage = torch.full((n_features,), 1.0 / in_dim, dtype=torch.float32, device=self.device)
        self.unit_samples = torch.zeros(n_features, dtype=torch.int64, device=self.device)
        self.samples = 0
        self.pruned_total = 0
        # Inputs observed whose Hebbian step is still to come (`observe`, `consolidate`): each
        # input, its activations and its step size.
        self._queued_x: list[NDArray[np.float32]] = []
        self._queued_y: list[NDArray[np.float32]] = []
        self._queued_steps: list[float] = []
        self._queued_samples = 0

    def _random_rows(self, n: int) -> torch.Tensor:
        rows = torch.randn(n, self.in_dim, generator=self._gen, dtype=torch.float32)
        return torch.nn.functional.normalize(rows, dim=1).to(self.device)

    def _fresh_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Random unit rows orthogonal to the surviving units' span.

        A recycled unit must not disturb what the live units already encode (a random row would add
        its own projection to every reconstruction); orthogonal to them it stays silent on familiar
        input and is free to pick up directions the map does not cover yet.
        """
        keep = self.alive.clone()
        keep[idx] = False
        live = self.weight[keep]
        rows = self._random_rows(int(idx.numel()))
        # QR of [live | new] columns: the trailing columns of Q are orthonormal and orthogonal to
        # everything before them (n_features <= in_dim keeps the matrix tall enough).
        q, _ = torch.linalg.qr(torch.cat([live, rows]).T)
        fresh: torch.Tensor = q[:, live.shape[0] :].T.contiguous()
        return fresh

    def _as_batch(self, x: ArrayIn) -> tuple[torch.Tensor, bool]:
        t = torch.as_tensor(x, dtype=torch.float32).to(self.device)
        single = t.dim() == 1
        if single:
            t = t.unsqueeze(0)
        if t.dim() != 2 or t.shape[1] != self.in_dim:
            raise ValueError(f"expected shape ({self.in_dim},) or (n, {self.in_dim}), got {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError("input contains NaN or inf")
        return t, single

    def forward(self, x: ArrayIn) -> NDArray[np.float32]:
        """Feature activations.

        Args:
            x: One input ``(in_dim,)`` or a batch ``(n, in_dim)``.

        Returns:
            ``(n_features,)`` for one input, ``(n, n_features)`` for a batch (float32).
        """
        t, single = self._as_batch(x)
        with torch.no_grad():
            y = t @ self.weight.T
        out: NDArray[np.float32] = y.cpu().numpy().astype(np.float32, copy=False)
        return out[0] if single else out

    __call__ = forward

    def _novelty_t(self, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            y = t @ self.weight.T
        err = ((t - y @ self.weight) ** 2).sum(dim=1)
        return (err * self._inv_energy(t)).clamp(0.0, 1.0)

    @staticmethod
    def _inv_energy(t: torch.Tensor) -> torch.Tensor:
        energy = (t * t).sum(dim=1)
        # A zero input carries nothing new and explains nothing: weight it 0.
        return torch.where(energy > 0, 1.0 / energy.clamp_min(1e-12), torch.zeros_like(energy))

    def novelty(self, x: ArrayIn) -> float:
        """Relative reconstruction error of ``x`` from the learned features, in ``[0, 1]``.

        0 means the input lies in the learned subspace (familiar); 1 means it is orthogonal to it.
        For a batch, the mean over rows.

        Args:
            x: One input ``(in_dim,)`` or a batch ``(n, in_dim)``.
        """
        t, _ = self._as_batch(x)
        with torch.no_grad():
            return float(self._novelty_t(t).mean())

    def novelty_batch(self, x: ArrayIn) -> NDArray[np.float32]:
        """Per-row novelty of a batch ``(n, in_dim)`` -> ``(n,)``."""
        t, _ = self._as_batch(x)
        with torch.no_grad():
            out: NDArray[np.float32] = self._novelty_t(t).cpu().numpy().astype(np.float32, copy=False)
        return out

    def learn(self, x: ArrayIn, lr_scale: float = 1.0) -> float:
        """One Hebbian step on ``x`` (one input or a batch, averaged).

        Args:
            x: One input ``(in_dim,)`` or a batch ``(n, in_dim)``.
            lr_scale: Multiplier on the base rate (acetylcholine: high = encoding mode).
                0 disables learning for this call but still updates usage statistics.

        Returns:
            The novelty of ``x`` before the update (mean over a batch).
        """
        if not math.isfinite(lr_scale) or lr_scale < 0:
            raise ValueError(f"lr_scale must be a finite number >= 0, got {lr_scale}")
        if self.device.type == "cpu" and isinstance(x, np.ndarray) and x.ndim == 1 and x.shape[0] == self.in_dim:
            before = self.observe(x, lr_scale)  # numpy, a fraction of torch's time for one input
            self.consolidate()
            return before
        self.consolidate()  # steps observed earlier come first
        t, _ = self._as_batch(x)
        with torch.no_grad():
            n = t.shape[0]
            y = t @ self.weight.T
            before = float(self._novelty_t(t, y).mean())
            share = ((y * y) * self._inv_energy(t)[:, None]).mean(dim=0)
            keep = (1.0 - self.usage_decay) ** n
            self.usage.mul_(keep).add_(share * (1.0 - keep))
            self.unit_samples.add_(n)
            self.samples += n
            # Hebbian steps of size lr*|x|^2 above ~1 overshoot and diverge; scale large inputs down.
            mean_energy = float((t * t).sum() / n)
            step = self.lr * lr_scale / max(1.0, mean_energy)
            if step > 0:
                yy = y.T @ y / n
                if self.rule == "sanger":
                    yy = torch.tril(yy)
                delta = (y.T @ t) / n - yy @ self.weight
                delta[~self.alive] = 0.0
                new_w = self.weight + step * delta
                if bool(torch.isfinite(new_w).all()):
                    norms = torch.linalg.vector_norm(new_w, dim=1, keepdim=True)
                    # Guard only: the rule itself keeps norms near 1; this catches runaway steps.
                    new_w = torch.where(norms > 2.0, new_w / norms, new_w)
                    self.weight = new_w
        return before

    def observe(self, x: NDArray[np.float32], lr_scale: float = 1.0) -> float:
        """The novelty of one input under the current features; its Hebbian step waits in a queue.

        Learning comes in two parts so that a busy area can learn in mini-batches. The novelty
        (what the area reports at once) takes two matrix-vector products; the step takes a
        matrix-matrix product (the rule's ``tril(y y^T) W``) that costs about as much for 32
        inputs as for one. `consolidate` applies the queued steps, each of its own size and with
        the activations it was observed with: their sum equals taking them one after another up
        to terms of order ``lr^2``. An area that consolidates after every input learns exactly as
        with `learn`; queueing more than `MAX_QUEUED` inputs consolidates first.

        Args:
            x: One input ``(in_dim,)``; on another device than the CPU, `learn` runs at once.
            lr_scale: As for `learn`.
        """
        if not math.isfinite(lr_scale) or lr_scale < 0:
            raise ValueError(f"lr_scale must be a finite number >= 0, got {lr_scale}")
        if not self._on_cpu:
            return self.learn(x, lr_scale)
        x = np.array(x, dtype=np.float32).reshape(-1)  # a copy: it is kept until `consolidate`
        if x.shape[0] != self.in_dim:
            raise ValueError(f"expected shape ({self.in_dim},), got {x.shape}")
        if len(self._queued_x) >= self.MAX_QUEUED:
            self.consolidate()
        w = self.weight.numpy()
        energy = float(x @ x)
        if not math.isfinite(energy) and not bool(np.isfinite(x).all()):
            raise ValueError("input contains NaN or inf")
        inv_energy = 1.0 / max(energy, 1e-12) if energy > 0 else 0.0
        y = w @ x
        err = x - y @ w
        before = min(1.0, max(0.0, float(err @ err) * inv_energy))
        keep = 1.0 - self.usage_decay
        usage = self.usage.numpy()
        usage *= keep
        usage += (y * y) * (inv_energy * (1.0 - keep))
        self.samples += 1
        step = self.lr * lr_scale / max(1.0, energy)
        if step > 0:
            self._queued_x.append(x)
            self._queued_y.append(y)
            self._queued_steps.append(step)
        self._queued_samples += 1
        return before

    @property
    def queued(self) -> int:
        """Inputs observed whose Hebbian step is not applied yet."""
        return self._queued_samples

    def consolidate(self) -> int:
        """Apply the queued Hebbian steps as one mini-batch; returns how many inputs it covered.

        With ``S`` the step sizes, ``Y`` the activations and ``X`` the inputs (one row each):
        ``dW = (S Y)^T X - tril((S Y)^T Y) W`` (Sanger; no ``tril`` for Oja), the sum of the
        single-input rule ``s y (x - explained)`` over the batch.
        """
        count = self._queued_samples
        if not count:
            return 0
        self.unit_samples.add_(count)
        self._queued_samples = 0
        if not self._queued_x:
            return count  # every step had size 0 (learning off): statistics only
        xs, ys = np.stack(self._queued_x), np.stack(self._queued_y)
        sy = ys * np.array(self._queued_steps, dtype=np.float32)[:, None]
        self._queued_x.clear()
        self._queued_y.clear()
        self._queued_steps.clear()
        w = self.weight.numpy()
        yy = sy.T @ ys
        if self.rule == "sanger":
            yy = np.tril(yy)
        delta = sy.T @ xs - yy @ w
        alive = self.alive.numpy()
        if not alive.all():
            delta[~alive] = 0.0
        new_w = (w + delta).astype(np.float32, copy=False)
        norms = np.sqrt(np.einsum("ij,ij->i", new_w, new_w))
        if bool(np.isfinite(norms).all()):  # a non-finite entry makes its row's norm non-finite
            big = norms > 2.0
            if big.any():  # guard only, as in `learn`
                new_w[big] /= norms[big, None]
            self.weight = torch.from_numpy(new_w)
        return count

    def prune_dead(self, threshold: float = 1e-3, min_samples: int = 200, reinit: bool = True) -> int:
        """Recycle (or silence) units that carry almost none of the input energy.

        A unit is dead when it has seen at least ``min_samples`` inputs since it was (re)born and its
        usage (moving average of ``y_i^2 / |x|^2``) is below ``threshold``. With ``reinit`` it gets a
        fresh random direction and a clean usage record, so the capacity is recruited again for
        future inputs; without, its row is zeroed and it stops learning (output stays 0). Output
        width never changes, so downstream consumers keep their shapes.

        Args:
            threshold: Usage below which a unit is dead.
            min_samples: Minimum inputs a unit must have seen before it can be pruned.
            reinit: Re-initialise dead units instead of silencing them.

        Returns:
            Number of units pruned.
        """
        self.consolidate()
        dead = self.alive & (self.usage < threshold) & (self.unit_samples >= min_samples)
        count = int(dead.sum())
        if count == 0:
            return 0
        idx = torch.nonzero(dead).flatten()
        with torch.no_grad():
            if reinit:
                self.weight[idx] = self._fresh_rows(idx)
                self.usage[idx] = 1.0 / self.in_dim
            else:
                self.weight[idx] = 0.0
                self.alive[idx] = False
                self.usage[idx] = 0.0
            self.unit_samples[idx] = 0
        self.pruned_total += count
        return count

    @property
    def n_alive(self) -> int:
        """Units not silenced by pruning."""
        return int(self.alive.sum())

    def snapshot(self) -> dict[str, Any]:
        """State as plain Python values (JSON/orjson friendly), queued steps applied first."""
        self.consolidate()
        return {
            "in_dim": self.in_dim,
            "n_features": self.n_features,
            "lr": self.lr,
            "seed": self.seed,
            "rule": self.rule,
            "usage_decay": self.usage_decay,
            "samples": self.samples,
            "pruned_total": self.pruned_total,
            "weight": self.weight.cpu().tolist(),
            "alive": self.alive.cpu().tolist(),
            "usage": self.usage.cpu().tolist(),
            "unit_samples": self.unit_samples.cpu().tolist(),
        }

    @classmethod
    def restore(cls, snap: dict[str, Any], device: str = "cpu") -> OjaFeatureMap:
        """Rebuild a map from :meth:`snapshot` output.

        Raises:
            ValueError: If the snapshot is inconsistent.
        """
        fmap = cls(
            in_dim=int(snap["in_dim"]),
            n_features=int(snap["n_features"]),
            lr=float(snap["lr"]),
            seed=int(snap["seed"]),
            rule=snap["rule"],
            usage_decay=float(snap["usage_decay"]),
            device=device,
        )
        weight = torch.tensor(snap["weight"], dtype=torch.float32, device=fmap.device)
        k = fmap.n_features
        if weight.shape != (k, fmap.in_dim):
            raise ValueError(f"snapshot weight shape {tuple(weight.shape)} != {(k, fmap.in_dim)}")
        alive = torch.tensor(snap["alive"], dtype=torch.bool, device=fmap.device)
        usage = torch.tensor(snap["usage"], dtype=torch.float32, device=fmap.device)
        unit_samples = torch.tensor(snap["unit_samples"], dtype=torch.int64, device=fmap.device)
        if alive.shape != (k,) or usage.shape != (k,) or unit_samples.shape != (k,):
            raise ValueError("snapshot per-unit arrays do not match n_features")
        if not bool(torch.isfinite(weight).all()):
            raise ValueError("snapshot weight contains NaN or inf")
        fmap.weight = weight
        fmap.alive = alive
        fmap.usage = usage
        fmap.unit_samples = unit_samples
        fmap.samples = int(snap["samples"])
        fmap.pruned_total = int(snap["pruned_total"])
        # Continue the random stream past where a fresh map would be, so recycled units differ.
        fmap._gen.manual_seed(fmap.seed + 1 + fmap.pruned_total)
        return fmap


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
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        norm = math.sqrt(float(v @ v))
        if not math.isfinite(norm) or norm == 0.0:
            raise ValueError("habituation needs a finite, non-zero vector")
        u = v / norm
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
