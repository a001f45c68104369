"""A region that follows the hormone levels broadcast on `NS.neuromod.levels`."""

from __future__ import annotations

from actors.actor import Actor, on
from bus import Meta
from bus.models import NeuromodLevels
from neuromod.dynamics import HORMONES, Modulation, modulation

__all__ = ["Modulated"]


class Modulated(Actor):
    """Keeps `self.levels` and the derived `self.mod` (neuromod.dynamics.modulation) current.

    Until the first levels arrive, every hormone is at its reference level (all shifts zero).
    """

    levels: dict[str, float]
    mod: Modulation

    def init_modulation(self) -> None:
        self.levels = {}
        self.mod = modulation(self.levels)

    @on("neuromod.levels")
    async def hormones_changed(self, msg: NeuromodLevels, meta: Meta) -> None:
        self.levels = {h: float(getattr(msg, h)) for h in HORMONES}
        self.mod = modulation(self.levels)
