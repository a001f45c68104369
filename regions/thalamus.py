"""Thalamus: the brain's intake. Every stimulus enters here, gets its id and its percept vector.

Text is encoded (the deterministic hashing encoder by default); vectors pass through after a
dimension check. The percept goes out on `NS.region.<name>.out`, carrying the stimulus id that
everything downstream will name.
"""

from __future__ import annotations

import itertools
import os
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from actors.actor import Actor, on
from bus import Meta
from bus.errors import BadInput
from bus.models import RegionOutput, TextStimulus, VectorStimulus
from regions.encoders import HashingEncoder

__all__ = ["Thalamus"]


class ThalamusOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: Annotated[int, Field(ge=8, le=8192)] = 384
    encoder: Literal["hashing"] = "hashing"
    seed: int = 0


class Thalamus(Actor):
    kind = "thalamus"
    Options = ThalamusOptions
    options: ThalamusOptions

    async def on_start(self) -> None:
        self.encoder = HashingEncoder(dim=self.options.dim, seed=self.options.seed)
        self._ids = itertools.count(1)
        self._id_prefix = f"{self.name}-{os.getpid():x}-"
        self.out_subject = self.bus.subjects.region_out(self.name)
        self.perceived = 0

    def _stimulus_id(self, given: str | None) -> str:
        return given or f"{self._id_prefix}{next(self._ids)}"

    @on("stim.text")
    async def heard(self, msg: TextStimulus, meta: Meta) -> None:
        vector = self.encoder.encode([msg.text])[0]
        await self._relay(self._stimulus_id(msg.id), "text", vector, {"text": msg.text[:200]})

    @on("stim.vector")
    async def sensed(self, msg: VectorStimulus, meta: Meta) -> None:
        if msg.vector.size != self.options.dim:
            raise BadInput(f"vector has {msg.vector.size} dimensions; this brain expects {self.options.dim}")
        norm = float(np.linalg.norm(msg.vector))
        vector = msg.vector / norm if norm > 0 else msg.vector
        await self._relay(self._stimulus_id(msg.id), msg.modality, vector, {})

    async def _relay(self, stimulus_id: str, modality: str, vector: np.ndarray, data: dict[str, str]) -> None:
        self.perceived += 1
        out = RegionOutput(region=self.name, kind="percept", stimulus_id=stimulus_id, vector=vector,
                           data={"modality": modality, **data})
        await self.publish(self.out_subject, out, stimulus_id=stimulus_id)

    def extra_stats(self) -> dict[str, int]:
        return {"perceived": self.perceived}
