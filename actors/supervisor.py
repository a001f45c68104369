"""The Supervisor: builds the actors of a config, starts them, watches them (Erlang/OTP style).

Strategies: `one_for_one` restarts the failed child; `rest_for_one` also the children started after
it; `one_for_all` every child. Restart types: `permanent` always, `transient` only after a failure,
`temporary` never. Restart intensity: more than `max_restarts` failures within `max_seconds` and
the supervisor stops everything and raises `EscalationError` naming the actor and its last error.
A child whose handler runs longer than `hang_timeout` (or, for a process group, that stops
heartbeating) counts as failed and is restarted like a crashed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson
import structlog

from actors.actor import Actor, RestartRequested
from actors.config import ActorConfig, BrainConfig
from actors.determinism import derive_seed
from actors.device import resolve_device
from actors.registry import resolve_kind
from bus import Bus
from bus.durable import hold_intake, open_intake
from bus.errors import ActorError, ConfigError, EscalationError
from bus.models import SysError
from bus.runtime import open_private, private_dir

__all__ = ["ActorChild", "Child", "Supervisor", "SupervisorAware"]

log = structlog.get_logger("actors.supervisor")


class Child(Protocol):
    """What the supervisor watches: an actor in this process, or a process group."""

    name: str
    restarts: int

    @property
    def restart(self) -> str:
        """permanent, transient or temporary."""

    @property
    def done(self) -> asyncio.Future[None]: ...

    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None: ...

    def hung_for(self) -> float: ...

    def checkpoint(self) -> None: ...


@runtime_checkable
class SupervisorAware(Protocol):
    """An actor that manages its siblings (the hippocampus grows shards): before each start of
    such an actor, the supervisor of its process hands itself over. Other actors never see it."""

    def attach_supervisor(self, supervisor: Supervisor) -> None: ...


class ActorChild:
    """One actor of this process: its spec, its current incarnation and its last good state."""

    def __init__(self, name: str, spec: ActorConfig, bus: Bus, config: BrainConfig,
                 saved: dict[str, Any] | None = None) -> None:
        self.name = name
        self.spec = spec
        self.restart = spec.restart
        self.restarts = 0
        self.bus = bus
        self.config = config
        self.cls = resolve_kind(spec.kind)
        self.device = resolve_device(config.device)
        options = dict(spec.options)
        if config.deterministic and "seed" in self.cls.Options.model_fields and "seed" not in options:
            options["seed"] = derive_seed(config.seed, name)  # a seed set in the config wins
        self.options = self.cls.Options.model_validate(options)
        # An actor's own `device` option (a thalamus's encoder, a memory shard) is checked here
        # too, with the brain's: a CUDA device where there is none fails before anything starts.
        own_device = getattr(self.options, "device", None)
        if own_device:
            try:
                resolve_device(own_device)
            except ConfigError as exc:
                raise ConfigError(f"actors.{name}.options.device: {exc}") from None
        self.saved = saved
        self.actor: Actor | None = None
        #: Set by the Supervisor that owns this child; handed to SupervisorAware actors.
        self.supervisor: Supervisor | None = None

    @property
    def done(self) -> asyncio.Future[None]:
        assert self.actor is not None
        return self.actor.done

    async def start(self) -> None:
        self.actor = self.cls(
            self.name, self.bus, self.options,
            mailbox_capacity=self.spec.mailbox.capacity, overflow=self.spec.mailbox.overflow,
            heartbeat_interval=self.config.supervisor.heartbeat_interval,
            group=self.config.group_of(self.name), restarts=self.restarts, device=self.device,
            intake=self.config.intake,
        )
        self.actor.deterministic = self.config.deterministic
        if self.supervisor is not None and isinstance(self.actor, SupervisorAware):
            self.actor.attach_supervisor(self.supervisor)
        await self.actor.start(self.saved)

    async def stop(self, grace: float) -> None:
        if self.actor is not None:
            if not self.actor.done.done():
                self.checkpoint()
            await self.actor.stop(grace)

    def hung_for(self) -> float:
        return self.actor.busy_for() if self.actor is not None else 0.0

    def checkpoint(self) -> None:
        """Keep the actor's current state so a restart resumes from it."""
        if self.actor is None:
            return
        try:
            self.saved = self.actor.snapshot()
        except Exception as exc:
            log.warning("supervisor.snapshot_failed", actor=self.name, error=repr(exc))


class Supervisor:
    """Starts and watches children; `await run()` until `stop()` or an escalation."""

    def __init__(self, bus: Bus, config: BrainConfig, children: list[Child],
                 snapshot_dir: Path | None = None) -> None:
        self.bus = bus
        self.snapshot_dir = snapshot_dir
        self.config = config
        self.sup = config.supervisor
        self.children = children
        for child in children:
            if isinstance(child, ActorChild):
                child.supervisor = self
        # Children started by this run (stopped at the end): the config's and those added later.
        self._started: list[Child] = []
        self._running = False
        self._failures: deque[float] = deque()
        self._stop = asyncio.Event()
        self._last_checkpoint = time.monotonic()
        self.escalation: EscalationError | None = None

    @classmethod
    def for_actors(cls, bus: Bus, config: BrainConfig, names: list[str],
                   snapshot_dir: Path | None) -> Supervisor:
        """A supervisor of the named actors of `config`, restoring their saved snapshots."""
        children: list[Child] = []
        for name in names:
            saved = _load_snapshot(snapshot_dir, name) if snapshot_dir else None
            children.append(ActorChild(name, config.actors[name], bus, config, saved))
        return cls(bus, config, children, snapshot_dir)

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def request_stop(self) -> None:
        self._stop.set()

    async def add_child(self, child: Child) -> None:
        """Start a new child while the supervisor runs; from then on it is supervised like the others.

        Raises:
            ActorError: When the supervisor is not running (not started yet, or stopping).
            ValueError: When a child of that name already exists.
        """
        if not self._running or self._stop.is_set():
            raise ActorError(f"cannot add {child.name!r}: the supervisor is not running")
        if any(c.name == child.name for c in self.children):
            raise ValueError(f"a child named {child.name!r} already exists")
        if isinstance(child, ActorChild):
            child.supervisor = self
        await child.start()
        self.children.append(child)
        self._started.append(child)
        log.info("supervisor.child_added", actor=child.name)

    async def run(self) -> None:
        """Start every child and supervise until asked to stop; raises EscalationError on give-up."""
        started = self._started
        try:
            # Durable intake replays its backlog only once every actor here is subscribed: the
            # intake's output to an actor not yet listening would be lost on core NATS.
            hold_intake(self.bus)
            for child in self.children:
                await child.start()
                started.append(child)
            open_intake(self.bus)
            self._running = True
            log.info("supervisor.started", children=[c.name for c in self.children],
                     strategy=self.sup.strategy)
            stop_wait = asyncio.ensure_future(self._stop.wait())
            try:
                while not self._stop.is_set():
                    watched = {c.done: c for c in self.children}
                    waiting: list[asyncio.Future[Any]] = [*watched, stop_wait]
                    done, _ = await asyncio.wait(waiting, timeout=0.25, return_when=asyncio.FIRST_COMPLETED)
                    for fut in done:
                        if fut in watched:
                            await self._child_exited(watched[fut], _failure_of(fut))
                    for child in list(self.children):
                        hung = child.hung_for()
                        if hung > self.sup.hang_timeout and child in self.children:
                            await self._child_exited(child, TimeoutError(
                                f"hung: no progress for {hung:.1f} s "
                                f"(hang_timeout {self.sup.hang_timeout:g} s)"))
                    if time.monotonic() - self._last_checkpoint > self.sup.snapshot_interval:
                        self._checkpoint_all()
            finally:
                stop_wait.cancel()
        except EscalationError as exc:
            self.escalation = exc
            log.error("supervisor.escalated", actor=exc.actor, error=exc.last_error)
            with contextlib.suppress(Exception):
                await self.bus.publish(self.bus.subjects.sys_error, SysError(
                    actor="supervisor", subject=self.bus.subjects.ctl(exc.actor), reason=str(exc),
                    kind="escalation"), source="supervisor")
            raise
        finally:
            self._running = False
            await self._stop_all(started if self.escalation is None else self.children)

    async def _child_exited(self, child: Child, error: BaseException | None) -> None:
        operator = isinstance(error, RestartRequested)
        if child.restart == "temporary" or (child.restart == "transient" and error is None):
            log.info("supervisor.child_removed", actor=child.name, restart=child.restart,
                     error=None if error is None else str(error))
            await child.stop(0)
            self.children.remove(child)
            return
        if error is not None and not operator:
            now = time.monotonic()
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self.sup.max_seconds:
                self._failures.popleft()
            if len(self._failures) > self.sup.max_restarts:
                # Stop the failed child now: a hung one must not hold up the shutdown for a grace period.
                with contextlib.suppress(Exception):
                    await child.stop(0)
                raise EscalationError(child.name, _describe(error), len(self._failures), self.sup.max_seconds)
        if operator:
            child.checkpoint()  # a healthy actor restarted on request keeps its current state
        idx = self.children.index(child)
        if self.sup.strategy == "one_for_all":
            affected = list(self.children)
        elif self.sup.strategy == "rest_for_one":
            affected = self.children[idx:]
        else:
            affected = [child]
        log.warning("supervisor.restarting", actor=child.name, error=_describe(error),
                    strategy=self.sup.strategy, affected=[c.name for c in affected],
                    failures=len(self._failures))
        for other in reversed(affected):
            await other.stop(0 if other is child else self.sup.shutdown_grace)
        for other in affected:
            other.restarts += 1
            try:
                await other.start()
            except Exception as exc:  # a child that cannot come back: shut down cleanly, naming it
                raise EscalationError(other.name, f"restart failed: {_describe(exc)}", len(self._failures),
                                      self.sup.max_seconds) from exc

    def _checkpoint_all(self) -> None:
        self._last_checkpoint = time.monotonic()
        for child in self.children:
            child.checkpoint()

    async def _stop_all(self, children: list[Child]) -> None:
        # In start order: upstream actors (intake) stop first and drain into downstream ones,
        # which are still listening.
        for child in children:
            try:
                await child.stop(self.sup.shutdown_grace)
            except Exception as exc:
                log.error("supervisor.stop_failed", actor=child.name, error=repr(exc))
        if self.snapshot_dir is not None:
            for child in children:
                if isinstance(child, ActorChild) and child.saved:
                    _save_snapshot(self.snapshot_dir, child.name, child.saved)
        log.info("supervisor.stopped", children=[c.name for c in children])


def _failure_of(fut: asyncio.Future[None]) -> BaseException | None:
    if fut.cancelled():
        return asyncio.CancelledError("cancelled")
    return fut.exception()


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "exited"
    return f"{type(error).__name__}: {error}"


def _save_snapshot(directory: Path, name: str, state: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous snapshot intact. Owner-only (an
    actor's state holds what it learnt)."""
    private_dir(directory)
    path = directory / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    try:
        data = orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError as exc:
        log.error("supervisor.snapshot_not_serializable", actor=name, error=str(exc))
        return
    with os.fdopen(open_private(tmp), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load_snapshot(directory: Path, name: str) -> dict[str, Any] | None:
    path = directory / f"{name}.json"
    if not path.exists():
        return None
    try:
        state = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("supervisor.snapshot_unreadable", actor=name, path=str(path), error=str(exc))
        return None
    return state if isinstance(state, dict) else None
