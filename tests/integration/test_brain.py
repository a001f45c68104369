"""The thinking brain end to end on a real nats-server: the small config (hashing encoder), run
in-process by its supervisor, driven only through public subjects."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from actors import inprocess
from actors.config import BrainConfig, load_config
from actors.supervisor import Supervisor
from bus import (
    Broadcast,
    Bus,
    EnvActions,
    Heartbeat,
    Meta,
    MotorAction,
    NeuromodLevels,
    RegionOutput,
    Reward,
    SysError,
    TextStimulus,
    VectorStimulus,
)
from regions.encoders import Encoder, HashingEncoder
from regions.thalamus import Thalamus
from tests.actors_for_tests import eventually

SMALL = Path(__file__).resolve().parents[2] / "configs" / "small.yaml"


class Recorder:
    """Collects typed messages from a subject pattern."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, Meta]] = []

    async def __call__(self, msg: Any, meta: Meta) -> None:
        self.items.append((msg, meta))

    def where(self, pred: Callable[[Any], bool]) -> list[Any]:
        return [m for m, _ in self.items if pred(m)]


async def start_brain(
    bus: Bus, tmp_path: Path, *, top: dict[str, Any] | None = None, **actor_options: dict[str, Any]
) -> tuple[Supervisor, asyncio.Task[None]]:
    """The small config in-process on `bus`'s namespace; `top` overrides top-level keys of the config,
    `actor_options` the options of named actors. Returns once every actor heartbeats."""
    config = load_config(SMALL)
    data = config.model_dump()
    data["namespace"] = bus.subjects.ns
    data["data_dir"] = str(tmp_path)
    data.update(top or {})
    for name, options in actor_options.items():
        data["actors"][name]["options"].update(options)
    return await inprocess.start_brain(bus, BrainConfig.model_validate(data), within=20)


@pytest.fixture
async def brain(bus: Bus, tmp_path: Path) -> AsyncIterator[Supervisor]:
    sup, task = await start_brain(bus, tmp_path)
    yield sup
    sup.request_stop()
    await asyncio.wait_for(task, 30)


async def test_a_stimulus_flows_through_every_region_to_an_action(brain: Supervisor, bus: Bus) -> None:
    actions, broadcasts, outputs = Recorder(), Recorder(), Recorder()
    await bus.subscribe("motor.action", actions, model=MotorAction)
    await bus.subscribe("gw.broadcast", broadcasts, model=Broadcast)
    await bus.subscribe("region.*.out", outputs, model=RegionOutput)
    await bus.publish("env.actions", EnvActions(actions=["left", "right"], env="test"))
    await bus.flush()
    await asyncio.sleep(0.1)
    await bus.publish("stim.text", TextStimulus(text="a red apple", id="s-1"))
    await eventually(lambda: actions.items, within=5, what="a motor action")
    action = actions.items[0][0]
    assert action.stimulus_id == "s-1" and action.action in ("left", "right")
    assert [b.stimulus_id for b in broadcasts.where(lambda b: True)] == ["s-1"]
    assert broadcasts.items[0][0].source == "language" and broadcasts.items[0][0].kind == "percept"
    regions = [o.region for o in outputs.where(lambda o: o.stimulus_id == "s-1")]
    for region in ("thalamus", "prefrontal", "basal_ganglia"):
        assert region in regions
    # The stimulus id travels in the headers too, so a tool can follow it through the brain.
    assert all(meta.stimulus_id == "s-1" for _, meta in outputs.items if _.stimulus_id == "s-1")


async def test_reward_teaches_the_right_action_for_each_word(brain: Supervisor, bus: Bus) -> None:
    answers: dict[str, MotorAction] = {}

    async def on_action(msg: MotorAction, meta: Meta) -> None:
        answers[msg.stimulus_id] = msg

    await bus.subscribe("motor.action", on_action, model=MotorAction)
    await bus.publish("env.actions", EnvActions(actions=["eat", "drive"]))
    await asyncio.sleep(0.1)
    correct = {"banana": "eat", "truck": "drive"}
    hits = []
    for i in range(80):
        word = ("banana", "truck")[i % 2]
        sid = f"t{i}"
        await bus.publish("stim.text", TextStimulus(text=word, id=sid))
        await eventually(lambda sid=sid: sid in answers, within=5, what=f"action for {sid}")
        good = answers[sid].action == correct[word]
        hits.append(good)
        await bus.publish("feedback.reward", Reward(value=1.0 if good else -1.0, stimulus_id=sid))
    assert sum(hits[-20:]) >= 18, f"last 20 trials: {sum(hits[-20:])} correct"
    assert sum(hits[:10]) < sum(hits[-10:]) or sum(hits[:10]) == 10


async def test_reward_surprise_moves_dopamine_and_it_returns(brain: Supervisor, bus: Bus) -> None:
    levels = Recorder()
    await bus.subscribe("neuromod.levels", levels, model=NeuromodLevels)
    actions = Recorder()
    await bus.subscribe("motor.action", actions, model=MotorAction)
    await bus.publish("env.actions", EnvActions(actions=["a", "b"]))
    await asyncio.sleep(0.1)
    await bus.publish("stim.text", TextStimulus(text="lottery", id="r-1"))
    await eventually(lambda: actions.items, within=5, what="an action")
    await bus.publish("feedback.reward", Reward(value=1.0, stimulus_id="r-1"))
    await eventually(lambda: levels.where(lambda lv: lv.dopamine > lv.baseline["dopamine"] + 0.05), within=3,
                     what="a dopamine burst")
    assert levels.items[-1][0].frozen is False


async def test_stimuli_before_actions_are_perceived_and_the_reason_told_once(brain: Supervisor, bus: Bus) -> None:
    errors, actions, percepts = Recorder(), Recorder(), Recorder()
    await bus.subscribe("sys.error", errors, model=SysError)
    await bus.subscribe("motor.action", actions, model=MotorAction)
    await bus.subscribe("region.thalamus.out", percepts, model=RegionOutput)
    for i in range(3):
        await bus.publish("stim.text", TextStimulus(text=f"early {i}", id=f"e{i}"))
    await eventually(lambda: len(percepts.items) == 3, what="three percepts")
    await eventually(lambda: errors.where(lambda e: e.kind == "no_actions"), what="the no-actions report")
    await asyncio.sleep(0.3)
    assert len(errors.where(lambda e: e.kind == "no_actions")) == 1
    assert "no actions are declared" in errors.where(lambda e: e.kind == "no_actions")[0].reason
    assert actions.items == []


async def test_bad_brain_input_is_reported_and_the_brain_goes_on(brain: Supervisor, bus: Bus) -> None:
    errors, actions = Recorder(), Recorder()
    await bus.subscribe("sys.error", errors, model=SysError)
    await bus.subscribe("motor.action", actions, model=MotorAction)
    await bus.publish("env.actions", EnvActions(actions=["x", "y"]))
    await asyncio.sleep(0.1)
    await bus.publish("stim.text", TextStimulus(text="hello", id="ok-1"))
    await eventually(lambda: actions.items, what="a first action")
    await bus.publish("feedback.reward", Reward(value=1.0, stimulus_id="never-seen"))
    await bus.publish("feedback.reward", Reward(value=1.0, stimulus_id="ok-1", action="fly"))
    await bus.publish_raw("feedback.reward", b'{"value": NaN, "stimulus_id": "ok-1"}')
    await bus.publish("stim.vector", VectorStimulus(vector=np.ones(4097, dtype=np.float32), id="v-4097"))
    await eventually(lambda: len(errors.items) >= 4, what="four reports")
    reasons = " | ".join(e.reason for e in errors.where(lambda e: True))
    assert "unknown stimulus 'never-seen'" in reasons
    assert "'fly'" in reasons and "not in the declared repertoire" in reasons
    assert "finite number" in reasons
    assert "length 4097" in reasons
    await bus.publish("stim.text", TextStimulus(text="still there", id="ok-2"))
    await eventually(lambda: any(a.stimulus_id == "ok-2" for a, _ in actions.items), what="a second action")


async def test_frozen_hormones_stay_at_baseline(bus: Bus, tmp_path: Path) -> None:
    sup, task = await start_brain(bus, tmp_path, hormones={"frozen": True})
    try:
        levels, actions = Recorder(), Recorder()
        await bus.subscribe("neuromod.levels", levels, model=NeuromodLevels)
        await bus.subscribe("motor.action", actions, model=MotorAction)
        await bus.publish("env.actions", EnvActions(actions=["a", "b"]))
        await asyncio.sleep(0.1)
        for i in range(3):
            await bus.publish("stim.text", TextStimulus(text=f"surprise {i}", id=f"f{i}"))
            await eventually(lambda i=i: any(a.stimulus_id == f"f{i}" for a, _ in actions.items), what="action")
            await bus.publish("feedback.reward", Reward(value=-1.0, stimulus_id=f"f{i}"))
        await asyncio.sleep(0.3)
        assert levels.items
        for msg, _ in levels.items:
            assert msg.frozen and msg.dopamine == msg.baseline["dopamine"]
            assert msg.norepinephrine == msg.baseline["norepinephrine"]
    finally:
        sup.request_stop()
        await asyncio.wait_for(task, 30)


async def test_bypassed_workspace_broadcasts_every_bid(bus: Bus, tmp_path: Path) -> None:
    sup, task = await start_brain(bus, tmp_path, workspace={"compete": False})
    try:
        broadcasts = Recorder()
        await bus.subscribe("gw.broadcast", broadcasts, model=Broadcast)
        for i in range(3):
            await bus.publish("stim.text", TextStimulus(text=f"word {i}", id=f"w{i}"))
        await eventually(lambda: len(broadcasts.items) == 3, what="three broadcasts")
        assert all(b.detail.get("bypassed") for b, _ in broadcasts.items)
    finally:
        sup.request_stop()
        await asyncio.wait_for(task, 30)


class GatedEncoder(HashingEncoder):
    """A language encoder that loads slowly: `load` blocks (in the thalamus's loader thread)
    until the test opens the gate, like MiniLM's 6-25 s load."""

    gate = threading.Event()
    loads = 0

    def load(self) -> None:
        GatedEncoder.loads += 1
        if not GatedEncoder.gate.wait(timeout=60):
            raise RuntimeError("the test never let the encoder finish loading")


class SlowLoadingThalamus(Thalamus):
    """The thalamus with `encoder: minilm`, its language encoder replaced by `GatedEncoder`."""

    def language_encoder(self) -> Encoder:
        return GatedEncoder(dim=self.options.dim)


async def test_text_sent_while_the_encoder_loads_is_kept_and_answered(bus: Bus, tmp_path: Path) -> None:
    GatedEncoder.gate.clear()
    GatedEncoder.loads = 0
    data = load_config(SMALL).model_dump()
    data.update(namespace=bus.subjects.ns, data_dir=str(tmp_path))
    # A hang check far shorter than the load: a loading thalamus must not count as hung.
    data["supervisor"].update(hang_timeout=0.3, heartbeat_interval=0.1)
    data["actors"]["thalamus"].update(kind=f"{__name__}:SlowLoadingThalamus")
    data["actors"]["thalamus"]["options"].update(encoder="minilm", loading_buffer=3, encoder_workers=2)
    actions, errors, beats = Recorder(), Recorder(), Recorder()
    await bus.subscribe("motor.action", actions, model=MotorAction)
    await bus.subscribe("sys.error", errors, model=SysError)
    await bus.subscribe("sys.heartbeat.thalamus", beats, model=Heartbeat)
    config = BrainConfig.model_validate(data)
    sup = Supervisor.for_actors(bus, config, list(config.actors), None)
    task = asyncio.ensure_future(sup.run())
    try:
        # Every actor heartbeats although the encoder has not loaded: the thalamus, `loading`.
        everyone = Recorder()
        await bus.subscribe("sys.heartbeat.*", everyone, model=Heartbeat)
        await eventually(lambda: {b.actor for b, _ in everyone.items} >= set(config.actors), within=20,
                         what="a heartbeat of every actor")
        assert beats.items[-1][0].state == "loading"
        assert beats.items[-1][0].stats["perceived"] == 0 and beats.items[-1][0].stats["last_percept_at"] is None
        began = time.time()
        await bus.publish("env.actions", EnvActions(actions=["left", "right"]))
        await bus.flush()
        await asyncio.sleep(0.1)
        for i in range(4):  # one more than the buffer holds: the oldest text is dropped
            await bus.publish("stim.text", TextStimulus(text=f"early word {i}", id=f"early-{i}"))
        await bus.publish("stim.vector", VectorStimulus(vector=np.ones(384, dtype=np.float32), id="vec-1"))
        # Vectors need no encoder: answered while the texts wait.
        await eventually(lambda: any(a.stimulus_id == "vec-1" for a, _ in actions.items), what="the vector's action")
        await eventually(lambda: beats.where(lambda b: b.stats.get("waiting_for_encoder") == 3), what="3 waiting")
        await asyncio.sleep(1.0)  # several hang checks pass while the encoder is still loading
        waiting = beats.items[-1][0]
        assert waiting.restarts == 0 and waiting.state == "loading" and waiting.dropped == 1
        assert not any(a.stimulus_id.startswith("early") for a, _ in actions.items)
        dropped = errors.where(lambda e: e.kind == "overflow" and e.actor == "thalamus")
        assert dropped and dropped[0].stimulus_id == "early-0" and "still loading" in dropped[0].reason

        GatedEncoder.gate.set()
        want = {"early-1", "early-2", "early-3"}
        await eventually(lambda: want <= {a.stimulus_id for a, _ in actions.items}, within=10,
                         what="actions for the texts kept while loading")
        await bus.publish("stim.text", TextStimulus(text="a later word", id="late-1"))
        await eventually(lambda: any(a.stimulus_id == "late-1" for a, _ in actions.items), what="a later action")
        await eventually(lambda: beats.where(lambda b: b.state == "running"), what="a running heartbeat")
        assert "early-0" not in {a.stimulus_id for a, _ in actions.items}
        assert GatedEncoder.loads == 2 and beats.items[-1][0].restarts == 0  # one per encoder worker
        await eventually(lambda: beats.where(lambda b: b.stats.get("encoder_copies") == 2),
                         what="the encoder copies in a heartbeat")
        # Five percepts (the vector, three texts kept, the later one) and when the last one was.
        await eventually(lambda: beats.where(lambda b: b.stats.get("perceived") == 5), what="5 perceived")
        assert began <= beats.where(lambda b: b.stats.get("perceived") == 5)[-1].stats["last_percept_at"] <= time.time()
    finally:
        GatedEncoder.gate.set()
        sup.request_stop()
        await asyncio.wait_for(task, 30)
