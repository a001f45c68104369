"""Attention under a distractor: the global workspace's part of `brainbus bench cognition`.

One stimulus at a time leaves the workspace nothing to select, so the reversal task cannot show
what it is for. Here every trial shows two stimuli at once, in random order: a target word (8
words, each with its correct action out of 4) and the same background phrase every time. The
environment takes the brain's *first* action of the trial as its answer (one response per trial,
as in a reaction-time task) and rewards it: +1 for the target's correct action, -1 otherwise
(an action on the background is wrong). Two brains, the default one (configs/default.yaml) and the
same with the workspace bypassed (`workspace.compete: false`: every bid broadcast as it comes):

* full: the habituated background bids with a low salience, so the workspace broadcasts the target
  first and the choice is made on it;
* bypassed: whichever stimulus the senses finish first is broadcast first, about half the time
  the background, and the interleaved actions also blur the credit of each reward.

Reported: reward rate over all trials and over the second half, and how often the first action
answered the background. The brain runs in this process under its own supervisor; the
environment talks to it only over NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
from pathlib import Path
from typing import Any

from actors.config import BrainConfig, load_config
from actors.inprocess import running_brain
from bus import Bus, EnvActions, Meta, MotorAction, Reward, TextStimulus

__all__ = ["attention_targets", "distractor_task", "print_attention", "run_attention_bench"]

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
ACTIONS = ["press_a", "press_b", "press_c", "press_d"]
WORDS = ["kettle", "violin", "glacier", "pepper", "saddle", "lantern", "orchid", "anchor"]
BACKGROUND = "static noise"
ITI_S = 0.05
ANSWER_WITHIN_S = 1.0


def attention_brain(namespace: str, data_dir: Path, *, compete: bool, encoder: str) -> BrainConfig:
    data = load_config(DEFAULT_CONFIG).model_dump()
    data.update(namespace=namespace, data_dir=str(data_dir))
    data["actors"]["thalamus"]["options"]["encoder"] = encoder
    data["actors"]["workspace"]["options"]["compete"] = compete
    return BrainConfig.model_validate(data)


async def distractor_task(bus: Bus, data_dir: Path, *, compete: bool, encoder: str = "hashing",
                          trials: int = 200, seed: int = 1) -> dict[str, Any]:
    """Run the task on a fresh brain; the per-trial rewards (0/1) and first-action targets."""
    rng = random.Random(seed)
    mapping = {w: rng.choice(ACTIONS) for w in WORDS}
    first: dict[str, MotorAction] = {}  # trial -> the first action that answered one of its stimuli
    answered = asyncio.Event()  # the current trial has its first action

    async def on_action(msg: MotorAction, meta: Meta) -> None:
        trial = msg.stimulus_id.rsplit("-", 1)[-1]
        if trial not in first:
            first[trial] = msg
            answered.set()

    sub = await bus.subscribe("motor.action", on_action, model=MotorAction)
    rewarded: list[int] = []
    on_background = unanswered = 0
    config = attention_brain(bus.subjects.ns, data_dir, compete=compete, encoder=encoder)
    try:
        async with running_brain(bus, config):
            await bus.publish("env.actions", EnvActions(actions=ACTIONS, env="distractor-task"))
            await bus.flush()
            await asyncio.sleep(0.2)
            for t in range(trials):
                word = rng.choice(WORDS)
                pair = [(f"target-{t}", word), (f"background-{t}", BACKGROUND)]
                rng.shuffle(pair)
                answered.clear()
                for sid, text in pair:
                    await bus.publish("stim.text", TextStimulus(text=text, id=sid))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(answered.wait(), ANSWER_WITHIN_S)
                action = first.get(str(t))
                if action is None:
                    unanswered += 1
                    rewarded.append(0)
                    continue
                correct = action.stimulus_id.startswith("target-") and action.action == mapping[word]
                on_background += action.stimulus_id.startswith("background-")
                rewarded.append(int(correct))
                await bus.publish("feedback.reward", Reward(value=1.0 if correct else -1.0,
                                                            stimulus_id=action.stimulus_id))
                await asyncio.sleep(ITI_S)
    finally:
        await sub.stop()
    half = len(rewarded) // 2
    return {"trials": trials, "reward_rate": round(statistics.mean(rewarded), 3),
            "reward_rate_second_half": round(statistics.mean(rewarded[half:]), 3),
            "first_action_on_background": round(on_background / trials, 3), "unanswered": unanswered}


async def run_attention_bench(url: str, data_dir: Path, *, encoder: str, trials: int = 200) -> dict[str, Any]:
    """The full brain and the bypassed workspace, each on a fresh brain in its own namespace."""
    out: dict[str, Any] = {"encoder": encoder, "conditions": {}}
    for i, compete in enumerate((True, False)):
        async with Bus(url, namespace=f"att{i}", name="bench-attention") as bus:
            out["conditions"]["full" if compete else "no_workspace"] = await distractor_task(
                bus, data_dir / f"attention-{i}", compete=compete, encoder=encoder, trials=trials)
    return out


def print_attention(r: dict[str, Any]) -> None:
    print(f"\nattention: a target word and a constant background at once, first action answers "
          f"(configs/default.yaml, encoder {r['encoder']}):")
    print(f"{'brain':<26}{'reward':>8}{'2nd half':>10}{'on background':>15}{'unanswered':>12}")
    for name, row in r["conditions"].items():
        print(f"{name:<26}{row['reward_rate']:>8.2f}{row['reward_rate_second_half']:>10.2f}"
              f"{row['first_action_on_background']:>15.2f}{row['unanswered']:>12}")


def attention_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    full, bypassed = r["conditions"]["full"], r["conditions"]["no_workspace"]
    return [{"name": "distractor task: second-half reward, full brain vs workspace bypassed",
             "value": f"{full['reward_rate_second_half']:.2f} vs {bypassed['reward_rate_second_half']:.2f}",
             "target": "full > bypassed",
             "met": full["reward_rate_second_half"] > bypassed["reward_rate_second_half"]}]
