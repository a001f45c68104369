"""What each `brainbus` command does (parsing lives in `actors.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from actors import creds, recordcmd
from actors.brain import run_brain
from actors.config import load_config
from bus import Bus, Heartbeat, Meta, codec
from bus.errors import BadInput, BusError, DecodeError, NoRespondersError
from bus.models import model_for_subject
from bus.runtime import read_runtime, resolve_connection
from bus.subjects import Subjects
from tui import cli as tui_cli

__all__ = ["dispatch", "render"]


async def dispatch(args: argparse.Namespace) -> int:
    handlers = {"run": cmd_run, "pub": cmd_pub, "sub": cmd_sub, "req": cmd_req, "status": cmd_status,
                "tui": tui_cli.run, "schema": cmd_schema, "bench": cmd_bench,
                "record": recordcmd.run, "replay": recordcmd.run, "creds": creds.run}
    return await handlers[args.command](args)


# ---------------------------------------------------------------- run


async def cmd_run(args: argparse.Namespace) -> int:
    from actors.cli import DEFAULT_CONFIG

    config = load_config(args.config or DEFAULT_CONFIG)
    overrides: dict[str, Any] = {}
    if args.namespace:
        Subjects(args.namespace)  # validates the token
        overrides["namespace"] = args.namespace
    if args.data_dir:
        overrides["data_dir"] = str(args.data_dir)
    if overrides:
        config = config.model_copy(update=overrides)
    url = args.nats or config.nats.url
    config = creds.apply_listen(config, args.listen, url)
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    if only is not None and not only:
        raise BadInput("--only needs at least one actor name")
    attach = None
    if args.tui:
        tui_cli.log_to_file(Path(config.data_dir) / "brain.log")

        async def attach(url: str, namespace: str) -> None:
            from tui.app import BrainApp

            await BrainApp(url, namespace).run_async()

    return await run_brain(config, url=url, only=only, group=args.group, log_json=args.log_json, attach=attach)


# ---------------------------------------------------------------- pub / req


def _body(args: argparse.Namespace) -> bytes:
    if args.data is not None:
        return str(args.data).encode()
    if sys.stdin.isatty():
        raise BadInput("give the message body as an argument or on standard input")
    return sys.stdin.buffer.read()


def _check(subjects: Subjects, subject: str, data: bytes) -> None:
    """Validate `data` against the subject's model, as the brain will (exit 2 on failure)."""
    model = model_for_subject(subjects.relative(subject))
    if model is not None:
        codec.decode(model, data, None, subject)


async def _bus(args: argparse.Namespace, role: str) -> Bus:
    url, ns = resolve_connection(args.nats, args.namespace)
    bus = Bus(url, namespace=ns, name=f"brainbus-cli:{role}", source=f"cli-{role}")
    await bus.connect(timeout=3.0)
    return bus


def _namespace(args: argparse.Namespace) -> str:
    """The namespace a command addresses, without needing a reachable brain (for local checks)."""
    runtime = read_runtime()
    return str(args.namespace or (runtime.namespace if runtime else "brain"))


async def cmd_pub(args: argparse.Namespace) -> int:
    # Bad arguments are rejected (exit 2) before looking for a brain to connect to.
    ns = _namespace(args)
    subject = Subjects(ns).full(args.subject)
    data = _body(args)
    if not args.raw:
        _check(Subjects(ns), subject, data)
    bus = await _bus(args, "pub")
    try:
        await bus.publish_raw(subject, data)
        await bus.flush()
    finally:
        await bus.close()
    print(f"published {len(data)} bytes on {subject}")
    return 0


async def cmd_req(args: argparse.Namespace) -> int:
    ns = _namespace(args)
    subject = Subjects(ns).full(args.subject)
    data = _body(args)
    _check(Subjects(ns), subject, data)
    bus = await _bus(args, "req")
    try:
        if args.gather or subject.endswith(".sys.ctl.all"):
            inbox = bus.nc.new_inbox()
            replies: asyncio.Queue[Any] = asyncio.Queue()
            sub = await bus.nc.subscribe(inbox, cb=replies.put)
            await bus.nc.publish(subject, data, reply=inbox)
            await asyncio.sleep(args.timeout)
            await sub.unsubscribe()
            if replies.empty():
                raise BusError(f"no reply on {subject} within {args.timeout:g} s")
            while not replies.empty():
                m = replies.get_nowait()
                print(orjson.dumps(render(m.subject, m.data, m.headers)).decode())
            return 0
        try:
            answer = await bus.nc.request(subject, data, timeout=args.timeout)
        except Exception as exc:
            name = type(exc).__name__
            if "NoResponders" in name:
                raise NoRespondersError(subject) from None
            if "Timeout" in name:
                raise BusError(f"no reply on {subject} within {args.timeout:g} s") from None
            raise
        print(orjson.dumps(render(answer.subject, answer.data, answer.headers)).decode())
        return 0
    finally:
        await bus.close()


# ---------------------------------------------------------------- sub


def render(subject: str, data: bytes, headers: dict[str, str] | None, *, full: bool = False) -> Any:
    """Any message as JSON-ready data: typed by its header or subject, else JSON, else text."""
    try:
        obj = codec.decode_any(data, headers, subject)
        if obj is None:
            ns = subject.split(".", 1)[0]
            model = model_for_subject(Subjects(ns).relative(subject)) if "." in subject else None
            obj = codec.decode(model, data, headers, subject)[0] if model else None
    except (DecodeError, BadInput):
        obj = None
    if obj is not None:
        payload = orjson.loads(codec.to_json(obj))
        return payload if full else _abbreviate(payload)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode("utf-8", errors="replace")


def _abbreviate(value: Any) -> Any:
    if isinstance(value, list) and len(value) > 8 and all(isinstance(x, float | int) for x in value):
        return f"[{len(value)} numbers: {', '.join(f'{x:.3f}' for x in value[:3])}, ...]"
    if isinstance(value, dict):
        return {k: _abbreviate(v) for k, v in value.items()}
    return value


async def cmd_sub(args: argparse.Namespace) -> int:
    bus = await _bus(args, "sub")
    seen = 0
    finished = asyncio.Event()

    async def show(msg: Any) -> None:
        nonlocal seen
        if finished.is_set():
            return
        seen += 1
        body = render(msg.subject, msg.data, msg.headers, full=args.json)
        if args.json:
            line = orjson.dumps({"subject": msg.subject, "headers": msg.headers or {}, "data": body})
            print(line.decode(), flush=True)
        else:
            text = body if isinstance(body, str) else orjson.dumps(body).decode()
            print(f"{msg.subject}  {text}", flush=True)
        if args.count and seen >= args.count:
            finished.set()

    try:
        await bus.subscribe_raw(args.pattern, show)
        try:
            await asyncio.wait_for(finished.wait(), args.timeout)
        except TimeoutError:
            pass
    finally:
        await bus.close()
    return 0


# ---------------------------------------------------------------- status


async def cmd_status(args: argparse.Namespace) -> int:
    bus = await _bus(args, "status")
    latest: dict[str, Heartbeat] = {}

    async def beat(hb: Heartbeat, meta: Meta) -> None:
        latest[hb.actor] = hb

    try:
        await bus.subscribe("sys.heartbeat.*", beat, model=Heartbeat)
        await asyncio.sleep(args.wait)
    finally:
        await bus.close()
    if not latest:
        raise BusError(f"no actor heartbeat within {args.wait:g} s on {bus.subjects.heartbeats} "
                       "— is a brain running?")
    rows = sorted(latest.values(), key=lambda h: (h.group, h.actor))
    if args.json:
        print(orjson.dumps([h.model_dump(mode="json") for h in rows]).decode())
        return 0
    cols = ["actor", "kind", "group", "pid", "state", "in", "out", "mailbox", "dropped", "rejected",
            "errors", "restarts", "p50 ms", "uptime s"]
    table = [cols] + [[h.actor, h.kind, h.group, str(h.pid), h.state, str(h.msgs_in), str(h.msgs_out),
                       f"{h.mailbox}/{h.mailbox_capacity}", str(h.dropped), str(h.rejected), str(h.errors),
                       str(h.restarts), f"{h.latency_ms_p50:.2f}", f"{h.uptime_s:.0f}"] for h in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


# ---------------------------------------------------------------- schema and bench


async def cmd_schema(args: argparse.Namespace) -> int:
    from bus.schema import write_schema

    files = write_schema(Path(args.out))
    print(f"wrote {len(files)} files to {args.out}/ (asyncapi.json, wire.md and one schema per message)")
    return 0


async def cmd_bench(args: argparse.Namespace) -> int:
    from bench import benchmark

    out = args.out or Path("bench-results") / f"{args.name}.json"
    started = time.monotonic()
    await benchmark(args.name)(out, quick=args.quick)
    print(f"({time.monotonic() - started:.0f} s; results in {out})")
    return 0
