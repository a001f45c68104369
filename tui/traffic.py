"""Cheap per-message bookkeeping for the raw `NS.>` feed: subject rates and stimulus flows.

Both structures are fed from the bus callback for every message, so `note` must stay a few
dictionary operations; everything costlier (sorting, summing windows) happens in `rates`, which
the refresh timer calls a few times a second.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from dataclasses import dataclass

__all__ = ["FlowIndex", "FlowStep", "TrafficCounter", "find_stimulus_id"]

# A stimulus id in a JSON body, for messages that carry it only there (plain JSON from outside,
# or actors that set the field but no `Bb-Sid` header). Only the head of the body is searched.
_SID_RE = re.compile(rb'"(?:stimulus_id|id)"\s*:\s*"([^"\\\s]{1,128})"')
_SID_SCAN = 2048


def find_stimulus_id(data: bytes) -> str | None:
    """The first `stimulus_id`/`id` string field in the head of a JSON body, if any."""
    found = _SID_RE.search(data, 0, _SID_SCAN)
    return found.group(1).decode("ascii", errors="replace") if found else None


class TrafficCounter:
    """Messages per subject, counted exactly and turned into per-second rates over a window.

    The number of distinct subjects is capped: past `max_subjects`, new subjects are folded into
    one `(other)` bucket so a misbehaving publisher cannot grow this without bound.
    """

    OTHER = "(other)"

    def __init__(self, *, window_s: float = 2.0, max_subjects: int = 1024) -> None:
        self.window_s = window_s
        self.max_subjects = max_subjects
        self.total = 0
        self.totals: dict[str, int] = {}
        self._current: dict[str, int] = {}
        self._windows: deque[tuple[float, dict[str, int]]] = deque(maxlen=256)
        self._since: float | None = None
        self._rates: list[tuple[str, float]] = []
        self.rate_total = 0.0

    def note(self, subject: str) -> None:
        """Count one message (called for every message: keep it tiny)."""
        current = self._current
        n = current.get(subject)
        if n is None and len(current) >= self.max_subjects and subject not in self.totals:
            subject = self.OTHER
            n = current.get(subject)
        current[subject] = 1 if n is None else n + 1

    def roll(self, now: float) -> None:
        """Close the current bucket; recompute rates over the last `window_s` seconds."""
        bucket, self._current = self._current, {}
        totals = self.totals
        for subject, n in bucket.items():
            if subject in totals or len(totals) < self.max_subjects:
                totals[subject] = totals.get(subject, 0) + n
            else:
                totals[self.OTHER] = totals.get(self.OTHER, 0) + n
            self.total += n
        # A bucket holds what arrived since the previous roll; before the first roll there is no
        # start time, so the first bucket only counts towards totals, not rates.
        start, self._since = self._since, now
        if start is not None:
            self._windows.append((start, bucket))
        while len(self._windows) > 1 and self._windows[0][0] < now - self.window_s:
            self._windows.popleft()
        span = now - self._windows[0][0] if self._windows else 0.0
        if span <= 0:
            self._rates, self.rate_total = [], 0.0
            return
        sums: dict[str, int] = {}
        for _, counts in self._windows:
            for subject, n in counts.items():
                sums[subject] = sums.get(subject, 0) + n
        self._rates = sorted(((s, n / span) for s, n in sums.items()), key=lambda r: (-r[1], r[0]))
        self.rate_total = sum(r for _, r in self._rates)

    def top(self, n: int) -> list[tuple[str, float, int]]:
        """The `n` busiest subjects now, then (at rate 0) the busiest so far: (subject, msg/s, total)."""
        rows = [(s, r, self.totals.get(s, 0)) for s, r in self._rates[:n]]
        if len(rows) < n:
            active = {s for s, _, _ in rows}
            quiet = sorted(((s, t) for s, t in self.totals.items() if s not in active),
                           key=lambda x: (-x[1], x[0]))
            rows += [(s, 0.0, t) for s, t in quiet[: n - len(rows)]]
        return rows


@dataclass(slots=True)
class FlowStep:
    """One message seen for a stimulus: when (seconds), where, from whom, of what type."""

    t: float
    subject: str
    source: str
    type: str


class FlowIndex:
    """Recent stimuli and every message seen for each, in arrival order (bounded both ways)."""

    def __init__(self, *, max_stimuli: int = 512, max_steps: int = 128) -> None:
        self.max_stimuli = max_stimuli
        self.max_steps = max_steps
        self._flows: OrderedDict[str, list[FlowStep]] = OrderedDict()
        self.version = 0

    def note(self, sid: str, t: float, subject: str, source: str, type_: str) -> None:
        steps = self._flows.get(sid)
        if steps is None:
            steps = self._flows[sid] = []
            if len(self._flows) > self.max_stimuli:
                self._flows.popitem(last=False)
        if len(steps) < self.max_steps:
            steps.append(FlowStep(t, subject, source, type_))
        self.version += 1

    def steps(self, sid: str) -> list[FlowStep]:
        return list(self._flows.get(sid, ()))

    def recent(self, n: int = 20) -> list[str]:
        """The `n` stimulus ids seen most recently first seen, newest first."""
        return list(reversed(list(self._flows)[-n:]))

    def __contains__(self, sid: object) -> bool:
        return sid in self._flows

    def __len__(self) -> int:
        return len(self._flows)
