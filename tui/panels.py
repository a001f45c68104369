"""The panels of the main screen. Each has `show(state, now)`, called by the app's refresh timer.

Panels read `BrainState` and never touch the bus; they skip work when the part of the state
they show has not changed since the last tick (`BrainState.versions`).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static

from tui.hormones import HormonesPanel
from tui.panel import STREAM_ROWS, Panel, age, num
from tui.state import ActorRow, BrainState
from tui.table import Cell, KeyedTable

__all__ = [
    "ActionsPanel",
    "ActorsPanel",
    "FlowPanel",
    "HormonesPanel",
    "MemoryPanel",
    "Panel",
    "TrafficPanel",
    "WorkspacePanel",
    "age",
    "num",
]


# ---------------------------------------------------------------- actors


class ActorsPanel(Panel):
    COLUMNS: list[tuple[str, str, Any]] = [
        ("actor", "actor", "left"), ("state", "state", "left"),
        ("in/s", "in", "right"), ("out/s", "out", "right"), ("mailbox", "mailbox", "right"),
        ("dropped", "dropped", "right"), ("errors", "errors", "right"), ("restarts", "restarts", "right"),
        ("p50 ms", "p50", "right"), ("silent", "seen", "right"),
    ]

    def build(self) -> list[Widget]:
        self.table = KeyedTable(self.COLUMNS, id="actors-table")
        return [self.table]

    @property
    def selected(self) -> str | None:
        return self.table.selected_key

    def show(self, state: BrainState, now: float) -> None:
        rows = sorted(state.actors.values(), key=lambda a: (a.group, a.name))
        self.table.sync([(a.name, self._cells(a, now)) for a in rows])
        dead = sum(1 for a in rows if a.health == "dead")
        hung = sum(1 for a in rows if a.health == "hung")
        extra = f" · [b red]{dead} dead[/]" if dead else ""
        extra += f" · [b yellow]{hung} hung[/]" if hung else ""
        self.subtitle(f"{len(rows) - dead} live{extra}")

    @staticmethod
    def _cells(a: ActorRow, now: float) -> tuple[Cell, ...]:
        if a.health == "dead":
            style, state = "bold red", f"dead ({a.state})"
        elif a.health == "hung":
            style, state = "bold yellow", f"hung {a.busy_s:.0f}s"
        else:
            style = {"running": "green", "loading": "cyan", "paused": "yellow", "sleeping": "blue",
                     "crashed": "bold red"}.get(a.state, "")
            state = a.state
        warn = "bold red"
        mailbox = f"{a.mailbox}/{a.capacity}" if a.capacity else str(a.mailbox)
        full = a.capacity and a.mailbox >= 0.8 * a.capacity
        return (
            (a.name, style if a.health != "ok" else "bold"),
            (state, style),
            num(a.rate_in),
            num(a.rate_out),
            (mailbox, warn) if full else mailbox,
            (str(a.dropped), warn) if a.dropped else "0",
            (str(a.errors), warn) if a.errors else "0",
            (str(a.restarts), "yellow") if a.restarts else "0",
            f"{a.p50_ms:.2f}",
            # Only a silent actor's age is shown: a cell that changed every second for every row would
            # make the table repaint continuously for nothing.
            (age(now - a.last_seen), style) if now - a.last_seen > 2 * a.interval else "",
        )


# ---------------------------------------------------------------- workspace


class WorkspacePanel(Panel):
    period, phase = 2, 0
    COLUMNS: list[tuple[str, str, Any]] = [
        ("cycle", "cycle", "right"), ("source", "source", "left"), ("salience", "salience", "right"),
        ("kind", "kind", "left"), ("stimulus", "stimulus", "left"), ("beat", "beat", "left"),
    ]

    def build(self) -> list[Widget]:
        self.table = KeyedTable(self.COLUMNS, id="workspace-table")
        return [self.table]

    def show(self, state: BrainState, now: float) -> None:
        if not self.changed(state.versions["workspace"]):
            return
        self.table.stream([((str(b.cycle), (b.source, "bold"), f"{b.salience:.2f}", b.kind,
                             b.stimulus_id or "–", (b.beat or "–", "dim")), b.stimulus_id)
                           for b in list(state.broadcasts)[:STREAM_ROWS]])
        self.subtitle(f"{state.counts['broadcast']:,} broadcasts")


# ---------------------------------------------------------------- actions and rewards


class ActionsPanel(Panel):
    period, phase = 2, 1
    COLUMNS: list[tuple[str, str, Any]] = [
        ("action", "action", "left"), ("stimulus", "stimulus", "left"), ("conf", "conf", "right"),
        ("reward", "reward", "right"),
    ]

    def build(self) -> list[Widget]:
        self.summary = Static(id="reward-summary")
        self.table = KeyedTable(self.COLUMNS, id="actions-table")
        return [self.summary, self.table]

    def show(self, state: BrainState, now: float) -> None:
        if not self.changed(state.versions["actions"]):
            return
        rows: list[tuple[tuple[Cell, ...], Any]] = []
        for a in list(state.actions)[:STREAM_ROWS]:
            reward: Cell = "–"
            if a.reward is not None:
                colour = "bold green" if a.reward > 0 else "bold red" if a.reward < 0 else ""
                reward = (f"{a.reward:+.1f}", colour)
            rows.append((((a.action, "bold"), a.stimulus_id, f"{a.confidence:.2f}", reward), a.stimulus_id))
        self.table.stream(rows)
        mean, hit, n = state.reward_rate()
        summary = Text()
        counts = state.counts
        summary.append(f"{counts['action']:,} actions · {counts['reward']:,} rewards", style="dim")
        if mean is not None and hit is not None:
            summary.append(" · reward rate ")
            summary.append(f"{hit:.0%}", style="bold green" if hit >= 0.5 else "bold red")
            summary.append(f" · mean {mean:+.2f} of {n}", style="dim")
        self.put(self.summary, summary)


# ---------------------------------------------------------------- memory


class MemoryPanel(Panel):
    period, phase = 4, 3
    COLUMNS: list[tuple[str, str, Any]] = [
        ("shard", "shard", "left"), ("episodes", "episodes", "right"), ("store/s", "store", "right"),
        ("recall/s", "recall", "right"), ("ms", "recall_ms", "right"),
    ]

    def build(self) -> list[Widget]:
        self.summary = Static(id="memory-summary")
        self.table = KeyedTable(self.COLUMNS, id="memory-table")
        return [self.summary, self.table]

    def show(self, state: BrainState, now: float) -> None:
        shards = state.memory_shards()
        sleeping = state.sleeping()
        summary = self.summary
        if not shards:
            self.put(summary, Text("no memory shards running", style="dim italic"))
        else:
            total = sum(int(_stat(s.stats, "episodes", "n_episodes", "size", "count") or 0) for s in shards)
            self.put(summary, Text(f"{len(shards)} shards · {total:,} episodes", style="dim"))
        self.subtitle(f"[b blue]sleeping ({len(sleeping)} actors)[/]" if sleeping else "awake")
        self.table.display = bool(shards)  # no empty header under "no memory shards running"
        self.table.sync([(s.name, self._cells(s)) for s in shards])

    @staticmethod
    def _cells(s: ActorRow) -> tuple[Cell, ...]:
        episodes = _stat(s.stats, "episodes", "n_episodes", "size", "count")
        capacity = _stat(s.stats, "capacity", "max_episodes")
        # A shard's own rates when it reports them (memory.shard does), else from its counters.
        store = _stat(s.stats, "stores_per_s")
        store = store if store is not None else _stat(s.rates, "stores", "stored", "store_count")
        recall = _stat(s.stats, "recalls_per_s")
        recall = recall if recall is not None else _stat(s.rates, "recalls", "recalled", "recall_count")
        recall_ms = _stat(s.stats, "last_recall_ms", "recall_ms", "recall_ms_last", "recall_latency_ms")
        # The state shows as the name's colour: the columns are needed for figures.
        name_style = {"dead": "bold red", "hung": "bold yellow"}.get(s.health) or {
            "sleeping": "bold blue", "paused": "yellow"}.get(s.state, "bold")
        fill = f"{episodes:,.0f}" if episodes is not None else "–"
        if episodes is not None and capacity:
            fill += f"/{num(capacity, 0)}"
        full = episodes is not None and capacity and episodes >= 0.9 * capacity
        return ((s.name, name_style), (fill, "bold yellow") if full else fill, num(store), num(recall),
                num(recall_ms, 1))


def _stat(stats: dict[str, Any], *names: str) -> float | None:
    """The first numeric figure among `names` (shard actors may name their statistics differently)."""
    for name in names:
        value = stats.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


# ---------------------------------------------------------------- traffic and errors


class TrafficPanel(Panel):
    period, phase = 4, 1
    COLUMNS: list[tuple[str, str, Any]] = [
        ("subject", "subject", "left"), ("msg/s", "rate", "right"), ("total", "total", "right"),
    ]
    ERROR_COLUMNS: list[tuple[str, str, Any]] = [
        ("age", "age", "right"), ("actor", "actor", "left"), ("kind", "kind", "left"),
        ("reason", "reason", "left"),
    ]

    def __init__(self, title: str, *, id: str, top: int = 8) -> None:
        super().__init__(title, id=id)
        self.top = top

    def build(self) -> list[Widget]:
        self.table = KeyedTable(self.COLUMNS, id="traffic-table")
        self.errors_title = Static(id="errors-title")
        self.errors = KeyedTable(self.ERROR_COLUMNS, id="errors-table")
        return [self.table, self.errors_title, self.errors]

    def show(self, state: BrainState, now: float) -> None:
        prefix = state.namespace + "."
        top = state.traffic.top(self.top)
        self.table.stream([((s.removeprefix(prefix), num(r), f"{n:,}"), s) for s, r, n in top])
        self.subtitle(f"{num(state.traffic.rate_total, 0)} msg/s · {state.traffic.total:,} total")
        n = state.counts["error"]
        title = Text("errors ", style="bold")
        title.append(f"{n:,} on sys.error" if n else "none", style="bold red" if n else "dim")
        self.put(self.errors_title, title)
        rows: list[tuple[tuple[Cell, ...], Any]] = []
        for e in list(state.errors)[:STREAM_ROWS]:
            reason = e.reason + (f" (+{e.suppressed} similar)" if e.suppressed else "")
            rows.append(((age(now - e.t), (e.actor, "bold"), (e.kind, "red"), reason), None))
        self.errors.stream(rows)


# ---------------------------------------------------------------- flow


class FlowPanel(Panel):
    period, phase = 2, 0
    COLUMNS: list[tuple[str, str, Any]] = [
        ("+ms", "dt", "right"), ("subject", "subject", "left"), ("source", "source", "left"),
    ]

    def build(self) -> list[Widget]:
        self.summary = Static(id="flow-summary")
        self.table = KeyedTable(self.COLUMNS, id="flow-table")
        return [self.summary, self.table]

    def show(self, state: BrainState, now: float) -> None:
        sid = state.flow_stimulus()
        if not self.changed((sid, state.versions["flow"], state.flow_selected is None)):
            return
        summary = self.summary
        steps = state.flows.steps(sid) if sid else []
        mode = "following newest action" if state.flow_selected is None else "selected"
        if sid is None:
            hint = "no stimulus yet: type one below (/), or select an action"
            self.put(summary, Text(hint, style="dim italic"))
        else:
            line = Text()
            line.append(sid, style="bold")
            line.append(f"  {len(steps)} messages · {mode}", style="dim")
            self.put(summary, line)
        t0 = steps[0].t if steps else 0.0
        self.table.sync(
            [(str(i), (f"{(s.t - t0) * 1000:,.1f}", (s.subject, "bold" if i == 0 else ""), (s.source, "dim")))
             for i, s in enumerate(steps)])
