"""nats-py's client with brainbus's hot paths made cheap.

1. Headers. nats-py checks every header name and value character by character when it publishes
   and when it parses (microseconds per header). brainbus's headers are built by the codec from
   validated tokens (`codec.encode_wire`), so `Bus` hands them over as one ready header block
   (`publish_block`: the whole HPUB command in one formatting step), and plain header blocks on
   receipt are split without the per-character checks, or not split here at all: a subscription
   registered with `blocks=True` gets the block as received and the codec reads it.
2. Parsing. nats-py's protocol parser tries two regular expressions, fills a dict and awaits a
   coroutine per message. `_FastParser` reads MSG/HMSG control lines with one split, walks the
   read buffer by offset, and hands direct subscriptions their message without a coroutine;
   every other protocol line goes to nats-py's parser as before.
3. Direct delivery. A subscription registered with `subscribe_direct` skips nats-py's
   per-subscription queue and task: the read loop calls a quick synchronous function (decode,
   then put into an actor's mailbox). The actor's bounded mailbox is then the only buffer, and
   its overflow policy the only drop policy, counted exactly.
Anything else (status lines from JetStream, dict headers, ordinary subscriptions) takes nats-py's
own path unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from nats import errors
from nats.aio.client import PING_PROTO, Client
from nats.aio.subscription import Subscription
from nats.protocol.command import hpub_cmd
from nats.protocol.parser import AWAITING_CONTROL_LINE, AWAITING_MSG_PAYLOAD, Parser

from bus.codec import HDR_START, MALFORMED, parse_header_block

__all__ = ["DirectCallback", "FastClient", "parse_header_block"]

log = structlog.get_logger("bus.nats")
# Past this many bytes waiting to be written, a publish waits for the flusher (nats-py's default
# pending size). `Bus` keeps a larger pending size as its buffer for reconnects; without this, a
# publishing loop that never yields would pile all of it up before the first byte went out.
FLUSH_AT = 2 * 1024 * 1024
#: `deliver(subject, reply, data, headers)`; with `blocks=True` a plain header block arrives as
#: the bytes received (a status line or another spelling still arrives as a dict).
DirectCallback = Callable[[str, str, bytes, Any], None]


class FastClient(Client):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, tuple[DirectCallback, bool]] = {}
        self._ps = _FastParser(self)

    async def subscribe_direct(self, subject: str, deliver: DirectCallback, *,
                               queue: str = "", blocks: bool = False) -> Subscription:
        """Subscribe so that each message calls `deliver(subject, reply, data, headers)` in the read loop.

        `deliver` must be quick and must not raise; it is the caller's job to buffer. Headers come
        as a dict, or with `blocks=True` as the plain header block received (`codec.decode` reads
        either).
        """
        sub: Subscription = await self.subscribe(subject, queue=queue)
        self._direct[sub._id] = (deliver, blocks)
        return sub

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        self._direct.pop(sid, None)
        super()._remove_sub(sid, max_msgs)

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any) -> None:
        direct = self._direct.get(sid)
        if direct is None:
            try:
                await super()._process_msg(sid, subject, reply, data, headers)
            except Exception as exc:
                # nats-py's read loop ends on any exception from here, leaving the connection
                # deaf until a ping notices. What one message carries (a subject or reply that
                # is not UTF-8...) must cost that message only.
                log.error("bus.message_unreadable", subject=subject[:200].decode(errors="replace"),
                          error=repr(exc)[:200])
            return
        deliver, blocks = direct
        if headers and not (blocks and headers.startswith(HDR_START)):
            headers = await self._process_headers(headers)
        self._deliver_direct(deliver, subject, reply, data, headers or None)

    def _deliver_direct(self, deliver: DirectCallback, subject: bytes, reply: bytes, data: bytes,
                        headers: Any) -> None:
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        try:
            deliver(subject.decode(), reply.decode(), data, headers)
        except Exception as exc:  # one bad callback must never break the connection's read loop
            log.error("bus.direct_delivery_failed", subject=subject.decode(errors="replace"), error=repr(exc))

    async def publish_block(self, subject: bytes, reply: bytes, block: bytes, payload: bytes) -> None:
        """`publish` with a ready header block and an encoded, already validated subject and reply."""
        wait = self.write_block(subject, reply, block, payload)
        if wait is not None:
            await wait

    def write_block(self, subject: bytes, reply: bytes, block: bytes,
                    payload: bytes) -> Coroutine[Any, Any, Any] | None:
        """`publish_block` without a coroutine of its own: what is left to await, if anything.

        The same checks as nats-py's `publish`, then one HPUB command built in one step and queued
        for the flusher. The caller awaits what comes back: a wait for the flusher once more than
        `FLUSH_AT` bytes are pending, or nats-py's own kick when its flusher is not running.
        """
        size = len(payload)
        if self._status != Client.CONNECTED:  # one comparison on the hot path, the details below
            if self.is_closed:
                raise errors.ConnectionClosedError
            if self.is_draining_pubs:
                raise errors.ConnectionDrainingError
            if not self.is_connected and (
                self._max_pending_size <= 0 or size + self._pending_data_size > self._max_pending_size
            ):
                raise errors.OutboundBufferLimitError  # reconnecting and the buffer is full
        hdr_len = len(block)
        if size + hdr_len > self._max_payload:  # the server counts headers too, and would disconnect
            raise errors.MaxPayloadError
        if reply:
            cmd = b"HPUB %b %b %d %d\r\n%b%b\r\n" % (subject, reply, hdr_len, hdr_len + size, block, payload)
        else:
            cmd = b"HPUB %b %d %d\r\n%b%b\r\n" % (subject, hdr_len, hdr_len + size, block, payload)
        stats = self.stats
        stats["out_msgs"] += 1
        stats["out_bytes"] += size
        self._pending.append(cmd)
        self._pending_data_size += len(cmd)
        if self._pending_data_size > FLUSH_AT or 0 < self._max_pending_size < self._pending_data_size:
            return self._flush_pending(force_flush=True)
        queue = self._flush_queue
        if queue is not None and queue.empty():
            flusher = self._flusher_task
            if self._status == Client.CONNECTED and flusher is not None and not flusher.done():
                queue.put_nowait(asyncio.get_running_loop().create_future())  # wake the flusher
            else:
                return self._flush_pending()
        return None

    async def _send_publish(self, subject: str, reply: str, payload: bytes, payload_size: int,
                            headers: Any) -> None:
        # The server counts the header block in its payload limit and closes the connection of a
        # client that passes it; nats-py checks the body alone.
        if isinstance(headers, bytes):
            header_size = len(headers)
        else:
            header_size = sum(len(k) + len(v) + 4 for k, v in headers.items()) + 12 if headers else 0
        if payload_size + header_size > self._max_payload:
            raise errors.MaxPayloadError
        if not isinstance(headers, bytes):
            await super()._send_publish(subject, reply, payload, payload_size, headers)
            return
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(hpub_cmd(subject, reply, headers, payload))
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    async def _process_headers(self, headers: Any) -> dict[str, str] | None:
        parsed = parse_header_block(headers) if headers and headers.startswith(HDR_START) else None
        if parsed is not None:
            return parsed
        try:  # status lines, other spellings: nats-py's own, careful parser
            result: dict[str, str] | None = await super()._process_headers(headers)
        except Exception as exc:
            # Any publisher can send any header block (a status line whose reason is not UTF-8...).
            # nats-py's parser raises on some, and a raise here would end the connection's read
            # loop. The message still goes on, marked, so its receiver rejects and counts it.
            return {MALFORMED: f"{type(exc).__name__} while reading it"}
        return result

    async def _close(self, status: int, do_cbs: bool = True) -> None:
        # Closing while the server is away (reconnecting): nats-py would write what is still
        # pending to the transport whose connection was lost. Python 3.11 drops such a write;
        # 3.12 raises TypeError from inside the transport and the close fails. Nothing can be
        # delivered now either way: drop it here, and say how much.
        if not self.is_closed and not self.is_connected and self._pending_data_size > 0:
            log.warning("bus.close_dropped_pending", bytes=self._pending_data_size, messages=len(self._pending))
            self._pending, self._pending_data_size = [], 0
        await super()._close(status, do_cbs)

    async def _send_ping(self, future: asyncio.Future[bool] | None = None) -> None:
        # nats-py writes PING straight to the socket, ahead of the SUBs and PUBs still waiting in
        # its pending buffer: the PONG could come back before the server had seen them, so
        # `flush()` returned with a fresh subscription not yet registered (and its first
        # messages lost). Queue the PING behind them, as the protocol intends.
        self._pongs.append(future if future is not None else asyncio.get_running_loop().create_future())
        await self._send_command(PING_PROTO)
        await self._flush_pending()


class _FastParser(Parser):  # type: ignore[misc]
    """nats-py's protocol parser with a fast lane for MSG and HMSG (the same states and fields)."""

    nc: FastClient

    async def parse(self, data: bytes = b"") -> None:
        pending = self.buf  # a reconnect replaces it (`reset`): then this buffer is stale
        buf = bytes(pending) + data if pending else data
        pending.clear()
        nc = self.nc
        direct = nc._direct
        stats = nc.stats
        pos, size = 0, len(buf)
        while pos < size:
            if self.state == AWAITING_MSG_PAYLOAD:  # a payload that was still on its way
                needed, header_needed = self.needed, self.header_needed
                arg = self.msg_arg
                subject, sid, reply = arg["subject"], arg["sid"], arg["reply"]
                if size - pos >= needed + 2:
                    self.state, self.header_needed = AWAITING_CONTROL_LINE, 0
            else:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break  # the rest of the line is still on its way
                args = buf[pos:end].split()
                op = args[0] if args else b""
                try:
                    if op == b"HMSG":
                        header_needed, needed = int(args[-2]), int(args[-1])
                        reply = args[3] if len(args) == 6 else b""
                    elif op == b"MSG":
                        header_needed, needed = 0, int(args[-1])
                        reply = args[3] if len(args) == 5 else b""
                    else:
                        # PING, PONG, INFO, +OK, -ERR: nats-py's parser takes the rest of the buffer.
                        pending.extend(buf[pos:] if pos else buf)
                        await super().parse()
                        return
                    subject, sid = args[1], int(args[2])
                except (IndexError, ValueError):
                    raise errors.ProtocolError("nats: malformed MSG") from None
                pos = end + 2
            if size - pos < needed + 2:
                # Wait for the rest of the payload, in nats-py's own state fields.
                self.msg_arg = {"subject": subject, "sid": sid, "reply": reply}
                self.needed, self.header_needed = needed, header_needed
                self.state = AWAITING_MSG_PAYLOAD
                break
            if header_needed:
                hdr: bytes | None = buf[pos:pos + header_needed]
                payload = buf[pos + header_needed:pos + needed]
            else:
                hdr = None
                payload = buf[pos:pos + needed]
            pos += needed + 2
            target = direct.get(sid)
            if target is not None and (hdr is None or (target[1] and hdr.startswith(HDR_START))):
                stats["in_msgs"] += 1
                stats["in_bytes"] += len(payload)
                try:
                    target[0](subject.decode(), reply.decode(), payload, hdr)
                except Exception as exc:  # one bad callback must never break the connection's read loop
                    log.error("bus.direct_delivery_failed", subject=subject.decode(errors="replace"),
                              error=repr(exc))
            else:
                await nc._process_msg(sid, subject, reply, payload, hdr)
                if self.buf is not pending:
                    return  # the connection was reset meanwhile: the rest belongs to the old one
        if pos < size:
            pending.extend(buf[pos:] if pos else buf)
