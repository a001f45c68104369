"""Hormone dynamics and what the hormone levels modulate.

Four neuromodulators, each a level in [0, 1] made of two parts::

    level = clip(tonic + phasic, 0, 1)

* **tonic** returns homeostatically to the baseline ``H0``:
  ``d tonic/dt = (H0 - tonic) / tau`` (tau 30-60 s), plus the inputs below;
* **phasic** is a fast transient that decays to zero: ``d phasic/dt = -phasic / tau_phasic`` (1-2 s).

Inputs are instantaneous impulses applied when an event arrives; between events the state relaxes
with the exact solution of the linear ODEs (``x(t+dt) = x* + (x - x*) * exp(-dt/tau)``), so ten steps
of 0.1 s give the same levels as one step of 1 s. Tonic parts are kept in [0, 1], phasic parts in
[-1, 1] (a phasic dip is negative; the level is clipped at 0).

Defaults (:data:`DEFAULT_PARAMS`): baseline / tau / tau_phasic = DA 0.5 / 30 s / 1 s,
5-HT 0.5 / 60 s / 2 s, NE 0.4 / 20 s / 1.5 s, ACh 0.5 / 30 s / 1.5 s.

Inputs (events) and their effect, with the default gains of :class:`HormoneGains`. Every impulse
is scaled by the room left in its direction (``1 - level`` going up, ``level`` going down), so
bursts of events approach the bounds without pinning a level there:

==================  ===========================================================================
event               effect
==================  ===========================================================================
reward(value, rpe)  DA phasic += 0.8 * rpe * room (burst for a positive, dip for a negative RPE);
                    5-HT tonic moves 10 % of the way to ``H0 + 0.3 * value``: a running average
                    of reward, the serotonergic "patience" signal
novelty(x)          NE phasic += 0.3 x (arousal), ACh phasic += 0.4 x (encode the new thing)
surprise(x)         unexpected uncertainty: NE phasic += 0.3 x, NE tonic += 0.05 x, and
                    ACh phasic += 0.6 x (a surprise says the world changed: learn faster)
stress(x)           NE phasic += 0.2 x, NE tonic += 0.15 x, 5-HT tonic -= 0.15 x
==================  ===========================================================================

``x`` is clipped to [0, 1], ``rpe`` to [-2, 2] and ``value`` to [-1, 1]. A *frozen* system ignores
every input and reports exactly its baselines (the "frozen hormones" ablation).

What the levels modulate (:func:`modulation`, after Doya 2002, "Metalearning and
neuromodulation"). ``ref`` is the reference level of each hormone (its default baseline), so at
baseline every *shift* is zero:

========================  ==============  ========================================================
signal                    from            mapping (defaults of :class:`ModulationConfig`)
========================  ==============  ========================================================
inverse_temperature       NE              beta = 1 + (30 - 1) * NE. High NE = high gain = more
                                          exploitative softmax; low NE = exploration
learning_rate             ACh             lr = 0.02 + (0.6 - 0.02) * ACh
rpe_gain                  DA              2 * DA (1.0 at DA = 0.5): scales how strongly a reward
                                          prediction error changes the weights
motor_threshold_shift     5-HT, DA        0.3 * (5-HT - ref) - 0.3 * (DA - ref): serotonin =
                                          patience = wait for more confidence; dopamine =
                                          vigour = act sooner
ignition_threshold_shift  NE              -0.3 * (NE - ref): arousal lowers the workspace's
                                          ignition threshold
encoding_mode             ACh             "encoding" when ACh > ref + 0.02, else "retrieval" (the
                                          margin keeps a decayed transient from holding the mode)
discount                  5-HT            gamma = 0.5 + (0.99 - 0.5) * 5-HT: serotonin lengthens
                                          the time horizon
========================  ==============  ========================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

HORMONES: tuple[str, ...] = ("dopamine", "serotonin", "norepinephrine", "acetylcholine")

EventKind = Literal["reward", "novelty", "surprise", "stress"]
EncodingMode = Literal["encoding", "retrieval"]


@dataclass(frozen=True)
class HormoneParams:
    """Constants of one hormone.

    Attributes:
        baseline: Homeostatic set point ``H0`` in [0, 1].
        tau: Time constant (s) of the tonic return to baseline.
        tau_phasic: Time constant (s) of the phasic decay.
    """

    baseline: float
    tau: float
    tau_phasic: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.baseline <= 1.0:
            raise ValueError(f"baseline must be in [0, 1], got {self.baseline}")
        if not (self.tau > 0.0 and self.tau_phasic > 0.0):
            raise ValueError("tau and tau_phasic must be positive")


DEFAULT_PARAMS: dict[str, HormoneParams] = {
    "dopamine": HormoneParams(baseline=0.5, tau=30.0, tau_phasic=1.0),
    "serotonin": HormoneParams(baseline=0.5, tau=60.0, tau_phasic=2.0),
    "norepinephrine": HormoneParams(baseline=0.4, tau=20.0, tau_phasic=1.5),
    "acetylcholine": HormoneParams(baseline=0.5, tau=30.0, tau_phasic=1.5),
}


@dataclass(frozen=True)
class HormoneGains:
    """How strongly each input moves each hormone (see the module table)."""

    da_rpe: float = 0.8
    ser_reward_rate: float = 0.1
    ser_reward_gain: float = 0.3
    novelty_ne: float = 0.3
    novelty_ach: float = 0.4
    surprise_ne: float = 0.3
    surprise_ne_tonic: float = 0.05
    surprise_ach: float = 0.6
    stress_ne: float = 0.2
    stress_ne_tonic: float = 0.15
    stress_ser_tonic: float = 0.15


@dataclass(frozen=True)
class NeuromodEvent:
    """An input to the hormone system, as other regions report it.

    Attributes:
        kind: Which input.
        value: The reward value for ``reward``, else the magnitude ``x`` in [0, 1].
        rpe: The reward prediction error (``reward`` only).
    """

    kind: EventKind
    value: float
    rpe: float = 0.0


def _finite(name: str, x: float) -> float:
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    return x


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


class HormoneSystem:
    """Dopamine, serotonin, norepinephrine and acetylcholine with tonic/phasic dynamics.

    Args:
        params: Per-hormone constants; missing hormones take :data:`DEFAULT_PARAMS`.
        gains: Input gains.
        frozen: Start frozen (levels pinned at baseline, inputs ignored).
    """

    def __init__(
        self,
        params: Mapping[str, HormoneParams] | None = None,
        gains: HormoneGains | None = None,
        *,
        frozen: bool = False,
    ) -> None:
        unknown = set(params or {}) - set(HORMONES)
        if unknown:
            raise ValueError(f"unknown hormones: {sorted(unknown)}")
        self.params: dict[str, HormoneParams] = {
            h: (params or {}).get(h, DEFAULT_PARAMS[h]) for h in HORMONES
        }
        self.gains = gains or HormoneGains()
        self._tonic: dict[str, float] = {}
        self._phasic: dict[str, float] = {}
        self.time = 0.0
        self._frozen = False
        self.reset()
        self.frozen = frozen

    # -- state ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Put every hormone back at its baseline (tonic = H0, phasic = 0)."""
        self._tonic = {h: self.params[h].baseline for h in HORMONES}
        self._phasic = dict.fromkeys(HORMONES, 0.0)

    @property
    def frozen(self) -> bool:
        """Whether the levels are pinned at baseline (ablation)."""
        return self._frozen

    @frozen.setter
    def frozen(self, value: bool) -> None:
        self._frozen = bool(value)
        if self._frozen:
            # Pinning the state too (not only the reported levels) means that unfreezing starts
            # from baseline rather than from whatever was accumulated before the freeze.
            self.reset()

    def baselines(self) -> dict[str, float]:
        """The baseline ``H0`` of every hormone."""
        return {h: self.params[h].baseline for h in HORMONES}

    def levels(self) -> dict[str, float]:
        """Current levels, each ``clip(tonic + phasic, 0, 1)``."""
        if self._frozen:
            return self.baselines()
        return {h: _clip(self._tonic[h] + self._phasic[h], 0.0, 1.0) for h in HORMONES}

    def tonic(self) -> dict[str, float]:
        """Tonic parts (for display and tests)."""
        return dict(self._tonic)

    def phasic(self) -> dict[str, float]:
        """Phasic parts (for display and tests)."""
        return dict(self._phasic)

    # -- time ----------------------------------------------------------------------------------

    def step(self, dt: float) -> dict[str, float]:
        """Advance time by ``dt`` seconds with the exact exponential solution.

        Args:
            dt: Elapsed time in seconds (>= 0).

        Returns:
            The levels after the step.
        """
        dt = _finite("dt", dt)
        if dt < 0.0:
            raise ValueError(f"dt must be >= 0, got {dt}")
        self.time += dt
        if not self._frozen and dt > 0.0:
            for h in HORMONES:
                p = self.params[h]
                self._tonic[h] = p.baseline + (self._tonic[h] - p.baseline) * math.exp(-dt / p.tau)
                self._phasic[h] *= math.exp(-dt / p.tau_phasic)
        return self.levels()

    # -- inputs --------------------------------------------------------------------------------

    def _kick(self, hormone: str, phasic: float = 0.0, tonic: float = 0.0) -> None:
        # Impulses move a level by their size times the room left in that direction (receptor
        # saturation): a burst of events approaches the ceiling instead of pinning the level at
        # 1.0, where it could no longer signal the next change.
        level = self._tonic[hormone] + self._phasic[hormone]
        room = max(0.0, 1.0 - level) if phasic > 0 else max(0.0, level)
        self._phasic[hormone] = _clip(self._phasic[hormone] + phasic * room, -1.0, 1.0)
        t = self._tonic[hormone]
        self._tonic[hormone] = _clip(t + tonic * ((1.0 - t) if tonic > 0 else t), 0.0, 1.0)

    def reward(self, value: float, rpe: float) -> None:
        """An outcome arrived.

        Args:
            value: The reward in [-1, 1] (clipped).
            rpe: The reward prediction error ``r - V`` in [-2, 2] (clipped).
        """
        value = _clip(_finite("value", value), -1.0, 1.0)
        rpe = _clip(_finite("rpe", rpe), -2.0, 2.0)
        if self._frozen:
            return
        g = self.gains
        self._kick("dopamine", phasic=g.da_rpe * rpe)
        # Serotonin: an exponential running average of reward, expressed as a moving set point
        # H0 + k * value; the homeostatic relaxation in step() pulls it back when rewards stop.
        target = _clip(self.params["serotonin"].baseline + g.ser_reward_gain * value, 0.0, 1.0)
        ser = self._tonic["serotonin"]
        self._tonic["serotonin"] = ser + g.ser_reward_rate * (target - ser)

    def novelty(self, x: float) -> None:
        """A novel input: arousal (NE) and encoding (ACh). ``x`` in [0, 1]."""
        x = _clip(_finite("x", x), 0.0, 1.0)
        if self._frozen:
            return
        self._kick("norepinephrine", phasic=self.gains.novelty_ne * x)
        self._kick("acetylcholine", phasic=self.gains.novelty_ach * x)

    def surprise(self, x: float) -> None:
        """Unexpected uncertainty (e.g. a large unsigned prediction error). ``x`` in [0, 1]."""
        x = _clip(_finite("x", x), 0.0, 1.0)
        if self._frozen:
            return
        g = self.gains
        self._kick("norepinephrine", phasic=g.surprise_ne * x, tonic=g.surprise_ne_tonic * x)
        self._kick("acetylcholine", phasic=g.surprise_ach * x)

    def stress(self, x: float) -> None:
        """A stressor (e.g. a punishment streak): NE up, serotonin down. ``x`` in [0, 1]."""
        x = _clip(_finite("x", x), 0.0, 1.0)
        if self._frozen:
            return
        g = self.gains
        self._kick("norepinephrine", phasic=g.stress_ne * x, tonic=g.stress_ne_tonic * x)
        self._kick("serotonin", tonic=-g.stress_ser_tonic * x)

    def apply(self, event: NeuromodEvent) -> None:
        """Dispatch one :class:`NeuromodEvent` to the matching input method."""
        if event.kind == "reward":
            self.reward(event.value, event.rpe)
        elif event.kind == "novelty":
            self.novelty(event.value)
        elif event.kind == "surprise":
            self.surprise(event.value)
        elif event.kind == "stress":
            self.stress(event.value)
        else:
            raise ValueError(f"unknown neuromod event kind {event.kind!r}")

    # -- persistence ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state (parameters come from the configuration, not the snapshot)."""
        return {
            "tonic": dict(self._tonic),
            "phasic": dict(self._phasic),
            "time": self.time,
            "frozen": self._frozen,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`snapshot`.

        Raises:
            ValueError: When the snapshot is missing a hormone or holds a non-finite number.
        """
        tonic = {h: _clip(_finite(h, state["tonic"][h]), 0.0, 1.0) for h in HORMONES}
        phasic = {h: _clip(_finite(h, state["phasic"][h]), -1.0, 1.0) for h in HORMONES}
        self._tonic, self._phasic = tonic, phasic
        self.time = _finite("time", state.get("time", 0.0))
        self._frozen = bool(state.get("frozen", False))
        if self._frozen:
            self.reset()


# -- what the levels modulate ----------------------------------------------------------------------


@dataclass(frozen=True)
class ModulationConfig:
    """Ranges and gains of :func:`modulation` (defaults = the module table)."""

    beta_min: float = 1.0
    beta_max: float = 30.0
    lr_min: float = 0.02
    lr_max: float = 0.6
    rpe_gain_scale: float = 2.0
    motor_serotonin_gain: float = 0.3
    motor_dopamine_gain: float = 0.3
    ignition_ne_gain: float = 0.3
    gamma_min: float = 0.5
    gamma_max: float = 0.99
    encoding_margin: float = 0.02
    reference: Mapping[str, float] = field(
        default_factory=lambda: {h: p.baseline for h, p in DEFAULT_PARAMS.items()}
    )


@dataclass(frozen=True)
class Modulation:
    """Control signals derived from the hormone levels (see the module table)."""

    inverse_temperature: float
    learning_rate: float
    rpe_gain: float
    motor_threshold_shift: float
    ignition_threshold_shift: float
    encoding_mode: EncodingMode
    discount: float

    @property
    def encoding(self) -> bool:
        """True in encoding mode (ACh above its reference by more than the margin)."""
        return self.encoding_mode == "encoding"

    def as_dict(self) -> dict[str, float | str]:
        """Plain dict for publishing and logging."""
        return {
            "inverse_temperature": self.inverse_temperature,
            "learning_rate": self.learning_rate,
            "rpe_gain": self.rpe_gain,
            "motor_threshold_shift": self.motor_threshold_shift,
            "ignition_threshold_shift": self.ignition_threshold_shift,
            "encoding_mode": self.encoding_mode,
            "discount": self.discount,
        }


DEFAULT_MODULATION = ModulationConfig()


def modulation(levels: Mapping[str, float], config: ModulationConfig = DEFAULT_MODULATION) -> Modulation:
    """Map hormone levels to control signals (Doya 2002; the table in the module docstring).

    Args:
        levels: Hormone levels in [0, 1]; a missing hormone is taken at its reference level.
        config: Ranges and gains.

    Returns:
        The derived :class:`Modulation`.
    """
    ref = config.reference

    def lv(h: str) -> float:
        return _clip(_finite(h, levels.get(h, ref[h])), 0.0, 1.0)

    da, ser, ne, ach = lv("dopamine"), lv("serotonin"), lv("norepinephrine"), lv("acetylcholine")
    return Modulation(
        inverse_temperature=config.beta_min + (config.beta_max - config.beta_min) * ne,
        learning_rate=config.lr_min + (config.lr_max - config.lr_min) * ach,
        rpe_gain=config.rpe_gain_scale * da,
        motor_threshold_shift=config.motor_serotonin_gain * (ser - ref["serotonin"])
        - config.motor_dopamine_gain * (da - ref["dopamine"]),
        ignition_threshold_shift=-config.ignition_ne_gain * (ne - ref["norepinephrine"]),
        encoding_mode="encoding" if ach > ref["acetylcholine"] + config.encoding_margin else "retrieval",
        discount=config.gamma_min + (config.gamma_max - config.gamma_min) * ser,
    )
