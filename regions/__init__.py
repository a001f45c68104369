"""regions: the brain's areas as actors, and the pure computations they wrap.

Actors (one module each): thalamus, cortex, workspace, prefrontal, basal_ganglia, motor, amygdala.
Computations: encoders, plasticity, competition, working_memory, selection, motor_gate, valence.
Actor modules are imported on demand (see actors.registry), so importing `regions` stays light.
"""

from regions.competition import Workspace
from regions.encoders import HashingEncoder, MiniLMEncoder
from regions.habituation import Habituation
from regions.microbatch import MicroBatcher
from regions.plasticity import OjaFeatureMap
from regions.selection import ActorCritic
from regions.working_memory import WorkingMemory

__all__ = [
    "ActorCritic",
    "Habituation",
    "HashingEncoder",
    "MicroBatcher",
    "MiniLMEncoder",
    "OjaFeatureMap",
    "WorkingMemory",
    "Workspace",
]
