"""The text part of `brainbus bench latency`: texts through the default brain (MiniLM) against
the encoder's own batched throughput, measured in turns in the same run."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from bench.brain_process import ACTIONS, CONFIGS, LAYOUTS, BrainProcess, heartbeats, layout_config, wait_ready

__all__ = ["minilm_missing", "text_throughput"]


def minilm_missing() -> str | None:
    """Why the text part cannot run here (the `minilm` extra is not installed), or None."""
    from regions.encoders import MiniLMEncoder

    try:
        MiniLMEncoder.model_path()
    except RuntimeError as exc:
        return str(exc)
    return None


#: Texts per pass of the text part: long enough that the rate is the pipeline's throughput, with
#: its start (the first answer waits for a whole encoder batch) and its end (the last texts go on
#: through the brain after the encoders are done) a small part of the pass.
TEXTS_PER_PASS = 2048
#: Passes measured on each side, the best kept: a pass slowed down by other work on the machine
#: must flatter neither the encoder nor the brain.
TEXT_PASSES = 3


async def text_throughput(url: str, nc: Any) -> dict[str, Any]:
    """Texts through the brain in one process (the top level of the result), over two
    (`two_processes`) and spread (`spread`), each against the encoder alone."""
    from regions.encoders import MiniLMEncoder

    topics = ["fruit", "cars", "music", "rain"]
    words = [f"stimulus number {i} about {topics[i % 4]}" for i in range(TEXTS_PER_PASS)]
    encoder = MiniLMEncoder()
    await asyncio.to_thread(encoder.load)

    async def encoder_alone() -> float:
        """One pass of the encoder alone: torch's default threads, batches of 64, back to back."""
        t0 = time.perf_counter()
        for i in range(0, len(words), 64):
            await asyncio.to_thread(encoder.encode, words[i:i + 64])
        return len(words) / (time.perf_counter() - t0)

    # In the layouts of the vector part: in one process (the top level of the result), then the
    # senses (the thalamus with its encoders, and the cortices) apart, so the event loop that
    # feeds the encoders is not the one running the rest, then one process per stage.
    runs = {layout: await _brain_text_rate(url, nc, f"txt-{layout.replace('_', '-')}",
                                           layout_config(CONFIGS / "default.yaml", layout), words, encoder_alone)
            for layout in LAYOUTS}
    return {"texts": len(words), **runs.pop("one_process"), **runs}


async def _brain_text_rate(url: str, nc: Any, ns: str, config: Path, words: list[str],
                           encoder_alone: Callable[[], Awaitable[float]]) -> dict[str, Any]:
    """The brain's text rate against the encoder's own, each the best of `TEXT_PASSES` passes
    after a warm-up pass; the pace of the thalamus in the brain's best pass; and where the
    brain's CPU went. The encoder's passes and the brain's alternate, so a change in what else
    the machine runs meanwhile weighs on both (the brain waits idle during the encoder's)."""
    async with BrainProcess(url, ns, config) as brain:
        await wait_ready(nc, ns, ["thalamus", "basal_ganglia", "motor"], timeout=120)
        await nc.publish(f"{ns}.env.actions", orjson.dumps({"actions": ACTIONS}))
        await nc.flush()
        await asyncio.sleep(0.2)

        async def one_pass(tag: str) -> tuple[float, int, float]:
            """Send every word at once: the rate of answers up to the last one, how many were
            answered, and when (wall clock) the pass began."""
            answered: set[str] = set()
            all_in = asyncio.Event()
            last_answer = [0.0]

            async def on_action(msg: Any) -> None:
                sid = orjson.loads(msg.data)["stimulus_id"]
                if sid.startswith(tag):
                    answered.add(sid)
                    last_answer[0] = time.perf_counter()
                    if len(answered) == len(words):
                        all_in.set()

            sub = await nc.subscribe(f"{ns}.motor.action", cb=on_action)
            began, t0 = time.time(), time.perf_counter()
            for i, w in enumerate(words):
                await nc.publish(f"{ns}.stim.text", orjson.dumps({"text": w, "id": f"{tag}{i}"}))
            await nc.flush()
            # Until every text is answered, or none is for a second after the first answer: the
            # workspace lets some texts go (a near-copy of a text that just won, a bid that found no
            # capacity for too long): counted verdicts, no action.
            deadline = t0 + 120
            while not all_in.is_set() and time.perf_counter() < deadline:
                before = len(answered)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_in.wait(), 1.0)
                if answered and len(answered) == before:
                    break
            await sub.unsubscribe()
            return len(answered) / max(last_answer[0] - t0, 1e-9), len(answered), began

        await encoder_alone()  # both warm up first
        await one_pass("warm-")
        # The counters come from heartbeats, so watching costs the measured passes nothing: the
        # thalamus's percepts (encoded and passed on) and the time of its last one give its pace;
        # its encoder threads' CPU time against the whole brain's says where the CPU went.
        first = seen = await _text_counters(nc, ns)
        passes, encoder_rates, brain_cpu = [], [], 0.0
        for n in range(TEXT_PASSES):
            encoder_rates.append(await encoder_alone())
            cpu0 = brain.cpu_seconds()
            rate, answered, began = await one_pass(f"t{n}-")
            cpu1 = brain.cpu_seconds()
            brain_cpu += (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else math.nan
            now = await _text_counters(nc, ns)
            perceived = (now.perceived - seen.perceived) / max((now.last_percept_at or began) - began, 1e-9)
            passes.append((rate, answered, perceived))
            seen = now
    brain_rate, answered, perceived_rate = max(passes)
    encoder_rate = max(encoder_rates)
    result: dict[str, Any] = {"brain_rate": brain_rate, "brain_rates": [round(p[0], 1) for p in passes],
                              "encoder_batched_rate": encoder_rate,
                              "encoder_rates": [round(r, 1) for r in encoder_rates],
                              "ratio": brain_rate / encoder_rate,
                              "answered": answered, "perceived_rate": perceived_rate,
                              "workspace_verdicts": dict(seen.verdicts - first.verdicts)}
    if first.encoder_cpu_s is not None and seen.encoder_cpu_s is not None and math.isfinite(brain_cpu):
        encoders = seen.encoder_cpu_s - first.encoder_cpu_s
        texts = len(words) * TEXT_PASSES
        result["encoder_cpu_ms_per_text"] = encoders * 1000 / texts
        result["other_cpu_ms_per_text"] = (brain_cpu - encoders) * 1000 / texts
    return result


class TextCounters(NamedTuple):
    """What the thalamus's and the workspace's heartbeats say about texts so far."""

    perceived: int  # percepts the thalamus passed on
    last_percept_at: float | None  # wall clock of the last one
    encoder_cpu_s: float | None  # CPU seconds of its encoder threads
    verdicts: Counter[str]  # the workspace's verdicts on bids (won, or why not)


async def _text_counters(nc: Any, ns: str) -> TextCounters:
    beats = await heartbeats(nc, ns, 1.2)
    thalamus = beats.get("thalamus", {}).get("stats", {})
    cpu, last = thalamus.get("encoder_cpu_s"), thalamus.get("last_percept_at")
    return TextCounters(int(thalamus.get("perceived", 0)), float(last) if last is not None else None,
                        float(cpu) if cpu is not None else None,
                        Counter(beats.get("workspace", {}).get("stats", {}).get("verdicts", {})))
