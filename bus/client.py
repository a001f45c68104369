"""The NATS connection every actor, tool and SDK user goes through: `Bus`.

Only `bus/` imports nats-py. Actors get a `Bus` from the supervisor; external agents use the SDK
(`bus.sdk.connect`) which wraps one.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import re
import ssl
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar, cast

import nats
import nats.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from bus import codec
from bus._nats import FastClient
from bus.auth import inbox_prefix, redact_url, url_user
from bus.codec import Meta
from bus.errors import BadInput, BusError, DecodeError, NoRespondersError, NotConnectedError, RequestTimeout
from bus.models import Message, model_for_subject
from bus.runtime import trusted_ca
from bus.subjects import Subjects

__all__ = ["Bus", "ConnState", "Handler", "OnBad", "Subscription"]

log = structlog.get_logger("bus.client")
M = TypeVar("M", bound=Message)
R = TypeVar("R", bound=Message)
Handler = Callable[[Any, Meta], Awaitable[None]]
OnBad = Callable[[BadInput, Meta], Awaitable[None] | None]

_SOURCE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
# Per-subscription bounds inside nats-py: past them NATS reports a slow consumer and drops,
# which protects the publisher and the rest of the brain from one stuck subscriber.
PENDING_MSGS = 65_536
PENDING_BYTES = 64 * 1024 * 1024


def _block(block: bytes) -> dict[str, str]:
    """A ready header block, passed where nats-py's signature says dict: `FastClient` sends it as is."""
    return cast(dict[str, str], block)


class ConnState(enum.StrEnum):
    NEW = "new"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class Subscription:
    """A live subscription; `await sub.stop()` unsubscribes."""

    def __init__(self, inner: NatsSubscription, pattern: str) -> None:
        self._inner = inner
        self.pattern = pattern

    @property
    def pending(self) -> int:
        return self._inner.pending_msgs

    async def stop(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self._inner.unsubscribe()


class Bus:
    """A typed connection to one brain's namespace on NATS.

    `url` may name several servers of one NATS cluster, comma-separated
    (`nats://127.0.0.1:4222,nats://127.0.0.1:4223`): the connection goes to one of them and, when
    that one goes away, reconnects to another (nats-py also learns the cluster's other members
    from the server it is connected to).

    Example:
        async with Bus("nats://127.0.0.1:4222", namespace="brain", name="my-agent") as bus:
            await bus.publish("stim.text", TextStimulus(text="hello"))
    """

    def __init__(self, url: str, *, namespace: str = "brain", name: str = "brainbus",
                 source: str | None = None, user: str | None = None, password: str | None = None,
                 tls_ca: str | None = None) -> None:
        """`url` may carry `user:password@`; `tls_ca` is a PEM CA file to trust for a `tls://` URL.

        Without `tls_ca`, a TLS server is verified against the CA of the runtime file when it is the
        brain recorded there (`bus.runtime.trusted_ca`), else the system's CAs (and `SSL_CERT_FILE`).
        """
        # What logs and errors show: never the password a URL may carry.
        self.url = redact_url(url)
        self._url = url
        self._tls_ca = tls_ca
        self.servers = [u.strip() for u in url.split(",") if u.strip()]
        if not self.servers:
            raise BadInput("bus url names no NATS server")
        self.subjects = Subjects(namespace)
        self.name = name
        self.source = source or name
        if not _SOURCE_RE.match(self.source):
            raise BadInput(
                f"bus source {self.source!r} must be letters, digits and '_.:-' (it names the sender)"
            )
        self.state = ConnState.NEW
        self.reconnects = 0
        self.slow_consumer_drops = 0
        self._user = user
        self._password = password
        self._nc: NatsClient | None = None
        self._last_error: Exception | None = None
        self._listeners: list[Callable[[ConnState], None]] = []
        self._resolved: dict[str, str] = {}
        self._resolved_bytes: dict[str, bytes] = {}
        self._model_cache: dict[str, type[Message] | None] = {}

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Bus:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self, *, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (nats connect_timeout)
        """Connect once; afterwards nats-py reconnects forever on its own with a short wait."""
        if self.state is not ConnState.NEW:
            raise BusError(f"bus {self.name!r} was already connected once; make a new Bus to connect again")
        nc = FastClient()
        extra: dict[str, Any] = {}
        # A role of a brainbus server may read replies only on its own inbox prefix (bus.auth).
        prefix = inbox_prefix(self._user or url_user(self.servers[0]))
        if prefix:
            extra["inbox_prefix"] = prefix
        # A brain of this directory serving TLS with a private CA names the CA in its runtime file.
        first = self.servers[0]
        ca = self._tls_ca or (trusted_ca(first) if first.startswith("tls://") else None)
        if ca is not None:
            extra["tls"] = ssl.create_default_context(cafile=ca)
        try:
            await nc.connect(
                servers=self.servers,
                name=self.name,
                user=self._user,
                password=self._password,
                connect_timeout=cast(int, timeout),  # nats-py annotates seconds as int
                # With unlimited attempts nats-py retries the first connect forever and a dead URL
                # would hang here: two tries at first, unlimited reconnects once connected (below).
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=cast(int, 0.25),
                ping_interval=5,
                max_outstanding_pings=3,
                pending_size=16 * 1024 * 1024,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                closed_cb=self._on_closed,
                # Bus validates (and caches) every subject itself.
                skip_subject_validation=True,
                **extra,
            )
        except (OSError, nats.errors.Error, TimeoutError) as exc:  # ssl.SSLError is an OSError
            self.state = ConnState.CLOSED
            with contextlib.suppress(Exception):
                # After a failed TLS handshake (an untrusted certificate) nats-py's close waits
                # forever on the half-open transport: give it a moment, then let it go.
                await asyncio.wait_for(nc.close(), 1.0)
            cause: BaseException = exc
            if isinstance(exc, nats.errors.NoServersError) and self._last_error is not None:
                cause = self._last_error  # what actually failed, not "no servers available"
            raise BusError(f"cannot connect to NATS at {self.url}: {cause or type(cause).__name__}") from None
        nc.options["allow_reconnect"] = True
        nc.options["max_reconnect_attempts"] = -1
        self._nc = nc
        self._set_state(ConnState.CONNECTED)

    async def close(self, *, drain: bool = True) -> None:
        """Drain (deliver what is in flight, then close), or close at once."""
        nc, self._nc = self._nc, None
        if nc is None or nc.is_closed:
            self._set_state(ConnState.CLOSED)
            return
        try:
            if drain and nc.is_connected:
                await nc.drain()
            else:
                await nc.close()
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            log.warning("bus.close_failed", name=self.name, error=str(exc))
            with contextlib.suppress(Exception):
                await nc.close()
        self._set_state(ConnState.CLOSED)

    @property
    def nc(self) -> NatsClient:
        """The underlying nats-py client (for JetStream and tools inside `bus/`)."""
        if self._nc is None:
            raise NotConnectedError(f"bus {self.name!r} is not connected")
        return self._nc

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def on_state(self, listener: Callable[[ConnState], None]) -> Callable[[], None]:
        """Call `listener(state)` on every connection-state change; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _set_state(self, state: ConnState) -> None:
        if state is self.state:
            return
        self.state = state
        for listener in list(self._listeners):
            listener(state)

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        if isinstance(exc, nats.errors.SlowConsumerError):
            self.slow_consumer_drops += 1
            if self.slow_consumer_drops in (1, 10, 100, 1000) or self.slow_consumer_drops % 10_000 == 0:
                log.warning("bus.slow_consumer", name=self.name, subject=exc.subject,
                            drops=self.slow_consumer_drops)
            return
        log.warning("bus.error", name=self.name, error=str(exc) or type(exc).__name__)

    async def _on_disconnected(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            self._set_state(ConnState.RECONNECTING)
            log.warning("bus.disconnected", name=self.name, url=self.url)

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        self._set_state(ConnState.CONNECTED)
        log.info("bus.reconnected", name=self.name, url=self.url, reconnects=self.reconnects)

    async def _on_closed(self) -> None:
        self._set_state(ConnState.CLOSED)

    # ---------------------------------------------------------------- subjects

    def resolve(self, subject: str, *, wildcards: bool = False) -> str:
        """Relative (`stim.text`) or full subject → full subject, validated (cached)."""
        key = f"{subject}\0{wildcards}"
        full = self._resolved.get(key)
        if full is None:
            full = self.subjects.full(subject, wildcards=wildcards)
            if len(self._resolved) < 4096:
                self._resolved[key] = full
        return full

    def _subject_bytes(self, subject: str) -> bytes:
        """A concrete subject, resolved, validated and encoded for the wire (cached)."""
        full = self._resolved_bytes.get(subject)
        if full is None:
            full = self.resolve(subject).encode()
            if len(self._resolved_bytes) < 4096:
                self._resolved_bytes[subject] = full
        return full

    # ---------------------------------------------------------------- publish

    async def publish(self, subject: str, msg: Message, *, stimulus_id: str | None = None,
                      reply: str | None = None, source: str | None = None) -> None:
        """Publish a model on a concrete subject (relative to the namespace or full).

        `source` names the sending actor in the `Bb-Src` header (default: this bus's source);
        several actors of one process share one connection and pass their own name.
        """
        body, block = codec.encode_wire(msg, source=source or self.source, stimulus_id=stimulus_id)
        nc = self._nc
        if nc is None:
            raise NotConnectedError(f"bus {self.name!r} is not connected")
        full = self._resolved_bytes.get(subject) or self._subject_bytes(subject)
        wait = cast(FastClient, nc).write_block(full, reply.encode() if reply else b"", block, body)
        if wait is not None:
            await wait

    async def publish_raw(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Publish bytes as they are (tools, benchmarks, what an outside client would send)."""
        await self.nc.publish(self.resolve(subject), data, headers=headers)

    async def respond(self, meta: Meta, msg: Message, *, source: str | None = None) -> None:
        """Reply to a request whose metadata is `meta`; a no-op if it expects no reply."""
        if meta.reply:
            body, block = codec.encode_wire(msg, source=source or self.source, stimulus_id=meta.stimulus_id)
            # The inbox came from the server's MSG line: one token, as nats-py would send it.
            await cast(FastClient, self.nc).publish_block(meta.reply.encode(), b"", block, body)

    async def flush(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (passed on to nats-py)
        # nats-py annotates the flush timeout as int but uses it as seconds for asyncio.wait_for.
        await self.nc.flush(timeout=cast(int, timeout))

    # ---------------------------------------------------------------- subscribe

    async def subscribe(
        self,
        pattern: str,
        handler: Handler,
        *,
        model: type[Message] | None = None,
        on_bad: OnBad | None = None,
        queue: str = "",
    ) -> Subscription:
        """Subscribe with typed decoding: `handler(model_instance, meta)` gets only valid messages.

        `model=None` picks the registered model of each concrete subject. Messages that do not
        decode never reach `handler`: they go to `on_bad(error, meta)` (default: a log warning).
        """
        full = self.resolve(pattern, wildcards=True)

        async def deliver(msg: Msg) -> None:
            cls = model or self._model_for(msg.subject)
            meta_subject = msg.subject
            try:
                if cls is None:
                    raise DecodeError("no message model is registered for this subject", subject=meta_subject)
                obj, meta = codec.decode(cls, msg.data, msg.headers, meta_subject, msg.reply)
            except DecodeError as exc:
                await self._bad(on_bad, exc, Meta(subject=meta_subject, reply=msg.reply or None,
                                                   size=len(msg.data)))
                return
            await handler(obj, meta)

        inner = await self.nc.subscribe(
            full, queue=queue, cb=deliver, pending_msgs_limit=PENDING_MSGS, pending_bytes_limit=PENDING_BYTES
        )
        return Subscription(inner, full)

    async def subscribe_direct(
        self,
        pattern: str,
        deliver: Callable[[Any, Meta], None],
        *,
        model: type[Message] | None = None,
        on_bad: Callable[[BadInput, Meta], None],
        queue: str = "",
    ) -> Subscription:
        """Like `subscribe`, but `deliver` is synchronous and runs in the connection's read loop.

        For actors: `deliver` puts the message into a bounded mailbox and returns, so the mailbox
        is the only buffer between NATS and the handler (no second queue inside nats-py).
        """
        full = self.resolve(pattern, wildcards=True)

        decode = codec.decode

        def receive(subject: str, reply: str, data: bytes, headers: codec.Headers) -> None:
            cls = model or self._model_for(subject)
            try:
                if cls is None:
                    raise DecodeError("no message model is registered for this subject", subject=subject)
                obj, meta = decode(cls, data, headers, subject, reply)
            except DecodeError as exc:
                on_bad(exc, Meta(subject=subject, reply=reply or None, size=len(data)))
                return
            deliver(obj, meta)

        nc = self.nc
        assert isinstance(nc, FastClient)
        # Header blocks as received: the codec reads its own with one regex match, no dict.
        return Subscription(await nc.subscribe_direct(full, receive, queue=queue, blocks=True), full)

    async def subscribe_raw(self, pattern: str, callback: Callable[[Msg], Awaitable[None]], *,
                            queue: str = "") -> Subscription:
        """Subscribe to raw nats-py messages (tools that print or record anything)."""
        full = self.resolve(pattern, wildcards=True)
        inner = await self.nc.subscribe(
            full, queue=queue, cb=callback, pending_msgs_limit=PENDING_MSGS, pending_bytes_limit=PENDING_BYTES
        )
        return Subscription(inner, full)

    async def subscribe_raw_direct(
        self, pattern: str, deliver: Callable[[str, bytes, codec.Headers], None]
    ) -> Subscription:
        """Raw messages without nats-py's queue, task and message object: `deliver(subject, data,
        headers)` runs in the connection's read loop, with headers as the block received (or a
        dict, or None); `codec.decode` and `codec.trace_fields` read either. For observers that
        see every message (the TUI); `deliver` must be quick."""
        full = self.resolve(pattern, wildcards=True)

        def receive(subject: str, reply: str, data: bytes, headers: codec.Headers) -> None:
            deliver(subject, data, headers)

        nc = self.nc
        assert isinstance(nc, FastClient)
        return Subscription(await nc.subscribe_direct(full, receive, blocks=True), full)

    def _model_for(self, subject: str) -> type[Message] | None:
        if subject not in self._model_cache:
            try:
                rel = self.subjects.relative(subject)
            except BadInput:
                return None
            self._model_cache[subject] = model_for_subject(rel)
        return self._model_cache[subject]

    async def _bad(self, on_bad: OnBad | None, exc: BadInput, meta: Meta) -> None:
        if on_bad is None:
            log.warning("bus.bad_input", subject=meta.subject, reason=exc.reason)
            return
        result = on_bad(exc, meta)
        if result is not None:
            await result

    # ---------------------------------------------------------------- request / reply

    async def request(self, subject: str, msg: Message, reply_model: type[R], *,
                      timeout: float = 2.0,  # noqa: ASYNC109 (the request deadline)
                      stimulus_id: str | None = None) -> R:
        """Send a request and decode its single reply; RequestTimeout / NoRespondersError otherwise."""
        full = self.resolve(subject)
        body, block = codec.encode_wire(msg, source=self.source, stimulus_id=stimulus_id)
        try:
            answer = await self.nc.request(full, body, timeout=timeout, headers=_block(block))
        except nats.errors.NoRespondersError:
            raise NoRespondersError(full) from None
        except nats.errors.TimeoutError:
            raise RequestTimeout(full, timeout) from None
        return codec.decode(reply_model, answer.data, answer.headers, answer.subject)[0]

    async def gather(
        self,
        subject: str,
        msg: Message,
        reply_model: type[R],
        *,
        expect: int | None = None,
        timeout: float = 1.0,  # noqa: ASYNC109 (the gather deadline)
        stimulus_id: str | None = None,
    ) -> list[tuple[R, Meta]]:
        """Scatter-gather: publish once, collect replies until `expect` arrived or the deadline.

        Returns what came in time (possibly fewer than `expect`: the caller decides whether a
        partial answer is good enough; an empty list at once when nobody is subscribed). Replies
        that do not decode are logged and skipped.
        """
        full = self.resolve(subject)
        inbox = self.nc.new_inbox()
        replies: list[tuple[R, Meta]] = []
        done = asyncio.Event()

        async def collect(m: Msg) -> None:
            if not m.data and m.headers and m.headers.get("Status") == "503":
                done.set()  # the server's "no responders": nobody is subscribed, nothing will come
                return
            try:
                replies.append(codec.decode(reply_model, m.data, m.headers, m.subject))
            except DecodeError as exc:
                log.warning("bus.gather_bad_reply", subject=full, reason=exc.reason)
                return
            if expect is not None and len(replies) >= expect:
                done.set()

        sub = await self.nc.subscribe(inbox, cb=collect)
        try:
            body, block = codec.encode_wire(msg, source=self.source, stimulus_id=stimulus_id)
            await self.nc.publish(full, body, reply=inbox, headers=_block(block))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return replies
