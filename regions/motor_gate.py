"""Motor cortex + supplementary motor area: go/no-go gating of the chosen action.

The basal ganglia hand over a choice with a confidence (its largest action probability). With
``n`` actions a uniform choice has confidence ``1/n``, so the gate first rescales it to
``c = (p_max - 1/n) / (1 - 1/n)`` in [0, 1] (0 = no preference, 1 = certain) so that one threshold
means the same for two actions or twenty. The action goes out when ``c >= threshold``::

    threshold = clip(base + shift + adapt - starvation, 0, 1)

* ``shift`` comes from the hormones (``Modulation.motor_threshold_shift``: serotonin raises it =
  patience, dopamine lowers it = vigour);
* ``adapt`` is a slow homeostatic term: after every decision ``adapt += rate * (go - target_rate)``,
  so a gate that lets more than ``target_rate`` of the choices through becomes stricter and one
  that holds too many back becomes laxer (bounded to [-1, 1]);
* ``starvation`` guards against never acting: after ``patience`` consecutive no-gos the threshold
  drops by ``starvation_step`` for every further no-go, and after ``max_nogo`` consecutive no-gos
  the next choice goes out whatever its confidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GateDecision:
    """The outcome of one go/no-go decision.

    Attributes:
        go: Whether the action is released.
        confidence: The rescaled confidence ``c`` in [0, 1] that was compared.
        threshold: The threshold it was compared with.
        forced: True when it went out only because of ``max_nogo`` (action starvation).
    """

    go: bool
    confidence: float
    threshold: float
    forced: bool = False


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


class MotorGate:
    """Adaptive go/no-go threshold on choice confidence.

    Args:
        base: Base threshold on the rescaled confidence, in [0, 1].
        target_rate: The fraction of choices the gate should release in the long run.
        adapt_rate: Step of the homeostatic adaptation per decision.
        patience: Consecutive no-gos before the starvation term starts.
        starvation_step: Threshold drop per no-go beyond ``patience``.
        max_nogo: Consecutive no-gos after which the next choice is forced through.
        rate_window: Time constant (in decisions) of the reported go-rate average.
    """

    def __init__(
        self,
        *,
        base: float = 0.3,
        target_rate: float = 0.9,
        adapt_rate: float = 0.02,
        patience: int = 3,
        starvation_step: float = 0.1,
        max_nogo: int = 10,
        rate_window: float = 20.0,
    ) -> None:
        if not 0.0 <= base <= 1.0:
            raise ValueError(f"base must be in [0, 1], got {base}")
        if not 0.0 <= target_rate <= 1.0:
            raise ValueError(f"target_rate must be in [0, 1], got {target_rate}")
        if patience < 0 or max_nogo < 1 or rate_window < 1.0:
            raise ValueError("patience must be >= 0, max_nogo >= 1 and rate_window >= 1")
        self.base = base
        self.target_rate = target_rate
        self.adapt_rate = adapt_rate
        self.patience = patience
        self.starvation_step = starvation_step
        self.max_nogo = max_nogo
        self.rate_window = rate_window
        self.adapt = 0.0
        self.nogo_streak = 0
        self.go_rate = target_rate
        self.decisions = 0
        self.gos = 0

    @staticmethod
    def rescale(confidence: float, n_actions: int | None) -> float:
        """Map a max probability to [0, 1] relative to chance ``1/n`` (identity when n is None)."""
        if n_actions is None or n_actions <= 1:
            return _clip(confidence, 0.0, 1.0)
        chance = 1.0 / n_actions
        return _clip((confidence - chance) / (1.0 - chance), 0.0, 1.0)

    def threshold(self, shift: float = 0.0) -> float:
        """The threshold the next decision would use."""
        starvation = self.starvation_step * max(0, self.nogo_streak - self.patience)
        return _clip(self.base + shift + self.adapt - starvation, 0.0, 1.0)

    def decide(self, confidence: float, *, n_actions: int | None = None, shift: float = 0.0) -> GateDecision:
        """Decide go/no-go for one choice and adapt.

        Args:
            confidence: The choice's largest action probability.
            n_actions: Size of the repertoire (to rescale against chance); None = already in [0, 1].
            shift: Hormonal threshold shift (``Modulation.motor_threshold_shift``).

        Raises:
            ValueError: On a non-finite confidence or shift.
        """
        if not (math.isfinite(confidence) and math.isfinite(shift)):
            raise ValueError("confidence and shift must be finite")
        c = self.rescale(confidence, n_actions)
        thr = self.threshold(shift)
        forced = self.nogo_streak >= self.max_nogo
        go = forced or c >= thr
        forced = forced and c < thr
        self.decisions += 1
        if go:
            self.gos += 1
            self.nogo_streak = 0
        else:
            self.nogo_streak += 1
        self.adapt = _clip(self.adapt + self.adapt_rate * (float(go) - self.target_rate), -1.0, 1.0)
        self.go_rate += (float(go) - self.go_rate) / self.rate_window
        return GateDecision(go=go, confidence=c, threshold=thr, forced=forced)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "adapt": self.adapt,
            "nogo_streak": self.nogo_streak,
            "go_rate": self.go_rate,
            "decisions": self.decisions,
            "gos": self.gos,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`snapshot`.

        Raises:
            ValueError: On a non-finite number.
        """
        adapt = float(state["adapt"])
        go_rate = float(state.get("go_rate", self.target_rate))
        if not (math.isfinite(adapt) and math.isfinite(go_rate)):
            raise ValueError("adapt and go_rate must be finite")
        self.adapt = _clip(adapt, -1.0, 1.0)
        self.go_rate = _clip(go_rate, 0.0, 1.0)
        self.nogo_streak = max(0, int(state["nogo_streak"]))
        self.decisions = int(state.get("decisions", 0))
        self.gos = int(state.get("gos", 0))
