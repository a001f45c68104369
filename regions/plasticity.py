"""Local plasticity for sensory regions (pure compute, no bus code).

* :class:`OjaFeatureMap` — a linear feature map learned online with Sanger's generalized Hebbian
  rule (or Oja's symmetric subspace rule). Learning is local: each weight changes from its own
  pre- and post-synaptic activity plus a decay term, no back-propagation. The rows stay bounded
  (they converge to unit norm) and span the principal directions of the input. Novelty is the
  fraction of the input the map cannot reconstruct, so whatever the map has learned becomes
  familiar (habituation through learning; the thalamus's short-term habituation is
  regions.habituation).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

__all__ = ["HebbianRule", "OjaFeatureMap"]

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
