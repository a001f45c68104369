"""`brainbus record` and `brainbus replay`: the bus's flight recorder on the command line.

    brainbus record session.jsonl --subjects 'stim.>' 'feedback.>' --duration 60
    brainbus replay session.jsonl --rate 2 --namespace other

Wiring (`actors.cli` adds the parsers, `actors.commands` runs them):

    recordcmd.add_parser(sub)                                   # in actors.cli.build_parser
    "record": recordcmd.run, "replay": recordcmd.run            # in actors.commands.dispatch

A recording that cannot be read fails before anything is published, with its line number (exit 2).
A replay some of whose messages the server refused (a subject the role may not publish on, a
message over the payload limit) says how many, and why, and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import structlog

from actors.argtypes import count, non_negative
from bus.client import Bus
from bus.errors import BadInput
from bus.recording import Recorder, RecordingError, ReplayResult, read_recording, replay
from bus.runtime import open_private, resolve_connection
from bus.subjects import Subjects

__all__ = ["add_parser", "run"]

log = structlog.get_logger("actors.recordcmd")


def add_parser(subparsers: Any) -> None:
    """Add `record` and `replay` to `brainbus`'s subparsers."""
    rec: argparse.ArgumentParser = subparsers.add_parser(
        "record", help="write bus traffic to a file (JSON lines with timestamps and headers)")
    rec.add_argument("file", type=Path, help="the recording to write (JSON lines)")
    rec.add_argument("--subjects", nargs="+", action="extend", metavar="PATTERN",
                     help="subject patterns, relative to the namespace (default: everything, NS.>)")
    rec.add_argument("--count", type=count, default=0, help="stop after N messages (0 = no limit)")
    rec.add_argument("--duration", type=non_negative, default=0.0,
                     help="stop after this many seconds (0 = until Ctrl-C)")
    rep: argparse.ArgumentParser = subparsers.add_parser(
        "replay", help="publish a recording again, with its timing scaled")
    rep.add_argument("file", type=Path, help="a recording made by `brainbus record`")
    rep.add_argument("--rate", type=non_negative, default=1.0,
                     help="speed: 2 = twice as fast, 0 = as fast as possible (default: 1)")
    rep.add_argument("--loop", action="store_true", help="start again at the end, until Ctrl-C")
    rep.add_argument("--subjects", nargs="+", action="extend", metavar="PATTERN",
                     help="replay only these subject patterns (relative to the target namespace)")
    for p in (rec, rep):
        p.add_argument("--nats", metavar="URL", help="NATS URL (default: NATS_URL, then the runtime file here)")
        p.add_argument("--log-json", action="store_true", help="log JSON lines")
    rec.add_argument("--namespace", metavar="NS", help="the brain's subject namespace (default: brain)")
    rep.add_argument("--namespace", metavar="NS",
                     help="publish into this namespace instead of the recorded one (rewrites the prefix)")


async def run(args: argparse.Namespace) -> int:
    """Run `record` or `replay`; 0 on success, 1 when the server refused replayed messages, 2 for
    a bad recording or bad arguments."""
    try:
        if args.command == "record":
            return await _record(args)
        return await _replay(args)
    except BadInput as exc:
        sys.stderr.write(f"brainbus {args.command}: {exc}\n")
        return 2


async def _connect(url: str, namespace: str, role: str) -> Bus:
    bus = Bus(url, namespace=namespace, name=f"brainbus-cli:{role}", source=f"cli-{role}")
    await bus.connect(timeout=3.0)
    return bus


async def _until_stopped(done: asyncio.Event, duration: float) -> None:
    """Wait for `done`, the duration, or SIGINT/SIGTERM, whichever comes first."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    waits = [asyncio.ensure_future(done.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, timeout=duration or None, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _record(args: argparse.Namespace) -> int:
    url, ns = resolve_connection(args.nats, args.namespace)
    subjects = Subjects(ns)
    patterns = [subjects.full(p, wildcards=True) for p in (args.subjects or [">"])]  # bad ones: exit 2
    try:
        # Owner-only (0600): a recording holds whatever crossed the bus.
        out = os.fdopen(open_private(args.file), "wb")
    except OSError as exc:
        raise BadInput(f"cannot write {args.file} ({exc.strerror})") from None
    bus = await _connect(url, ns, "record")
    try:
        with out:
            recorder = Recorder(bus, out, patterns, count=args.count)
            await recorder.start()
            log.info("record.started", file=str(args.file), subjects=patterns)
            await _until_stopped(recorder.done, args.duration)
            await recorder.stop()
    finally:
        await bus.close()
    sys.stdout.write(f"recorded {recorder.recorded} messages to {args.file}\n")
    return 0


async def _replay(args: argparse.Namespace) -> int:
    if args.namespace:
        Subjects(args.namespace)  # validates the token before anything else
    messages = read_recording(args.file)  # a bad file fails here, naming its line (exit 2)
    if not messages:
        raise RecordingError(f"{args.file}: the recording holds no messages")
    namespace = args.namespace or messages[0].subject.split(".", 1)[0]
    url, _ = resolve_connection(args.nats, namespace)
    bus = await _connect(url, namespace, "replay")
    result = ReplayResult()  # filled as it goes: a replay stopped by Ctrl-C still has its counts
    try:
        task = asyncio.ensure_future(replay(bus, messages, rate=args.rate, namespace=args.namespace,
                                            patterns=args.subjects, loop=args.loop, result=result))
        stopped = asyncio.Event()
        task.add_done_callback(lambda _: stopped.set())
        await _until_stopped(stopped, 0.0)
        if not task.done():
            task.cancel()
        outcome = (await asyncio.gather(task, return_exceptions=True))[0]
    finally:
        await bus.close()
    if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
        raise outcome
    if not result.refused:
        sys.stdout.write(f"replayed {result.published} messages from {args.file} into namespace {namespace}\n")
        return 0
    sys.stdout.write(f"replayed {result.accepted} of {result.published} messages from {args.file} into "
                     f"namespace {namespace}; the server refused {result.refused}\n")
    for reason, n in result.reasons.items():
        sys.stderr.write(f"brainbus replay: {n} refused: {reason}\n")
    return 1
