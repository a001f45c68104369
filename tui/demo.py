"""A deterministic, realistic brain state for snapshots, the README screenshot and trying the layout.

The messages go through the real codec and `BrainState.ingest`, exactly as bus messages would,
with a fixed clock, so the picture is the same on every machine.

    python -m tui.demo docs/tui.svg      # write the README screenshot
"""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path

import numpy as np

from bus import codec
from bus.models import (
    Broadcast,
    Heartbeat,
    Message,
    MotorAction,
    NeuromodLevels,
    RegionOutput,
    Reward,
    SysError,
    TextStimulus,
)
from tui.app import BrainApp
from tui.state import BrainState

__all__ = ["DEMO_NOW", "demo_app", "demo_state", "screenshot", "write_screenshot"]

DEMO_NOW = 1_760_000_000.0
NS = "brain"
ACTORS: list[tuple[str, str, float, float, float, dict[str, float]]] = [
    # name, kind, msgs per second in, out, p50 ms, extra stats
    ("thalamus", "thalamus", 24.0, 24.0, 0.41, {"perceived": 1812}),
    ("language", "sensory_cortex", 24.0, 24.0, 1.92, {"units": 512}),
    ("vision", "sensory_cortex", 2.0, 2.0, 0.88, {"units": 256}),
    ("workspace", "workspace", 50.0, 10.0, 0.12, {"cycle": 4121}),
    ("pfc", "prefrontal", 10.0, 10.0, 0.35, {}),
    ("basal_ganglia", "basal_ganglia", 12.0, 8.0, 0.74, {}),
    ("motor", "motor", 8.0, 8.0, 0.09, {}),
    ("amygdala", "amygdala", 9.0, 3.0, 0.21, {}),
    ("hormones", "neuromod", 14.0, 10.0, 0.05, {}),
    ("hippocampus-0", "hippocampus", 11.0, 6.0, 2.6,
     {"episodes": 18_204, "capacity": 50_000, "stores": 18_204, "recalls": 6_102, "last_recall_ms": 3.1}),
    ("hippocampus-1", "hippocampus", 11.0, 6.0, 2.4,
     {"episodes": 17_950, "capacity": 50_000, "stores": 17_950, "recalls": 6_102, "last_recall_ms": 2.8}),
]
WORDS = [("apple", "left"), ("hammer", "right"), ("pear", "left"), ("wrench", "right"), ("plum", "left"),
         ("saw", "right"), ("cherry", "left"), ("drill", "right")]


def _feed(state: BrainState, subject: str, msg: Message, t: float, *, source: str,
          sid: str | None = None) -> None:
    body, headers = codec.encode(msg, source=source, stimulus_id=sid)
    state.ingest(f"{NS}.{subject}", headers, body, t)


def _heartbeat(name: str, kind: str, rate_in: float, rate_out: float, p50: float, stats: dict[str, float],
               uptime: float, *, state: str = "running", busy_s: float = 0.0) -> Heartbeat:
    scaled = {k: (v * uptime / 600 if k in ("stores", "recalls") else v) for k, v in stats.items()}
    return Heartbeat(actor=name, kind=kind, state=state, pid=4242, msgs_in=int(rate_in * uptime),
                     msgs_out=int(rate_out * uptime), mailbox=2 if rate_in > 20 else 0, mailbox_capacity=1024,
                     dropped=3 if name == "language" else 0, errors=1 if name == "thalamus" else 0,
                     restarts=1 if name == "amygdala" else 0, latency_ms_p50=p50, latency_ms_max=p50 * 6,
                     uptime_s=uptime, stats={"busy_s": busy_s, **scaled})


def demo_state() -> BrainState:
    """A brain ten minutes into a reversal-learning session, seen at `DEMO_NOW`."""
    state = BrainState(NS, url="nats://127.0.0.1:4222")
    state.conn = "connected"
    state.connected_at = DEMO_NOW - 600
    t0 = DEMO_NOW - 60.0
    rng = np.random.default_rng(7)
    baseline = {"dopamine": 0.5, "serotonin": 0.5, "norepinephrine": 0.4, "acetylcholine": 0.45}
    # Hormone history: a minute of levels at 4 Hz, with phasic dopamine after rewards.
    for i in range(240):
        t = t0 + i * 0.25
        da = 0.5 + 0.25 * math.exp(-((i % 40) / 6.0)) * (1 if (i // 40) % 3 else -1)
        levels = NeuromodLevels(dopamine=round(da, 3), serotonin=round(0.55 + 0.05 * math.sin(i / 30), 3),
                                norepinephrine=round(0.4 + 0.15 * math.sin(i / 11) ** 2, 3),
                                acetylcholine=round(0.45 + 0.2 * (i > 180), 3), baseline=baseline)
        _feed(state, "neuromod.levels", levels, t, source="hormones")
        state.refresh(t)
    # Heartbeats: two per actor (for rates); one actor silent for a while (dead), one busy (hung).
    for k, t in enumerate((DEMO_NOW - 2.0, DEMO_NOW - 1.0)):
        for name, kind, rin, rout, p50, stats in ACTORS:
            busy = 7.5 if name == "basal_ganglia" else 0.0
            hb = _heartbeat(name, kind, rin, rout, p50, stats, 600.0 + k, busy_s=busy)
            _feed(state, f"sys.heartbeat.{name}", hb, t - 9.0 if name == "vision" else t, source=name)
        state.refresh(t + 0.1)
    # Trials: stimulus → percept → broadcast → action → reward, each step a few ms after the last.
    for i in range(14):
        word, correct = WORDS[i % len(WORDS)]
        sid, t = f"trial-{i + 1:03d}", DEMO_NOW - 14.0 + i
        chosen = correct if i % 4 else ("right" if correct == "left" else "left")
        vec = rng.standard_normal(16).astype(np.float32)
        beat = [{"source": "hippocampus", "salience": 0.31 + 0.01 * i},
                {"source": "vision", "salience": 0.12}]
        steps: list[tuple[float, str, str, Message]] = [
            (0.0, "stim.text", "teacher", TextStimulus(text=word, id=sid)),
            (1.1, "region.thalamus.out", "thalamus",
             RegionOutput(region="thalamus", kind="percept", stimulus_id=sid, vector=vec)),
            (4.2, "region.language.out", "language",
             RegionOutput(region="language", kind="features", stimulus_id=sid, vector=vec)),
            (8.1, "gw.broadcast", "workspace",
             Broadcast(cycle=4100 + i, source="language", salience=0.62 + 0.01 * (i % 5), kind="percept",
                       content=vec, stimulus_id=sid, beat=beat)),
            (10.2, "region.pfc.out", "pfc", RegionOutput(region="pfc", kind="context", stimulus_id=sid)),
            (13.1, "region.basal_ganglia.out", "basal_ganglia",
             RegionOutput(region="basal_ganglia", kind="choice", stimulus_id=sid)),
            (15.8, "motor.action", "motor",
             MotorAction(action=chosen, stimulus_id=sid, confidence=0.55 + 0.03 * (i % 10))),
        ]
        if i < 13:
            value = 1.0 if chosen == correct else -1.0
            reward = Reward(value=value, stimulus_id=sid, action=chosen)
            steps.append((350.0, "feedback.reward", "teacher", reward))
        for ms, subject, source, msg in steps:
            _feed(state, subject, msg, t + ms / 1000, source=source, sid=sid)
        state.refresh(t + 0.5)
    errors = [
        (8.0, SysError(actor="thalamus", subject=f"{NS}.stim.vector", kind="bad_input", suppressed=2,
                       reason="vector has 3 dimensions; this brain expects 384")),
        (31.0, SysError(actor="language", subject=f"{NS}.region.thalamus.out", kind="overflow",
                        reason="mailbox full (1024): dropped the oldest message (3 dropped so far)")),
    ]
    for ago, err in errors:
        _feed(state, "sys.error", err, DEMO_NOW - ago, source=err.actor)
    state.refresh(DEMO_NOW)
    return state


def demo_app() -> BrainApp:
    """A `BrainApp` showing `demo_state()` (not connected; a fixed clock)."""
    return BrainApp("nats://127.0.0.1:4222", NS, connect=False, state=demo_state(), clock=lambda: DEMO_NOW)


async def screenshot(size: tuple[int, int] = (160, 48)) -> str:
    """An SVG screenshot of the demo app (the README picture)."""
    app = demo_app()
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        app.tick(everything=True)
        await pilot.pause()
        return app.export_screenshot(title="brainbus tui")


def write_screenshot(path: Path, size: tuple[int, int] = (160, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(asyncio.run(screenshot(size)))


if __name__ == "__main__":
    write_screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/tui.svg"))
