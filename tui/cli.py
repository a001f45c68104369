"""`brainbus tui`: wiring for the command line (`actors.cli` adds the parser, `actors.commands` runs it).

    from tui import cli as tui_cli
    tui_cli.add_parser(sub)                      # in actors.cli.build_parser
    handlers["tui"] = tui_cli.run                # in actors.commands.dispatch
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import structlog

from bus.runtime import open_private, private_dir, resolve_connection

__all__ = ["add_parser", "log_to_file", "run"]

LOG_FILE = Path(".brainbus") / "tui.log"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `tui` command to `brainbus`'s subparsers; returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "tui", help="watch a running brain and talk to it (Textual terminal UI)")
    add = parser.add_argument
    add("--nats", metavar="URL", help="NATS URL (default: NATS_URL, then the runtime file here)")
    add("--namespace", metavar="NS", help="the brain's subject namespace (default: brain)")
    add("--refresh", type=_hz, default=4.0, metavar="HZ", help="screen refreshes per second (default: 4)")
    add("--log-file", type=Path, default=LOG_FILE, help=f"where logs go (default: {LOG_FILE})")
    return parser


def _hz(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.2 <= value <= 30:
        raise argparse.ArgumentTypeError(f"must be between 0.2 and 30, got {text}")
    return value


def log_to_file(path: Path) -> None:
    """Send structlog output to a file: log lines on stderr would scribble over the screen."""
    private_dir(path.parent, existing=False)  # the data directory: made owner-only if made here
    # Closed by process exit; the TUI logs until then.
    log_file = os.fdopen(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "a", encoding="utf-8")
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
                    structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=log_file),
        cache_logger_on_first_use=False,
    )


async def run(args: argparse.Namespace) -> int:
    """Run the TUI until the person quits; 0 on a normal quit.

    Raises `bus.errors.BusError` (the CLI prints it, exit 1) when no brain can be located at all
    (no --nats, no NATS_URL, no runtime file). A brain that is located but not reachable is shown
    on screen instead, and the TUI keeps retrying.
    """
    from tui.app import BrainApp

    # Admin: the TUI pauses and resumes actors as well as watching and sending stimuli.
    url, namespace = resolve_connection(args.nats, args.namespace, role="admin")
    log_to_file(args.log_file)
    app = BrainApp(url, namespace, refresh_hz=args.refresh)
    await app.run_async()
    return app.return_code or 0
