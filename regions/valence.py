"""Amygdala: the valence of outcomes and the stress it reports to the hormone system.

For every outcome ``r`` in [-1, 1] (a reward or a punishment)::

    pe          = r - E                     # signed surprise against the running expectation
    E          += expectation_rate * pe     # running expectation of outcome ("mood")
    D          += change_rate * (pe - D)    # the recent outcomes' drift from the expectation
    surprise    = |D| / 2                   # unsigned, in [0, 1]
    punishment (r < 0):  stress += (1 - stress) * (punishment_gain * |r| + surprise_gain * max(0, -pe))
    reward     (r > 0):  stress *= 1 - relief * r

Stress saturates at 1, so a streak of punishments drives it up with diminishing steps, and it
relaxes towards 0 with time (``step(dt)``, exact exponential decay with ``tau`` seconds). Every
punishment adds to stress even once it is expected: an expected streak is still a stressor; an
unexpected punishment adds more.

Events for the hormone system (:class:`neuromod.dynamics.NeuromodEvent`):

* ``stress`` with the *increase* of stress (the hormone system integrates the increments, so it
  is not driven again by a stress level it already received);
* ``surprise`` with ``|D| / 2`` when it exceeds ``surprise_threshold`` (unexpected uncertainty:
  e.g. the payoffs of a task were reversed).

Expected and unexpected uncertainty (Yu & Dayan, 2005). In a task that punishes the right
answer one time in five, each such punishment is a large prediction error, yet nothing has
changed: that is expected uncertainty, and taking it as surprise would raise arousal and the
learning rate (acetylcholine) on noise, until a learnt mapping is unlearnt by its own noise. So
surprise is read off ``D``, a fast running mean of the prediction errors: single errors of
either sign average out, while a change in the world (a reversal) moves every outcome the same
way and ``D`` with it within a few trials.

The reward prediction error proper (dopamine) comes from the basal-ganglia critic, not from here,
so the amygdala sends no ``reward`` event and the reward is not counted twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from neuromod.dynamics import NeuromodEvent


@dataclass(frozen=True)
class ValenceReport:
    """What the amygdala made of one outcome.

    Attributes:
        valence: The outcome's valence (the clipped outcome value; sign = good/bad).
        expectation: The running expectation after this outcome.
        prediction_error: ``r - E`` against the expectation before this outcome.
        surprise: ``|D| / 2`` in [0, 1], ``D`` the running mean of prediction errors.
        stress: The stress level after this outcome, in [0, 1].
        arousal: ``max(stress, surprise)``: how activating the outcome was, in [0, 1].
        events: Events to send to the hormone system.
    """

    valence: float
    expectation: float
    prediction_error: float
    surprise: float
    stress: float
    arousal: float
    events: list[NeuromodEvent] = field(default_factory=list)


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


class Amygdala:
    """Valence, running expectation and stress from outcomes.

    Args:
        expectation_rate: Step of the running expectation per outcome.
        punishment_gain: Stress drive per unit of punishment.
        surprise_gain: Extra stress drive per unit of negative prediction error.
        relief: Fraction of stress a full reward (+1) removes.
        tau: Time constant (s) of the stress decay.
        surprise_threshold: Minimum ``surprise`` that is reported as an event.
        min_event: Smallest stress increase worth an event.
        change_rate: Step of ``D``, the running mean of prediction errors that surprise reads.
    """

    def __init__(
        self,
        *,
        expectation_rate: float = 0.1,
        punishment_gain: float = 0.2,
        surprise_gain: float = 0.1,
        relief: float = 0.2,
        tau: float = 30.0,
        surprise_threshold: float = 0.4,
        min_event: float = 1e-3,
        change_rate: float = 0.3,
    ) -> None:
        if not 0.0 < expectation_rate <= 1.0:
            raise ValueError(f"expectation_rate must be in (0, 1], got {expectation_rate}")
        if tau <= 0.0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.expectation_rate = expectation_rate
        self.punishment_gain = punishment_gain
        self.surprise_gain = surprise_gain
        self.relief = relief
        self.tau = tau
        self.surprise_threshold = surprise_threshold
        self.min_event = min_event
        if not 0.0 < change_rate <= 1.0:
            raise ValueError(f"change_rate must be in (0, 1], got {change_rate}")
        self.change_rate = change_rate
        self.expectation = 0.0
        self.drift = 0.0
        self.stress = 0.0
        self.outcomes = 0

    def observe(self, value: float) -> ValenceReport:
        """Appraise one outcome.

        Args:
            value: The outcome in [-1, 1] (clipped).

        Raises:
            ValueError: On a non-finite value.
        """
        if not math.isfinite(value):
            raise ValueError(f"value must be finite, got {value}")
        r = _clip(float(value), -1.0, 1.0)
        pe = r - self.expectation
        self.expectation += self.expectation_rate * pe
        self.drift += self.change_rate * (pe - self.drift)
        surprise = min(1.0, abs(self.drift) / 2.0)
        before = self.stress
        if r < 0.0:
            drive = self.punishment_gain * -r + self.surprise_gain * max(0.0, -pe)
            self.stress += (1.0 - self.stress) * min(1.0, drive)
        elif r > 0.0:
            self.stress *= 1.0 - _clip(self.relief * r, 0.0, 1.0)
        self.outcomes += 1
        events: list[NeuromodEvent] = []
        rise = self.stress - before
        if rise >= self.min_event:
            events.append(NeuromodEvent(kind="stress", value=rise))
        if surprise >= self.surprise_threshold:
            events.append(NeuromodEvent(kind="surprise", value=surprise))
        return ValenceReport(
            valence=r,
            expectation=self.expectation,
            prediction_error=pe,
            surprise=surprise,
            stress=self.stress,
            arousal=max(self.stress, surprise),
            events=events,
        )

    def step(self, dt: float) -> float:
        """Let stress decay for ``dt`` seconds (exact); returns the new stress."""
        if not (math.isfinite(dt) and dt >= 0.0):
            raise ValueError(f"dt must be finite and >= 0, got {dt}")
        self.stress *= math.exp(-dt / self.tau)
        return self.stress

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {"expectation": self.expectation, "drift": self.drift, "stress": self.stress,
                "outcomes": self.outcomes}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`snapshot`.

        Raises:
            ValueError: On a non-finite number.
        """
        expectation, stress = float(state["expectation"]), float(state["stress"])
        if not (math.isfinite(expectation) and math.isfinite(stress)):
            raise ValueError("expectation and stress must be finite")
        self.expectation = _clip(expectation, -1.0, 1.0)
        self.stress = _clip(stress, 0.0, 1.0)
        drift = float(state.get("drift", 0.0))
        self.drift = _clip(drift, -2.0, 2.0) if math.isfinite(drift) else 0.0
        self.outcomes = int(state.get("outcomes", 0))
