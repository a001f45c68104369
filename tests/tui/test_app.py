"""Pilot tests of the TUI against a real nats-server, a real thalamus actor and a test bus."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from actors.actor import ActorState
from bus import Broadcast, Bus, EmbeddedServer, Meta, MotorAction, NeuromodLevels, Reward, SysError
from regions.thalamus import Thalamus
from tui import BrainApp
from tui.help import HelpScreen
from tui.keys import KEYMAP
from tui.panels import HormonesPanel

SIZE = (160, 48)
BASE = {"dopamine": 0.5, "serotonin": 0.5, "norepinephrine": 0.4, "acetylcholine": 0.45}


async def wait_for(pilot: Pilot[int], cond: Callable[[], bool], what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await pilot.pause(0.03)


def rows(app: BrainApp, selector: str) -> list[list[str]]:
    """The plain text of a table's rows, as the person at the terminal sees them."""
    table = app.query_one(selector, DataTable)
    return [[getattr(c, "plain", str(c)) for c in table.get_row_at(i)] for i in range(table.row_count)]


def shown(app: BrainApp, selector: str, *words: str) -> bool:
    return any(all(w in row for w in words) for row in rows(app, selector))


@pytest.fixture
async def thalamus(bus: Bus) -> AsyncIterator[Thalamus]:
    actor = Thalamus("thalamus", bus, heartbeat_interval=0.2)
    await actor.start()
    try:
        yield actor
    finally:
        await actor.stop()


def app_for(url: str, namespace: str) -> BrainApp:
    return BrainApp(url, namespace, refresh_hz=20)


async def test_stimulus_goes_through_the_thalamus_and_shows(
    nats_server: EmbeddedServer, namespace: str, thalamus: Thalamus
) -> None:
    app = app_for(nats_server.url, namespace)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: shown(app, "#actors-table", "thalamus", "running"), "thalamus row")
        app.query_one("#stimulus", Input).cursor_blink = False  # a blinking cursor slows Pilot's typing
        await pilot.press("slash", *"hello brain", "enter")
        sid = app.state.flow_selected
        assert sid is not None and sid.startswith("tui-")
        await wait_for(pilot, lambda: shown(app, "#flow-table", "region.thalamus.out", "thalamus"),
                       "the thalamus' percept in the flow panel")
        subjects = [s.subject for s in app.state.flows.steps(sid)]
        assert subjects[:2] == ["stim.text", "region.thalamus.out"]
        # The next heartbeat counts the stimulus; the traffic panel saw both subjects.
        await wait_for(pilot, lambda: app.state.actors["thalamus"].stats.get("perceived") == 1, "perceived=1")
        await wait_for(pilot, lambda: shown(app, "#traffic-table", "region.thalamus.out"), "traffic row")
        assert thalamus.perceived == 1


async def test_actions_broadcasts_and_the_reward_keys(
    nats_server: EmbeddedServer, namespace: str, bus: Bus
) -> None:
    rewards: asyncio.Queue[Reward] = asyncio.Queue()

    async def got(msg: Reward, meta: Meta) -> None:
        await rewards.put(msg)

    await bus.subscribe("feedback.reward", got, model=Reward)
    app = app_for(nats_server.url, namespace)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state.conn == "connected", "connection")
        await bus.publish("gw.broadcast", Broadcast(
            cycle=7, source="language", salience=0.83, kind="percept", content=np.ones(8, np.float32),
            stimulus_id="s-1", beat=[{"source": "vision", "salience": 0.3}]), stimulus_id="s-1")
        await bus.publish("motor.action", MotorAction(action="left", stimulus_id="s-1", confidence=0.7),
                          stimulus_id="s-1")
        await bus.publish("sys.error", SysError(actor="thalamus", subject=f"{namespace}.stim.vector",
                                                reason="vector has 3 dimensions"))
        await wait_for(pilot, lambda: shown(app, "#workspace-table", "7", "language", "0.83", "s-1",
                                            "vision 0.30"), "the broadcast row")
        await wait_for(pilot, lambda: shown(app, "#actions-table", "left", "s-1", "0.70"), "the action row")
        await wait_for(pilot, lambda: shown(app, "#errors-table", "thalamus", "vector has 3 dimensions"),
                       "the error row")

        await pilot.press("plus")
        reward = await asyncio.wait_for(rewards.get(), 5)
        assert (reward.value, reward.stimulus_id, reward.action) == (1.0, "s-1", "left")
        await wait_for(pilot, lambda: shown(app, "#actions-table", "left", "+1.0"), "the reward shown")
        await pilot.press("minus")
        reward = await asyncio.wait_for(rewards.get(), 5)
        assert (reward.value, reward.stimulus_id, reward.action) == (-1.0, "s-1", "left")
        assert [s.subject for s in app.state.flows.steps("s-1")][:2] == ["gw.broadcast", "motor.action"]


async def test_hormone_panel_follows_levels(nats_server: EmbeddedServer, namespace: str, bus: Bus) -> None:
    app = app_for(nats_server.url, namespace)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state.conn == "connected", "connection")
        panel = app.query_one(HormonesPanel)
        assert "no neuromod.levels yet" in panel.text.plain
        await bus.publish("neuromod.levels", NeuromodLevels(**BASE, baseline=BASE))
        await wait_for(pilot, lambda: "dopamine        0.50 = base 0.50" in panel.text.plain, "baseline")
        await bus.publish("neuromod.levels", NeuromodLevels(**{**BASE, "dopamine": 0.9}, baseline=BASE))
        await wait_for(pilot, lambda: "dopamine        0.90 ▲ base 0.50" in panel.text.plain, "dopamine up")
        assert list(app.state.history["dopamine"]) == [0.5, 0.9]


async def test_pause_and_resume_the_selected_actor(
    nats_server: EmbeddedServer, namespace: str, thalamus: Thalamus
) -> None:
    app = app_for(nats_server.url, namespace)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: shown(app, "#actors-table", "thalamus", "running"), "thalamus row")
        await pilot.press("p")
        await wait_for(pilot, lambda: shown(app, "#actors-table", "thalamus", "paused"), "paused shown")
        assert thalamus.state is ActorState.PAUSED
        await pilot.press("r")
        await wait_for(pilot, lambda: shown(app, "#actors-table", "thalamus", "running"), "running again")
        assert thalamus.state is ActorState.RUNNING


async def test_reconnecting_and_recovering() -> None:
    first = EmbeddedServer(jetstream=False)
    await first.start()
    port = int(first.url.rsplit(":", 1)[1])
    second = EmbeddedServer(port=port, jetstream=False)
    app = app_for(first.url, "rc")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.state.conn == "connected", "connection")
            await first.stop()
            await wait_for(pilot, lambda: app.state.conn == "reconnecting", "reconnecting state")
            await wait_for(pilot, lambda: "reconnecting" in banner(app), "reconnecting banner")
            await second.start()
            await wait_for(pilot, lambda: app.state.conn == "connected", "connected again", within=10)
            await wait_for(pilot, lambda: banner(app) == "", "banner gone")
    finally:
        await first.stop()
        await second.stop()


def screen_text(app: BrainApp) -> str:
    """The screen as plain text (what a person would read)."""
    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(), record=True,
                      legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def banner(app: BrainApp) -> str:
    widget = app.query_one("#banner")
    return " ".join(screen_text(app).split()) if widget.has_class("show") else ""


async def test_no_nats_and_no_brain_give_a_clear_message(nats_server: EmbeddedServer, namespace: str) -> None:
    app = app_for("nats://127.0.0.1:1", namespace)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "cannot reach NATS at nats://127.0.0.1:1" in banner(app), "the banner")
        assert "brainbus run" in banner(app)
    app = app_for(nats_server.url, namespace)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state.conn == "connected", "connection")
        assert app.state.connected_at is not None
        app.state.connected_at -= 10  # as if 10 s had passed with no heartbeat
        await wait_for(pilot, lambda: "none runs in namespace" in banner(app), "no-brain banner")


async def test_help_lists_every_key(nats_server: EmbeddedServer, namespace: str) -> None:
    app = app_for(nats_server.url, namespace)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await wait_for(pilot, lambda: "brainbus tui — keys" in screen_text(app), "the help screen drawn")
        text = screen_text(app)
        for _, _, _, description, _ in KEYMAP:
            assert description in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
