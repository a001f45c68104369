"""Subject names of the public contract (DESIGN §3) under a brain's namespace.

Every subject is `NS.<relative>`; tokens are lowercase `[a-z0-9_-]`. Publishers use concrete
subjects only; subscribers may use `*` (one token) and `>` (the rest).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bus.errors import SubjectError

__all__ = ["TOKEN_RE", "Subjects", "match", "validate_subject", "validate_token"]

TOKEN_RE = re.compile(r"^[a-z0-9_-]+\Z")  # \Z, not $: `$` also matches before a final "\n"
_MAX_SUBJECT = 256


def validate_token(token: str, *, what: str = "token") -> str:
    """Return `token` if it is a valid subject token, else raise SubjectError."""
    if not TOKEN_RE.match(token):
        raise SubjectError(f"{what} {token!r} must be lowercase letters, digits, '_' or '-'")
    return token


def validate_subject(subject: str, *, wildcards: bool = False) -> str:
    """Check a full subject; wildcards (`*`, a final `>`) only when `wildcards` is true."""
    if not subject or len(subject) > _MAX_SUBJECT:
        raise SubjectError(f"subject must be 1..{_MAX_SUBJECT} characters, got {len(subject)}")
    tokens = subject.split(".")
    for i, tok in enumerate(tokens):
        if wildcards and (tok == "*" or (tok == ">" and i == len(tokens) - 1)):
            continue
        if tok in ("*", ">"):
            what = "a wildcard is not allowed here" if not wildcards else "'>' must be the last token"
            raise SubjectError(f"subject {subject!r}: {what}")
        if not TOKEN_RE.match(tok):
            raise SubjectError(
                f"subject {subject!r}: token {tok!r} must be lowercase letters, digits, '_' or '-'"
            )
    return subject


def match(pattern: str, subject: str) -> bool:
    """NATS wildcard matching of a concrete `subject` against `pattern`."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


@dataclass(frozen=True, slots=True)
class Subjects:
    """The public subjects of one brain, e.g. `Subjects("brain").stim_text == "brain.stim.text"`."""

    ns: str = "brain"

    def __post_init__(self) -> None:
        validate_token(self.ns, what="namespace")

    def full(self, relative: str, *, wildcards: bool = False) -> str:
        """Prefix a relative subject (`stim.text`) with the namespace; full subjects pass through."""
        if relative == self.ns or relative.startswith(self.ns + "."):
            return validate_subject(relative, wildcards=wildcards)
        return validate_subject(f"{self.ns}.{relative}", wildcards=wildcards)

    def relative(self, subject: str) -> str:
        """Strip the namespace: `brain.stim.text` → `stim.text`."""
        if not subject.startswith(self.ns + "."):
            raise SubjectError(f"subject {subject!r} is outside namespace {self.ns!r}")
        return subject[len(self.ns) + 1 :]

    @property
    def all(self) -> str:
        return f"{self.ns}.>"

    @property
    def stim(self) -> str:
        return f"{self.ns}.stim.>"

    @property
    def stim_text(self) -> str:
        return f"{self.ns}.stim.text"

    @property
    def stim_vector(self) -> str:
        return f"{self.ns}.stim.vector"

    @property
    def env_actions(self) -> str:
        return f"{self.ns}.env.actions"

    @property
    def feedback_reward(self) -> str:
        return f"{self.ns}.feedback.reward"

    @property
    def motor_action(self) -> str:
        return f"{self.ns}.motor.action"

    @property
    def gw_bid(self) -> str:
        return f"{self.ns}.gw.bid"

    @property
    def gw_broadcast(self) -> str:
        return f"{self.ns}.gw.broadcast"

    @property
    def neuromod_levels(self) -> str:
        return f"{self.ns}.neuromod.levels"

    @property
    def neuromod_event(self) -> str:
        return f"{self.ns}.neuromod.event"

    @property
    def mem_store(self) -> str:
        return f"{self.ns}.mem.store"

    @property
    def mem_recall(self) -> str:
        return f"{self.ns}.mem.recall"

    @property
    def mem_replay(self) -> str:
        return f"{self.ns}.mem.replay"

    @property
    def sys_error(self) -> str:
        return f"{self.ns}.sys.error"

    @property
    def heartbeats(self) -> str:
        return f"{self.ns}.sys.heartbeat.*"

    @property
    def ctl_all(self) -> str:
        return f"{self.ns}.sys.ctl.all"

    def region_out(self, region: str) -> str:
        return f"{self.ns}.region.{validate_token(region, what='region name')}.out"

    def heartbeat(self, actor: str) -> str:
        return f"{self.ns}.sys.heartbeat.{validate_token(actor, what='actor name')}"

    def ctl(self, actor: str) -> str:
        return f"{self.ns}.sys.ctl.{validate_token(actor, what='actor name')}"
