"""`brainbus bench latency`: stimulus → motor action through the default brain.

Measured in one run, against references from the same run:
1. closed loop: one vector stimulus at a time, time until its `motor.action`; the workspace's
   collection window (reported in each broadcast) is subtracted, as the targets exclude it;
   the reference is one raw nats-py hop (request/reply p50 / 2) times the 7 hops of the path
   (stimulus → thalamus → cortex → workspace → prefrontal → basal ganglia → motor → agent);
2. sustained: an open-loop stream at a fixed rate; every stimulus is either answered or found in
   a counter (mailbox drops, rejections, workspace losers, gated in sleep) — what is neither
   is "uncounted" and must be zero;
3. text through MiniLM: the brain's sustained text rate vs the encoder's own batched throughput
   measured in this process just before (skipped with --quick).
The brain runs as a separate process (`brainbus run`), reached only over the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import numpy as np
import orjson

from bus import EmbeddedServer

__all__ = ["run_latency_bench"]

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
HOPS = 7
ACTIONS = ["a", "b", "c", "d"]


class BrainProcess:
    """`brainbus run` against our server, in its own data directory."""

    def __init__(self, url: str, namespace: str, config: Path) -> None:
        self.dir = tempfile.mkdtemp(prefix="brainbus-bench-")
        self.args = [sys.executable, "-m", "actors.cli", "run", "--nats", url, "--namespace", namespace,
                     "--config", str(config), "--data-dir", self.dir,
                     "--log-level", os.environ.get("BENCH_BRAIN_LOG", "warning")]
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> BrainProcess:
        log = open(Path(self.dir) / "brain.log", "wb")  # noqa: ASYNC230 (opened once, before the run)
        self.proc = await asyncio.create_subprocess_exec(*self.args, stdout=log, stderr=log)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(2)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def _wait_ready(nc: Any, ns: str, actors: list[str], timeout: float = 60) -> None:
    seen: set[str] = set()
    sub = await nc.subscribe(f"{ns}.sys.heartbeat.*")
    deadline = time.monotonic() + timeout
    try:
        while seen < set(actors):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"brain not ready: heartbeats only from {sorted(seen)}")
            msg = await sub.next_msg(timeout=left)
            seen.add(msg.subject.rsplit(".", 1)[1])
    finally:
        await sub.unsubscribe()


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


async def _heartbeats(nc: Any, ns: str, wait: float = 1.5) -> dict[str, dict[str, Any]]:
    beats: dict[str, dict[str, Any]] = {}

    async def keep(msg: Any) -> None:
        beats[msg.subject.rsplit(".", 1)[1]] = orjson.loads(msg.data)

    sub = await nc.subscribe(f"{ns}.sys.heartbeat.*", cb=keep)
    await asyncio.sleep(wait)
    await sub.unsubscribe()
    return beats


def _counted_losses(beats: dict[str, dict[str, Any]]) -> dict[str, int]:
    verdicts = beats.get("workspace", {}).get("stats", {}).get("verdicts", {})
    return {
        "mailbox_dropped": sum(int(b.get("dropped", 0)) for b in beats.values()),
        "rejected": sum(int(b.get("rejected", 0)) for b in beats.values()),
        "workspace_lost": sum(int(v) for k, v in verdicts.items() if k != "won"),
        "gated": int(beats.get("thalamus", {}).get("stats", {}).get("gated", 0)),
    }


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


async def _sustained(nc: Any, ns: str, rate: int, seconds: float, rng: np.random.Generator,
                     make: Any) -> dict[str, Any]:
    answered: set[str] = set()

    async def on_action(msg: Any) -> None:
        answered.add(orjson.loads(msg.data)["stimulus_id"])

    before = _counted_losses(await _heartbeats(nc, ns, 1.2))
    sub = await nc.subscribe(f"{ns}.motor.action", cb=on_action)
    total = int(rate * seconds)
    payloads = [make(i) for i in range(min(total, 2000))]
    t0 = time.perf_counter()
    for i in range(total):
        await nc.publish(f"{ns}.stim.{payloads[i % len(payloads)][0]}", payloads[i % len(payloads)][1](i))
        ahead = (i + 1) / rate - (time.perf_counter() - t0)
        if ahead > 0.001:
            await asyncio.sleep(ahead)
    await nc.flush()
    sent_s = time.perf_counter() - t0
    deadline = time.monotonic() + 10
    last = -1
    while time.monotonic() < deadline and len(answered) != last:
        last = len(answered)
        await asyncio.sleep(1.0)
    elapsed = time.perf_counter() - t0 - 1.0
    await sub.unsubscribe()
    after = _counted_losses(await _heartbeats(nc, ns, 1.2))
    counted = {k: after[k] - before[k] for k in after}
    lost = total - len(answered)
    return {"offered_rate": rate, "sent": total, "send_seconds": sent_s, "answered": len(answered),
            "answered_rate": len(answered) / max(elapsed, sent_s), "counted_losses": counted,
            "uncounted": lost - sum(counted.values())}


async def run_latency_bench(out: Path, *, quick: bool = False) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {"benchmark": "latency", "hops": HOPS}
    async with EmbeddedServer() as server:
        nc = await nats.connect(server.url, name="bench-latency")
        ns = "lat"
        async with BrainProcess(server.url, ns, CONFIGS / "small.yaml"):
            await _wait_ready(nc, ns, ["thalamus", "language", "visual", "workspace", "prefrontal",
                                       "basal_ganglia", "motor", "hormones", "amygdala"])
            await nc.publish(f"{ns}.env.actions", orjson.dumps({"actions": ACTIONS}))
            await nc.flush()
            await asyncio.sleep(0.2)
            hop = await _raw_hop(server.url, 300 if quick else 1000)
            closed = await _closed_loop(nc, ns, 200 if quick else 1000, rng)
            closed["raw_hop_ms"] = hop * 1000
            closed["ratio_to_raw_path"] = closed["p50_ex_window_ms"] / (HOPS * hop * 1000)
            results["closed_loop"] = closed

            def vector(i: int) -> tuple[str, Any]:
                vec = rng.standard_normal(384).astype(np.float32).tolist()
                return "vector", lambda j, v=vec: orjson.dumps({"vector": v, "id": f"s{j}"})

            results["sustained"] = await _sustained(nc, ns, 1000, 2.0 if quick else 5.0, rng, vector)
        if not quick:
            results["text"] = await _text_throughput(server.url, nc)
        await nc.close()
    _print(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return results


async def _text_throughput(url: str, nc: Any) -> dict[str, Any]:
    from regions.encoders import MiniLMEncoder

    words = [f"stimulus number {i} about {w}" for i, w in enumerate(["fruit", "cars", "music", "rain"] * 128)]
    encoder = MiniLMEncoder()
    await asyncio.to_thread(encoder.load)
    t0 = time.perf_counter()
    for i in range(0, len(words), 64):
        await asyncio.to_thread(encoder.encode, words[i:i + 64])
    encoder_rate = len(words) / (time.perf_counter() - t0)
    del encoder
    ns = "txt"
    async with BrainProcess(url, ns, CONFIGS / "default.yaml"):
        await _wait_ready(nc, ns, ["thalamus", "basal_ganglia", "motor"], timeout=120)
        await nc.publish(f"{ns}.env.actions", orjson.dumps({"actions": ACTIONS}))
        await nc.flush()
        await asyncio.sleep(0.2)
        answered: set[str] = set()
        all_in = asyncio.Event()

        async def on_action(msg: Any) -> None:
            answered.add(orjson.loads(msg.data)["stimulus_id"])
            if len(answered) == len(words):
                all_in.set()

        sub = await nc.subscribe(f"{ns}.motor.action", cb=on_action)
        t0 = time.perf_counter()
        for i, w in enumerate(words):
            await nc.publish(f"{ns}.stim.text", orjson.dumps({"text": w, "id": f"w{i}"}))
        await nc.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 60)
        brain_rate = len(answered) / (time.perf_counter() - t0)
        await sub.unsubscribe()
    return {"texts": len(words), "encoder_batched_rate": encoder_rate, "brain_rate": brain_rate,
            "answered": len(answered), "ratio": brain_rate / encoder_rate}


def _print(r: dict[str, Any]) -> None:
    c, s = r["closed_loop"], r["sustained"]
    rows = [
        ("stimulus→action p50 (ex window)", f"{c['p50_ex_window_ms']:.2f} ms", "<= 5 ms"),
        ("stimulus→action p99 (ex window)", f"{c['p99_ex_window_ms']:.2f} ms", "<= 25 ms"),
        ("workspace window (mean)", f"{c['mean_window_ms']:.2f} ms", "excluded"),
        ("raw nats-py hop p50", f"{c['raw_hop_ms']:.3f} ms", "reference"),
        (f"brain p50 / ({HOPS} raw hops)", f"{c['ratio_to_raw_path']:.1f}x", ""),
        ("sustained: offered / answered", f"{s['offered_rate']} / {s['answered_rate']:.0f} per s", ">= 1000/s"),
        ("sustained: uncounted loss", f"{s['uncounted']} of {s['sent']}", "0"),
    ]
    if "text" in r:
        t = r["text"]
        rows.append(("text via MiniLM: brain / encoder",
                     f"{t['brain_rate']:.0f} / {t['encoder_batched_rate']:.0f} per s = {t['ratio']:.2f}x", ">= 0.8x"))
    width = max(len(a) for a, _, _ in rows)
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>28}  {target}")
    print(f"counted losses: {s['counted_losses']}")
