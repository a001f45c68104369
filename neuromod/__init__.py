"""neuromod: hormone homeostasis (dopamine, serotonin, norepinephrine, acetylcholine) and what it modulates."""

from neuromod.dynamics import HORMONES, HormoneSystem, Modulation, modulation

__all__ = ["HORMONES", "HormoneSystem", "Modulation", "modulation"]
