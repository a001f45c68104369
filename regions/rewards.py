"""How the brain scales the rewards of a world into its own range."""

from __future__ import annotations

import math

__all__ = ["RewardScale"]


class RewardScale:
    """Divides rewards by the largest magnitude seen so far (never by less than 1).

    A world may pay in any unit (|value| up to 10,000 on the bus): one-step tasks that pay in
    [-1, 1] are taken as they are, and a world that pays 20 for a goal and -1 per step is seen as
    1 and -0.05 once the 20 has come. The scale only grows, so a learnt value is never inflated.
    """

    def __init__(self) -> None:
        self.largest = 1.0

    def __call__(self, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"reward must be finite, got {value}")
        self.largest = max(self.largest, abs(value))
        return value / self.largest
