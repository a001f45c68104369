"""Episodic memory in the whole brain (small config, hashing encoder, real nats-server, in-process).

* one-shot episodic control: a word rewarded once is answered correctly the next time, and with
  the hippocampus disabled (no shards, no episodic actor) it is not;
* sleep replay: `sys.ctl.all sleep` makes the shards replay episodes that the basal ganglia and
  the language area learn from;
* continual learning: task A, then task B, then a probe of A; retention of A is compared with and
  without a sleep before the probe.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from actors.config import BrainConfig, load_config
from actors.supervisor import Supervisor
from bus import Bus, CtlReply, CtlRequest, EnvActions, Meta, MotorAction, RegionOutput, Reward, TextStimulus
from bus.models import MemReplay
from tests.actors_for_tests import eventually

SMALL = Path(__file__).resolve().parents[2] / "configs" / "small.yaml"
ACTIONS = ["press_a", "press_b", "press_c", "press_d"]
ITI_S = 0.03  # inter-trial interval: the outcome of one trial is stored before the next begins


def brain_config(bus: Bus, tmp_path: Path, *, hippocampus: bool, shards: int = 2,
                 shard_options: dict[str, Any] | None = None) -> BrainConfig:
    """The small brain, plus (``hippocampus``) shards and the episodic actor wired as in memory.yaml."""
    data = load_config(SMALL).model_dump()
    data["namespace"] = bus.subjects.ns
    data["data_dir"] = str(tmp_path)
    if hippocampus:
        data["actors"]["basal_ganglia"]["options"].update(episodic=True, episodic_wait_s=0.02, replay_lr=0.1)
        data["actors"]["language"]["options"]["replay"] = True
        data["actors"]["episodic"] = {"kind": "episodic", "options": {"dim": 384}}
        for i in range(shards):
            data["actors"][f"shard{i}"] = {"kind": "hippocampus_shard", "options": {
                "dim": 384, "capacity": 10_000, "replay_episodes": 100, **(shard_options or {})}}
    return BrainConfig.model_validate(data)


async def status(bus: Bus, actor: str) -> dict[str, Any]:
    """An actor's heartbeat stats, asked for now (`sys.ctl.<actor> status`)."""
    reply = await bus.request(f"sys.ctl.{actor}", CtlRequest(verb="status"), CtlReply, timeout=5)
    stats: dict[str, Any] = reply.data["stats"]
    return stats


@asynccontextmanager
async def running_brain(bus: Bus, config: BrainConfig) -> AsyncIterator[Supervisor]:
    sup = Supervisor.for_actors(bus, config, list(config.actors), None)
    task = asyncio.ensure_future(sup.run())
    beats: set[str] = set()

    async def beat(msg: Any, meta: Meta) -> None:
        beats.add(msg.actor)

    sub = await bus.subscribe("sys.heartbeat.*", beat)
    try:
        await eventually(lambda: beats >= set(config.actors), within=20, what="heartbeats of every actor")
        await sub.stop()
        if "episodic" in config.actors:  # recall asks the shards it has heard from
            shards = sum(1 for a in config.actors.values() if a.kind == "hippocampus_shard")
            for _ in range(300):
                if (await status(bus, "episodic"))["shards"] == shards:
                    break
                await asyncio.sleep(0.05)
        yield sup
    finally:
        sup.request_stop()
        await asyncio.wait_for(task, 30)


@dataclass
class Teacher:
    """Drives a brain through the public subjects: stimuli with ids, actions, rewards."""

    bus: Bus
    actions: dict[str, MotorAction] = field(default_factory=dict)
    choices: dict[str, dict[str, Any]] = field(default_factory=dict)
    trials: int = 0

    async def start(self, repertoire: list[str]) -> None:
        async def on_action(msg: MotorAction, meta: Meta) -> None:
            self.actions[msg.stimulus_id] = msg

        async def on_choice(msg: RegionOutput, meta: Meta) -> None:
            if msg.kind == "choice" and msg.stimulus_id:
                self.choices[msg.stimulus_id] = msg.data

        await self.bus.subscribe("motor.action", on_action, model=MotorAction)
        await self.bus.subscribe("region.basal_ganglia.out", on_choice, model=RegionOutput)
        await self.bus.publish("env.actions", EnvActions(actions=repertoire, env="episodic-test"))
        await self.bus.flush()
        await asyncio.sleep(0.1)

    async def present(self, word: str) -> tuple[str, str]:
        """Show ``word``; the action the brain took and the stimulus id."""
        self.trials += 1
        sid = f"trial-{self.trials}"
        await self.bus.publish("stim.text", TextStimulus(text=word, id=sid))
        await eventually(lambda: sid in self.actions, within=5, what=f"the action for {sid} ({word})")
        return self.actions[sid].action, sid

    def p_correct(self, sid: str, correct: str) -> float:
        """The probability the basal ganglia gave the correct action (a less noisy score than a hit)."""
        return float(self.choices[sid]["probs"][correct])

    async def reward(self, sid: str, value: float) -> None:
        await self.bus.publish("feedback.reward", Reward(value=value, stimulus_id=sid))
        await asyncio.sleep(ITI_S)

    async def train(self, word: str, correct: str) -> bool:
        """One rewarded trial: +1 for the correct action, -1 otherwise."""
        action, sid = await self.present(word)
        await self.reward(sid, 1.0 if action == correct else -1.0)
        return action == correct

    async def probe(self, word: str, correct: str) -> tuple[bool, float]:
        """One unrewarded test trial: (correct?, probability of the correct action)."""
        action, sid = await self.present(word)
        await asyncio.sleep(ITI_S)
        return action == correct, self.p_correct(sid, correct)


def task(words: list[str], seed: int) -> dict[str, str]:
    """A fixed random mapping word -> correct action."""
    rng = random.Random(seed)
    return {w: rng.choice(ACTIONS) for w in words}


# ---------------------------------------------------------------- one-shot episodic control

ONE_SHOT_WORDS = ["kettle", "violin", "glacier", "pepper", "saddle", "lantern", "orchid", "anchor",
                  "walrus", "quartz", "tunnel", "biscuit", "compass", "meadow", "falcon", "ribbon"]
FILLER_WORDS = ["pebble", "cactus", "goblet", "thimble", "harbor", "zipper", "mitten", "sparrow",
                "candle", "basket", "helmet", "turnip", "ladder", "puzzle", "wallet", "oyster"]


async def study(teacher: Teacher, mapping: dict[str, str]) -> None:
    """Each word until ONE rewarded exposure (wrong answers are punished on the way)."""
    for word, correct in mapping.items():
        for _ in range(12):
            if await teacher.train(word, correct):
                break


async def one_shot(bus: Bus, tmp_path: Path, *, hippocampus: bool, fillers: bool) -> tuple[int, list[float]]:
    """Study the words, optionally study the filler list (interference: as many other learning
    events before the test), then test each word once, unrewarded. Returns (hits, p(correct))."""
    mapping = task(ONE_SHOT_WORDS, seed=7)
    async with running_brain(bus, brain_config(bus, tmp_path, hippocampus=hippocampus)):
        teacher = Teacher(bus)
        await teacher.start(ACTIONS)
        await study(teacher, mapping)
        if fillers:
            await study(teacher, task(FILLER_WORDS, seed=8))
        results = [await teacher.probe(word, correct) for word, correct in mapping.items()]
    return sum(hit for hit, _ in results), [p for _, p in results]


async def test_one_rewarded_exposure_steers_the_next_choice_only_with_a_hippocampus(
        bus: Bus, tmp_path: Path) -> None:
    """16 words, 4 actions; each studied until one rewarded exposure, then 16 filler words studied
    the same way (a delay filled with other learning), then each word tested once, unrewarded."""
    with_hits, with_p = await one_shot(bus, tmp_path / "with", hippocampus=True, fillers=True)
    without_hits, without_p = await one_shot(bus, tmp_path / "without", hippocampus=False, fillers=True)
    n = len(ONE_SHOT_WORDS)
    summary = (f"with hippocampus {with_hits}/{n} (mean p {statistics.mean(with_p):.3f}), "
               f"without {without_hits}/{n} (mean p {statistics.mean(without_p):.3f}); chance {n // 4}/{n}")
    assert with_hits >= n - 2, summary
    assert statistics.mean(with_p) >= 0.85, summary
    assert statistics.mean(with_p) >= statistics.mean(without_p) + 0.1, summary
    assert with_hits > without_hits, summary


# ---------------------------------------------------------------- sleep


async def sleep_brain(bus: Bus, actors: int) -> None:
    """`sys.ctl.all sleep`, waiting for every actor's reply (the shards reply after replaying)."""
    replies = await bus.gather("sys.ctl.all", CtlRequest(verb="sleep"), CtlReply, expect=actors, timeout=10)
    assert len(replies) == actors and all(r.ok and r.state == "sleeping" for r, _ in replies)


async def wake_brain(bus: Bus, actors: int) -> None:
    replies = await bus.gather("sys.ctl.all", CtlRequest(verb="wake"), CtlReply, expect=actors, timeout=10)
    assert len(replies) == actors and all(r.state == "running" for r, _ in replies)


async def test_sleep_gates_intake_and_replays_episodes_to_basal_ganglia_and_cortex(
        bus: Bus, tmp_path: Path) -> None:
    config = brain_config(bus, tmp_path, hippocampus=True)
    replayed: list[MemReplay] = []

    async def on_replay(msg: MemReplay, meta: Meta) -> None:
        replayed.append(msg)

    await bus.subscribe("mem.replay", on_replay, model=MemReplay)
    async with running_brain(bus, config):
        teacher = Teacher(bus)
        await teacher.start(ACTIONS)
        mapping = task(ONE_SHOT_WORDS[:4], seed=3)
        for _ in range(3):
            for word, correct in mapping.items():
                await teacher.train(word, correct)
        await eventually(lambda: teacher.trials == 12, what="12 trials")
        stored = (await status(bus, "episodic"))["stored"]
        assert stored == 12
        before = (await status(bus, "basal_ganglia"))["updates"]

        await sleep_brain(bus, len(config.actors))
        await bus.publish("stim.text", TextStimulus(text="kettle", id="asleep-1"))
        await eventually(lambda: len(replayed) == stored, what="every stored episode replayed")
        bg = await status(bus, "basal_ganglia")
        for _ in range(100):
            if bg["replays"] == stored:
                break
            await asyncio.sleep(0.02)
            bg = await status(bus, "basal_ganglia")
        # Both shards replay (replay_episodes 100 > what they hold: every episode once), the basal
        # ganglia learn from each (an update per replay), and so does the language area.
        assert {r.shard for r in replayed} == {"shard0", "shard1"}
        assert sorted(r.stimulus_id or "" for r in replayed) == sorted(f"trial-{i}" for i in range(1, 13))
        assert all(r.action in ACTIONS and r.reward in (-1.0, 1.0) for r in replayed)
        assert bg["replays"] == stored and bg["updates"] == before + stored
        assert (await status(bus, "language"))["replayed"] == stored
        assert (await status(bus, "thalamus"))["gated"] == 1
        assert "asleep-1" not in teacher.actions

        await wake_brain(bus, len(config.actors))
        action, _ = await teacher.present("kettle")
        assert action in ACTIONS


# ---------------------------------------------------------------- continual learning

TASK_A = ["apple", "banana", "cherry", "grape", "lemon", "mango"]


def conflicting(a: dict[str, str], modifier: str) -> dict[str, str]:
    """Task B: each word of A with a modifier (similar percepts) and a different action."""
    return {f"{modifier} {w}": ACTIONS[(ACTIONS.index(act) + 1) % len(ACTIONS)] for w, act in a.items()}


async def continual(bus: Bus, tmp_path: Path, *, sleep: bool, rounds_a: int = 5,
                    rounds_b: int = 15) -> tuple[float, float]:
    """Task A (fruit words -> actions), then task B (tool words -> the same actions, another
    mapping), then [sleep | the same time awake], then a probe of A with the episodic actor paused:
    what the basal ganglia themselves retained. Returns (accuracy, mean p(correct)) on A."""
    config = brain_config(bus, tmp_path, hippocampus=True)
    a = task(TASK_A, seed=11)
    b = conflicting(a, "rotten")
    async with running_brain(bus, config):
        teacher = Teacher(bus)
        await teacher.start(ACTIONS)
        for mapping, rounds in ((a, rounds_a), (b, rounds_b)):
            for _ in range(rounds):
                for word, correct in mapping.items():
                    await teacher.train(word, correct)
        await asyncio.sleep(0.2)  # the last stores land
        if sleep:
            await sleep_brain(bus, len(config.actors))
            await asyncio.sleep(0.5)
            await wake_brain(bus, len(config.actors))
        else:
            await asyncio.sleep(0.5)
        reply = await bus.request("sys.ctl.episodic", CtlRequest(verb="pause"), CtlReply, timeout=5)
        assert reply.state == "paused"
        results = [await teacher.probe(word, correct) for _ in range(2) for word, correct in a.items()]
    return statistics.mean(float(hit) for hit, _ in results), statistics.mean(p for _, p in results)


@pytest.mark.slow
async def test_continual_learning_retention_with_and_without_sleep(bus: Bus, tmp_path: Path) -> None:
    """Retention of task A after task B, with a sleep (replay to the basal ganglia) before the probe
    and without one.

    Measured (this protocol, hashing encoder): the basal ganglia hardly forget A here (p(correct)
    0.97 without sleep), so sleep has nothing to rescue: with replay as rehearsal, 0.968 with sleep
    vs 0.972 without; with replay that also applied the actor's weight decay, 0.934 vs 0.973 (so
    replay does not decay); another run gave 0.92 vs 0.97. Sleep is therefore NOT shown to improve
    retention here, and the difference is within run-to-run noise. What is checked is that both
    conditions retain A and that replay does not wreck it (a loose bound, not a comparison).
    """
    slept = await continual(bus, tmp_path / "sleep", sleep=True)
    awake = await continual(bus, tmp_path / "awake", sleep=False)
    summary = f"retention of A (accuracy, mean p): with sleep {slept}, without {awake}"
    assert awake[1] >= 0.8 and slept[1] >= 0.8, summary
    assert slept[1] >= awake[1] - 0.2, summary
