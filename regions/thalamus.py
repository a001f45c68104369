"""Thalamus: the brain's intake. Every stimulus enters here, gets its id and its percept vector.

Text is encoded by the language encoder: the MiniLM sentence encoder (micro-batched, in a worker
thread, so the event loop never waits on it) or the deterministic hashing encoder (fast; tests).
Vectors pass through after a dimension check. Each percept carries a habituation factor (repeated
stimuli lose their orienting response and recover with time) that the cortex applies to the
novelty part of its bid. While the brain sleeps, intake is gated: stimuli are dropped and counted.
The percept goes out on `NS.region.<name>.out`, carrying the stimulus id that everything
downstream will name.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from actors.actor import Actor, ActorState, on
from bus import Meta
from bus.errors import BadInput
from bus.models import RegionOutput, TextStimulus, VectorStimulus
from regions.encoders import HashingEncoder, MicroBatcher, MiniLMEncoder
from regions.plasticity import Habituation

__all__ = ["Thalamus"]


class ThalamusOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: Annotated[int, Field(ge=8, le=8192)] = 384
    encoder: Literal["hashing", "minilm"] = "hashing"
    #: None = the brain's `device` (config top level).
    device: Literal["cpu", "cuda", "auto"] | None = None
    #: Stimuli encoded at once by MiniLM (the batch grows while the previous one runs).
    max_batch: Annotated[int, Field(ge=1, le=1024)] = 64
    habituation_rate: Annotated[float, Field(ge=0, le=1)] = 0.3
    habituation_recovery_s: Annotated[float, Field(gt=0)] = 30.0
    seed: int = 0


class Thalamus(Actor):
    kind = "thalamus"
    Options = ThalamusOptions
    options: ThalamusOptions

    async def on_start(self) -> None:
        o = self.options
        self.batcher: MicroBatcher | None = None
        if o.encoder == "minilm":
            if o.dim != 384:
                raise BadInput(f"the MiniLM encoder makes 384-d vectors; thalamus dim is {o.dim}")
            minilm = MiniLMEncoder(device=o.device or self.device)
            await asyncio.to_thread(minilm.load)  # ~6 s on a CPU: off the event loop
            self.batcher = MicroBatcher(minilm, max_batch=o.max_batch)
            # Handlers wait for their batch concurrently; otherwise each batch would hold one text.
            self.concurrency = o.max_batch
        self.hashing = HashingEncoder(dim=o.dim, seed=o.seed)
        self.habituation = Habituation(rate=o.habituation_rate, recovery_tau_s=o.habituation_recovery_s)
        self._ids = itertools.count(1)
        self._id_prefix = f"{self.name}-{os.getpid():x}-"
        self.out_subject = self.bus.subjects.region_out(self.name)
        self.perceived = 0
        self.gated = 0

    async def on_stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()

    def _stimulus_id(self, given: str | None) -> str:
        return given or f"{self._id_prefix}{next(self._ids)}"

    @on("stim.text")
    async def heard(self, msg: TextStimulus, meta: Meta) -> None:
        sid = self._stimulus_id(msg.id)
        if self._asleep(sid):
            return
        if self.batcher is not None:
            vector = await self.batcher.encode(msg.text)
        else:
            vector = self.hashing.encode([msg.text])[0]
        await self._relay(sid, "text", vector, {"text": msg.text[:200]})

    @on("stim.vector")
    async def sensed(self, msg: VectorStimulus, meta: Meta) -> None:
        if msg.vector.size != self.options.dim:
            raise BadInput(f"vector has {msg.vector.size} dimensions; this brain expects {self.options.dim}")
        sid = self._stimulus_id(msg.id)
        if self._asleep(sid):
            return
        norm = float(np.linalg.norm(msg.vector))
        if norm == 0.0:
            raise BadInput("vector is all zeros: it has no direction to perceive")
        await self._relay(sid, msg.modality, msg.vector / norm, {})

    def _asleep(self, stimulus_id: str) -> bool:
        """Intake is gated during sleep; the stimulus is counted, not processed."""
        if self.state is ActorState.SLEEPING:
            self.gated += 1
            self.report_soon(self.out_subject, f"stimulus {stimulus_id} arrived during sleep and was gated",
                             kind="overflow", stimulus_id=stimulus_id)
            return True
        return False

    async def _relay(self, stimulus_id: str, modality: str, vector: np.ndarray, data: dict[str, Any]) -> None:
        self.perceived += 1
        habituation = self.habituation.gain(vector)
        out = RegionOutput(region=self.name, kind="percept", stimulus_id=stimulus_id, vector=vector,
                           data={"modality": modality, "habituation": round(habituation, 4), **data})
        await self.publish(self.out_subject, out, stimulus_id=stimulus_id)

    def extra_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"perceived": self.perceived, "gated": self.gated,
                                 "encoder": self.options.encoder}
        if self.batcher is not None:
            stats["mean_batch"] = round(self.batcher.stats.mean_batch_size, 2)
        return stats
