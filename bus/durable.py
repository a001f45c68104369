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
from bus.models import Message, model_for_subject

__all__ = [
    "DURABLE_PREFIX",
    "INTAKE_SUBJECTS",
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
#: Seconds a delivered message may stay unacknowledged (waiting in a mailbox) before redelivery.
ACK_WAIT_S = 30.0
#: Seconds one pull request waits for messages. It bounds how long `stop()` waits for the last
#: pull to come back: a pull abandoned in flight would have its messages delivered to nobody and
#: redelivered only after ACK_WAIT_S.
FETCH_WAIT_S = 0.5
#: Deliveries of one message before JetStream gives up on it (a message that crashes its actor).
MAX_DELIVER = 5
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
        discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


async def ensure_stream(bus: Bus) -> str:
    """Create the intake stream of the bus's namespace unless it exists; returns its name.

    Both sides call it (the brain when it starts consuming, a publisher before its first message),
    so it does not matter which comes first.
    """
    js = bus.nc.jetstream()
    config = _stream_config(bus)
    assert config.name is not None
    try:
        await js.stream_info(config.name)
        return config.name
    except nats.js.errors.NotFoundError:
        pass
    except nats.errors.NoRespondersError:
        raise BusError("durable intake needs JetStream: this NATS server runs without it (start it with -js)") \
            from None
    try:
        await js.add_stream(config)
        log.info("durable.stream_created", stream=config.name, subjects=config.subjects)
    except nats.js.errors.BadRequestError:
        await js.stream_info(config.name)  # created by someone else meanwhile: fine if it is there now
    return config.name


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
        self.stats = {"delivered": 0, "acked": 0, "redelivered_skipped": 0, "duplicates": 0, "failed": 0}

    @property
    def pending(self) -> int:
        return len(self._inflight)

    async def start(self) -> None:
        """Create (or bind to) the durable consumer and start fetching once the intake is open."""
        stream = await ensure_stream(self.bus)
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
            self._on_bad(exc, Meta(subject=core, size=len(m.data)))
            with contextlib.suppress(nats.errors.Error):
                await m.term()  # it will never decode: no point in redelivering it
            return
        self._inflight.add(seq)
        self.stats["delivered"] += 1

        async def ack(ok: bool) -> None:
            self._inflight.discard(seq)
            try:
                if ok:
                    self._remember(seq, msg_id)
                    await m.ack()
                    self.stats["acked"] += 1
                else:
                    self.stats["failed"] += 1
                    await m.nak(delay=NAK_DELAY_S)
            except nats.errors.Error as exc:
                # Not acknowledged: JetStream redelivers it after ack_wait and the memory above
                # (this incarnation) or the handler (a new one) sees it again.
                log.warning("durable.ack_failed", consumer=self.durable, seq=seq, error=str(exc))

        self._deliver(obj, meta, ack)

    def _remember(self, seq: int, msg_id: str | None) -> None:
        self._done_seqs[seq] = None
        if len(self._done_seqs) > _REMEMBERED:
            self._done_seqs.popitem(last=False)
        if msg_id is not None:
            self._done_ids[msg_id] = None
            if len(self._done_ids) > _REMEMBERED:
                self._done_ids.popitem(last=False)
