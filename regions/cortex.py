"""Sensory cortices: learned feature maps on percepts, bidding for the global workspace.

One actor kind serves the language area (modality `text`) and the visual/vector area (other
modalities); the config says which modalities each instance takes. Features are learned online
with Sanger's rule (local Hebbian plasticity, rate scaled by acetylcholine); how poorly they
reconstruct a percept is its novelty. The bid's salience rises with novelty and arousal (NE).
The novelty is computed at once; the Hebbian steps of the percepts of the next 10 ms are applied
together, as one matrix product (a busy area would otherwise spend most of its time on one step
per percept).

Sensory adaptation: the cortex passes on what is different about a percept, not what every
percept shares. It keeps a running mean of its input and subtracts most of it (`centering`)
before bidding. Sentence-encoder vectors share a large common direction (words of different
categories still have cosine ~0.3), and without this step a reward for one word moves the
preferences for every word.

Novelty events go to the hormone system only when a percept is more novel than usual (above the
running mean novelty) and not habituated: a stream of ordinary stimuli must not hold arousal
(NE) and learning rate (ACh) at their ceiling, or they could not respond to a real change.

With `replay` on, the area also learns from the episodes the hippocampus replays during sleep
(`NS.mem.replay`, DESIGN 6.10): remembered contents rehearse the feature map offline, so the
features of what was experienced before a new task are not simply overwritten by it.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from actors.actor import on
from bus import Meta
from bus.models import Bid, MemReplay, NeuromodEvent, RegionOutput
from neuromod.dynamics import DEFAULT_PARAMS, modulation
from regions.modulated import Modulated
from regions.plasticity import OjaFeatureMap

__all__ = ["Cortex"]

#: The modulated learning rate at baseline acetylcholine: the Oja rate is scaled relative to it.
BASELINE_LR = modulation({}).learning_rate
NE_REFERENCE = DEFAULT_PARAMS["norepinephrine"].baseline
#: Longest a percept's Hebbian step waits to be batched with the next ones (`OjaFeatureMap.observe`).
LEARN_WITHIN_S = 0.01


class CortexOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Modalities this area takes; `*` means every modality but text (the visual/vector area).
    modalities: list[str] = Field(default_factory=lambda: ["text"])
    dim: Annotated[int, Field(ge=8, le=8192)] = 384
    features: Annotated[int, Field(ge=1, le=1024)] = 64
    lr: Annotated[float, Field(gt=0, le=1)] = 0.01
    #: Fraction of the running mean percept removed before bidding (0 = pass percepts unchanged).
    centering: Annotated[float, Field(ge=0, le=1)] = 0.8
    #: Rate of the running means (percept, novelty) per percept.
    adaptation_rate: Annotated[float, Field(gt=0, le=1)] = 0.02
    base_salience: Annotated[float, Field(ge=0, le=10)] = 0.6
    novelty_gain: Annotated[float, Field(ge=0, le=10)] = 0.4
    #: How strongly arousal (NE relative to its baseline) scales salience, both ways: a drowsy
    #: brain (low NE) lets weak percepts fall below the ignition threshold.
    arousal_gain: Annotated[float, Field(ge=0, le=10)] = 0.5
    source: str = "thalamus"
    #: Learn features from sleep replay (`NS.mem.replay`); one area per memory should (the
    #: episodes carry no modality, so the config names the area their keys come from).
    replay: bool = False
    seed: int = 0


class Cortex(Modulated):
    kind = "cortex"
    Options = CortexOptions
    options: CortexOptions

    async def on_start(self) -> None:
        self.init_modulation()
        o = self.options
        self.features = OjaFeatureMap(o.dim, o.features, lr=o.lr, seed=o.seed, device=self.device)
        self.novelty_sum = 0.0
        self.seen = 0
        self.mean = np.zeros(o.dim, dtype=np.float32)
        self.usual_novelty: float | None = None
        self.novelty_events = 0
        self.replayed = 0
        self.learning_due = False
        self.out_subject = self.bus.subjects.region_out(self.name)

    def takes(self, modality: str) -> bool:
        mods = self.options.modalities
        return modality in mods or ("*" in mods and modality != "text")

    @on("region.thalamus.out")
    async def perceived(self, msg: RegionOutput, meta: Meta) -> None:
        if msg.kind != "percept" or msg.vector is None or not self.takes(str(msg.data.get("modality", ""))):
            return
        x = msg.vector
        if x.size != self.options.dim:
            return  # the thalamus checks dimensions; a cortex of another size ignores the percept
        # Learning rate follows acetylcholine: high in encoding mode, low in retrieval.
        novelty = self.features.observe(x, lr_scale=self.mod.learning_rate / BASELINE_LR)
        self.seen += 1
        self.novelty_sum += novelty
        # Habituation takes away the orienting response (the novelty bonus), not the percept
        # itself: a repeated stimulus still reaches the workspace. Arousal (NE) scales everything.
        habituation = float(msg.data.get("habituation", 1.0))
        arousal = self.levels.get("norepinephrine", NE_REFERENCE) - NE_REFERENCE
        o = self.options
        salience = (o.base_salience + o.novelty_gain * novelty * habituation) * max(
            0.0, 1.0 + o.arousal_gain * arousal)
        sid = msg.stimulus_id
        await self.publish(self.bus.subjects.gw_bid, Bid(
            source=self.name, kind="percept", salience=min(salience, 10.0), content=self._adapt(x),
            stimulus_id=sid, detail={"novelty": round(novelty, 4), "modality": msg.data.get("modality"),
                                     "text": msg.data.get("text"), "episode": msg.data.get("episode")}),
            stimulus_id=sid)
        self._learn_soon()
        usual = novelty if self.usual_novelty is None else self.usual_novelty
        self.usual_novelty = usual + o.adaptation_rate * (novelty - usual)
        surprise = 2.0 * max(0.0, novelty - usual) * habituation
        if surprise > 0.1:
            self.novelty_events += 1
            await self.publish(self.bus.subjects.neuromod_event, NeuromodEvent(
                kind="novelty", value=min(surprise, 1.0), source=self.name, stimulus_id=sid), stimulus_id=sid)

    def _learn_soon(self) -> None:
        """Apply the percept's Hebbian step within `LEARN_WITHIN_S`, batched with the percepts
        that arrive meanwhile: under load, one matrix product learns from many percepts.
        Deterministic mode learns at once, so replays do not depend on timing."""
        if self.deterministic:
            self.features.consolidate()
        elif not self.learning_due:
            self.learning_due = True
            self.call_later(LEARN_WITHIN_S, "consolidate")

    async def consolidate(self) -> None:
        self.learning_due = False
        self.features.consolidate()

    def _adapt(self, x: np.ndarray) -> np.ndarray:
        """The percept minus most of the running mean, unit length; the mean then follows `x`."""
        o = self.options
        content = x - o.centering * self.mean
        norm = math.sqrt(float(content @ content))
        self.mean += o.adaptation_rate * (x - self.mean)
        return content / norm if norm > 1e-6 else x

    @on("mem.replay")
    async def rehearse(self, msg: MemReplay, meta: Meta) -> None:
        """Sleep replay: rehearse a remembered content (Sanger's rule at the baseline rate)."""
        if not self.options.replay or msg.key.size != self.options.dim:
            return
        self.features.learn(msg.key)
        self.replayed += 1

    async def on_sleep(self) -> None:
        pruned = self.features.prune_dead()
        self.log.info("cortex.pruned", units=pruned)

    def snapshot(self) -> dict[str, Any]:
        return {"features": self.features.snapshot(), "mean": self.mean.tolist(), "usual_novelty": self.usual_novelty}

    def restore(self, state: dict[str, Any]) -> None:
        self.features = OjaFeatureMap.restore(state["features"], device=self.device)
        self.mean = np.asarray(state["mean"], dtype=np.float32)
        self.usual_novelty = state.get("usual_novelty")

    def extra_stats(self) -> dict[str, float]:
        return {"percepts": self.seen, "mean_novelty": round(self.novelty_sum / max(1, self.seen), 4),
                "novelty_events": self.novelty_events, "replayed": self.replayed}
