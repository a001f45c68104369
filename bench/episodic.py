"""Episodic memory and sleep in the whole brain: the hippocampus's part of `brainbus bench cognition`.

The memory brain (configs/memory.yaml) is built as complementary learning systems: its basal
ganglia learn slowly from live rewards (`learning_rate_scale`), the hippocampus stores every
rewarded outcome at once and brings similar episodes back as evidence (episodic control), and
sleep replays the stored episodes to the basal ganglia (consolidation). Two experiments, each run
against its ablation on a fresh brain, taught by an agent that uses only the public subjects:

* one-shot: 16 words, 4 actions; each word is shown until it is rewarded once (wrong answers are
  punished on the way), then 16 filler words the same way (a delay filled with other learning),
  then each word once, unrewarded. With the hippocampus vs the same brain without it (no shards,
  no episodic actor, the basal ganglia not waiting for episodic evidence).
* continual learning: task A (6 words -> actions, 5 rounds), then task B (the same words with a
  modifier -> other actions, 15 rounds: similar percepts, conflicting answers), then a sleep or
  the same time awake, then A probed twice with the episodic actor paused: what the basal ganglia
  themselves retained of A.

Reported: hits and the mean probability the basal ganglia gave the correct action (a less noisy
score than hits). The brain runs in this process under its own supervisor; agent and brain talk
only over NATS.
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

from actors import inprocess
from actors.config import BrainConfig, load_config
from actors.supervisor import Supervisor
from bus import Bus, CtlReply, CtlRequest, EnvActions, Meta, MotorAction, RegionOutput, Reward, TextStimulus

__all__ = ["ACTIONS", "FILLER_WORDS", "ONE_SHOT_WORDS", "TASK_A", "Teacher", "conflicting", "continual",
           "episodic_targets", "memory_brain", "one_shot", "print_episodic", "run_episodic_bench",
           "running_brain", "sleep_brain", "status", "study", "task", "wake_brain"]

MEMORY_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "memory.yaml"
ACTIONS = ["press_a", "press_b", "press_c", "press_d"]
ITI_S = 0.03  # inter-trial interval: the outcome of one trial is stored before the next begins
ONE_SHOT_WORDS = ["kettle", "violin", "glacier", "pepper", "saddle", "lantern", "orchid", "anchor",
                  "walrus", "quartz", "tunnel", "biscuit", "compass", "meadow", "falcon", "ribbon"]
FILLER_WORDS = ["pebble", "cactus", "goblet", "thimble", "harbor", "zipper", "mitten", "sparrow",
                "candle", "basket", "helmet", "turnip", "ladder", "puzzle", "wallet", "oyster"]
TASK_A = ["apple", "banana", "cherry", "grape", "lemon", "mango"]
MEMORY_KINDS = {"hippocampus_shard", "hippocampus", "episodic"}


def memory_brain(namespace: str, data_dir: Path, *, hippocampus: bool = True, encoder: str = "hashing",
                 shards: int | None = None, shard_options: dict[str, Any] | None = None) -> BrainConfig:
    """configs/memory.yaml with ``encoder`` in the thalamus; without ``hippocampus``, the same brain
    with its memory removed (the ablation). ``shards`` keeps that many shards (default: the config's)."""
    data = load_config(MEMORY_CONFIG).model_dump()
    data.update(namespace=namespace, data_dir=str(data_dir))
    actors: dict[str, Any] = data["actors"]
    actors["thalamus"]["options"]["encoder"] = encoder
    shard_names = [n for n, a in actors.items() if a["kind"] == "hippocampus_shard"]
    template = actors[shard_names[0]]
    for name in shard_names:
        del actors[name]
    if hippocampus:
        for i in range(len(shard_names) if shards is None else shards):
            actors[f"shard{i}"] = {**template, "options": {**template["options"], **(shard_options or {})}}
    else:
        for name in [n for n, a in actors.items() if a["kind"] in MEMORY_KINDS]:
            del actors[name]
        actors["basal_ganglia"]["options"].update(episodic=False, episodic_wait_s=0.0)
        actors["language"]["options"]["replay"] = False
    return BrainConfig.model_validate(data)


async def status(bus: Bus, actor: str) -> dict[str, Any]:
    """An actor's heartbeat stats, asked for now (`sys.ctl.<actor> status`)."""
    reply = await bus.request(f"sys.ctl.{actor}", CtlRequest(verb="status"), CtlReply, timeout=5)
    stats: dict[str, Any] = reply.data["stats"]
    return stats


async def _until(cond: Any, within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def running_brain(bus: Bus, config: BrainConfig) -> AsyncIterator[Supervisor]:
    """The brain in this process (actors.inprocess), once the episodic actor knows every shard."""
    async with inprocess.running_brain(bus, config) as sup:
        if "episodic" in config.actors:  # recall asks the shards it has heard from
            shards = sum(1 for a in config.actors.values() if a.kind == "hippocampus_shard")
            for _ in range(300):
                if (await status(bus, "episodic"))["shards"] == shards:
                    break
                await asyncio.sleep(0.05)
        yield sup


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
        await self.bus.publish("env.actions", EnvActions(actions=repertoire, env="episodic-task"))
        await self.bus.flush()
        await asyncio.sleep(0.1)

    async def present(self, word: str) -> tuple[str, str]:
        """Show ``word``; the action the brain took and the stimulus id."""
        self.trials += 1
        sid = f"trial-{self.trials}"
        await self.bus.publish("stim.text", TextStimulus(text=word, id=sid))
        await _until(lambda: sid in self.actions, 5, f"the action for {sid} ({word})")
        return self.actions[sid].action, sid

    def p_correct(self, sid: str, correct: str) -> float:
        """The probability the basal ganglia gave the correct action."""
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


def conflicting(a: dict[str, str], modifier: str) -> dict[str, str]:
    """Task B: each word of A with a modifier (similar percepts) and a different action."""
    return {f"{modifier} {w}": ACTIONS[(ACTIONS.index(act) + 1) % len(ACTIONS)] for w, act in a.items()}


async def sleep_brain(bus: Bus, actors: int) -> None:
    """`sys.ctl.all sleep`, waiting for every actor's reply (the shards reply after replaying)."""
    replies = await bus.gather("sys.ctl.all", CtlRequest(verb="sleep"), CtlReply, expect=actors, timeout=10)
    if len(replies) != actors or not all(r.ok and r.state == "sleeping" for r, _ in replies):
        raise RuntimeError(f"sleep: {len(replies)}/{actors} actors replied: {[r for r, _ in replies]}")


async def wake_brain(bus: Bus, actors: int) -> None:
    replies = await bus.gather("sys.ctl.all", CtlRequest(verb="wake"), CtlReply, expect=actors, timeout=10)
    if len(replies) != actors or not all(r.state == "running" for r, _ in replies):
        raise RuntimeError(f"wake: {len(replies)}/{actors} actors replied: {[r for r, _ in replies]}")


async def study(teacher: Teacher, mapping: dict[str, str]) -> None:
    """Each word until ONE rewarded exposure (wrong answers are punished on the way)."""
    for word, correct in mapping.items():
        for _ in range(12):
            if await teacher.train(word, correct):
                break


async def one_shot(bus: Bus, data_dir: Path, *, hippocampus: bool, encoder: str = "hashing",
                   fillers: bool = True) -> tuple[int, list[float]]:
    """Study the words (then the fillers), test each word once unrewarded: (hits, p(correct) each)."""
    mapping = task(ONE_SHOT_WORDS, seed=7)
    config = memory_brain(bus.subjects.ns, data_dir, hippocampus=hippocampus, encoder=encoder)
    async with running_brain(bus, config):
        teacher = Teacher(bus)
        await teacher.start(ACTIONS)
        await study(teacher, mapping)
        if fillers:
            await study(teacher, task(FILLER_WORDS, seed=8))
        results = [await teacher.probe(word, correct) for word, correct in mapping.items()]
    return sum(hit for hit, _ in results), [p for _, p in results]


async def continual(bus: Bus, data_dir: Path, *, sleep: bool, encoder: str = "hashing", rounds_a: int = 5,
                    rounds_b: int = 15) -> tuple[float, float]:
    """Task A, task B, [a sleep | as long awake], then A probed with the episodic actor paused:
    (accuracy, mean p(correct)) on A, i.e. what the basal ganglia retained."""
    config = memory_brain(bus.subjects.ns, data_dir, encoder=encoder)
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
        if reply.state != "paused":
            raise RuntimeError(f"the episodic actor did not pause: {reply}")
        results = [await teacher.probe(word, correct) for _ in range(2) for word, correct in a.items()]
    return statistics.mean(float(hit) for hit, _ in results), statistics.mean(p for _, p in results)


async def run_episodic_bench(url: str, data_dir: Path, *, encoder: str) -> dict[str, Any]:
    """Both experiments and their ablations, each on a fresh brain in its own namespace."""
    out: dict[str, Any] = {"encoder": encoder, "one_shot": {}, "continual": {}}
    for i, hippocampus in enumerate((True, False)):
        async with Bus(url, namespace=f"epi{i}", name="bench-episodic") as bus:
            hits, ps = await one_shot(bus, data_dir / f"one-shot-{i}", hippocampus=hippocampus, encoder=encoder)
        out["one_shot"]["with_hippocampus" if hippocampus else "without_hippocampus"] = {
            "hits": hits, "n": len(ONE_SHOT_WORDS), "p_correct": round(statistics.mean(ps), 3)}
    for i, sleep in enumerate((True, False)):
        async with Bus(url, namespace=f"cont{i}", name="bench-episodic") as bus:
            acc, p = await continual(bus, data_dir / f"continual-{i}", sleep=sleep, encoder=encoder)
        out["continual"]["sleep" if sleep else "awake"] = {"accuracy": round(acc, 3), "p_correct": round(p, 3)}
    return out


def print_episodic(r: dict[str, Any]) -> None:
    print(f"\nepisodic memory and sleep (configs/memory.yaml, encoder {r['encoder']}):")
    print(f"{'condition':<44}{'correct':>10}{'p(correct)':>12}")
    for name, row in r["one_shot"].items():
        print(f"{'one-shot, ' + name.replace('_', ' '):<44}{str(row['hits']) + '/' + str(row['n']):>10}"
              f"{row['p_correct']:>12.3f}")
    for name, row in r["continual"].items():
        label = "retention of A after B, " + ("with a sleep" if name == "sleep" else "awake as long")
        print(f"{label:<44}{row['accuracy']:>10.2f}{row['p_correct']:>12.3f}")
    print(f"chance: {len(ONE_SHOT_WORDS) // len(ACTIONS)}/{len(ONE_SHOT_WORDS)}, p = {1 / len(ACTIONS):.2f}")


def episodic_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    with_, without = r["one_shot"]["with_hippocampus"], r["one_shot"]["without_hippocampus"]
    slept, awake = r["continual"]["sleep"], r["continual"]["awake"]
    return [
        {"name": "one-shot: p(correct) with vs without hippocampus",
         "value": f"{with_['p_correct']:.3f} vs {without['p_correct']:.3f}", "target": "with > without",
         "met": with_["p_correct"] > without["p_correct"]},
        {"name": "continual learning: retention of A (p correct) with vs without sleep",
         "value": f"{slept['p_correct']:.3f} vs {awake['p_correct']:.3f}", "target": "sleep > awake",
         "met": slept["p_correct"] > awake["p_correct"]},
    ]
