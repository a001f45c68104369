"""Durable intake: stimuli and rewards through JetStream, at least once, deduplicated by message id.

Core NATS (`NS.stim.text`, `NS.feedback.reward`) stays the fast default: fire and forget, lost if
no brain listens at that moment. A world that must not lose what it sends publishes on the
durable twin of the subject instead, `NS.durable.stim.text` (`publish_durable`), with a message
id. The stream `BRAIN_INTAKE_<ns>` keeps it (file storage, a day at most) and drops a second
copy of the same `Nats-Msg-Id` within the duplicate window, so a publisher may retry safely.

In a brain configured with `intake: durable`, every actor handler of an intake subject
(`stim.*`, `feedback.*`) also gets a `DurableIntake`: a durable pull consumer named after the
actor and the handler's subject. It fetches only as much as the actor's mailbox has room for
(so nothing is dropped for lack of space), and acknowledges a message only after its handler
returned; a crash gives it back (nak) to be redelivered to the restarted actor. A brain that was
down or restarting therefore processes what arrived meanwhile, each message once: redeliveries
of a message already handled (an acknowledgement lost with a connection) are recognized by
stream sequence and message id and acknowledged again without running the handler.

What can never be handled is not redelivered: a message the codec rejects is terminated at once
and reported (the actor counts it as rejected), and one whose handler crashed
`MAX_HANDLER_FAILURES` times is terminated and reported too, so a poison message restarts its
actor a bounded number of times instead of until JetStream's own limit.

The stream is bounded in count, age and bytes, and refuses a message larger than any consumer
would accept (`MAX_MSG_SIZE`): the publisher gets the error, and the stream does not grow.

Backlog replay must wait until the actors downstream of the intake are subscribed (core NATS
would drop the intake's output otherwise): a supervisor holds the intake of its connection with
`hold_intake` while it starts its children and opens it with `open_intake` once all are up.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from bus import codec
from bus.client import Bus
from bus.codec import Meta
from bus.errors import BadInput, BusError, DecodeError
from bus.models import Message, SysError, model_for_subject

__all__ = [
    "DURABLE_PREFIX",
    "INTAKE_SUBJECTS",
    "MAX_BYTES",
    "MAX_HANDLER_FAILURES",
    "MAX_MSG_SIZE",
    "Ack",
    "DurableIntake",
    "PublishResult",
    "durable_subject",
    "ensure_stream",
    "hold_intake",
    "is_intake_subject",
    "open_intake",
    "publish_durable",
    "stream_name",
]

log = structlog.get_logger("bus.durable")

#: The token between the namespace and the core subject: `NS.durable.stim.text`.
DURABLE_PREFIX = "durable"
#: Relative subjects (patterns) the stream keeps, in their durable form.
INTAKE_SUBJECTS = ("stim.>", "feedback.>")
#: How long the stream drops a repeated `Nats-Msg-Id` (seconds).
DUPLICATE_WINDOW_S = 120.0
#: How long the stream keeps intake nobody consumed (seconds): a day.
MAX_AGE_S = 86_400.0
MAX_MSGS = 1_000_000
#: The largest message the stream stores: a body the codec accepts (codec.MAX_BODY) plus room
#: for its header block (brainbus writes about 200 bytes of headers). A larger one would be
#: rejected by every consumer, so the stream refuses it at publish instead of keeping it.
MAX_MSG_SIZE = codec.MAX_BODY + 8 * 1024
#: The stream's size on disk, oldest dropped first beyond it. Intake is a few hundred bytes a
#: message (a text stimulus, a reward), so 256 MiB keeps far more than a day of any sane world;
#: the bound is there so that a flood of large messages cannot fill the disk of the brain's
#: server (JetStream stores the stream in the brain's data directory).
MAX_BYTES = 256 * 1024 * 1024
#: Seconds a delivered message may stay unacknowledged (waiting in a mailbox) before redelivery.
ACK_WAIT_S = 30.0
#: Seconds one pull request waits for messages. It bounds how long `stop()` waits for the last
#: pull to come back: a pull abandoned in flight would have its messages delivered to nobody and
#: redelivered only after ACK_WAIT_S.
FETCH_WAIT_S = 0.5
#: Deliveries of one message before JetStream gives up on it: a backstop for MAX_HANDLER_FAILURES,
#: whose count a process restart forgets.
MAX_DELIVER = 5
#: Handler crashes on one message before it is given up (terminated, reported, not redelivered).
#: Each crash restarts the actor; three stay below the supervisor's default restart intensity
#: (more than 5 failures within its window), so one poison message cannot bring the brain down.
MAX_HANDLER_FAILURES = 3
#: Seconds before a message whose handler crashed is redelivered (to the restarted actor).
NAK_DELAY_S = 0.5
_REMEMBERED = 65_536

#: `ack(True)` when the handler is done with the message (or rejected it), `ack(False)` when it crashed.
Ack = Callable[[bool], Awaitable[None]]
Deliver = Callable[[Message, Meta, Ack], None]


def stream_name(namespace: str) -> str:
    """The intake stream of a namespace (stream names allow letters, digits, '-' and '_')."""
    return f"BRAIN_INTAKE_{namespace}"


def is_intake_subject(relative: str) -> bool:
    """Whether a relative subject or pattern is world input that durable intake carries."""
    return relative.split(".", 1)[0] in ("stim", "feedback")


def durable_subject(bus: Bus, relative: str) -> str:
    """`stim.text` → `NS.durable.stim.text` (patterns too)."""
    if not is_intake_subject(relative):
        raise BadInput(f"{relative!r} is not an intake subject; durable intake carries {list(INTAKE_SUBJECTS)}")
    return bus.resolve(f"{DURABLE_PREFIX}.{relative}", wildcards=True)


def _stream_config(bus: Bus) -> StreamConfig:
    return StreamConfig(
        name=stream_name(bus.subjects.ns),
        subjects=[durable_subject(bus, s) for s in INTAKE_SUBJECTS],
        # Limits, not interest: what arrives before any consumer exists (a brain never started
        # yet) must be kept for it.
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=MAX_AGE_S,
        max_msgs=MAX_MSGS,
        max_bytes=MAX_BYTES,
        max_msg_size=MAX_MSG_SIZE,
        discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


async def ensure_stream(bus: Bus, *, update: bool = False) -> str:
    """Create the intake stream of the bus's namespace unless it exists; returns its name.

    Both sides call it (the brain when it starts consuming, a publisher before its first message),
    so it does not matter which comes first. With `update` (the brain, whose role may manage
    streams) a stream made by an older version, without today's limits, is brought up to them.
    """
    js = bus.nc.jetstream()
    config = _stream_config(bus)
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except nats.js.errors.NotFoundError:
        pass
    except nats.errors.NoRespondersError:
        raise BusError("durable intake needs JetStream: this NATS server runs without it (start it with -js)") \
            from None
    else:
        if update and _outdated(info.config, config):
            await _update_stream(bus, config)
        return config.name
    try:
        await js.add_stream(config)
        log.info("durable.stream_created", stream=config.name, subjects=config.subjects)
    except nats.js.errors.BadRequestError:
        await js.stream_info(config.name)  # created by someone else meanwhile: fine if it is there now
    return config.name


def _outdated(have: StreamConfig, want: StreamConfig) -> bool:
    return any(getattr(have, f) != getattr(want, f) for f in ("max_bytes", "max_msg_size", "max_msgs", "discard"))


async def _update_stream(bus: Bus, config: StreamConfig) -> None:
    try:
        await bus.nc.jetstream().update_stream(config)
    except (nats.errors.Error, TimeoutError) as exc:
        # The stream still works, only without the new bounds: not a reason to stop the brain.
        log.warning("durable.stream_update_failed", stream=config.name, error=str(exc) or type(exc).__name__)
        return
    log.info("durable.stream_updated", stream=config.name, max_bytes=config.max_bytes,
             max_msg_size=config.max_msg_size)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What the stream said: its sequence number, and whether it was a duplicate it dropped."""

    stream: str
    seq: int
    duplicate: bool


async def publish_durable(bus: Bus, subject: str, msg: Message, *, msg_id: str | None = None,
                          stimulus_id: str | None = None,
                          timeout: float = 5.0) -> PublishResult:  # noqa: ASYNC109 (the PubAck deadline)
    """Publish an intake message through JetStream; returns once the stream has stored it.

    `subject` is the core subject (`stim.text`); `msg_id` (default: a fresh UUID) makes a retry
    of the same message a duplicate the stream drops. Raises BusError when it was not stored.
    """
    relative = bus.subjects.relative(bus.resolve(subject))
    full = durable_subject(bus, relative)
    body, headers = codec.encode(msg, source=bus.source, stimulus_id=stimulus_id)
    headers["Nats-Msg-Id"] = msg_id or uuid.uuid4().hex
    js = bus.nc.jetstream()
    try:
        try:
            ack = await js.publish(full, body, timeout=timeout, headers=dict(headers))
        except nats.js.errors.NoStreamResponseError:
            await ensure_stream(bus)  # the first message ever: no stream yet
            ack = await js.publish(full, body, timeout=timeout, headers=dict(headers))
    except (nats.errors.Error, TimeoutError) as exc:
        raise BusError(f"durable publish on {full} was not acknowledged: {exc or type(exc).__name__}") from None
    return PublishResult(stream=ack.stream, seq=ack.seq, duplicate=bool(ack.duplicate))


# ---------------------------------------------------------------- the gate (supervisor start-up)

_held: weakref.WeakKeyDictionary[Bus, asyncio.Event] = weakref.WeakKeyDictionary()


def hold_intake(bus: Bus) -> None:
    """Make the durable intakes on `bus` wait (the supervisor is still starting actors)."""
    _held.setdefault(bus, asyncio.Event()).clear()


def open_intake(bus: Bus) -> None:
    """Let the durable intakes on `bus` consume (every actor of this process is subscribed)."""
    _held.setdefault(bus, asyncio.Event()).set()


async def _gate(bus: Bus) -> None:
    event = _held.get(bus)
    if event is not None:
        await event.wait()


# ---------------------------------------------------------------- the consumer side

# Handler failures per (consumer, stream sequence), per connection: an actor that crashed is
# replaced by a new one with a new DurableIntake on the same bus, and the count must carry over.
_failures: weakref.WeakKeyDictionary[Bus, OrderedDict[tuple[str, int], int]] = weakref.WeakKeyDictionary()


def _count_failure(bus: Bus, durable: str, seq: int) -> int:
    counts = _failures.setdefault(bus, OrderedDict())
    key = (durable, seq)
    counts[key] = counts.get(key, 0) + 1
    counts.move_to_end(key)
    if len(counts) > _REMEMBERED:
        counts.popitem(last=False)
    return counts[key]


def _forget_failures(bus: Bus, durable: str, seq: int) -> None:
    counts = _failures.get(bus)
    if counts is not None:
        counts.pop((durable, seq), None)


class DurableIntake:
    """One durable pull consumer feeding one actor handler; `start()`, then `stop()`.

    Example (what `Actor.start` does for an intake handler when the brain's intake is durable):
        intake = DurableIntake(bus, consumer="thalamus", pattern="stim.text", model=TextStimulus,
                               deliver=put_in_mailbox, room=lambda: capacity - len(mailbox),
                               on_bad=report)
        await intake.start()
    """

    def __init__(self, bus: Bus, *, consumer: str, pattern: str, model: type[Message] | None,
                 deliver: Deliver, room: Callable[[], int], on_bad: Callable[[BadInput, Meta], None],
                 batch: int = 64) -> None:
        self.bus = bus
        self.consumer = consumer
        self.pattern = pattern
        self.subject = durable_subject(bus, pattern)
        # Durable names allow no '.', '*' or '>'.
        self.durable = f"{consumer}__{pattern.replace('.', '_').replace('*', 'any').replace('>', 'all')}"
        self.model = model
        self._deliver = deliver
        self._room = room
        self._on_bad = on_bad
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        self._psub: nats.js.JetStreamContext.PullSubscription | None = None
        self._stopping = False
        self._inflight: set[int] = set()  # stream sequences in the mailbox or being handled
        self._done_seqs: OrderedDict[int, None] = OrderedDict()
        self._done_ids: OrderedDict[str, None] = OrderedDict()
        self.stats = {"delivered": 0, "acked": 0, "redelivered_skipped": 0, "duplicates": 0, "failed": 0,
                      "rejected": 0, "given_up": 0}

    @property
    def pending(self) -> int:
        return len(self._inflight)

    async def start(self) -> None:
        """Create (or bind to) the durable consumer and start fetching once the intake is open."""
        stream = await ensure_stream(self.bus, update=True)
        js = self.bus.nc.jetstream()
        psub = await js.pull_subscribe(
            self.subject, durable=self.durable, stream=stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=ACK_WAIT_S,
                max_deliver=MAX_DELIVER, max_ack_pending=_REMEMBERED // 4,
            ),
        )
        self._psub = psub
        self._task = asyncio.ensure_future(self._fetch_loop(psub))
        self._task.set_name(f"durable.{self.durable}")
        log.info("durable.consuming", consumer=self.durable, subject=self.subject)

    async def stop(self) -> None:
        """Stop fetching. What is in the mailbox is still acknowledged as it is handled; what never
        is stays in the stream for the next run."""
        task, self._task = self._task, None
        self._stopping = True
        if task is not None:
            # Let the pull in flight come back (its messages go to the mailbox, which the actor
            # drains); cancel only if it does not.
            try:
                await asyncio.wait_for(asyncio.shield(task), FETCH_WAIT_S + 1.0)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        psub, self._psub = self._psub, None
        if psub is not None:
            with contextlib.suppress(nats.errors.Error):
                await psub.unsubscribe()

    async def _fetch_loop(self, psub: nats.js.JetStreamContext.PullSubscription) -> None:
        gate = asyncio.ensure_future(_gate(self.bus))
        while not gate.done():  # stoppable while the gate is still closed
            if self._stopping:
                gate.cancel()
                return
            await asyncio.wait([gate], timeout=0.05)
        while not self._stopping:
            room = min(self._batch, self._room())
            if room <= 0 or not self.bus.connected:
                await asyncio.sleep(0.02)  # the actor is behind or NATS is away: fetch nothing now
                continue
            try:
                msgs = await psub.fetch(room, timeout=FETCH_WAIT_S)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except (nats.errors.Error, OSError) as exc:  # reconnecting, server restarting: try again soon
                log.debug("durable.fetch_failed", consumer=self.durable, error=str(exc) or type(exc).__name__)
                await asyncio.sleep(0.2)
                continue
            for m in msgs:
                await self._receive(m)

    async def _receive(self, m: Msg) -> None:
        seq = m.metadata.sequence.stream
        msg_id = (m.headers or {}).get("Nats-Msg-Id")
        if seq in self._inflight:
            self.stats["redelivered_skipped"] += 1  # waited longer than ack_wait in the mailbox
            return
        if seq in self._done_seqs or (msg_id is not None and msg_id in self._done_ids):
            # Handled already (its ack was lost, or a publisher repeated it after the duplicate
            # window): acknowledge again, do not handle again.
            self.stats["duplicates"] += 1
            with contextlib.suppress(nats.errors.Error):
                await m.ack()
            return
        core = self.bus.resolve(m.subject.replace(f".{DURABLE_PREFIX}.", ".", 1))
        cls = self.model or model_for_subject(self.bus.subjects.relative(core))
        try:
            if cls is None:
                raise DecodeError("no message model is registered for this subject", subject=core)
            obj, meta = codec.decode(cls, m.data, m.headers, core)
        except DecodeError as exc:
            # It will never decode: terminated (never redelivered) and reported once, here.
            self.stats["rejected"] += 1
            with contextlib.suppress(nats.errors.Error):
                await m.term()
            self._on_bad(exc, Meta(subject=core, size=len(m.data)))
            return
        self._inflight.add(seq)
        self.stats["delivered"] += 1

        async def ack(ok: bool) -> None:
            self._inflight.discard(seq)
            try:
                if ok:
                    self._remember(seq, msg_id)
                    _forget_failures(self.bus, self.durable, seq)
                    await m.ack()
                    self.stats["acked"] += 1
                elif self._stopping:
                    # Given back unhandled (the actor stops, or crashed on another message): the
                    # next incarnation gets it. Not a failure of its own.
                    await m.nak(delay=NAK_DELAY_S)
                else:
                    self.stats["failed"] += 1
                    failures = _count_failure(self.bus, self.durable, seq)
                    if failures >= MAX_HANDLER_FAILURES or m.metadata.num_delivered >= MAX_DELIVER:
                        await self._give_up(m, core, meta, failures)
                    else:
                        await m.nak(delay=NAK_DELAY_S)
            except nats.errors.Error as exc:
                # Not acknowledged: JetStream redelivers it after ack_wait and the memory above
                # (this incarnation) or the handler (a new one) sees it again.
                log.warning("durable.ack_failed", consumer=self.durable, seq=seq, error=str(exc))

        self._deliver(obj, meta, ack)

    async def _give_up(self, m: Msg, core: str, meta: Meta, failures: int) -> None:
        """Terminate a message its handler keeps crashing on, and say so on `sys.error`."""
        seq = m.metadata.sequence.stream
        await m.term()
        _forget_failures(self.bus, self.durable, seq)
        self.stats["given_up"] += 1
        reason = (f"the handler failed on this durable message {failures} times (delivered "
                  f"{m.metadata.num_delivered} times); it is terminated, not redelivered")
        log.warning("durable.given_up", consumer=self.durable, seq=seq, failures=failures,
                    deliveries=m.metadata.num_delivered)
        with contextlib.suppress(Exception):  # a failed report must not undo the giving up
            report = SysError(actor=self.consumer, subject=core, reason=reason, kind="handler_error",
                              stimulus_id=meta.stimulus_id)
            await self.bus.publish(self.bus.subjects.sys_error, report, stimulus_id=meta.stimulus_id,
                                   source=self.consumer)

    def _remember(self, seq: int, msg_id: str | None) -> None:
        self._done_seqs[seq] = None
        if len(self._done_seqs) > _REMEMBERED:
            self._done_seqs.popitem(last=False)
        if msg_id is not None:
            self._done_ids[msg_id] = None
            if len(self._done_ids) > _REMEMBERED:
                self._done_ids.popitem(last=False)
