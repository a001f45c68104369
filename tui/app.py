"""`BrainApp`: the Textual app that watches a running brain and talks to it over the bus.

Data flow: nats-py callback → `BrainState.ingest` (plain Python, per message) → the refresh timer
(`refresh_hz`, default 4 Hz) → `BrainState.refresh` (decode the sampled messages) → each panel's
`show`. No Textual message is ever posted per bus message, so the app cannot fall behind the bus.

Example:
    app = BrainApp("nats://127.0.0.1:4222", "brain")
    await app.run_async()
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import structlog
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Input, Static

from bus.auth import redact_url
from bus.errors import BrainbusError
from tui.feed import BusFeed
from tui.help import HelpScreen
from tui.keys import bindings
from tui.panels import (
    ActionsPanel,
    ActorsPanel,
    FlowPanel,
    HormonesPanel,
    MemoryPanel,
    Panel,
    TrafficPanel,
    WorkspacePanel,
    num,
)
from tui.state import BrainState
from tui.table import KeyedTable

__all__ = ["BrainApp"]

log = structlog.get_logger("tui.app")
PLACEHOLDER = "press / to type a stimulus · Enter sends it on stim.text · Esc leaves"
NO_BRAIN_AFTER_S = 3.0  # connected this long without a heartbeat: say no brain is running


class StimulusInput(Input):
    """The stimulus line; Esc hands the keys back to the tables (and so to the app's bindings)."""

    BINDINGS = [Binding("escape", "leave", "leave", show=False)]

    def action_leave(self) -> None:
        self.app.query_one("#actors-table").focus()


class BrainApp(App[int]):
    """Watch and steer one brain: `BrainApp(url, namespace)`.

    Args:
        url: NATS URL of the brain.
        namespace: the brain's subject namespace.
        connect: connect a bus (False for snapshots and demos fed by hand through `state`).
        state: start from this state (tests, demos); a fresh one by default.
        clock: the time source for ages and rates (tests inject a fixed one).
        refresh_hz: how often the panels are redrawn from the state.
    """

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "brainbus"
    BINDINGS = bindings()

    def __init__(self, url: str, namespace: str = "brain", *, connect: bool = True,
                 state: BrainState | None = None, clock: Callable[[], float] = time.time,
                 refresh_hz: float = 4.0) -> None:
        super().__init__()
        self.url = redact_url(url)  # shown on screen: without the password the URL may carry
        self.namespace = namespace
        self.clock = clock
        self.refresh_hz = refresh_hz
        self.state = state if state is not None else BrainState(namespace, url=self.url)
        self.feed = BusFeed(url, namespace, self.state, clock=clock) if connect else None
        self.ticks = 0
        self._last_status: Text | None = None
        self._last_banner: str | None = None

    # ---------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        yield Static(id="banner")
        with Horizontal(id="row-top"):
            yield ActorsPanel("Actors", id="actors")
            yield HormonesPanel("Hormones", id="hormones")
        with Horizontal(id="row-mid"):
            yield WorkspacePanel("Workspace", id="workspace")
            yield ActionsPanel("Actions & rewards", id="actions")
        with Horizontal(id="row-bottom"):
            yield TrafficPanel("Traffic", id="traffic")
            yield MemoryPanel("Memory", id="memory")
            yield FlowPanel("Flow", id="flow")
        yield StimulusInput(id="stimulus", placeholder=PLACEHOLDER)
        yield Footer()

    def on_mount(self) -> None:
        # Kept, not queried per tick: while the help screen is up, queries would search that screen.
        self._status = self.query_one("#status", Static)
        self._banner = self.query_one("#banner", Static)
        self._panels = list(self.query(Panel))
        self.query_one("#actors-table").focus()
        self.set_interval(1.0 / self.refresh_hz, self.tick, name="refresh")
        if self.feed is not None:
            self.run_worker(self.feed.run(), name="bus-feed", exit_on_error=False)
        self.tick(everything=True)

    async def on_unmount(self) -> None:
        if self.feed is not None:
            await self.feed.close()

    # ---------------------------------------------------------------- refresh

    def tick(self, *, everything: bool = False) -> None:
        """Redraw the panels due this tick from the state (the only place widgets change for bus data).

        `everything` redraws all panels at once, after a key press changed what they show.
        """
        now = self.clock()
        self.ticks += 1
        if self.feed is not None and self.feed.bus is not None:
            self.state.slow_consumer_drops = self.feed.bus.slow_consumer_drops
        self.state.refresh(now)
        # One batch: the cell updates of a tick become one repaint, not one per cell.
        with self.batch_update():
            for panel in self._panels:
                if everything or self.ticks % panel.period == panel.phase:
                    panel.show(self.state, now)
        self._show_status(now)

    def _show_status(self, now: float) -> None:
        st = self.state
        colour = {"connected": "green", "reconnecting": "yellow", "connecting": "yellow"}.get(st.conn, "red")
        line = Text()
        line.append(f" ● {st.conn} ", style=f"bold {colour}")
        line.append(f" {self.url}  ns ", style="dim")
        line.append(self.namespace, style="bold")
        live = sum(1 for a in st.actors.values() if a.health != "dead")
        line.append(f"  │  {live} actors  │  {num(st.traffic.rate_total, 0)} msg/s")
        if st.counts["error"]:
            line.append(f"  │  {st.counts['error']:,} errors", style="red")
        if st.slow_consumer_drops:
            line.append(f"  │  {st.slow_consumer_drops:,} dropped by NATS (slow consumer)", style="yellow")
        sleeping = st.sleeping()
        if sleeping:
            line.append("  │  sleeping", style="bold blue")
        line.append("  │  ? help", style="dim")
        # Update only on change: a Static update costs a repaint and a layout of the screen.
        if line != self._last_status:
            self._last_status = line
            self._status.update(line, layout=False)
        message = self._banner_message(now)
        if message != self._last_banner:
            self._last_banner = message
            self._banner.set_class(message is not None, "show")
            self._banner.update(message or "")

    def _banner_message(self, now: float) -> str | None:
        """A plain sentence when something is wrong with the connection, or no brain is there."""
        st = self.state
        if st.conn == "reconnecting":
            return f"reconnecting to NATS at {self.url} … (the brain's data will come back by itself)"
        if st.conn == "unreachable":
            return (f"cannot reach NATS at {self.url} — is a brain running? Start one with `brainbus run`, "
                    f"or give --nats URL. Retrying … ({st.conn_detail})")
        if st.conn == "closed":
            return f"the connection to {self.url} was closed; restart the TUI"
        if (st.conn == "connected" and not st.actors and st.connected_at is not None
                and now - st.connected_at > NO_BRAIN_AFTER_S):
            ns = self.namespace
            return (f"connected to NATS at {self.url}, but no actor heartbeats on {ns}.sys.heartbeat.* yet: "
                    f"a brain still starting (loading its language model) appears here within seconds; "
                    f"otherwise none runs in namespace {ns!r} — start one with `brainbus run`.")
        return None

    # ---------------------------------------------------------------- input and selection

    def action_focus_input(self) -> None:
        self.query_one("#stimulus", Input).focus()

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        event.input.value = ""
        try:
            sid = await self._feed().send_text(text)
        except BrainbusError as exc:
            self.notify(str(exc), title="stimulus not sent", severity="error")
            return
        self.state.flow_selected = sid
        self.notify(f"sent as {sid}", title="stimulus", timeout=2)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self._select_flow_from(event.data_table)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        # Only a person moving the cursor selects a flow, not a table being rebuilt by the timer.
        if event.data_table.has_focus:
            self._select_flow_from(event.data_table)

    def _select_flow_from(self, table: DataTable[object]) -> None:
        if table.id not in ("actions-table", "workspace-table") or not isinstance(table, KeyedTable):
            return
        sid = table.selected_meta
        if isinstance(sid, str) and sid:
            self.state.flow_selected = sid
            next(p for p in self._panels if isinstance(p, FlowPanel)).show(self.state, self.clock())

    # ---------------------------------------------------------------- controls

    def _feed(self) -> BusFeed:
        if self.feed is None:
            raise BrainbusError("this TUI is not connected to a brain (demo mode)")
        return self.feed

    async def action_reward(self, value: float) -> None:
        action = self.state.last_action()
        if action is None:
            self.notify("no motor action yet to reward or punish", severity="warning")
            return
        try:
            await self._feed().reward(value, action)
        except BrainbusError as exc:
            self.notify(str(exc), title="reward not sent", severity="error")
            return
        action.reward = value
        word = "rewarded" if value > 0 else "punished"
        self.notify(f"{word} {action.action} for {action.stimulus_id} ({value:+.0f})", timeout=2)
        self.tick(everything=True)

    async def action_control(self, verb: str) -> None:
        actor = self._actors_panel().selected
        if actor is None:
            self.notify("select an actor first (Actors table, ↑ ↓)", severity="warning")
            return
        try:
            reply = await self._feed().control(actor, verb)
        except BrainbusError as exc:
            self.notify(str(exc), title=f"{verb} {actor} failed", severity="error")
            return
        self.notify(f"{actor}: {verb} → {reply.state} {reply.detail}".rstrip(), timeout=2,
                    severity="information" if reply.ok else "error")
        self.tick(everything=True)

    async def action_control_all(self, verb: str) -> None:
        try:
            replies = await self._feed().control_all(verb)
        except BrainbusError as exc:
            self.notify(str(exc), title=f"{verb} failed", severity="error")
            return
        if not replies:
            self.notify(f"no actor answered {verb} on sys.ctl.all", severity="warning")
        else:
            self.notify(f"{verb}: {len(replies)} actors answered", timeout=2)
        self.tick(everything=True)

    def _actors_panel(self) -> ActorsPanel:
        return next(p for p in self._panels if isinstance(p, ActorsPanel))

    def action_follow(self) -> None:
        self.state.flow_selected = None
        self.tick(everything=True)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())
