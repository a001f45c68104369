"""TUI under load: CPU of the app process and key responsiveness while the bus carries N msgs/s.

    python -m bench.tui_load [--rate 5000] [--seconds 10] [--out bench-results/tui_load.json]

An embedded nats-server and a publisher *process* (so its CPU is not counted) send a realistic
mix on `NS.>` (region outputs with 384-d vectors, bids, broadcasts, actions, rewards, levels,
memory stores, heartbeats, errors). The app runs headless in this process (`run_test`, 160x48,
4 Hz refresh unless `--refresh`). Reported: the app process CPU% (process_time delta over wall
time; the server and the publisher are other processes), the idle CPU% before the load as a reference, the
messages the app counted against those sent, and key latency: the time from a key event
entering the app to its effect (the help screen open), sampled 10 times right after the CPU
window while the load goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bus import Bus, EmbeddedServer, codec
from bus.models import (
    Bid,
    Broadcast,
    Heartbeat,
    MemStore,
    Message,
    MotorAction,
    NeuromodLevels,
    RegionOutput,
    Reward,
    SysError,
    TextStimulus,
)

NS = "bench"
KEY_SAMPLES = 10
KEY_GAP_S = 0.5
ACTORS = ["thalamus", "language", "vision", "workspace", "pfc", "basal_ganglia", "motor", "amygdala",
          "hormones", "hippocampus-0", "hippocampus-1", "hippocampus-2"]


def _mix() -> list[tuple[str, Message, int]]:
    """(relative subject, message, weight per 100 messages)."""
    vec = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    levels = {"dopamine": 0.5, "serotonin": 0.5, "norepinephrine": 0.4, "acetylcholine": 0.45}
    return [
        ("stim.text", TextStimulus(text="a pear", id="x"), 6),
        ("region.thalamus.out", RegionOutput(region="thalamus", kind="percept", stimulus_id="x", vector=vec),
         14),
        ("region.language.out", RegionOutput(region="language", kind="features", stimulus_id="x", vector=vec),
         14),
        ("region.pfc.out", RegionOutput(region="pfc", kind="context", stimulus_id="x", vector=vec), 12),
        ("gw.bid", Bid(source="language", kind="percept", salience=0.5, content=vec, stimulus_id="x"), 20),
        ("gw.broadcast", Broadcast(cycle=1, source="language", salience=0.6, kind="percept", content=vec,
                                   stimulus_id="x", beat=[{"source": "vision", "salience": 0.2}]), 8),
        ("motor.action", MotorAction(action="left", stimulus_id="x", confidence=0.7), 6),
        ("feedback.reward", Reward(value=1.0, stimulus_id="x", action="left"), 6),
        ("neuromod.levels", NeuromodLevels(**levels, baseline=levels), 2),
        ("mem.store", MemStore(key=vec, stimulus_id="x", action="left", reward=1.0), 10),
        ("sys.error", SysError(actor="thalamus", subject=f"{NS}.stim.vector", reason="bad vector"), 2),
    ]


async def publish(url: str, rate: int, seconds: float) -> None:
    """The publisher process: `rate` msgs/s for `seconds`, paced in 10 ms batches."""
    async with Bus(url, namespace=NS, name="bench-publisher") as bus:
        plan: list[tuple[str, bytes, dict[str, str]]] = []
        for subject, msg, weight in _mix():
            body, headers = codec.encode(msg, source=subject.split(".")[1] if "." in subject else "x")
            plan += [(bus.resolve(subject), body, headers)] * weight
        hb = {a: bus.resolve(f"sys.heartbeat.{a}") for a in ACTORS}
        nc = bus.nc
        per_batch = rate / 100
        started = time.monotonic()
        sent = 0.0
        i = n = beats = 0
        next_hb = started
        while (now := time.monotonic()) - started < seconds:
            sent += per_batch
            while n < int(sent):
                subject, body, headers = plan[i % len(plan)]
                # A fresh stimulus id every 8 messages, so the flow index works as it would live.
                await nc.publish(subject, body, headers={**headers, codec.H_SID: f"s{n // 8}"})
                i += 1
                n += 1
            if now >= next_hb:
                next_hb += 1.0
                for k, (actor, subject) in enumerate(hb.items()):
                    beat = Heartbeat(actor=actor, kind=actor.split("-")[0], state="running", pid=1,
                                     msgs_in=int((now - started) * 400), msgs_out=int((now - started) * 300),
                                     uptime_s=now - started + 1, latency_ms_p50=0.1 * (k + 1),
                                     stats={"busy_s": 0.0, "episodes": n, "capacity": 100_000})
                    await bus.publish(subject, beat, source=actor)
                    beats += 1
            await asyncio.sleep(max(0.0, started + (n / rate) - time.monotonic()))
        await bus.flush()
        print(json.dumps({"sent": n + beats}), flush=True)


async def _key_latency(app: Any, help_screen: type) -> float:
    """Seconds from a key event entering the app to its effect (the help screen shown)."""
    from textual import events

    t0 = time.perf_counter()
    key = events.Key("question_mark", "?")
    key.set_sender(app)
    app._driver.send_message(key)
    while not isinstance(app.screen, help_screen):  # noqa: ASYNC110 - polling is what is measured
        await asyncio.sleep(0.001)
    latency = time.perf_counter() - t0
    app.pop_screen()
    return latency


async def run(rate: int, seconds: float, refresh_hz: float = 4.0) -> dict[str, Any]:
    from tui import BrainApp
    from tui.help import HelpScreen

    async with EmbeddedServer(jetstream=False) as server:
        app = BrainApp(server.url, NS, refresh_hz=refresh_hz)
        async with app.run_test(size=(160, 48)) as pilot:
            while app.state.conn != "connected":
                await pilot.pause(0.05)
            await asyncio.sleep(1.0)
            c0, w0 = time.process_time(), time.monotonic()
            await asyncio.sleep(3.0)
            idle_cpu = (time.process_time() - c0) / (time.monotonic() - w0)
            idle_keys = [await _key_latency(app, HelpScreen) for _ in range(3)]
            seen0 = app.state.traffic.total
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.tui_load", "--publish", server.url, "--rate", str(rate),
                "--seconds", str(seconds + 1.5 + KEY_SAMPLES * KEY_GAP_S + 1), stdout=asyncio.subprocess.PIPE)
            await asyncio.sleep(1.5)  # the publisher starts and reaches its rate
            # CPU first, with no key presses: each press below opens and closes the help screen,
            # two full-screen repaints that are the keys' cost, not the load's.
            c0, w0 = time.process_time(), time.monotonic()
            await asyncio.sleep(seconds)
            load_cpu = (time.process_time() - c0) / (time.monotonic() - w0)
            keys = []
            for _ in range(KEY_SAMPLES):
                await asyncio.sleep(KEY_GAP_S)
                keys.append(await _key_latency(app, HelpScreen))
            out, _ = await proc.communicate()
            sent = json.loads(out.decode().strip().splitlines()[-1])["sent"]
            await asyncio.sleep(1.0)  # let the last messages arrive and one refresh count them
            app.state.refresh(app.clock())
            seen = app.state.traffic.total - seen0
            drops = app.feed.bus.slow_consumer_drops if app.feed and app.feed.bus else 0
            ticks = app.ticks
    return {
        "rate": rate, "seconds": seconds, "refresh_hz": refresh_hz, "sent": sent, "seen_by_app": seen,
        "slow_consumer_drops": drops,
        "app_cpu_percent_idle": round(idle_cpu * 100, 1),
        "app_cpu_percent_under_load": round(load_cpu * 100, 1),
        "key_latency_ms_idle_median": round(statistics.median(idle_keys) * 1000, 1),
        "key_latency_ms_load_median": round(statistics.median(keys) * 1000, 1),
        "key_latency_ms_load_max": round(max(keys) * 1000, 1), "key_samples": len(keys),
        "refresh_ticks": ticks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--refresh", type=float, default=4.0, help="the app's refresh rate (Hz)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/tui_load.json"))
    parser.add_argument("--publish", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        asyncio.run(publish(args.publish, args.rate, args.seconds))
        return
    result = asyncio.run(run(args.rate, args.seconds, args.refresh))
    for key, value in result.items():
        print(f"{key:32} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
