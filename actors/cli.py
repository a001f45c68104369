"""The `brainbus` command line. Bad arguments exit 2 with a message on stderr; failures exit 1."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from actors import creds, gymcmd, recordcmd
from actors.argtypes import count, positive
from actors.logs import configure_logging
from bench import BENCHMARKS
from bus.errors import BadInput, BrainbusError
from tui import cli as tui_cli

__all__ = ["main"]

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brainbus", description="A brain of asynchronous actors on NATS.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def connected(p: argparse.ArgumentParser) -> None:
        p.add_argument("--nats", metavar="URL",
                       help="NATS URL (default: NATS_URL, then the runtime file here)")
        p.add_argument("--namespace", metavar="NS", help="the brain's subject namespace (default: brain)")
        p.add_argument("--log-json", action="store_true", help="log JSON lines")

    run = sub.add_parser("run", help="run a brain (embedded NATS server unless --nats is given)")
    connected(run)
    run.add_argument("--config", type=Path, default=None,
                     help=f"brain config YAML (default: {DEFAULT_CONFIG.name})")
    run.add_argument("--only", metavar="A,B",
                     help="run only these actors (against an existing NATS, with --nats)")
    run.add_argument("--group", default="main", help=argparse.SUPPRESS)
    run.add_argument("--data-dir", type=Path, help="where snapshots and the JetStream store live")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--tui", action="store_true",
                     help="watch it in the terminal UI; quitting the UI stops the brain (logs go to .brainbus/)")
    creds.add_listen_argument(run)

    pub = sub.add_parser("pub", help="publish a message (JSON or text) on a subject")
    connected(pub)
    pub.add_argument("subject", help="subject, relative to the namespace (stim.text) or full")
    pub.add_argument("data", nargs="?", help="message body (default: read standard input)")
    pub.add_argument("--raw", action="store_true", help="send as is, without checking it against the schema")

    sb = sub.add_parser("sub", help="print messages on a subject pattern")
    connected(sb)
    sb.add_argument("pattern", help="subject pattern, wildcards allowed (gw.>, sys.heartbeat.*)")
    sb.add_argument("--json", action="store_true", help="one JSON object per line, vectors in full")
    sb.add_argument("--count", type=count, default=0, help="stop after N messages (0 = forever)")
    sb.add_argument("--timeout", type=positive, help="stop after this many seconds")

    req = sub.add_parser("req", help="send a request and print the reply (all replies for sys.ctl.all)")
    connected(req)
    req.add_argument("subject")
    req.add_argument("data", nargs="?", help="request body (default: read standard input)")
    req.add_argument("--timeout", type=positive, default=2.0)
    req.add_argument("--gather", action="store_true", help="collect every reply until the timeout")

    st = sub.add_parser("status", help="live actors, from their heartbeats")
    connected(st)
    st.add_argument("--wait", type=positive, default=1.5, help="seconds to listen for heartbeats")
    st.add_argument("--json", action="store_true")

    tui_cli.add_parser(sub)
    recordcmd.add_parser(sub)
    creds.add_parser(sub)
    gymcmd.add_parser(sub)

    sc = sub.add_parser("schema", help="write the JSON Schema of every message and an AsyncAPI document")
    sc.add_argument("--out", type=Path, default=Path("schema"), help="output directory (default: ./schema)")

    be = sub.add_parser("bench", help="run a benchmark, print a table and write JSON")
    be.add_argument("name", choices=sorted(BENCHMARKS))
    be.add_argument("--out", type=Path, help="JSON results file (default: bench-results/NAME.json)")
    be.add_argument("--quick", action="store_true", help="fewer messages (a smoke run)")
    be.add_argument("--log-json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(json=getattr(args, "log_json", False), level=getattr(args, "log_level", "info"))
    if args.command == "gym":
        return gymcmd.main(args)
    from actors import commands

    try:
        return asyncio.run(commands.dispatch(args))
    except BadInput as exc:
        print(f"brainbus {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrainbusError as exc:
        print(f"brainbus {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
