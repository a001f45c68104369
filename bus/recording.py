"""A flight recorder for the bus: bus traffic to a JSON-lines file, and back onto the bus.

One JSON object per line and message::

    {"t": 0.0123, "wall": 1767225600.123456, "subject": "brain.stim.text", "reply": null,
     "headers": {"Bb-Type": "text_stimulus/1", ...}, "body": "...", "encoding": "utf8"}

`t` is seconds since the recording started (monotonic clock: the replay timing), `wall` the
unix time it arrived. The body is UTF-8 text (`encoding: utf8`) when it is valid UTF-8 and has
no binary vector part; otherwise base64 (`encoding: base64`): messages with a `Bb-Vec` header
carry raw little-endian floats after their JSON (bus.codec), which no text encoding keeps intact.

Replay republishes the messages with the recorded gaps scaled by `rate` (2 = twice as fast,
0 = as fast as possible), optionally into another namespace (the first subject token is
rewritten). Reply subjects are not replayed: whoever waited for those replies is gone. What the
server refuses (a subject the connection's role may not publish on, a message over the server's
payload limit) is counted apart (`ReplayResult.refused`), not as replayed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import nats.errors
import orjson
import structlog

from bus._nats import DirectCallback, FastClient
from bus.client import Bus, Subscription
from bus.codec import H_VEC
from bus.errors import BadInput
from bus.subjects import Subjects, match, validate_subject

__all__ = ["RecordedMessage", "Recorder", "RecordingError", "ReplayResult", "read_recording", "replay"]

log = structlog.get_logger("bus.recording")


class RecordingError(BadInput):
    """A recording file that cannot be read; the message names the file and the line."""


@dataclass(slots=True)
class RecordedMessage:
    """One message as recorded."""

    t: float
    wall: float
    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)
    reply: str | None = None

    def to_line(self) -> bytes:
        """This message as one JSON line (with its newline)."""
        text: str | None = None
        if H_VEC not in self.headers:
            try:
                text = self.data.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        body, encoding = (text, "utf8") if text is not None else (base64.b64encode(self.data).decode(), "base64")
        return orjson.dumps({"t": round(self.t, 6), "wall": round(self.wall, 6), "subject": self.subject,
                             "reply": self.reply, "headers": self.headers, "body": body,
                             "encoding": encoding}) + b"\n"

    @classmethod
    def from_line(cls, line: bytes, where: str) -> RecordedMessage:
        """Parse one line; RecordingError naming `where` (file:line) and what is wrong."""
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise RecordingError(f"{where}: not a JSON object ({exc})") from None
        if not isinstance(obj, dict):
            raise RecordingError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        missing = [k for k in ("t", "subject", "body") if k not in obj]
        if missing:
            raise RecordingError(f"{where}: missing field(s) {', '.join(missing)}")
        t, wall, subject, body = obj["t"], obj.get("wall", 0.0), obj["subject"], obj["body"]
        if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
            raise RecordingError(f"{where}: field 't' must be a number of seconds >= 0, got {t!r}")
        if not isinstance(wall, int | float) or isinstance(wall, bool):
            raise RecordingError(f"{where}: field 'wall' must be a number, got {wall!r}")
        if not isinstance(subject, str):
            raise RecordingError(f"{where}: field 'subject' must be a string, got {subject!r}")
        try:
            validate_subject(subject)
        except BadInput as exc:
            raise RecordingError(f"{where}: {exc.reason}") from None
        headers = obj.get("headers") or {}
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and "\r" not in v and "\n" not in v
                for k, v in headers.items()):
            raise RecordingError(f"{where}: field 'headers' must map names to single-line strings")
        reply = obj.get("reply")
        if reply is not None and not isinstance(reply, str):
            raise RecordingError(f"{where}: field 'reply' must be a string or null")
        encoding = obj.get("encoding", "utf8")
        if not isinstance(body, str):
            raise RecordingError(f"{where}: field 'body' must be a string, got {type(body).__name__}")
        if encoding == "utf8":
            data = body.encode("utf-8")
        elif encoding == "base64":
            try:
                data = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                raise RecordingError(f"{where}: field 'body' is not valid base64") from None
        else:
            raise RecordingError(f"{where}: field 'encoding' must be 'utf8' or 'base64', got {encoding!r}")
        return cls(t=float(t), wall=float(wall), subject=subject, data=data, headers=headers, reply=reply)


def read_recording(path: str | Path) -> list[RecordedMessage]:
    """Every message of a recording, checked line by line before anything is replayed.

    Blank lines are skipped. Raises RecordingError naming the file and the first bad line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read the recording ({exc.strerror})") from None
    messages = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if line.strip():
            messages.append(RecordedMessage.from_line(line, f"{path}: line {number}"))
    for earlier, later in zip(messages, messages[1:], strict=False):
        if later.t < earlier.t:
            raise RecordingError(f"{path}: times go backwards ({later.t} after {earlier.t}); "
                                 "a recording is in the order it was made")
    return messages


class Recorder:
    """Writes every message on `patterns` to `out`, one JSON line each, until `stop()`.

    `count` > 0 stops after that many messages (`done` is set then).
    """

    def __init__(self, bus: Bus, out: IO[bytes], patterns: Sequence[str] = (">",), *, count: int = 0) -> None:
        self.bus = bus
        self.out = out
        self.patterns = [bus.resolve(p, wildcards=True) for p in patterns]
        self.count = count
        self.recorded = 0
        self.done = asyncio.Event()
        self._subs: list[Subscription] = []
        self._t0 = 0.0

    async def start(self) -> None:
        self._t0 = time.monotonic()
        nc = self.bus.nc
        assert isinstance(nc, FastClient)
        for index, pattern in enumerate(self.patterns):
            # Delivered in the connection's read loop, in arrival order across all the patterns
            # (callback subscriptions each run in their own task and would reorder them).
            inner = await nc.subscribe_direct(pattern, self._recorder_for(index))
            self._subs.append(Subscription(inner, pattern))
        await self.bus.flush()  # subscribed on the server before anyone is told we listen

    def _recorder_for(self, index: int) -> DirectCallback:
        def record(subject: str, reply: str, data: bytes, headers: dict[str, str] | None) -> None:
            # Overlapping patterns deliver a message once per subscription: the first matching
            # pattern's subscription records it, the others let it pass.
            if index == 0 or next(i for i, p in enumerate(self.patterns) if match(p, subject)) == index:
                self._record(subject, reply, data, headers)

        return record

    def _record(self, subject: str, reply: str, data: bytes, headers: dict[str, str] | None) -> None:
        if self.done.is_set():
            return
        item = RecordedMessage(t=time.monotonic() - self._t0, wall=time.time(), subject=subject,
                               data=bytes(data), headers=dict(headers or {}), reply=reply or None)
        self.out.write(item.to_line())
        self.recorded += 1
        if self.count and self.recorded >= self.count:
            self.done.set()

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.stop()
        self._subs.clear()
        self.out.flush()


def _retarget(subject: str, namespace: str | None) -> str:
    if namespace is None:
        return subject
    _, _, rest = subject.partition(".")
    return f"{namespace}.{rest}" if rest else namespace


@dataclass(slots=True)
class ReplayResult:
    """What a replay did: messages it published, and how many of those the server refused.

    `reasons` counts the refusals by what the server (or the client, for a message over the
    payload limit) said, for the first `_REASONS_KEPT` distinct reasons.
    """

    published: int = 0
    refused: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return self.published - self.refused

    def refuse(self, reason: str) -> None:
        self.refused += 1
        if reason in self.reasons or len(self.reasons) < _REASONS_KEPT:
            self.reasons[reason] = self.reasons.get(reason, 0) + 1


_REASONS_KEPT = 8
_PUBLISH_VIOLATION = "permissions violation for publish"
_FLUSH_S = 5.0


@contextlib.contextmanager
def _counting_refusals(bus: Bus, result: ReplayResult) -> Iterator[None]:
    """Count the server's refusals of this connection's publishes into `result` while inside.

    The server answers a publish it does not allow with an asynchronous `-ERR` and keeps the
    connection; nats-py hands it to the connection's error callback, which this wraps (the
    callback it wraps still runs). A flush before leaving makes the count complete: the server
    answers the flush's PING after every publish before it.
    """
    nc = bus.nc
    previous = nc._error_cb

    async def on_error(exc: Exception) -> None:
        text = str(exc)
        if _PUBLISH_VIOLATION in text.lower():
            result.refuse(text.removeprefix("nats: "))
        await previous(exc)

    nc._error_cb = on_error
    try:
        yield
    finally:
        if nc._error_cb is on_error:
            nc._error_cb = previous


async def replay(bus: Bus, messages: Sequence[RecordedMessage], *, rate: float = 1.0,
                 namespace: str | None = None, patterns: Iterable[str] | None = None,
                 loop: bool = False, result: ReplayResult | None = None) -> ReplayResult:
    """Publish `messages` again with their recorded gaps divided by `rate` (0: no waiting).

    `namespace` rewrites each subject's first token; `patterns` (relative to the target
    namespace, or full) keeps only the messages that match. Returns how many were published and
    how many of them the server refused (into `result` when given, which keeps the counts of a
    replay that is cancelled); with `loop` it goes on from the start until cancelled.
    """
    if rate < 0 or not math.isfinite(rate):
        raise BadInput(f"rate must be 0 (as fast as possible) or more, got {rate}")
    chosen: list[tuple[RecordedMessage, str]] = []
    wanted: list[str] | None = None
    for m in messages:
        target = _retarget(m.subject, namespace)
        if wanted is None and patterns is not None:
            ns = target.split(".", 1)[0]
            wanted = [Subjects(ns).full(p, wildcards=True) for p in patterns]
        if wanted is None or any(match(p, target) for p in wanted):
            chosen.append((m, target))
    done = result if result is not None else ReplayResult()
    with _counting_refusals(bus, done):
        try:
            while True:
                start = time.monotonic()
                first = chosen[0][0].t if chosen else 0.0
                for m, target in chosen:
                    if rate > 0:
                        delay = start + (m.t - first) / rate - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    done.published += 1
                    try:
                        await bus.nc.publish(target, m.data, headers=m.headers or None)
                    except nats.errors.MaxPayloadError:
                        done.refuse(f"{len(m.data)} bytes on {target} exceed the server's limit of "
                                    f"{bus.nc.max_payload} bytes (headers included)")
                await bus.flush(_FLUSH_S)  # every refusal of this round has come back
                if not loop or not chosen:
                    return done
                log.info("replay.loop", published=done.published, refused=done.refused)
        except asyncio.CancelledError:
            # Stopped (Ctrl-C on a loop): what the server still has to answer counts too.
            with contextlib.suppress(Exception):
                await bus.flush(1.0)
            raise
