"""Prefrontal working memory: a leaky, gated recurrent state written by workspace broadcasts.

Every broadcast content ``x`` (unit-normalised) is offered to the state ``h`` (dimension ``D``)::

    g = sigmoid(gate_gain * salience + gate_bias)      # how much the new content overwrites
    h = normalise((1 - g) * leak * h + g * x)

Salient contents are admitted (with the defaults g = 0.05 at salience 0, 0.5 at 0.5, 0.95 at 1)
while weak ones barely disturb what is held. A percept that repeats the previous percept brings
nothing new, and the gate closes by how alike they are: ``g *= 1 - max(0, cos(x, percept))``, so
a run of identical distractors (a corridor) leaves a cue seen before it in ``h``. ``leak`` < 1
tilts the mix further towards the new content, so old contents fade after a few updates. ``h``
is kept at unit norm so the readout downstream sees the same scale whatever the history.

The context for action selection is ``concat(percept, h) / sqrt(2)`` (dimension ``2 D``, unit
norm once both halves are set): ``percept`` is the latest *percept* written (a stimulus, not a
recalled memory or another region's output), taken as is, so the basal ganglia always see what is
being answered, while ``h`` carries the recent history that disambiguates it. A linear readout
on ``h`` alone would lose the current stimulus whenever a low-salience percept is gated out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from regions.selection import ContextLike, as_vector

_EPS = 1e-8


def _normalise(v: torch.Tensor) -> torch.Tensor:
    n = float(torch.linalg.vector_norm(v))
    return v / n if n > _EPS else torch.zeros_like(v)


class WorkingMemory:
    """Leaky gated recurrent state (prefrontal cortex).

    Args:
        dim: Content dimension ``D``; :meth:`context` has dimension ``2 D``.
        leak: Retention factor of the old state per update, in (0, 1].
        gate_gain: Slope ``a`` of the gate in salience.
        gate_bias: Offset ``b`` of the gate.
        retain: New content joins what is held instead of displacing it,
            ``h = normalise(leak * h + g * x)``: the working memory of an episode, where what
            came first (a cue) is part of the task until its end.
    """

    def __init__(
        self, dim: int, *, leak: float = 0.9, gate_gain: float = 6.0, gate_bias: float = -3.0,
        retain: bool = False,
    ) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if not 0.0 < leak <= 1.0:
            raise ValueError(f"leak must be in (0, 1], got {leak}")
        self.dim = dim
        self.leak = leak
        self.gate_gain = gate_gain
        self.gate_bias = gate_bias
        self.retain = retain
        self._h = torch.zeros(dim)
        self._percept = torch.zeros(dim)
        self.updates = 0

    @property
    def context_dim(self) -> int:
        """Dimension of :meth:`context` (``2 * dim``)."""
        return 2 * self.dim

    def gate(self, salience: float) -> float:
        """The write gate ``sigmoid(a * salience + b)`` for a salience."""
        return 1.0 / (1.0 + math.exp(-(self.gate_gain * salience + self.gate_bias)))

    def update(self, content: ContextLike, salience: float, *, is_percept: bool = True) -> float:
        """Offer a broadcast content to working memory.

        Args:
            content: The content vector (dimension ``dim``).
            salience: Its salience in [0, 1] (clipped).
            is_percept: Whether it is the current percept (replaces the percept half of the
                context) rather than a memory or a region's output.

        Returns:
            The gate value used.

        Raises:
            ValueError: On a wrong dimension or a non-finite entry or salience.
        """
        if not math.isfinite(salience):
            raise ValueError(f"salience must be finite, got {salience}")
        # In numpy on views of the torch state: one update per broadcast on small vectors,
        # where torch's per-operation overhead would be most of the cost.
        xn = as_vector(content, self.dim).numpy()
        n = math.sqrt(float(xn @ xn))
        xn = xn / n if n > _EPS else np.zeros_like(xn)
        g = self.gate(min(1.0, max(0.0, float(salience))))
        if is_percept:
            g *= 1.0 - max(0.0, float(xn @ self._percept.numpy()))
        if g <= 0.0:  # nothing new: `h` holds as it is (the leak alone would be undone below)
            self._percept = torch.from_numpy(xn)
            self.updates += 1
            return 0.0
        keep = self.leak if self.retain else (1.0 - g) * self.leak
        h = np.float32(keep) * self._h.numpy() + np.float32(g) * xn
        n = math.sqrt(float(h @ h))
        self._h = torch.from_numpy(h / n if n > _EPS else np.zeros_like(h))
        x = torch.from_numpy(xn)
        if is_percept:
            self._percept = x
        self.updates += 1
        return g

    def state(self) -> torch.Tensor:
        """A copy of the recurrent state ``h`` (unit norm, or zero before any update)."""
        return self._h.clone()

    def context(self) -> torch.Tensor:
        """The context for action selection: ``concat(percept, h) / sqrt(2)``, a new tensor."""
        both = np.concatenate([self._percept.numpy(), self._h.numpy()])
        both *= np.float32(1.0 / math.sqrt(2.0))
        return torch.from_numpy(both)

    def clear(self) -> None:
        """Empty working memory (e.g. at the start of a new task)."""
        self._h.zero_()
        self._percept.zero_()

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "dim": self.dim,
            "h": self._h.tolist(),
            "percept": self._percept.tolist(),
            "updates": self.updates,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`snapshot`.

        Raises:
            ValueError: When the snapshot's dimension differs from this instance's.
        """
        if int(state["dim"]) != self.dim:
            raise ValueError(f"snapshot has dim {state['dim']}, expected {self.dim}")
        self._h = as_vector(state["h"], self.dim)
        self._percept = as_vector(state["percept"], self.dim)
        self.updates = int(state.get("updates", 0))
