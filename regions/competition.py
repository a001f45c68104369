"""Global-workspace competition (pure compute, no bus code).

Implements one cycle of the LIDA / Dehaene global-workspace competition: regions submit
:class:`Bid` objects; each cycle :meth:`Workspace.compete` picks at most ``capacity`` winners
among the bids received since the previous cycle. A bid wins ("ignites" the workspace) only if

1. no ignition happened within the last ``refractory_s`` seconds (the attentional blink: bids
   arriving during the refractory period are lost, not queued);
2. its *effective* salience — the bid's salience after inhibition of return — is at least the
   ignition threshold plus the neuromodulatory ``threshold_shift``;
3. it is not a near-copy (cosine ``>= ior_similarity``, or same ``stimulus_id`` and ``kind``) of a
   bid that already won this cycle;
4. it ranks within ``capacity``.

Inhibition of return: for ``inhibition_of_return_s`` after a content wins, bids whose content has
cosine ``>= ior_similarity`` with it (or the same ``stimulus_id`` and ``kind``) have their salience
multiplied by ``1 - ior_penalty * (1 - age / window)``: full inhibition right after the win, fading
linearly to none, so attention moves on but may come back.

Same stimulus, different kind: a bid of another kind about a stimulus that already won (a recalled
episode about the percept it cues) is new information about that stimulus, not attention returning
to it, so neither rule applies between the two, even though a recalled key is by construction close
to its cue's vector. This is what lets episodic evidence reach the workspace right after the percept.

Every decision records why each bid won or lost (:class:`Verdict`) so the actor can log it.
Ordering is fully deterministic and independent of arrival order except as a final tie-break:
effective salience, then raw salience (descending), then source, kind, stimulus id (ascending),
then submission order.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Bid", "Decision", "Outcome", "Verdict", "Workspace"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True, eq=False)
class Bid:
    """A region's offer of content to the global workspace.

    Attributes:
        source: Name of the bidding region (e.g. ``"cortex.language"``).
        kind: What the content is (``"percept"``, ``"recall"``, ...).
        salience: How strongly it bids (usually novelty x hormone gain); finite.
        content: The content vector (compared by cosine for inhibition of return).
        stimulus_id: Identity of the originating stimulus, if any.
        payload: Anything the winner's broadcast should carry (text, episode id, ...).
        bid_id: Optional identifier for logs.
    """

    source: str
    kind: str
    salience: float
    content: NDArray[np.float32]
    stimulus_id: str | None = None
    payload: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    bid_id: str | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.salience):
            raise ValueError(f"bid salience must be finite, got {self.salience}")
        content = np.asarray(self.content, dtype=np.float32).reshape(-1)
        if not np.isfinite(content).all():
            raise ValueError("bid content contains NaN or inf")
        object.__setattr__(self, "content", content)


class Verdict(enum.StrEnum):
    """Why a bid ended up where it did."""

    WON = "won"
    BELOW_THRESHOLD = "below_threshold"
    INHIBITED = "inhibited"
    DUPLICATE = "duplicate"
    CAPACITY = "capacity"
    REFRACTORY = "refractory"


@dataclass(frozen=True, slots=True, eq=False)
class Outcome:
    """One bid's result in one cycle.

    Attributes:
        bid: The bid.
        effective_salience: Salience after inhibition of return.
        verdict: Why it won or lost.
        detail: Human-readable explanation.
        rank: Position in the cycle's ordering (0 = strongest).
    """

    bid: Bid
    effective_salience: float
    verdict: Verdict
    detail: str
    rank: int

    def to_log(self) -> dict[str, Any]:
        """A flat dict for structured logging."""
        return {
            "source": self.bid.source,
            "kind": self.bid.kind,
            "stimulus_id": self.bid.stimulus_id,
            "bid_id": self.bid.bid_id,
            "salience": round(self.bid.salience, 4),
            "effective": round(self.effective_salience, 4),
            "verdict": self.verdict.value,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True, eq=False)
class Decision:
    """The result of one competition cycle.

    Attributes:
        cycle: Cycle number (1-based, counts every :meth:`Workspace.compete` call).
        now: Time the cycle ran at.
        threshold: Effective ignition threshold (base + shift).
        ignited: Whether anything won.
        winners: Winning bids, strongest first (at most ``capacity``).
        losers: Every other bid of the cycle with its salience and verdict.
        reasons: Human-readable explanation of the cycle, one line per fact.
        dropped: Bids discarded on submission because the pending buffer was full.
    """

    cycle: int
    now: float
    threshold: float
    ignited: bool
    winners: tuple[Outcome, ...]
    losers: tuple[Outcome, ...]
    reasons: tuple[str, ...]
    dropped: int = 0

    @property
    def winner(self) -> Bid | None:
        """The strongest winning bid, if any."""
        return self.winners[0].bid if self.winners else None

    def to_log(self) -> dict[str, Any]:
        """A dict for structured logging (``log.info("gw.cycle", **decision.to_log())``)."""
        return {
            "cycle": self.cycle,
            "ignited": self.ignited,
            "threshold": round(self.threshold, 4),
            "winners": [o.to_log() for o in self.winners],
            "losers": [o.to_log() for o in self.losers],
            "reasons": list(self.reasons),
            "dropped": self.dropped,
        }


@dataclass(frozen=True, slots=True, eq=False)
class _Trace:
    """A recent winner remembered for inhibition of return."""

    at: float
    cycle: int
    unit: NDArray[np.float32] | None
    stimulus_id: str | None
    source: str
    kind: str


def _unit(v: NDArray[np.float32]) -> NDArray[np.float32] | None:
    norm = math.sqrt(float(v @ v))
    return v / norm if norm > 0 else None


class Workspace:
    """The global workspace's competition, one :meth:`compete` call per cycle.

    Args:
        capacity: Maximum winners per cycle (1 = a single conscious content).
        ignition_threshold: Effective salience needed to ignite, before the neuromodulator shift.
        refractory_s: After an ignition, no new ignition for this long.
        inhibition_of_return_s: How long a winning content stays inhibited.
        ior_similarity: Cosine at or above which two contents count as the same.
        ior_across_stimuli: Whether similar content of a *different* stimulus id is inhibited too
            (True: attention avoids returning to the same content; False: only re-bids of the same
            stimulus are, so a task that repeats a word still gets every presentation attended).
        ior_penalty: Fraction of salience removed right after a win (fades to 0 over the window).
        max_pending: Bids buffered between cycles; beyond it the weakest is dropped.
    """

    def __init__(
        self,
        capacity: int = 1,
        ignition_threshold: float = 0.5,
        refractory_s: float = 0.1,
        inhibition_of_return_s: float = 2.0,
        ior_similarity: float = 0.95,
        ior_penalty: float = 0.8,
        ior_across_stimuli: bool = True,
        max_pending: int = 1024,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if not math.isfinite(ignition_threshold):
            raise ValueError("ignition_threshold must be finite")
        if refractory_s < 0 or inhibition_of_return_s < 0:
            raise ValueError("refractory_s and inhibition_of_return_s must be >= 0")
        if not -1 <= ior_similarity <= 1:
            raise ValueError(f"ior_similarity must be in [-1, 1], got {ior_similarity}")
        if not 0 <= ior_penalty <= 1:
            raise ValueError(f"ior_penalty must be in [0, 1], got {ior_penalty}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.capacity = capacity
        self.ignition_threshold = float(ignition_threshold)
        self.refractory_s = float(refractory_s)
        self.inhibition_of_return_s = float(inhibition_of_return_s)
        self.ior_similarity = float(ior_similarity)
        self.ior_across_stimuli = ior_across_stimuli
        self.ior_penalty = float(ior_penalty)
        self.max_pending = max_pending
        self.cycle = 0
        self.ignitions = 0
        self.last_ignition_at: float | None = None
        self._pending: list[tuple[int, Bid]] = []
        self._seq = itertools.count()
        self._dropped = 0
        # Recent winners in the order they won (the oldest expire first), and the same traces by
        # stimulus id; both are kept up to date as winners come and go, because at a high
        # stimulus rate thousands are within the inhibition window and rebuilding an index
        # every cycle would cost more than the competition itself.
        self._recent: deque[_Trace] = deque()
        self._recent_by_stimulus: dict[str | None, deque[_Trace]] = {}
        self._last_now: float | None = None

    @property
    def pending(self) -> int:
        """Bids waiting for the next cycle."""
        return len(self._pending)

    def submit(self, bid: Bid, now: float | None = None) -> bool:
        """Queue a bid for the next cycle.

        Args:
            bid: The bid.
            now: Arrival time; unused by the competition (bids are timed by the cycle that sees
                them) and accepted so callers can pass their clock uniformly.

        Returns:
            False if the buffer was full and this bid was the weakest (it is dropped); True otherwise
            (possibly after dropping a weaker pending bid).
        """
        entry = (next(self._seq), bid)
        if len(self._pending) < self.max_pending:
            self._pending.append(entry)
            return True
        self._dropped += 1
        weakest = min(range(len(self._pending)), key=lambda i: self._pending[i][1].salience)
        if self._pending[weakest][1].salience >= bid.salience:
            return False
        self._pending[weakest] = entry
        return True

    def in_refractory(self, now: float) -> bool:
        """Whether an ignition at ``now`` would be blocked by the refractory period."""
        return self.last_ignition_at is not None and now - self.last_ignition_at < self.refractory_s

    def _inhibition(self, bid: Bid, unit: NDArray[np.float32] | None, now: float) -> tuple[float, str]:
        """Multiplier on salience from inhibition of return, and why."""
        factor = 1.0
        why = ""
        traces: Iterable[_Trace] = self._recent
        if not self.ior_across_stimuli and bid.stimulus_id is not None:
            # Only traces of the same stimulus (or of none) can inhibit this bid: look those up
            # instead of scanning every recent winner (thousands at a high stimulus rate).
            traces = [*self._recent_by_stimulus.get(bid.stimulus_id, ()), *self._recent_by_stimulus.get(None, ())]
        for trace in traces:
            age = now - trace.at
            if age < 0 or age >= self.inhibition_of_return_s:
                continue
            same_stimulus = bid.stimulus_id is not None and bid.stimulus_id == trace.stimulus_id
            if same_stimulus and bid.kind != trace.kind:
                continue  # another kind of content about the same stimulus: new, not a return
            same_id = same_stimulus
            if not same_id and not self.ior_across_stimuli and bid.stimulus_id and trace.stimulus_id:
                continue  # a new presentation of similar content is a new event, attended afresh
            cos = 0.0
            if unit is not None and trace.unit is not None and unit.shape == trace.unit.shape:
                cos = float(unit @ trace.unit)
            if not same_id and cos < self.ior_similarity:
                continue
            f = 1.0 - self.ior_penalty * (1.0 - age / self.inhibition_of_return_s)
            if f < factor:
                factor = f
                match = f"same stimulus {bid.stimulus_id}" if same_id else f"cos {cos:.3f}"
                why = f"{match} to winner of cycle {trace.cycle} ({trace.source}) {age:.3f}s ago"
        return factor, why

    def compete(self, now: float, threshold_shift: float = 0.0) -> Decision:
        """Run one cycle over the bids submitted since the previous one.

        Args:
            now: Current monotonic time, seconds.
            threshold_shift: Neuromodulatory shift added to the ignition threshold (negative =
                easier ignition, e.g. high norepinephrine).

        Returns:
            The decision; the pending bids are consumed either way.
        """
        if not math.isfinite(threshold_shift):
            raise ValueError("threshold_shift must be finite")
        self.cycle += 1
        threshold = self.ignition_threshold + threshold_shift
        bids, self._pending = self._pending, []
        dropped, self._dropped = self._dropped, 0
        self._forget_expired(now)

        scored: list[tuple[float, int, Bid, NDArray[np.float32] | None, float, str]] = []
        for seq, bid in bids:
            unit = _unit(bid.content)
            factor, why = self._inhibition(bid, unit, now)
            scored.append((bid.salience * factor, seq, bid, unit, factor, why))
        scored.sort(
            key=lambda s: (-s[0], -s[2].salience, s[2].source, s[2].kind, s[2].stimulus_id or "", s[1])
        )

        reasons: list[str] = []
        if dropped:
            reasons.append(f"overflow: {dropped} bid(s) dropped, buffer holds {self.max_pending}")
        if not scored:
            reasons.append("no bids")
            return Decision(self.cycle, now, threshold, False, (), (), tuple(reasons), dropped)

        refractory = self.in_refractory(now)
        winners: list[Outcome] = []
        losers: list[Outcome] = []
        won_units: list[tuple[NDArray[np.float32] | None, str | None, str, str]] = []
        for rank, (eff, _seq, bid, unit, factor, why) in enumerate(scored):
            label = f"{bid.source}/{bid.kind}"
            if refractory:
                assert self.last_ignition_at is not None
                left = self.refractory_s - (now - self.last_ignition_at)
                losers.append(
                    Outcome(bid, eff, Verdict.REFRACTORY, f"{label}: refractory, {left:.3f}s left", rank)
                )
                continue
            if eff < threshold:
                if factor < 1.0 and bid.salience >= threshold:
                    detail = (
                        f"{label}: inhibited, salience {bid.salience:.3f} x {factor:.2f} = {eff:.3f}"
                        f" < threshold {threshold:.3f} ({why})"
                    )
                    losers.append(Outcome(bid, eff, Verdict.INHIBITED, detail, rank))
                else:
                    detail = f"{label}: salience {eff:.3f} < threshold {threshold:.3f}"
                    losers.append(Outcome(bid, eff, Verdict.BELOW_THRESHOLD, detail, rank))
                continue
            dup = self._duplicate_of(bid, unit, won_units)
            if dup is not None:
                detail = f"{label}: duplicate of this cycle's winner {dup}"
                losers.append(Outcome(bid, eff, Verdict.DUPLICATE, detail, rank))
                continue
            if len(winners) >= self.capacity:
                detail = (
                    f"{label}: salience {eff:.3f} above threshold but capacity {self.capacity} "
                    f"taken (weakest winner {winners[-1].effective_salience:.3f})"
                )
                losers.append(Outcome(bid, eff, Verdict.CAPACITY, detail, rank))
                continue
            note = f" (inhibited x {factor:.2f}: {why})" if factor < 1.0 else ""
            detail = f"{label}: salience {eff:.3f} >= threshold {threshold:.3f}{note}"
            winners.append(Outcome(bid, eff, Verdict.WON, detail, rank))
            won_units.append((unit, bid.stimulus_id, bid.kind, label))

        ignited = bool(winners)
        if refractory:
            reasons.append(f"refractory: last ignition at {self.last_ignition_at:.3f}, no ignition")
        elif ignited:
            self.ignitions += 1
            self.last_ignition_at = now
            for o, (unit, *_) in zip(winners, won_units, strict=True):
                trace = _Trace(now, self.cycle, unit, o.bid.stimulus_id, o.bid.source, o.bid.kind)
                self._recent.append(trace)
                self._recent_by_stimulus.setdefault(trace.stimulus_id, deque()).append(trace)
            reasons.append(
                f"ignition: {len(winners)} winner(s) over {len(losers)} loser(s), threshold {threshold:.3f}"
            )
        else:
            reasons.append(f"no ignition: no bid reached threshold {threshold:.3f}")
        reasons.extend(o.detail for o in winners)
        reasons.extend(o.detail for o in losers)
        return Decision(
            cycle=self.cycle,
            now=now,
            threshold=threshold,
            ignited=ignited,
            winners=tuple(winners),
            losers=tuple(losers),
            reasons=tuple(reasons),
            dropped=dropped,
        )

    def _duplicate_of(
        self,
        bid: Bid,
        unit: NDArray[np.float32] | None,
        won: list[tuple[NDArray[np.float32] | None, str | None, str, str]],
    ) -> str | None:
        for w_unit, w_sid, w_kind, w_label in won:
            if bid.stimulus_id is not None and bid.stimulus_id == w_sid:
                if bid.kind == w_kind:
                    return w_label
                continue  # e.g. a recalled episode beside its cue's percept: both may win
            if unit is not None and w_unit is not None and unit.shape == w_unit.shape:
                if float(unit @ w_unit) >= self.ior_similarity:
                    return w_label
        return None

    def _forget_expired(self, now: float) -> None:
        """Drop the winners whose inhibition of return is over."""
        window = self.inhibition_of_return_s
        if self._last_now is not None and now < self._last_now:
            # The clock went back (a caller's own times): expiry is no longer oldest-first.
            self._recent = deque(t for t in self._recent if now - t.at < window)
            self._recent_by_stimulus = {}
            for trace in self._recent:
                self._recent_by_stimulus.setdefault(trace.stimulus_id, deque()).append(trace)
        else:
            recent, by_stimulus = self._recent, self._recent_by_stimulus
            while recent and now - recent[0].at >= window:
                old = recent.popleft()
                same = by_stimulus[old.stimulus_id]
                same.popleft()
                if not same:
                    del by_stimulus[old.stimulus_id]
        self._last_now = now

    def reset(self) -> None:
        """Forget pending bids, recent winners and the refractory clock (e.g. after sleep)."""
        self._pending = []
        self._dropped = 0
        self._recent = deque()
        self._recent_by_stimulus = {}
        self._last_now = None
        self.last_ignition_at = None
