"""`brainbus bench latency`: stimulus → motor action through the default brain.

Measured in one run, against references from the same run:
1. closed loop: one vector stimulus at a time, time until its `motor.action`; the workspace's
   collection window (reported in each broadcast) is subtracted, as the targets exclude it;
   the reference is one raw nats-py hop (request/reply p50 / 2) times the 7 hops of the path
   (stimulus → thalamus → cortex → workspace → prefrontal → basal ganglia → motor → agent);
2. sustained: an open-loop stream at a fixed rate above the target (1,250/s for a 1,000/s
   target), its answering rate measured from the first answer to the last (a brain that cannot
   keep up answers at its own pace, its backlog growing); every stimulus traced by its id to
   the last stage it reached; the stimuli that stopped after a stage must be matched by the counters of the
   actor of the next stage (mailbox drops, rejections, workspace losers, gated in sleep) — what is
   not is "uncounted" and must be zero; the brain's CPU time per answer (its process and its
   process groups) is reported too, as the figure least moved by other work on the machine.
   Run three times: the brain in one process, over two (`processes:`, the senses apart), and
   spread over one process per stage (bench/brain_process.py `LAYOUTS`);
3. text through MiniLM: the brain's sustained text rate (2,048 texts sent at once, answers over
   the time to the last one) vs the encoder's own batched throughput measured in this process;
   the two take turns, a warm-up pass each and then three, the best on each side kept (skipped
   with --quick; bench/text_rate.py). Run in the three layouts too.
The brain runs as a separate process (`brainbus run`), reached only over the bus.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import nats
import numpy as np
import orjson

from bench.brain_process import (
    ACTIONS,
    ALL_ACTORS,
    CONFIGS,
    LAYOUTS,
    BrainProcess,
    heartbeats,
    layout_config,
    wait_ready,
)
from bench.text_rate import minilm_missing, text_throughput
from bus import EmbeddedServer

__all__ = ["run_latency_bench"]

HOPS = 7
#: Stimuli/s offered in the sustained test: above the 1,000/s target, so the answering rate shows
#: what the brain can do rather than what it was given.
SUSTAINED_OFFERED = 1250


async def _raw_hop(url: str, n: int) -> float:
    a = await nats.connect(url)
    b = await nats.connect(url)

    async def echo(msg: Any) -> None:
        await b.publish(msg.reply, msg.data)

    await b.subscribe("bench.hop", cb=echo)
    await b.flush()
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        await a.request("bench.hop", b"x" * 64, timeout=2)
        lat.append(time.perf_counter() - t0)
    await a.close()
    await b.close()
    return statistics.median(lat) / 2


# The path of a vector stimulus, and the actor whose counters explain a loss after each stage.
STAGES = [("stim.vector", "thalamus"), ("region.thalamus.out", "visual"), ("gw.bid", "workspace"),
          ("gw.broadcast", "prefrontal"), ("region.prefrontal.out", "basal_ganglia"),
          ("region.basal_ganglia.out", "motor"), ("motor.action", "")]


def _losses_by_actor(beats: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Each path actor's counters of messages it did not pass on (drops, rejections, lost bids)."""
    counted = {a: int(b.get("dropped", 0)) + int(b.get("rejected", 0)) for a, b in beats.items()}
    stats = {a: b.get("stats", {}) for a, b in beats.items()}
    counted["thalamus"] = counted.get("thalamus", 0) + int(stats.get("thalamus", {}).get("gated", 0))
    verdicts = stats.get("workspace", {}).get("verdicts", {})
    counted["workspace"] = counted.get("workspace", 0) + sum(int(v) for k, v in verdicts.items() if k != "won")
    unanswered = int(stats.get("basal_ganglia", {}).get("unanswered", 0))
    counted["basal_ganglia"] = counted.get("basal_ganglia", 0) + unanswered
    return counted


async def _closed_loop(nc: Any, ns: str, n: int, rng: np.random.Generator) -> dict[str, Any]:
    actions: dict[str, float] = {}
    windows: dict[str, float] = {}
    arrived = asyncio.Event()

    async def on_action(msg: Any) -> None:
        actions[orjson.loads(msg.data)["stimulus_id"]] = time.perf_counter()
        arrived.set()

    sub_a = await nc.subscribe(f"{ns}.motor.action", cb=on_action)
    full, ex_window, missing = [], [], 0
    sub_b = await nc.subscribe(f"{ns}.gw.broadcast")
    for i in range(n):
        sid = f"c{i}"
        arrived.clear()
        t0 = time.perf_counter()
        vec = rng.standard_normal(384).astype(np.float32).tolist()
        await nc.publish(f"{ns}.stim.vector", orjson.dumps({"vector": vec, "id": sid}))
        try:
            while sid not in actions:
                await asyncio.wait_for(arrived.wait(), 1.0)
                arrived.clear()
        except TimeoutError:
            missing += 1
            continue
        full.append(actions[sid] - t0)
    # Each broadcast's detail says how long its collection window stayed open.
    while True:
        try:
            msg = await sub_b.next_msg(timeout=0.2)
        except Exception:
            break
        bsid: str | None = (msg.headers or {}).get("Bb-Sid")
        detail = _broadcast_detail(msg)
        if bsid and "window_ms" in detail:
            windows[bsid] = float(detail["window_ms"]) / 1000
    await sub_a.unsubscribe()
    await sub_b.unsubscribe()
    for i, t in enumerate(full):
        ex_window.append(t - windows.get(f"c{i}", 0.0))
    return {"n": n, "missing": missing, "p50_ms": _pct(full, 50), "p99_ms": _pct(full, 99),
            "p50_ex_window_ms": _pct(ex_window, 50), "p99_ex_window_ms": _pct(ex_window, 99),
            "mean_window_ms": statistics.mean(windows.values()) * 1000 if windows else 0.0}


def _broadcast_detail(msg: Any) -> dict[str, Any]:
    """The JSON part of a broadcast body (its vector bytes follow it, see the Bb-Vec header)."""
    spec = (msg.headers or {}).get("Bb-Vec", "")
    vec_bytes = sum({"f32": 4, "f16": 2}[d] * int(n) for _, d, n in (s.split(":") for s in spec.split(",") if s))
    body = orjson.loads(msg.data[: len(msg.data) - vec_bytes])
    detail = body.get("detail", {})
    return detail if isinstance(detail, dict) else {}


def _pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values) * 1000, q))


async def _sustained(nc: Any, ns: str, rate: int, seconds: float, make: Any,
                     brain: BrainProcess | None = None) -> dict[str, Any]:
    """Open loop at `rate`; every stimulus is traced by its id to the last stage it reached.

    With `brain`, also the brain's CPU time per answered stimulus: on a shared machine the
    answered rate follows the CPU the brain gets, its CPU cost per stimulus much less so."""
    stage_of = {f"{ns}.{subject}": i for i, (subject, _) in enumerate(STAGES)}
    reached: dict[str, int] = {}
    last_stage = len(STAGES) - 1
    answer_times: list[float] = []

    async def trace(msg: Any) -> None:
        i = stage_of.get(msg.subject)
        sid = (msg.headers or {}).get("Bb-Sid") if i else None
        if i == 0:
            reached.setdefault(orjson.loads(msg.data)["id"], 0)
        elif sid is not None and i is not None and i > reached.get(sid, -1):
            reached[sid] = i
            if i == last_stage:
                answer_times.append(time.perf_counter())

    before = _losses_by_actor(await heartbeats(nc, ns, 1.2))
    sub = await nc.subscribe(f"{ns}.>", cb=trace, pending_msgs_limit=1_000_000)
    total = int(rate * seconds)
    payloads = [make(i) for i in range(min(total, 2000))]
    cpu0 = brain.cpu_seconds() if brain is not None else None
    t0 = time.perf_counter()
    for i in range(total):
        await nc.publish(f"{ns}.stim.{payloads[i % len(payloads)][0]}", payloads[i % len(payloads)][1](i))
        ahead = (i + 1) / rate - (time.perf_counter() - t0)
        if ahead > 0.001:
            await asyncio.sleep(ahead)
    await nc.flush()
    sent_s = time.perf_counter() - t0
    answered = 0
    # Until the brain has answered all it will (nothing new for a second): a brain slower than the
    # offered rate drains its mailboxes long after the last send, and what it still answers then
    # was not lost.
    for _ in range(60):
        await asyncio.sleep(1.0)
        if len(answer_times) == answered:
            break
        answered = len(answer_times)
    await sub.unsubscribe()
    cpu1 = brain.cpu_seconds() if brain is not None else None
    after = _losses_by_actor(await heartbeats(nc, ns, 1.2))
    lost_after = [0] * len(STAGES)
    for i in reached.values():
        lost_after[i] += 1
    stages = []
    uncounted = total - len(reached)  # never seen on stim.vector at all
    for i, (subject, actor) in enumerate(STAGES[:-1]):
        counted = after.get(actor, 0) - before.get(actor, 0)
        stages.append({"last_reached": subject, "stimuli": lost_after[i], "explained_by": actor,
                       "counted": counted})
        uncounted += max(0, lost_after[i] - counted)
    # The answering rate over the stretch from the first answer to the last: what the brain kept
    # up (offered faster than it can answer, its backlog grows and the stretch with it).
    span = answer_times[-1] - answer_times[0] if len(answer_times) > 1 else 0.0
    result = {"offered_rate": rate, "sent": total, "send_seconds": sent_s, "answered": lost_after[-1],
              "answered_rate": (len(answer_times) - 1) / span if span > 0 else 0.0,
              "last_answer_after_last_send_s": answer_times[-1] - t0 - sent_s if answer_times else None,
              "stages": stages, "uncounted": uncounted}
    if cpu0 is not None and cpu1 is not None and lost_after[-1]:
        # Idle seconds after the last answer cost next to nothing (heartbeats, hormone ticks).
        result["brain_cpu_ms_per_answer"] = (cpu1 - cpu0) * 1000 / lost_after[-1]
    return result


async def run_latency_bench(out: Path, *, quick: bool = False) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {"benchmark": "latency", "hops": HOPS}
    async with EmbeddedServer() as server:
        nc = await nats.connect(server.url, name="bench-latency")

        def vector(i: int) -> tuple[str, Any]:
            vec = rng.standard_normal(384).astype(np.float32).tolist()
            return "vector", lambda j, v=vec: orjson.dumps({"vector": v, "id": f"s{j}"})

        # The same brain laid out three ways (bench/brain_process.py `LAYOUTS`): in one process,
        # the senses apart, and spread over one process per stage, the ways a brain uses more cores.
        for layout in LAYOUTS:
            ns = f"lat-{layout.replace('_', '-')}"
            async with BrainProcess(server.url, ns, layout_config(CONFIGS / "small.yaml", layout)) as brain:
                await wait_ready(nc, ns, ALL_ACTORS)
                await nc.publish(f"{ns}.env.actions", orjson.dumps({"actions": ACTIONS}))
                await nc.flush()
                await asyncio.sleep(0.2)
                if layout == "one_process":
                    hop = await _raw_hop(server.url, 300 if quick else 1000)
                    closed = await _closed_loop(nc, ns, 200 if quick else 1000, rng)
                    closed["raw_hop_ms"] = hop * 1000
                    closed["ratio_to_raw_path"] = closed["p50_ex_window_ms"] / (HOPS * hop * 1000)
                    results["closed_loop"] = closed
                results[_sustained_key(layout)] = await _sustained(
                    nc, ns, SUSTAINED_OFFERED, 2.0 if quick else 5.0, vector, brain)
        if not quick:
            missing = minilm_missing()
            if missing is None:
                results["text"] = await text_throughput(server.url, nc)
            else:
                results["text_skipped"] = missing
        await nc.close()
    _print(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return results


def _sustained_key(layout: str) -> str:
    """Where a layout's sustained run goes in the results (one process: the top-level `sustained`)."""
    return "sustained" if layout == "one_process" else f"sustained_{layout}"


def _sustained_rows(label: str, s: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    if s is None:
        return []
    rows = [(f"{label}: offered / answered", f"{s['offered_rate']} / {s['answered_rate']:.0f} per s", ">= 1000/s"),
            (f"{label}: uncounted loss", f"{s['uncounted']} of {s['sent']}", "0")]
    if "brain_cpu_ms_per_answer" in s:
        ms = s["brain_cpu_ms_per_answer"]
        rows.append((f"{label}: brain CPU per answer", f"{ms:.2f} ms = {1000 / ms:.0f}/s per core", ""))
    return rows


def _print(r: dict[str, Any]) -> None:
    c, s = r["closed_loop"], r["sustained"]
    rows = [
        ("stimulus→action p50 (ex window)", f"{c['p50_ex_window_ms']:.2f} ms", "<= 5 ms"),
        ("stimulus→action p99 (ex window)", f"{c['p99_ex_window_ms']:.2f} ms", "<= 25 ms"),
        ("workspace window (mean)", f"{c['mean_window_ms']:.2f} ms", "excluded"),
        ("raw nats-py hop p50", f"{c['raw_hop_ms']:.3f} ms", "reference"),
        (f"brain p50 / ({HOPS} raw hops)", f"{c['ratio_to_raw_path']:.1f}x", ""),
        *_sustained_rows("sustained", s),
        *_sustained_rows("  two processes", r.get("sustained_two_processes")),
        *_sustained_rows("  spread", r.get("sustained_spread")),
    ]
    if "text" in r:
        t = r["text"]
        for label, run in (("text via MiniLM", t), ("  two processes", t["two_processes"]), ("  spread", t["spread"])):
            rows.append((f"{label}: brain / encoder",
                         f"{run['brain_rate']:.0f} / {run['encoder_batched_rate']:.0f} per s = {run['ratio']:.2f}x",
                         ">= 0.8x"))
            rows.append((f"{label}: answered", f"{run['answered']} of {t['texts']}", ""))
            rows.append((f"{label}: perceived (thalamus out)", f"{run['perceived_rate']:.0f} per s", ""))
            let_go = ", ".join(f"{n} {v}" for v, n in sorted(run["workspace_verdicts"].items()) if v != "won")
            rows.append((f"{label}: let go by the workspace", let_go or "none", ""))
            if "encoder_cpu_ms_per_text" in run:
                split = f"encoders {run['encoder_cpu_ms_per_text']:.2f} + rest {run['other_cpu_ms_per_text']:.2f} ms"
                rows.append((f"{label}: brain CPU per text", split, ""))
    elif "text_skipped" in r:
        rows.append(("text via MiniLM", "skipped (no minilm extra)", ">= 0.8x"))
    width = max(len(a) for a, _, _ in rows)
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>28}  {target}")
    for layout in LAYOUTS:
        run = r.get(_sustained_key(layout))
        for stage in run["stages"] if run else ():
            if stage["stimuli"]:
                print(f"  {layout.replace('_', ' ')}: {stage['stimuli']} stimuli stopped after "
                      f"{stage['last_reached']}; {stage['explained_by']} counted {stage['counted']} drops/losses")
