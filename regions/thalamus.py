"""Thalamus: the brain's intake. Every stimulus enters here, gets its id and its percept vector.

Text is encoded by the language encoder: the MiniLM sentence encoder (micro-batched, in a worker
thread, so the event loop never waits on it) or the deterministic hashing encoder (fast; tests).
A vector of the brain's own length (an embedding) passes through as a direction; a vector of
any other length (1 to 4,096: a world's state, a sensor reading) goes through a fixed random
Fourier feature map into the brain's space (regions.vectors.WorldMap). An `episode` id rides on
the percept to the regions that keep per-episode state.

Each percept carries a habituation factor (repeated stimuli lose their orienting response and
recover with time) that the cortex applies to the novelty part of its bid. While the brain
sleeps, intake is gated: stimuli are dropped and counted. The percept goes out on
`NS.region.<name>.out`, carrying the stimulus id that everything downstream will name.

In deterministic mode (actors.determinism) the thalamus is the brain's one intake: stimuli and
rewards queue here (regions.intake) and go in one at a time. Before each stimulus the hormone
system settles, so every region reads the same levels for it; rewards are relayed on
`NS.region.<name>.out` (kind `reward`) to the regions that learn from them.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import deque
from functools import partial
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from actors.actor import Actor, ActorState, on
from actors.determinism import SETTLE_SUBJECT, STEP_S
from bus import Meta
from bus.errors import BadInput, NoRespondersError, RequestTimeout
from bus.models import (
    MAX_STIMULUS_DIM,
    MotorAction,
    NeuromodLevels,
    RegionOutput,
    Reward,
    SysError,
    TextStimulus,
    VectorStimulus,
)
from regions.encoders import Encoder, HashingEncoder, MiniLMEncoder, resolve_device
from regions.habituation import Habituation
from regions.intake import Input, IntakeQueue
from regions.microbatch import MicroBatcher
from regions.vectors import WorldMap, unit

__all__ = ["Thalamus"]

#: The most MiniLM copies `encoder_workers: auto` makes (about 90 MB each, and cores left for the
#: rest). On a 16-core machine eight passed texts on at 1,695/s, four at 1,164/s (`bench latency`).
MAX_AUTO_ENCODERS = 8


def usable_cpus(at_most: int) -> int:
    """The CPUs this process may run on (its affinity where the OS tells it), capped."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(at_most, cpus))


def encoder_copies(workers: int | Literal["auto"], device: str) -> int:
    """How many MiniLM copies `encoder_workers` makes, "auto" resolved: one per usable core on the
    CPU (at most `MAX_AUTO_ENCODERS`), one on a GPU (which spreads each batch over its own cores)."""
    if workers != "auto":
        return workers
    if resolve_device(device) == "cuda":
        return 1
    return usable_cpus(MAX_AUTO_ENCODERS)


class ThalamusOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: Annotated[int, Field(ge=8, le=8192)] = 384
    encoder: Literal["hashing", "minilm"] = "hashing"
    #: None = the brain's `device` (config top level).
    device: Literal["cpu", "cuda", "auto"] | None = None
    #: Stimuli encoded at once by MiniLM (the batch grows while the previous one runs).
    max_batch: Annotated[int, Field(ge=1, le=1024)] = 64
    #: Copies of the MiniLM model that encode batches at the same time, each on a thread of its
    #: own: with torch on one thread per op (`torch_threads`), this is how the encoder uses
    #: several cores. Each copy holds about 90 MB. "auto": on the CPU one per core this process may
    #: use, at most `MAX_AUTO_ENCODERS` (the rest of the brain needs cores too); on CUDA one.
    encoder_workers: Annotated[int, Field(ge=1, le=16)] | Literal["auto"] = "auto"
    #: Texts kept while the MiniLM encoder is still loading (several seconds after start); past
    #: this many the oldest is dropped, counted and reported. They are encoded once it is ready.
    loading_buffer: Annotated[int, Field(ge=0, le=100_000)] = 1024
    habituation_rate: Annotated[float, Field(ge=0, le=1)] = 0.3
    habituation_recovery_s: Annotated[float, Field(gt=0)] = 30.0
    seed: int = 0
    #: Deterministic mode: the regions that acknowledge a relayed reward (their `outcome` or
    #: `valence` output), and how long an input may stay in flight before it is given up.
    reward_acks: list[str] = Field(default_factory=lambda: ["basal_ganglia", "amygdala"])
    input_timeout_s: Annotated[float, Field(gt=0, le=600)] = 5.0


class Thalamus(Actor):
    kind = "thalamus"
    Options = ThalamusOptions
    options: ThalamusOptions

    async def on_start(self) -> None:
        o = self.options
        self.batcher: MicroBatcher | None = None
        #: Texts that came while the language encoder loads (None once it is ready, or without one).
        self.loading: deque[tuple[str, TextStimulus]] | None = None
        self.dropped_while_loading = 0
        if o.encoder == "minilm":
            if o.dim != 384:
                raise BadInput(f"the MiniLM encoder makes 384-d vectors; thalamus dim is {o.dim}")
            # Loading takes 6-25 s: it runs in the background, so the thalamus subscribes and
            # heartbeats at once (and vectors pass) while texts wait in `loading`.
            self.loading = deque()
            workers = encoder_copies(o.encoder_workers, o.device or self.device)
            encoders = [self.language_encoder() for _ in range(workers)]
            self._spawn(self._load_encoders(encoders), f"{self.name}.load_encoder", critical=True)
            # Handlers wait for their batch concurrently; otherwise each batch would hold one text.
            self.concurrency = o.max_batch * workers
        self.hashing = HashingEncoder(dim=o.dim, seed=o.seed)
        self.world_map = WorldMap(o.dim, seed=o.seed)
        self.habituation = Habituation(rate=o.habituation_rate, recovery_tau_s=o.habituation_recovery_s)
        self._ids = itertools.count(1)
        # Deterministic ids in deterministic mode: a replayed session names its stimuli the same.
        self._id_prefix = f"{self.name}-" if self.deterministic else f"{self.name}-{os.getpid():x}-"
        self.out_subject = self.bus.subjects.region_out(self.name)
        self.perceived = 0
        self.last_percept_at: float | None = None  # wall clock: a rate can be read off heartbeats
        self.gated = 0
        self.inputs: IntakeQueue | None = None
        if self.deterministic:
            self.inputs = IntakeQueue(o.input_timeout_s)
            for subject, handler in (("feedback.reward", Thalamus.rewarded), ("motor.action", Thalamus.answered),
                                     ("region.*.out", Thalamus.region_said), ("sys.error", Thalamus.errored)):
                await self.listen(subject, handler)

    def language_encoder(self) -> Encoder:
        """The (slow to load) language encoder of `encoder: minilm`; tests put a double here."""
        return MiniLMEncoder(device=self.options.device or self.device)

    async def _load_encoders(self, encoders: list[Encoder]) -> None:
        loads = [load for encoder in encoders if (load := getattr(encoder, "load", None)) is not None]
        started = time.monotonic()
        try:
            # Off the event loop (heartbeats go on meanwhile), the copies side by side.
            await asyncio.gather(*(asyncio.to_thread(load) for load in loads))
        except Exception as exc:
            reason = f"language encoder failed to load: {type(exc).__name__}: {exc}"
            self.log.error("thalamus.encoder_failed", error=reason)
            await self.report(self.out_subject, reason, kind="crash")
            raise  # a critical task: the actor crashes and its supervisor restarts it
        self.batcher = MicroBatcher(encoders, max_batch=self.options.max_batch)
        waiting = self.loading
        self.log.info("thalamus.encoder_ready", load_s=round(time.monotonic() - started, 2), copies=len(encoders),
                      waiting=len(waiting or ()), dropped=self.dropped_while_loading)
        # Texts that arrive while the waiting ones are encoded join the queue behind them, in order.
        while waiting:
            batch = list(waiting)
            waiting.clear()
            await asyncio.gather(*(self._accept_text(sid, msg) for sid, msg in batch))
        self.loading = None

    async def on_stop(self) -> None:
        if self.loading:
            # Stopped before the encoder was ready: these texts are lost, and counted.
            self.stats["dropped"] += len(self.loading)
            self.log.warning("thalamus.texts_abandoned", dropped=len(self.loading))
            self.loading.clear()
        if self.batcher is not None:
            await self.batcher.close()

    def _stimulus_id(self, given: str | None) -> str:
        return given or f"{self._id_prefix}{next(self._ids)}"

    @on("stim.text")
    async def heard(self, msg: TextStimulus, meta: Meta) -> None:
        sid = self._stimulus_id(msg.id)
        if self.loading is not None:
            self._wait_for_encoder(sid, msg)
            return
        await self._accept_text(sid, msg)

    def _wait_for_encoder(self, sid: str, msg: TextStimulus) -> None:
        assert self.loading is not None
        if len(self.loading) >= self.options.loading_buffer:
            if not self.loading:  # no room at all (loading_buffer: 0): this text is the one lost
                lost = sid
            else:
                lost = self.loading.popleft()[0]
                self.loading.append((sid, msg))
            self.stats["dropped"] += 1
            self.dropped_while_loading += 1
            self.report_soon(self.out_subject, f"text {lost} dropped: the language encoder is still loading and "
                             f"{self.options.loading_buffer} texts are already waiting for it", kind="overflow",
                             stimulus_id=lost)
            return
        self.loading.append((sid, msg))

    async def _accept_text(self, sid: str, msg: TextStimulus) -> None:
        if self.inputs is not None:
            await self._enqueue(sid, partial(self._take_text, sid, msg))
            return
        await self._take_text(sid, msg)

    async def _take_text(self, sid: str, msg: TextStimulus) -> bool:
        if self._asleep(sid):
            return False
        if self.batcher is not None:
            vector = await self.batcher.encode(msg.text)
        else:
            vector = self.hashing.encode([msg.text])[0]
        data: dict[str, Any] = {"text": msg.text[:200]}
        if msg.episode:
            data["episode"] = msg.episode
        await self._relay(sid, "text", vector, data)
        return True

    @on("stim.vector")
    async def sensed(self, msg: VectorStimulus, meta: Meta) -> None:
        n = msg.vector.size
        if n > MAX_STIMULUS_DIM:
            raise BadInput(f"vector has length {n}; a stimulus vector has length 1 to {MAX_STIMULUS_DIM:,}")
        if n == self.options.dim:
            # The brain's own length: an embedding, taken as a direction.
            percept = unit(msg.vector)
            if percept is None:
                raise BadInput(f"vector of length {n} is all zeros: an embedding with no direction to perceive")
        else:
            percept = self.world_map(msg.vector)
        sid = self._stimulus_id(msg.id)
        if self.inputs is not None:
            await self._enqueue(sid, partial(self._take_vector, sid, msg.modality, percept, msg.episode))
            return
        await self._take_vector(sid, msg.modality, percept, msg.episode)

    async def _take_vector(self, sid: str, modality: str, vector: np.ndarray, episode: str | None) -> bool:
        if self._asleep(sid):
            return False
        await self._relay(sid, modality, vector, {"episode": episode} if episode else {})
        return True

    # ---------------------------------------------------------------- deterministic intake

    async def _enqueue(self, sid: str, take: Any) -> None:
        assert self.inputs is not None

        async def release() -> bool:
            await self._settle(sid)
            taken: bool = await take()
            if taken:
                self.call_later(self.options.input_timeout_s, "input_expired")
            return taken

        self.inputs.add(Input("stimulus", sid, release))
        await self.inputs.pump()

    async def _settle(self, sid: str) -> None:
        """Ask the hormone system to apply the events of the last input and publish its levels
        before this stimulus goes in (no hormone system: nothing to wait for)."""
        try:
            await self.bus.request(SETTLE_SUBJECT, RegionOutput(region=self.name, kind="settle", stimulus_id=sid),
                                   NeuromodLevels, timeout=2.0, stimulus_id=sid)
        except NoRespondersError:
            return
        except RequestTimeout:
            self.log.warning("thalamus.settle_timeout", stimulus_id=sid)

    async def rewarded(self, msg: Reward, meta: Meta) -> None:
        """A reward from the world: queued behind the stimuli that came before it."""
        assert self.inputs is not None

        async def release() -> bool:
            await self.publish(self.out_subject, RegionOutput(
                region=self.name, kind="reward", stimulus_id=msg.stimulus_id,
                data={"value": msg.value, "action": msg.action, "terminal": msg.terminal,
                      "truncated": msg.truncated, "episode": msg.episode}), stimulus_id=msg.stimulus_id)
            self.call_later(self.options.input_timeout_s, "input_expired")
            return True

        self.inputs.add(Input("reward", msg.stimulus_id, release, set(self.options.reward_acks)))
        await self.inputs.pump()

    async def answered(self, msg: MotorAction, meta: Meta) -> None:
        await self._finished(self.inputs is not None and self.inputs.stimulus_finished(msg.stimulus_id))

    async def region_said(self, msg: RegionOutput, meta: Meta) -> None:
        assert self.inputs is not None
        if msg.kind in ("outcome", "valence"):
            await self._finished(self.inputs.acknowledged(msg.region))
        elif msg.kind == "no_ignition":  # the workspace let the stimulus go: no action will come
            await self._finished(self.inputs.stimulus_finished(msg.stimulus_id))

    async def errored(self, msg: SysError, meta: Meta) -> None:
        """A region rejected the input in flight (or reported it cannot answer it): it is finished."""
        assert self.inputs is not None
        done = self.inputs.acknowledged(msg.actor) or self.inputs.stimulus_finished(msg.stimulus_id)
        await self._finished(done)

    async def input_expired(self) -> None:
        assert self.inputs is not None
        given_up = self.inputs.expired()
        if given_up is not None:
            self.log.warning("thalamus.input_timeout", kind=given_up.kind, stimulus_id=given_up.stimulus_id,
                             waiting_for=sorted(given_up.pending_acks))
            await self.inputs.pump()

    async def _finished(self, done: bool) -> None:
        if done and self.inputs is not None:
            await self.inputs.pump()

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
        self.last_percept_at = time.time()
        # Deterministic mode: habituation recovers on the logical clock, one step per stimulus.
        habituation = self.habituation.gain(vector, now=self.perceived * STEP_S if self.deterministic else None)
        out = RegionOutput(region=self.name, kind="percept", stimulus_id=stimulus_id, vector=vector,
                           data={"modality": modality, "habituation": round(habituation, 4), **data})
        await self.publish(self.out_subject, out, stimulus_id=stimulus_id)

    def ready(self) -> bool:
        return self.loading is None

    def extra_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"perceived": self.perceived, "last_percept_at": self.last_percept_at,
                                 "gated": self.gated,
                                 "encoder": self.options.encoder}
        if self.batcher is not None:
            batcher = self.batcher.stats
            stats["encoder_copies"] = len(self.batcher.encoders)
            stats["mean_batch"] = round(batcher.mean_batch_size, 2)
            stats["encoder_cpu_s"] = round(batcher.encode_cpu_seconds, 3)
        if self.options.encoder == "minilm":
            stats.update(waiting_for_encoder=len(self.loading or ()),
                         dropped_while_loading=self.dropped_while_loading)
        if self.inputs is not None:
            stats.update(queued=len(self.inputs.queue), released=self.inputs.released,
                         input_timeouts=self.inputs.timeouts)
        return stats
