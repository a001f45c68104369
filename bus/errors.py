"""The one error tree of brainbus.

    BrainbusError
    ├── BadInput              a message, argument or file that is not acceptable (data: reason)
    │   ├── DecodeError       bytes on a subject that do not decode into its model
    │   ├── SubjectError      a subject or token that breaks the subject rules
    │   └── ConfigError       a configuration file that fails validation (names file and key path)
    ├── BusError              the NATS connection or the embedded server failed
    │   ├── NotConnectedError using a bus that is not (or no longer) connected
    │   ├── NoRespondersError a request nobody subscribes to
    │   └── RequestTimeout    no reply before the deadline (also a TimeoutError)
    └── ActorError            actor lifecycle misuse or failure
        ├── ActorDeadError    a request to an actor that has stopped
        └── EscalationError   the supervisor gave up: restart intensity exceeded

Messages are sentences that name the subject, file or actor; data goes in attributes.
"""

from __future__ import annotations

__all__ = [
    "ActorDeadError",
    "ActorError",
    "BadInput",
    "BrainbusError",
    "BusError",
    "ConfigError",
    "DecodeError",
    "EscalationError",
    "NoRespondersError",
    "NotConnectedError",
    "RequestTimeout",
    "SubjectError",
]


class BrainbusError(Exception):
    """Root of every error brainbus raises on purpose."""


class BadInput(BrainbusError, ValueError):
    """Input that is rejected; `reason` is what a person should fix."""

    def __init__(self, reason: str, *, subject: str | None = None) -> None:
        self.reason = reason
        self.subject = subject
        super().__init__(f"{subject}: {reason}" if subject else reason)


class DecodeError(BadInput):
    """A message body (or its headers) does not decode into the subject's model."""


class SubjectError(BadInput):
    """A subject that is malformed or outside the namespace."""


class ConfigError(BadInput):
    """A configuration that fails validation; `str()` names file, key path and expectation."""


class BusError(BrainbusError):
    """The connection to NATS or the embedded server failed."""


class NotConnectedError(BusError):
    """The bus is not connected (never opened, or already closed)."""


class NoRespondersError(BusError):
    """A request went to a subject with no subscriber: no actor of that name is running."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"nobody answers on {subject} (no actor or responder is subscribed)")


class RequestTimeout(BusError, TimeoutError):
    """A request got no reply before its deadline."""

    def __init__(self, subject: str, timeout: float) -> None:
        self.subject = subject
        self.timeout = timeout
        super().__init__(f"no reply on {subject} within {timeout:g} s")


class ActorError(BrainbusError):
    """An actor was misused or failed."""


class ActorDeadError(ActorError):
    """The actor addressed has stopped and takes no more messages."""


class EscalationError(ActorError):
    """The supervisor exceeded its restart intensity and shut the brain down."""

    def __init__(self, actor: str, last_error: str, restarts: int, seconds: float) -> None:
        self.actor = actor
        self.last_error = last_error
        super().__init__(
            f"actor {actor!r} failed {restarts} times within {seconds:g} s "
            f"(restart intensity exceeded); last error: {last_error}"
        )
