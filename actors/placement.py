"""Process groups: actors that run in their own OS process, supervised like one child.

`brainbus run` starts each group of the config as `brainbus run --only <its actors> --nats URL`,
with the brain role's credentials in its environment (`bus.auth.ENV_USER`, `ENV_PASSWORD`).
Since actors talk only through NATS, nothing else changes: a group process is a small brain of its
own. The parent restarts the process when it exits abnormally or stops heartbeating.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import structlog

from actors.config import ProcessGroup
from bus import Bus, Heartbeat, Meta, Subscription
from bus.errors import ActorError
from bus.process import die_with_parent

__all__ = ["ProcessChild"]

log = structlog.get_logger("actors.placement")

# A new process loads torch and perhaps a language model before its first heartbeat.
START_GRACE_S = 60.0


class ProcessChild:
    """One process group, watched through the heartbeats of its actors."""

    def __init__(self, group: ProcessGroup, *, config_file: Path, bus: Bus, url: str,
                 log_json: bool = False, restart: str = "permanent", env: dict[str, str] | None = None) -> None:
        """`env`: variables for the group's process on top of ours (its NATS credentials, which
        must not appear on its command line, where `ps` shows them to every user)."""
        self.name = group.name
        self.actors = list(group.actors)
        self.restart = restart
        self.restarts = 0
        self.config_file = config_file
        self.bus = bus
        self.url = url
        self.log_json = log_json
        self.env = dict(env or {})
        self.proc: asyncio.subprocess.Process | None = None
        self._done: asyncio.Future[None] | None = None
        self._waiter: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._started = 0.0
        self.last_seen: dict[str, float] = {}

    @property
    def done(self) -> asyncio.Future[None]:
        assert self._done is not None
        return self._done

    async def start(self) -> None:
        args = [sys.executable, "-m", "actors.cli", "run", "--config", str(self.config_file),
                "--nats", self.url, "--namespace", self.bus.subjects.ns,
                "--only", ",".join(self.actors), "--group", self.name]
        if self.log_json:
            args.append("--log-json")
        self._done = asyncio.get_running_loop().create_future()
        self.last_seen = {}
        self._started = time.monotonic()
        self._sub = await self.bus.subscribe("sys.heartbeat.*", self._on_heartbeat, model=Heartbeat)
        # A session of its own: a Ctrl-C in the terminal reaches the parent only, which then
        # stops the groups in order.
        self.proc = await asyncio.create_subprocess_exec(*args, start_new_session=True,
                                                         env={**os.environ, **self.env},
                                                         preexec_fn=die_with_parent())
        self._waiter = asyncio.ensure_future(self._wait(self.proc, self._done))
        log.info("placement.group_started", group=self.name, pid=self.proc.pid, actors=self.actors)

    async def _on_heartbeat(self, hb: Heartbeat, meta: Meta) -> None:
        if hb.actor in self.actors and hb.group == self.name:
            self.last_seen[hb.actor] = time.monotonic()

    async def _wait(self, proc: asyncio.subprocess.Process, done: asyncio.Future[None]) -> None:
        code = await proc.wait()
        if done.done():
            return
        if code == 0:
            done.set_result(None)
        else:
            done.set_exception(
                ActorError(f"process group {self.name!r} (pid {proc.pid}) exited with code {code}"))

    def hung_for(self) -> float:
        """Seconds since the quietest actor of the group last heartbeated (0 while starting up)."""
        now = time.monotonic()
        if len(self.last_seen) < len(self.actors):
            since_start = now - self._started
            return since_start if since_start > START_GRACE_S else 0.0
        return now - min(self.last_seen.values())

    def checkpoint(self) -> None:
        """The group process snapshots its own actors when it stops."""

    async def stop(self, grace: float) -> None:
        proc, self.proc = self.proc, None
        if self._sub is not None:
            await self._sub.stop()
            self._sub = None
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace + 5)
            except TimeoutError:
                log.warning("placement.group_killed", group=self.name, pid=proc.pid)
                proc.kill()
                await proc.wait()
        if self._waiter is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._waiter
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
