"""nats-py's client with brainbus's hot paths made cheap.

1. Headers. nats-py checks every header name and value character by character when it publishes
   and when it parses (microseconds per header). brainbus's headers are built by the codec from
   validated tokens (`codec.encode_wire`), so `Bus` hands them over as one ready header block,
   and plain header blocks on receipt are split without the per-character checks.
2. Direct delivery. A subscription registered with `subscribe_direct` skips nats-py's
   per-subscription queue and task: the read loop calls a quick synchronous function (decode,
   then put into an actor's mailbox). The actor's bounded mailbox is then the only buffer, and
   its overflow policy the only drop policy, counted exactly.
Anything else (status lines from JetStream, dict headers, ordinary subscriptions) takes nats-py's
own path unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from nats.aio.client import PING_PROTO, Client
from nats.aio.subscription import Subscription
from nats.protocol.command import hpub_cmd

__all__ = ["DirectCallback", "FastClient", "parse_header_block"]

log = structlog.get_logger("bus.nats")
_HDR_START = b"NATS/1.0\r\n"
DirectCallback = Callable[[str, str, bytes, "dict[str, str] | None"], None]


def parse_header_block(block: bytes) -> dict[str, str] | None:
    """Split a plain `NATS/1.0` header block written as `Name: value` lines; None if it is not one."""
    try:
        return dict(line.split(": ", 1) for line in block[len(_HDR_START):-4].decode().split("\r\n"))  # type: ignore[misc]
    except (ValueError, UnicodeDecodeError):
        return None


class FastClient(Client):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, DirectCallback] = {}

    async def subscribe_direct(self, subject: str, deliver: DirectCallback, *,
                               queue: str = "") -> Subscription:
        """Subscribe so that each message calls `deliver(subject, reply, data, headers)` in the read loop.

        `deliver` must be quick and must not raise; it is the caller's job to buffer.
        """
        sub: Subscription = await self.subscribe(subject, queue=queue)
        self._direct[sub._id] = deliver
        return sub

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        self._direct.pop(sid, None)
        super()._remove_sub(sid, max_msgs)

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any) -> None:
        deliver = self._direct.get(sid)
        if deliver is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        hdr = await self._process_headers(headers) if headers else None
        try:
            deliver(subject.decode(), reply.decode(), data, hdr)
        except Exception as exc:  # one bad callback must never break the connection's read loop
            log.error("bus.direct_delivery_failed", subject=subject.decode(errors="replace"), error=repr(exc))

    async def _send_publish(self, subject: str, reply: str, payload: bytes, payload_size: int,
                            headers: Any) -> None:
        if not isinstance(headers, bytes):
            await super()._send_publish(subject, reply, payload, payload_size, headers)
            return
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(hpub_cmd(subject, reply, headers, payload))
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    async def _process_headers(self, headers: Any) -> dict[str, str] | None:
        parsed = parse_header_block(headers) if headers and headers.startswith(_HDR_START) else None
        if parsed is None:  # status lines, other spellings: nats-py's own, careful parser
            return await super()._process_headers(headers)  # type: ignore[no-any-return]
        return parsed

    async def _send_ping(self, future: asyncio.Future[bool] | None = None) -> None:
        # nats-py writes PING straight to the socket, ahead of the SUBs and PUBs still waiting in
        # its pending buffer: the PONG could come back before the server had seen them, so
        # `flush()` returned with a fresh subscription not yet registered (and its first
        # messages lost). Queue the PING behind them, as the protocol intends.
        self._pongs.append(future if future is not None else asyncio.get_running_loop().create_future())
        await self._send_command(PING_PROTO)
        await self._flush_pending()
