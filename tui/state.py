"""What the TUI knows about the brain: plain Python state, fed by the bus, read by the widgets.

The bus callback calls `BrainState.ingest` for every message on `NS.>`: it counts the subject,
notes the stimulus id for the flow view, and keeps the *raw* bytes of the few messages the
panels show in small bounded deques. Decoding (pydantic validation, vectors) is deferred to
`refresh`, which the app's timer calls a few times a second; at 5,000 messages per second most
raw messages are simply overwritten before anyone decodes them. That is the sampling: counts are
exact, panels show the newest messages, and the cost per message stays a few dict operations.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from bus import codec
from bus.errors import DecodeError
from bus.models import Broadcast, CtlReply, Heartbeat, Message, MotorAction, NeuromodLevels, Reward, SysError
from tui.traffic import FlowIndex, TrafficCounter, find_stimulus_id

__all__ = ["HORMONES", "ActionRow", "ActorRow", "BrainState", "BroadcastRow", "ErrorRow", "RewardRow"]

log = structlog.get_logger("tui.state")
M = TypeVar("M", bound=Message)

HORMONES = ("dopamine", "serotonin", "norepinephrine", "acetylcholine")
DEAD_INTERVALS = 3.0  # no heartbeat for this many intervals: dead
HUNG_S = 5.0  # a handler busy this long: hung (the supervisor restarts such actors too)
FORGET_DEAD_S = 120.0  # dead rows stay visible this long, then go
MEMORY_KINDS = ("hippocampus", "memory")
Raw = tuple[str, bytes, codec.Headers, float]  # headers: the block as received, a dict, or None


@dataclass(slots=True)
class ActorRow:
    """One live (or recently dead) actor, from its heartbeats."""

    name: str
    kind: str = ""
    group: str = "main"
    state: str = "?"
    rate_in: float | None = None
    rate_out: float | None = None
    mailbox: int = 0
    capacity: int = 0
    dropped: int = 0
    rejected: int = 0
    errors: int = 0
    restarts: int = 0
    p50_ms: float = 0.0
    busy_s: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    last_seen: float = 0.0
    interval: float = 1.0
    health: str = "ok"  # ok | dead | hung
    # Counters of the previous decoded heartbeat, to turn totals into rates.
    _prev: tuple[float, int, int, dict[str, float]] | None = None

    @property
    def is_memory(self) -> bool:
        return self.kind.startswith(MEMORY_KINDS)


@dataclass(slots=True)
class BroadcastRow:
    t: float
    cycle: int
    source: str
    salience: float
    kind: str
    stimulus_id: str | None
    beat: str


@dataclass(slots=True)
class ActionRow:
    t: float
    action: str
    stimulus_id: str
    confidence: float
    source: str
    reward: float | None = None


@dataclass(slots=True)
class RewardRow:
    t: float
    value: float
    stimulus_id: str | None
    action: str | None


@dataclass(slots=True)
class ErrorRow:
    t: float
    actor: str
    kind: str
    subject: str
    reason: str
    suppressed: int


class BrainState:
    """Everything the panels show, updated by `ingest` (per message) and `refresh` (per tick)."""

    def __init__(self, namespace: str = "brain", *, url: str = "", history: int = 240) -> None:
        self.namespace = namespace
        self.url = url
        self._prefix = namespace + "."
        self.conn = "connecting"  # connecting | connected | reconnecting | unreachable | closed | offline
        self.conn_detail = ""
        self.connected_at: float | None = None
        self.traffic = TrafficCounter()
        self.flows = FlowIndex()
        self.flow_selected: str | None = None  # None: follow the newest action's stimulus
        self.actors: dict[str, ActorRow] = {}
        self.levels: dict[str, float] = {}
        self.baseline: dict[str, float] = {}
        self.levels_frozen = False
        self.history: dict[str, deque[float]] = {}
        self._history_len = history
        self.broadcasts: deque[BroadcastRow] = deque(maxlen=100)
        self.actions: deque[ActionRow] = deque(maxlen=100)
        self.rewards: deque[RewardRow] = deque(maxlen=200)
        self.errors: deque[ErrorRow] = deque(maxlen=100)
        self.counts = {"broadcast": 0, "action": 0, "reward": 0, "error": 0, "undecodable": 0}
        self.versions = {"workspace": 0, "actions": 0, "errors": 0, "hormones": 0, "flow": 0}
        self.slow_consumer_drops = 0
        # Raw messages waiting for `refresh` (bounded: at high rates the oldest are overwritten).
        self._hb_raw: dict[str, Raw] = {}
        self._hb_interval: dict[str, tuple[float, float]] = {}  # actor -> (last arrival, interval)
        self._levels_raw: Raw | None = None
        self._pending: dict[str, deque[Raw]] = {
            "broadcast": deque(maxlen=64), "action": deque(maxlen=64),
            "reward": deque(maxlen=512), "error": deque(maxlen=64),
        }
        self._route_cache: dict[str, str] = {}

    # ---------------------------------------------------------------- per message (hot path)

    def ingest(self, subject: str, headers: codec.Headers, data: bytes, now: float) -> None:
        """Note one raw bus message. Called for every message: never decodes a body, never raises."""
        self.traffic.note(subject)
        route = self._route_cache.get(subject)
        if route is None:
            route = self._route(subject)
        if route == "heartbeat":
            actor = subject.rsplit(".", 1)[-1]
            self._hb_raw[actor] = (subject, data, headers, now)
            last = self._hb_interval.get(actor)
            if last is not None and now > last[0]:
                # A smoothed interval: dead means silent for several of *this* actor's intervals.
                gap = min(max(now - last[0], 0.05), 30.0)
                self._hb_interval[actor] = (now, 0.7 * last[1] + 0.3 * gap)
            elif last is None:
                self._hb_interval[actor] = (now, 1.0)
            return  # heartbeats carry no stimulus id
        if route == "levels":
            self._levels_raw = (subject, data, headers, now)
            return
        pending = self._pending.get(route)
        if pending is not None:
            pending.append((subject, data, headers, now))
            self.counts[route] += 1
        type_tag, src, sid = codec.trace_fields(headers)
        if sid is None and data[:1] == b"{":
            sid = find_stimulus_id(data)
        if sid is not None:
            self.flows.note(sid, now, subject[len(self._prefix):], src or "-", (type_tag or "-").split("/", 1)[0])

    def _route(self, subject: str) -> str:
        rel = subject[len(self._prefix):] if subject.startswith(self._prefix) else subject
        if rel.startswith("sys.heartbeat."):
            route = "heartbeat"
        else:
            route = {"neuromod.levels": "levels", "gw.broadcast": "broadcast", "motor.action": "action",
                     "feedback.reward": "reward", "sys.error": "error"}.get(rel, "other")
        if len(self._route_cache) < 4096:
            self._route_cache[subject] = route
        return route

    # ---------------------------------------------------------------- per tick

    def refresh(self, now: float) -> None:
        """Decode what arrived since the last tick, recompute rates and health."""
        self.traffic.roll(now)
        self.decode_pending()
        self._refresh_actors(now)

    def decode_pending(self) -> None:
        """Decode the raw messages waiting since the last call (also used before a reward key)."""
        self._decode_heartbeats()
        if self._levels_raw is not None:
            raw, self._levels_raw = self._levels_raw, None
            lv = self._decode(NeuromodLevels, raw)
            if lv is not None:
                self._apply_levels(lv)
        for raw in _drain(self._pending["broadcast"]):
            b = self._decode(Broadcast, raw)
            if b is not None:
                self.broadcasts.appendleft(BroadcastRow(raw[3], b.cycle, b.source, b.salience, b.kind,
                                                        b.stimulus_id, _beat_summary(b.beat)))
                self.versions["workspace"] += 1
        for raw in _drain(self._pending["action"]):
            a = self._decode(MotorAction, raw)
            if a is not None:
                self.actions.appendleft(ActionRow(raw[3], a.action, a.stimulus_id, a.confidence, a.source))
                self.versions["actions"] += 1
        for raw in _drain(self._pending["reward"]):
            r = self._decode(Reward, raw)
            if r is not None:
                self.rewards.appendleft(RewardRow(raw[3], r.value, r.stimulus_id, r.action))
                self._attach_reward(r)
                self.versions["actions"] += 1
        for raw in _drain(self._pending["error"]):
            e = self._decode(SysError, raw)
            if e is not None:
                self.errors.appendleft(ErrorRow(raw[3], e.actor, e.kind, e.subject, e.reason, e.suppressed))
                self.versions["errors"] += 1
        if self.flows.version != self.versions["flow"]:
            self.versions["flow"] = self.flows.version

    def _decode(self, model: type[M], raw: Raw) -> M | None:
        subject, data, headers, _ = raw
        try:
            return codec.decode(model, data, headers, subject)[0]
        except DecodeError as exc:
            # Bad input is the brain's business (actors report it on sys.error); here it is counted.
            self.counts["undecodable"] += 1
            log.debug("tui.undecodable", subject=subject, reason=exc.reason)
            return None

    def _decode_heartbeats(self) -> None:
        raws, self._hb_raw = self._hb_raw, {}
        for actor, raw in raws.items():
            hb = self._decode(Heartbeat, raw)
            if hb is None:
                continue
            row = self.actors.get(hb.actor) or self.actors.setdefault(hb.actor, ActorRow(hb.actor))
            self._apply_heartbeat(row, hb, raw[3])
            row.interval = self._hb_interval.get(actor, (0.0, 1.0))[1]

    def _apply_heartbeat(self, row: ActorRow, hb: Heartbeat, seen: float) -> None:
        numeric = {k: float(v) for k, v in hb.stats.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}
        prev = row._prev
        if prev is not None and hb.uptime_s > prev[0] and hb.msgs_in >= prev[1]:
            # Rates from the actor's own clock (uptime), so late or sampled heartbeats stay exact.
            dt = hb.uptime_s - prev[0]
            row.rate_in = (hb.msgs_in - prev[1]) / dt
            row.rate_out = (hb.msgs_out - prev[2]) / dt
            old = prev[3]
            row.rates = {k: (v - old[k]) / dt for k, v in numeric.items() if k in old and v >= old[k]}
        elif prev is not None and hb.uptime_s < prev[0]:
            row.rate_in = row.rate_out = None  # restarted: counters began again
            row.rates = {}
        row._prev = (hb.uptime_s, hb.msgs_in, hb.msgs_out, numeric)
        row.kind, row.group, row.state = hb.kind, hb.group, hb.state
        row.mailbox, row.capacity = hb.mailbox, hb.mailbox_capacity
        row.dropped, row.rejected, row.errors, row.restarts = hb.dropped, hb.rejected, hb.errors, hb.restarts
        row.p50_ms = hb.latency_ms_p50
        row.busy_s = float(hb.stats.get("busy_s", 0.0) or 0.0)
        row.stats = dict(hb.stats)
        row.last_seen = seen

    def _refresh_actors(self, now: float) -> None:
        for name in list(self.actors):
            row = self.actors[name]
            silent = now - row.last_seen
            if silent > DEAD_INTERVALS * max(row.interval, 0.2):
                if silent > FORGET_DEAD_S:
                    del self.actors[name]
                    continue
                row.health = "dead"
            elif row.busy_s >= HUNG_S:
                row.health = "hung"
            else:
                row.health = "ok"

    def _apply_levels(self, lv: NeuromodLevels) -> None:
        values = {h: float(getattr(lv, h)) for h in HORMONES}
        for k, v in (lv.model_extra or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                values[k] = float(v)
        self.levels = values
        self.baseline = dict(lv.baseline)
        self.levels_frozen = lv.frozen
        for k, v in values.items():
            self.history.setdefault(k, deque(maxlen=self._history_len)).append(v)
        self.versions["hormones"] += 1

    def _attach_reward(self, r: Reward) -> None:
        if r.stimulus_id is None:
            return
        for row in self.actions:
            if row.stimulus_id == r.stimulus_id and (r.action is None or r.action == row.action):
                row.reward = r.value
                return

    # ---------------------------------------------------------------- queries and updates

    def apply_ctl(self, reply: CtlReply) -> None:
        """Show a control reply's state at once, before the actor's next heartbeat says so."""
        row = self.actors.get(reply.actor)
        if row is not None:
            row.state = reply.state

    def last_action(self) -> ActionRow | None:
        self.decode_pending()
        return self.actions[0] if self.actions else None

    def reward_rate(self, window: int = 50) -> tuple[float | None, float | None, int]:
        """(mean reward, share of positive rewards) over the last `window` rewards, and their count."""
        recent = list(self.rewards)[:window]
        if not recent:
            return None, None, 0
        mean = sum(r.value for r in recent) / len(recent)
        return mean, sum(1 for r in recent if r.value > 0) / len(recent), len(recent)

    def flow_stimulus(self) -> str | None:
        """The stimulus the flow panel shows: the one selected, else the newest action's."""
        if self.flow_selected is not None:
            return self.flow_selected
        if self.actions:
            return self.actions[0].stimulus_id
        recent = self.flows.recent(1)
        return recent[0] if recent else None

    def memory_shards(self) -> list[ActorRow]:
        return sorted((a for a in self.actors.values() if a.is_memory), key=lambda a: a.name)

    def sleeping(self) -> list[str]:
        return sorted(a.name for a in self.actors.values() if a.state == "sleeping" and a.health != "dead")


def _drain(pending: deque[Raw]) -> list[Raw]:
    items = list(pending)
    pending.clear()
    return items


def _beat_summary(beat: list[dict[str, Any]]) -> str:
    """'language 0.41, vector 0.22' from the losers of a workspace cycle."""
    parts = []
    for entry in beat[:4]:
        name = str(entry.get("source") or entry.get("kind") or "?")
        sal = entry.get("salience")
        parts.append(f"{name} {sal:.2f}" if isinstance(sal, int | float) else name)
    more = len(beat) - len(parts)
    return ", ".join(parts) + (f" +{more}" if more > 0 else "")
