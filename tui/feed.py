"""The TUI's connection to the brain: one `Bus`, one raw `NS.>` subscription, and the controls.

Everything here goes through the public bus contract (DESIGN §3): stimuli on `stim.text`,
rewards on `feedback.reward`, control requests on `sys.ctl.<actor>` and `sys.ctl.all`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Callable

import structlog

from bus import Bus, ConnState, CtlReply, CtlRequest, Reward, TextStimulus, codec
from bus.auth import redact_url
from bus.errors import BrainbusError, BusError
from tui.state import ActionRow, BrainState

__all__ = ["BusFeed"]

log = structlog.get_logger("tui.feed")
RETRY_S = 2.0


class BusFeed:
    """Connects a `Bus` for the TUI, feeds `BrainState`, and sends the operator's controls.

    A first connection that fails is retried every `RETRY_S` seconds with a fresh `Bus` (a Bus
    connects once); after that nats-py reconnects by itself and the state shows "reconnecting".
    """

    def __init__(self, url: str, namespace: str, state: BrainState, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = redact_url(url)  # shown and logged: without the password the URL may carry
        self._url = url
        self.namespace = namespace
        self.state = state
        self.clock = clock
        self.bus: Bus | None = None
        self._ids = itertools.count(1)
        self._id_prefix = f"tui-{os.getpid():x}-{int(time.time()) & 0xFFFF:x}-"
        self._closed = False

    async def run(self) -> None:
        """Connect (retrying until it works or `close` is called) and subscribe to `NS.>`."""
        while not self._closed:
            bus = Bus(self._url, namespace=self.namespace, name="brainbus-tui", source="tui")
            bus.on_state(self._on_state)
            try:
                await bus.connect(timeout=2.0)
                await bus.subscribe_raw_direct(bus.subjects.all, self._on_msg)
            except BrainbusError as exc:
                self.state.conn = "unreachable"
                self.state.conn_detail = str(exc)
                log.info("tui.connect_failed", url=self.url, error=str(exc))
                with contextlib.suppress(BrainbusError):
                    await bus.close(drain=False)
                await asyncio.sleep(RETRY_S)
                continue
            self.bus = bus
            self.state.conn, self.state.conn_detail = "connected", ""
            self.state.connected_at = self.clock()
            log.info("tui.connected", url=self.url, namespace=self.namespace)
            return

    async def close(self) -> None:
        self._closed = True
        bus, self.bus = self.bus, None
        if bus is not None:
            # Drain can wait on a server that is gone; the TUI must quit promptly regardless.
            try:
                await asyncio.wait_for(bus.close(drain=bus.connected), 2.0)
            except (TimeoutError, BrainbusError):
                with contextlib.suppress(BrainbusError, TimeoutError):
                    await asyncio.wait_for(bus.close(drain=False), 1.0)

    def _on_state(self, st: ConnState) -> None:
        if self._closed:
            return
        if st is ConnState.RECONNECTING:
            self.state.conn, self.state.conn_detail = "reconnecting", f"lost NATS at {self.url}; retrying"
        elif st is ConnState.CONNECTED:
            self.state.conn, self.state.conn_detail = "connected", ""
            self.state.connected_at = self.clock()
        elif st is ConnState.CLOSED and self.bus is not None:
            self.state.conn, self.state.conn_detail = "closed", "the NATS connection was closed"

    def _on_msg(self, subject: str, data: bytes, headers: codec.Headers) -> None:
        # The hot path, in the connection's read loop: one call into plain state per message, no
        # Textual message, no decoding, no nats-py message object or queue.
        self.state.ingest(subject, headers, data, self.clock())

    # ---------------------------------------------------------------- controls

    def _bus(self) -> Bus:
        if self.bus is None or not self.bus.connected:
            raise BusError(f"not connected to NATS at {self.url}")
        return self.bus

    async def send_text(self, text: str) -> str:
        """Publish a text stimulus with an id of ours (so the flow view can follow it); returns the id."""
        sid = f"{self._id_prefix}{next(self._ids)}"
        await self._bus().publish("stim.text", TextStimulus(text=text, id=sid), stimulus_id=sid)
        return sid

    async def reward(self, value: float, action: ActionRow | None) -> Reward:
        """Reward (+) or punish (-) an action (or, with none, the brain in general)."""
        msg = Reward(value=value, stimulus_id=action.stimulus_id if action else None,
                     action=action.action if action else None)
        await self._bus().publish("feedback.reward", msg, stimulus_id=msg.stimulus_id)
        return msg

    async def control(self, actor: str, verb: str) -> CtlReply:
        """Request `verb` of one actor on `sys.ctl.<actor>`; the reply's state shows at once."""
        bus = self._bus()
        reply = await bus.request(bus.subjects.ctl(actor), CtlRequest.model_validate({"verb": verb}),
                                  CtlReply, timeout=2.0)
        self.state.apply_ctl(reply)
        return reply

    async def control_all(self, verb: str, *, wait_s: float = 1.0) -> list[CtlReply]:
        """Request `verb` of every actor on `sys.ctl.all`; returns the replies that came in time."""
        bus = self._bus()
        # Stop waiting as soon as every actor we know to be alive has answered.
        live = sum(1 for a in self.state.actors.values() if a.health != "dead") or None
        replies = await bus.gather(bus.subjects.ctl_all, CtlRequest.model_validate({"verb": verb}), CtlReply,
                                   expect=live, timeout=wait_s)
        for reply, _ in replies:
            self.state.apply_ctl(reply)
        return [r for r, _ in replies]
