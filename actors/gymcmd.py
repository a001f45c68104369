"""`brainbus gym ENV_ID`: a Gymnasium environment played by a running brain, over the bus.

Exit 0 after the episodes; 130 on Ctrl-C (what was done is still written with ``--out``); 2 for
bad arguments (an unknown environment, an unsupported space, episodes < 1, gymnasium missing);
1 when no brain answers at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, NoReturn, TextIO

import orjson

from actors.argtypes import at_least_one, positive
from bus.errors import BadInput, BrainbusError
from bus.gym_bridge import DEFAULT_TIMEOUT_S, RunResult, run_episodes

__all__ = ["add_parser", "main", "parse_env_kwarg"]


def parse_env_kwarg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON when it is JSON (``is_slippery=false``), else as text."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a Python name, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The `gym` subcommand on the `brainbus` parser."""
    p: argparse.ArgumentParser = sub.add_parser(
        "gym", help="play a Gymnasium environment with a running brain (needs the gym extra)",
        description="Play a Gymnasium environment with a running brain: each observation goes to "
                    "stim.vector, the brain's motor.action steps the environment, and the reward goes "
                    "back on feedback.reward.")
    p.add_argument("env_id", metavar="ENV_ID",
                   help="a Gymnasium id: FrozenLake-v1, Taxi-v4, CartPole-v1, brainbus/TMaze-v0 ...")
    p.add_argument("--episodes", type=at_least_one, default=10, help="episodes to run (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first reset and of random actions (default: 0)")
    p.add_argument("--max-steps", type=at_least_one, help="truncate episodes after this many steps")
    p.add_argument("--env-kwarg", type=parse_env_kwarg, action="append", default=[], metavar="KEY=VALUE",
                   help="an argument for gymnasium.make (JSON values: is_slippery=false); repeatable")
    p.add_argument("--timeout", type=positive, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds to wait for each action before resending once (default: {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--out", type=Path, help="write the episodes as JSON to this file")
    p.add_argument("--nats", metavar="URL", help="NATS URL (default: NATS_URL, then the runtime file here)")
    p.add_argument("--namespace", metavar="NS", help="the brain's subject namespace (default: brain)")
    p.add_argument("--quiet", action="store_true", help="no progress line (there is none unless stderr is a terminal)")
    p.error = _one_line_error  # type: ignore[method-assign]
    return p


def _one_line_error(message: str) -> NoReturn:
    """A bad argument: one line naming it (no usage block), exit 2."""
    sys.stderr.write(f"brainbus gym: {message} (see brainbus gym --help)\n")
    sys.exit(2)


class _Progress:
    """One line on stderr, rewritten after each episode: count, running return, latency."""

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.width = 30

    def __call__(self, index: int, episode: dict[str, Any], result: RunResult) -> None:
        if not self.enabled:
            return
        done = index + 1
        filled = self.width * done // self.total
        recent = result.episodes[-100:]
        mean = sum(e["return"] for e in recent) / len(recent)
        p50 = result.latency_ms(50)
        lat = f"  p50 {p50:.1f} ms" if p50 is not None else ""
        extra = f"  timeouts {result.timeouts}" if result.timeouts else ""
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total}  "
                          f"return {episode['return']:.2f}  mean(last {len(recent)}) {mean:.3f}{lat}{extra}  ")
        self.stream.flush()

    def end(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _write(path: Path, result: RunResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2))


async def _run(args: argparse.Namespace) -> int:
    progress = _Progress(args.episodes, sys.stderr, not args.quiet and sys.stderr.isatty())
    try:
        result = await run_episodes(args.env_id, episodes=args.episodes, seed=args.seed, max_steps=args.max_steps,
                                    nats_url=args.nats, namespace=args.namespace, on_episode=progress,
                                    env_kwargs=dict(args.env_kwarg), timeout=args.timeout)
    finally:
        progress.end()
    if args.out is not None:
        _write(args.out, result)
    n = len(result.episodes)
    mean = sum(e["return"] for e in result.episodes) / n if n else float("nan")
    p50, p99 = result.latency_ms(50), result.latency_ms(99)
    lat = f", step latency p50 {p50:.1f} ms / p99 {p99:.1f} ms" if p50 is not None and p99 is not None else ""
    sys.stdout.write(f"{result.env_id}: {n} episode{'s' if n != 1 else ''}, mean return {mean:.3f}{lat}, "
                     f"{result.timeouts} timeouts, {result.random_actions} random actions"
                     f"{' (interrupted)' if result.interrupted else ''}\n")
    for reason, count in list(result.brain_errors.items())[:5]:
        sys.stderr.write(f"brain reported ({count}x): {reason}\n")
    return 130 if result.interrupted else 0


def main(args: argparse.Namespace) -> int:
    """Run the command (its own event loop); the exit status."""
    try:
        return asyncio.run(_run(args))
    except BadInput as exc:
        sys.stderr.write(f"brainbus gym: {exc}\n")
        return 2
    except BrainbusError as exc:
        sys.stderr.write(f"brainbus gym: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
