"""Deterministic mode (`deterministic: true` at the top of a brain config): what it fixes, and how.

An experiment must be able to run twice and get the same actions; a recorded session replayed
into a fresh brain must reproduce them. Three things make an asynchronous brain vary from run to
run, and deterministic mode removes each:

* **Random numbers.** Every actor whose options take a `seed` gets one derived from the brain's
  `seed` and its own name (`derive_seed`), unless the config sets it: two areas of one kind do
  not draw the same numbers, and the same config always gives the same seeds.
* **Interleaving.** The thalamus becomes the brain's one intake: stimuli and rewards from the
  world are taken one at a time, in arrival order; the next one waits until the previous one
  was answered (`motor.action`), dropped (a workspace non-ignition, an error naming it) or timed
  out. Rewards are relayed by the thalamus (`region.<thalamus>.out`, kind `reward`) so the basal
  ganglia and the amygdala learn from them in that same order. The workspace closes a cycle when
  the expected bids of the stimulus arrived, not on a timer.
* **Wall-clock time.** Hormone dynamics, habituation, the amygdala's relaxation and the
  workspace's refractory clock run on a logical clock that advances `STEP_S` per input. The
  hormone system keeps the events of a stimulus until the thalamus asks it to settle
  (`neuromod.settle`, just before the next stimulus goes in): it applies them in a canonical
  order and publishes the levels, so every region reads the same levels for the same stimulus.
"""

from __future__ import annotations

import hashlib

__all__ = ["INTAKE", "SETTLE_SUBJECT", "STEP_S", "derive_seed"]

#: Logical seconds between two inputs in deterministic mode (hormone relaxation, habituation
#: recovery, workspace clock): about the pace at which a person or a task feeds a brain.
STEP_S = 0.5
#: The name of the intake actor whose relayed rewards the basal ganglia and amygdala accept in
#: deterministic mode (rewards straight from the world are sequenced through it).
INTAKE = "thalamus"
#: Request/reply subject (relative): the thalamus asks the hormone system to apply pending events.
SETTLE_SUBJECT = "neuromod.settle"


def derive_seed(brain_seed: int, actor: str) -> int:
    """A 31-bit seed for `actor`, fixed by the brain's seed and the actor's name.

    A hash (not `hash()`, which Python randomizes per process) so it is the same in every run
    and every process of a placed brain.
    """
    digest = hashlib.sha256(f"{brain_seed}:{actor}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
