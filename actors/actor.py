"""The Actor base class: typed handlers, a bounded mailbox, ticks, heartbeats, control, snapshots.

An actor declares what it listens to with `@on(subject)` on methods whose first argument is
annotated with a message model; `@every(seconds)` marks periodic ticks. The supervisor builds it
with a `Bus`, starts it, and restarts it when it crashes (`done` completes with the exception).

    class Echo(Actor):
        kind = "echo"

        @on("stim.text")
        async def heard(self, msg: TextStimulus, meta: Meta) -> None:
            await self.publish(self.bus.subjects.region_out(self.name),
                               RegionOutput(region=self.name, kind="echo", data={"text": msg.text}))

Handlers of one actor run one at a time (set `concurrency` for more). A handler that raises
`BadInput` rejects its message (counted, reported on `NS.sys.error`). Any other exception is
reported too (`handler_error`) and the actor goes on with its next message; only
`failures_to_crash` failures in a row, or a failing tick, crash the actor, which is then handed
to the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import time
import typing
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import structlog
from pydantic import BaseModel, ConfigDict

from bus import Bus, Meta, Subscription
from bus.durable import Ack, DurableIntake, is_intake_subject
from bus.errors import ActorError, BadInput
from bus.models import MAX_REASON, STIMULUS_ID, CtlReply, CtlRequest, Heartbeat, Message, SysError, shorten

__all__ = ["Actor", "ActorState", "NoOptions", "RestartRequested", "every", "on"]

log = structlog.get_logger("actors")
Overflow = Literal["drop_oldest", "drop_newest"]
# The kinds of `SysError` (bus.models) an actor reports.
ReportKind = Literal["bad_input", "handler_error", "overflow", "no_actions", "crash", "escalation"]
HandlerFn = Callable[[Any, Message, Meta], Awaitable[Message | None]]
Intake = Literal["core", "durable"]


class ActorState(enum.StrEnum):
    NEW = "new"
    #: Reported in heartbeats only: running (handling messages) while a slow set-up, such as a
    #: model load, goes on in the background (`Actor.ready`).
    LOADING = "loading"
    RUNNING = "running"
    PAUSED = "paused"
    SLEEPING = "sleeping"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"


class NoOptions(BaseModel):
    """Options of an actor that takes none (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")


class RestartRequested(ActorError):
    """An operator asked for a restart (`sys.ctl.<actor> restart`); not a failure."""


@dataclass(frozen=True, slots=True)
class _HandlerSpec:
    subject: str
    attr: str
    model: type[Message] | None
    when: str | None = None


def on(subject: str, *, when: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark an async method as the handler of `subject` (relative to the namespace, wildcards ok).

    `{name}` in the subject is replaced by the actor's option `name` when it starts, so a config
    can say where an actor listens (`@on("region.{context_source}.out")`). With `when="option"`
    the actor subscribes only if that option is true: no decoding, no mailbox slots for
    messages it has no use for.

    The method's first parameter annotation gives the message model; `Message` itself means
    "whatever model is registered for each concrete subject".
    """

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__dict__.setdefault("_bb_subjects", []).append((subject, when))
        return fn

    return mark


def every(seconds: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark an async method (no arguments) as a tick run every `seconds`, serialized with handlers."""
    if seconds <= 0:
        raise ValueError(f"tick interval must be positive, got {seconds}")

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__dict__["_bb_every"] = seconds
        return fn

    return mark


class _RateLimit:
    """Token bucket for error reports: a flood of bad input must not become a flood of reports."""

    def __init__(self, rate: float = 10.0, burst: float = 20.0) -> None:
        self.rate, self.burst, self.tokens, self.t = rate, burst, burst, time.monotonic()
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.suppressed += 1
        return False


class Actor:
    """Base class of every actor. Subclasses set `kind`, optionally `Options`, and declare handlers."""

    kind: ClassVar[str] = "actor"
    Options: ClassVar[type[BaseModel]] = NoOptions
    #: Handlers that may run at once (1 = strictly one at a time, the default).
    concurrency: int = 1
    #: Failed handler calls in a row (no success between them) that count as a fault of the actor
    #: and crash it; fewer are put down to the messages and only reported (`handler_error`).
    failures_to_crash: ClassVar[int] = 3
    #: The brain runs in deterministic mode (actors.determinism); set by the supervisor before start.
    deterministic: bool = False
    _handlers: ClassVar[tuple[_HandlerSpec, ...]] = ()
    _ticks: ClassVar[tuple[tuple[str, float], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: list[_HandlerSpec] = []
        ticks: list[tuple[str, float]] = []
        for attr in dir(cls):
            fn = getattr(cls, attr, None)
            subjects = getattr(fn, "_bb_subjects", None)
            if subjects:
                model = _handler_model(cls, attr, fn)
                handlers.extend(_HandlerSpec(s, attr, model, when) for s, when in subjects)
            seconds = getattr(fn, "_bb_every", None)
            if seconds is not None:
                if not asyncio.iscoroutinefunction(fn):
                    raise TypeError(f"{cls.__name__}.{attr}: a tick must be an async method")
                ticks.append((attr, seconds))
        cls._handlers = tuple(handlers)
        cls._ticks = tuple(ticks)

    def __init__(
        self,
        name: str,
        bus: Bus,
        options: BaseModel | None = None,
        *,
        mailbox_capacity: int = 1024,
        overflow: Overflow = "drop_oldest",
        heartbeat_interval: float = 1.0,
        group: str = "main",
        restarts: int = 0,
        device: str = "cpu",
        intake: Intake = "core",
    ) -> None:
        self.name = name
        self.bus = bus
        self.options: Any = options if options is not None else self.Options()
        self.group = group
        #: The brain's torch device (`cpu`, `cuda`, `cuda:N`), resolved from the config's `device`.
        self.device = device
        self.restarts = restarts
        #: `durable`: intake handlers (`stim.*`, `feedback.*`) also consume the JetStream intake (bus.durable).
        self.intake = intake
        self.heartbeat_interval = heartbeat_interval
        self.state = ActorState.NEW
        self.log = log.bind(actor=name)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._capacity = mailbox_capacity
        self._overflow = overflow
        self._mailbox: deque[tuple[HandlerFn, Message, Meta]] = deque()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set each time a handler or tick finishes
        self._tick_due: dict[str, bool] = {}
        self._subs: list[Subscription | DurableIntake] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._report_limit = _RateLimit()
        self._started = time.monotonic()
        self._busy_since: float | None = None
        self._failures = 0  # failed handler calls since the last one that succeeded
        self._latencies: deque[float] = deque(maxlen=512)
        self.stats = {"msgs_in": 0, "msgs_out": 0, "dropped": 0, "rejected": 0, "errors": 0}

    # ---------------------------------------------------------------- hooks for subclasses

    async def on_start(self) -> None:
        """Called once before the first message; set up state, load models."""

    async def on_stop(self) -> None:
        """Called once after the last message; release resources."""

    async def on_sleep(self) -> None:
        """`sys.ctl sleep`: consolidate, prune. The actor keeps state SLEEPING until `wake`."""

    async def on_wake(self) -> None:
        """`sys.ctl wake`: leave sleep."""

    def snapshot(self) -> dict[str, Any]:
        """State to keep across restarts; JSON-safe values only."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore what `snapshot` returned (after a restart or a new run); runs after `on_start`."""

    def extra_stats(self) -> dict[str, Any]:
        """Actor-specific figures added to each heartbeat."""
        return {}

    def ready(self) -> bool:
        """Whether the actor does all its work yet; while not, a running actor's heartbeats say
        `loading`.

        An actor with a slow set-up (a model to load) subscribes and heartbeats at once and runs
        the set-up in the background (`_spawn` from `on_start`), not ready meanwhile: it is seen
        alive (not hung), and programs that need it fully working wait for `running`.
        """
        return True

    # ---------------------------------------------------------------- helpers for subclasses

    async def publish(self, subject: str, msg: Message, *, stimulus_id: str | None = None) -> None:
        await self.bus.publish(subject, msg, stimulus_id=stimulus_id, source=self.name)
        self.stats["msgs_out"] += 1

    async def report(self, subject: str, reason: str, *, kind: ReportKind = "bad_input",
                     stimulus_id: str | None = None) -> None:
        """Report a rejected message or failure on `NS.sys.error` (rate limited, never raises)."""
        if self._report_limit.allow():
            await self._send_report(subject, reason, kind, stimulus_id)

    def report_soon(self, subject: str, reason: str, *, kind: ReportKind = "bad_input",
                    stimulus_id: str | None = None) -> None:
        """`report` from synchronous code: the rate limit is checked now, the publish runs as a task."""
        if self._report_limit.allow():
            self._spawn(self._send_report(subject, reason, kind, stimulus_id), f"{self.name}.report")

    async def _send_report(self, subject: str, reason: str, kind: ReportKind,
                           stimulus_id: str | None) -> None:
        suppressed, self._report_limit.suppressed = self._report_limit.suppressed, 0
        # Whatever the input held, a report and its log line stay small (reasons may quote input).
        subject, reason = shorten(subject, 256), shorten(reason, MAX_REASON)
        if stimulus_id is not None and not STIMULUS_ID.fullmatch(stimulus_id):
            stimulus_id = None
        self.log.warning("actor.reported", subject=subject, reason=reason, kind=kind, suppressed=suppressed)
        err = SysError.model_construct(actor=self.name, subject=subject, reason=reason, kind=kind,
                                       stimulus_id=stimulus_id, suppressed=suppressed)
        with contextlib.suppress(Exception):
            await self.bus.publish(self.bus.subjects.sys_error, err, stimulus_id=stimulus_id,
                                   source=self.name)

    async def listen(self, subject: str, handler: Callable[[Any, Any, Meta], Awaitable[Message | None]]) -> None:
        """Subscribe `handler` (an unbound method, like an `@on` one) from `on_start`, through the
        mailbox: for subjects an actor needs only in some modes (deterministic mode)."""
        model = _handler_model(type(self), getattr(handler, "__name__", "?"), handler)
        self._subs.append(await self.bus.subscribe_direct(
            subject, self._enqueuer(handler), model=model, on_bad=self._on_bad))

    def call_later(self, delay: float, tick: str) -> None:
        """Run the tick method named `tick` once after `delay` seconds, serialized with handlers."""
        asyncio.get_running_loop().call_later(delay, self._mark_due, tick)

    def _mark_due(self, tick: str) -> None:
        # Recorded even while paused (it runs on resume): a one-off `call_later` must not be lost.
        if self.state not in (ActorState.STOPPING, ActorState.STOPPED, ActorState.CRASHED):
            self._tick_due[tick] = True
            self._wake.set()

    def busy_for(self) -> float:
        """Seconds the current handler has been running (0 when idle): the supervisor's hang check."""
        return 0.0 if self._busy_since is None else time.monotonic() - self._busy_since

    @property
    def mailbox_depth(self) -> int:
        return len(self._mailbox)

    # ---------------------------------------------------------------- lifecycle (supervisor)

    async def start(self, state: dict[str, Any] | None = None) -> None:
        """Run `on_start`, then `restore(state)` if given, then subscribe and start working."""
        if self.state is not ActorState.NEW:
            raise ActorError(f"actor {self.name!r} was already started; a restart makes a new instance")
        await self.on_start()
        if state:
            try:
                self.restore(state)
            except Exception as exc:  # a snapshot of an older version must not block start-up
                self.log.warning("actor.restore_failed", error=repr(exc))
        for spec in self._handlers:
            if spec.when is not None and not getattr(self.options, spec.when):
                continue
            fn = getattr(type(self), spec.attr)
            # `@on("region.{context_source}.out")`: the subject names an option of this actor.
            subject = spec.subject.format_map(self.options.model_dump()) if "{" in spec.subject else spec.subject
            self._subs.append(await self.bus.subscribe_direct(
                subject, self._enqueuer(fn), model=spec.model, on_bad=self._on_bad))
            if self.intake == "durable" and is_intake_subject(subject):
                intake = DurableIntake(self.bus, consumer=self.name, pattern=subject, model=spec.model,
                                       deliver=self._durable_enqueuer(fn), on_bad=self._on_bad,
                                       room=lambda: self._capacity - len(self._mailbox))
                await intake.start()
                self._subs.append(intake)
        for subject in (self.bus.subjects.ctl(self.name), self.bus.subjects.ctl_all):
            self._subs.append(await self.bus.subscribe(
                subject, self._on_ctl, model=CtlRequest, on_bad=self._on_bad_ctl))
        self.state = ActorState.RUNNING
        for i in range(max(1, self.concurrency)):
            self._spawn(self._run(), f"{self.name}.worker{i}", critical=True)
        for attr, seconds in self._ticks:
            self._spawn(self._ticker(attr, seconds), f"{self.name}.tick.{attr}")
        self._spawn(self._heartbeats(), f"{self.name}.heartbeat")
        self.log.info("actor.started", kind=self.kind, group=self.group, restarts=self.restarts)

    async def stop(self, grace: float = 2.0) -> None:
        """Stop intake, let the mailbox drain for up to `grace` seconds, then stop for good."""
        if self.state in (ActorState.STOPPED, ActorState.NEW):
            self.state = ActorState.STOPPED
            return
        for sub in self._subs:
            await sub.stop()
        self._subs.clear()
        crashed = self.state is ActorState.CRASHED
        if not crashed:
            self.state = ActorState.RUNNING if self.state is ActorState.PAUSED else self.state
            self._wake.set()
            deadline = time.monotonic() + grace
            while self._mailbox or self._busy_since is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), remaining)
        self.state = ActorState.STOPPING
        dropped = len(self._mailbox)
        if dropped:
            # Durable intake is given back to its stream (redelivered to the next incarnation), not lost.
            returned = [item[0].release() for item in self._mailbox if isinstance(item[0], _Acking)]
            await asyncio.gather(*returned, return_exceptions=True)
            self.stats["dropped"] += dropped - len(returned)
            self.log.warning("actor.mailbox_abandoned", dropped=dropped - len(returned), returned=len(returned),
                             grace=grace)
            self._mailbox.clear()
        tasks = set(self._tasks)
        pending = tasks
        while pending:
            for task in pending:
                task.cancel()
            # Cancel again whatever is still running after a moment: on Python 3.11 asyncio.wait_for
            # can swallow a cancellation that lands as its inner future completes, and the task then
            # waits on (for a worker: for a message that will never come) as if never cancelled.
            _, pending = await asyncio.wait(pending, timeout=0.5)
        for task in tasks:  # collected, as gather would: the actor is stopping, not failing
            if not task.cancelled():
                task.exception()
        try:
            await self.on_stop()
        finally:
            self.state = ActorState.STOPPED
            if not self.done.done():
                self.done.set_result(None)
            self.log.info("actor.stopped", **self.stats)

    def _spawn(self, coro: Awaitable[None], name: str, *, critical: bool = False) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if critical:
            task.add_done_callback(self._on_worker_done)

    def _on_worker_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.done.done():
            return
        exc = task.exception()
        if exc is not None:
            self.state = ActorState.CRASHED
            self.done.set_exception(exc)

    # ---------------------------------------------------------------- mailbox

    def _enqueuer(self, fn: HandlerFn) -> Callable[[Message, Meta], None]:
        # Runs in the connection's read loop (Bus.subscribe_direct): quick, never blocks.
        def enqueue(msg: Message, meta: Meta) -> None:
            if len(self._mailbox) >= self._capacity:
                self.stats["dropped"] += 1
                self.report_soon(meta.subject, f"mailbox full ({self._capacity}); {self._overflow} "
                                 f"policy dropped a message ({self.stats['dropped']} dropped so far)",
                                 kind="overflow")
                if self._overflow == "drop_newest":
                    return
                oldest = self._mailbox.popleft()[0]
                if isinstance(oldest, _Acking):  # durable intake goes back to its stream, for later
                    self._spawn(oldest.release(), f"{self.name}.release")
            self._mailbox.append((fn, msg, meta))
            self.stats["msgs_in"] += 1
            self._wake.set()

        return enqueue

    def _durable_enqueuer(self, fn: HandlerFn) -> Callable[[Message, Meta, Ack], None]:
        # DurableIntake fetches only what fits, so this never drops; the ack follows the handler.
        def enqueue(msg: Message, meta: Meta, ack: Ack) -> None:
            self._mailbox.append((_Acking(fn, ack), msg, meta))
            self.stats["msgs_in"] += 1
            self._wake.set()

        return enqueue

    async def _run(self) -> None:
        while True:
            working = self.state in (ActorState.RUNNING, ActorState.SLEEPING)
            if self._tick_due and working:
                attr = next(iter(self._tick_due))
                del self._tick_due[attr]
                await self._call(getattr(self, attr), None, None)
                continue
            if not self._mailbox or not working:
                self._wake.clear()
                await self._wake.wait()
                continue
            fn, msg, meta = self._mailbox.popleft()
            await self._call(fn, msg, meta)
            # A handler that never awaits anything slow would otherwise keep the loop until its
            # mailbox is empty, starving every other actor (and timers) of this process. With an
            # empty mailbox the wait for the next message yields anyway: no extra round.
            if self._mailbox or self._tick_due:
                await asyncio.sleep(0)

    async def _call(self, fn: Callable[..., Awaitable[Any]], msg: Message | None, meta: Meta | None) -> None:
        self._busy_since = t0 = time.monotonic()
        try:
            result = await (fn() if msg is None else fn(self, msg, meta))
            if isinstance(result, Message) and meta is not None and meta.reply:
                await self.bus.respond(meta, result, source=self.name)
                self.stats["msgs_out"] += 1
        except BadInput as exc:
            self.stats["rejected"] += 1
            await self.report(meta.subject if meta else self.name, exc.reason,
                              stimulus_id=meta.stimulus_id if meta else None)
        except Exception as exc:
            self.stats["errors"] += 1
            where = meta.subject if meta else f"tick {getattr(fn, '__name__', '?')}"
            reason = f"{type(exc).__name__}: {exc}"
            stimulus_id = meta.stimulus_id if meta else None
            self._failures += 1
            # One message's content must not take an actor down: its failure is reported and the
            # actor goes on. A fault of the actor itself fails message after message (or a tick,
            # which no input chose), and that still crashes it, to be restarted under its policy.
            if msg is not None and self._failures < self.failures_to_crash:
                self.log.error("actor.handler_failed", where=where, error=shorten(reason, MAX_REASON),
                               failures=self._failures, exc_info=exc)
                await self.report(where, reason, kind="handler_error", stimulus_id=stimulus_id)
                return
            self.log.error("actor.crashed", where=where, error=shorten(reason, MAX_REASON), exc_info=exc)
            await self.report(where, reason, kind="crash", stimulus_id=stimulus_id)
            raise
        else:
            self._failures = 0
        finally:
            self._busy_since = None
            self._latencies.append(time.monotonic() - t0)
            self._progress.set()

    def _on_bad(self, exc: BadInput, meta: Meta) -> None:
        self.stats["rejected"] += 1
        self.report_soon(meta.subject, exc.reason, stimulus_id=meta.stimulus_id)

    # ---------------------------------------------------------------- ticks and heartbeats

    async def _ticker(self, attr: str, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self._mark_due(attr)

    def heartbeat(self) -> Heartbeat:
        lat = sorted(self._latencies)
        state = ActorState.LOADING if self.state is ActorState.RUNNING and not self.ready() else self.state
        return Heartbeat(
            actor=self.name, kind=self.kind, state=state.value, pid=os.getpid(), group=self.group,
            mailbox=len(self._mailbox), mailbox_capacity=self._capacity, restarts=self.restarts,
            latency_ms_p50=round(lat[len(lat) // 2] * 1000, 3) if lat else 0.0,
            latency_ms_max=round(lat[-1] * 1000, 3) if lat else 0.0,
            uptime_s=round(time.monotonic() - self._started, 3),
            stats={"busy_s": round(self.busy_for(), 3), **self.extra_stats()}, **self.stats,
        )

    async def _heartbeats(self) -> None:
        subject = self.bus.subjects.heartbeat(self.name)
        while True:
            with contextlib.suppress(Exception):  # a reconnecting bus must not kill the heartbeat
                await self.bus.publish(subject, self.heartbeat(), source=self.name)
            await asyncio.sleep(self.heartbeat_interval)

    # ---------------------------------------------------------------- control

    async def _on_ctl(self, req: CtlRequest, meta: Meta) -> None:
        verb, ok, detail, data = req.verb, True, "", {}
        if verb == "pause":
            if self.state is ActorState.RUNNING:
                self.state = ActorState.PAUSED
        elif verb == "resume":
            if self.state is ActorState.PAUSED:
                self.state = ActorState.RUNNING
                self._wake.set()
        elif verb == "sleep":
            if self.state is not ActorState.SLEEPING:
                await self.on_sleep()
                self.state = ActorState.SLEEPING
        elif verb == "wake":
            if self.state is ActorState.SLEEPING:
                await self.on_wake()
                self.state = ActorState.RUNNING
                self._wake.set()
        elif verb == "snapshot":
            state = self.snapshot()
            data = {"keys": sorted(state)}
        elif verb == "status":
            data = self.heartbeat().model_dump(mode="json")
        elif verb == "restart":
            detail = "restarting"
        self.log.info("actor.control", verb=verb, state=self.state.value)
        await self.bus.respond(meta, CtlReply(actor=self.name, verb=verb, ok=ok, state=self.state.value,
                                              detail=detail, data=data), source=self.name)
        if verb == "restart" and not self.done.done():
            self.done.set_exception(RestartRequested(f"operator asked {self.name!r} to restart"))

    async def _on_bad_ctl(self, exc: BadInput, meta: Meta) -> None:
        self._on_bad(exc, meta)
        await self.bus.respond(meta, CtlReply(actor=self.name, verb="?", ok=False, state=self.state.value,
                                              detail=exc.reason), source=self.name)


class _Acking:
    """A handler call for a message of the durable intake: acknowledged once the handler is done.

    A rejection (BadInput) is acknowledged too (it would be rejected again), and so is a failure
    the actor survives (put down to the message, reported by the actor: it would fail again). A
    failure that crashes the actor gives the message back for redelivery to the restarted actor
    (bus.durable gives up on a message that keeps crashing it).
    """

    __slots__ = ("ack", "fn")

    def __init__(self, fn: HandlerFn, ack: Ack) -> None:
        self.fn = fn
        self.ack = ack

    async def __call__(self, actor: Any, msg: Message, meta: Meta) -> Message | None:
        try:
            result = await self.fn(actor, msg, meta)
        except BadInput:
            await self.ack(True)
            raise
        except Exception:
            await self.ack(actor._failures + 1 < actor.failures_to_crash)
            raise
        await self.ack(True)
        return result

    async def release(self) -> None:
        """Not handled (abandoned at stop, or pushed out of a full mailbox): back to the stream."""
        await self.ack(False)


def _handler_model(cls: type, attr: str, fn: Any) -> type[Message] | None:
    if not asyncio.iscoroutinefunction(fn):
        raise TypeError(f"{cls.__name__}.{attr}: a handler must be an async method")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise TypeError(f"{cls.__name__}.{attr}: cannot resolve its annotations ({exc})") from None
    params = [p for p in fn.__code__.co_varnames[1 : fn.__code__.co_argcount]]
    if len(params) != 2:
        raise TypeError(f"{cls.__name__}.{attr}: a handler takes (self, msg, meta), got {params}")
    model = hints.get(params[0])
    if not (isinstance(model, type) and issubclass(model, Message)):
        raise TypeError(f"{cls.__name__}.{attr}: annotate its message parameter with a message model")
    return None if model is Message else model
