"""A small task environment written with the brainbus SDK.

It declares two actions, shows the brain fruit and vehicle words, and rewards "eat" for fruit and
"drive" for vehicles. Start a brain first (`make run` or `brainbus run`) in this directory, then:

    .venv/bin/python examples/sdk_agent.py --trials 60
"""

from __future__ import annotations

import argparse
import asyncio
import random

import bus

WORDS = {"apple": "eat", "banana": "eat", "cherry": "eat", "truck": "drive", "bicycle": "drive", "bus": "drive"}


async def main(trials: int, url: str | None) -> None:
    async with bus.connect(url, name="sdk-agent") as brain:
        await brain.wait_ready()
        await brain.declare_actions(["eat", "drive"], env="fruit-or-vehicle")
        correct = 0
        for trial in range(1, trials + 1):
            word = random.choice(list(WORDS))
            sid = await brain.stimulus(text=word)
            action = await brain.action_for(sid, timeout=5)
            good = action.action == WORDS[word]
            correct += good
            await brain.reward(1.0 if good else -1.0, stimulus_id=sid)
            if trial % 10 == 0:
                print(f"trial {trial:4d}: {correct / trial:.0%} correct so far ({word} -> {action.action})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--nats", help="NATS URL (default: NATS_URL, then the runtime file here)")
    args = parser.parse_args()
    asyncio.run(main(args.trials, args.nats))
