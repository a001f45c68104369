"""Snapshot tests of the main layouts (pytest-textual-snapshot), from the deterministic demo state.

Update after an intended change with `pytest tests/tui --snapshot-update` and look at the SVGs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tui import BrainApp, BrainState
from tui.demo import DEMO_NOW, demo_app

SIZE = (160, 48)
SnapCompare = Callable[..., bool]


async def settled(pilot: Any) -> None:
    """Draw once more after the layout has settled: panels size their sparklines and columns to the
    space they were given, and the first refresh can run before the final layout."""
    await pilot.pause()
    pilot.app.tick(everything=True)
    await pilot.pause()


def test_main_layout(snap_compare: SnapCompare) -> None:
    """Every panel filled: actors (one dead, one hung), hormones, workspace, actions, memory, flow."""
    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=settled)


def test_help_screen(snap_compare: SnapCompare) -> None:
    assert snap_compare(demo_app(), press=["question_mark"], terminal_size=SIZE, run_before=settled)


def test_flow_of_a_selected_action(snap_compare: SnapCompare) -> None:
    """Tab to the actions table, go down two rows: Flow shows that stimulus (trial-012) and its reward."""
    keys = ["tab", "tab", "down", "down"]
    assert snap_compare(demo_app(), press=keys, terminal_size=SIZE, run_before=settled)


def test_unreachable_banner(snap_compare: SnapCompare) -> None:
    """No NATS: an empty screen with a sentence that says what to do, not a traceback."""
    state = BrainState("brain", url="nats://127.0.0.1:4222")
    state.conn = "unreachable"
    state.conn_detail = "cannot connect to NATS at nats://127.0.0.1:4222: Connect call failed"
    app = BrainApp("nats://127.0.0.1:4222", "brain", connect=False, state=state, clock=lambda: DEMO_NOW)
    assert snap_compare(app, terminal_size=SIZE, run_before=settled)


def test_narrow_terminal(snap_compare: SnapCompare) -> None:
    """A 100x32 terminal still shows every panel (tables scroll and clip)."""
    assert snap_compare(demo_app(), terminal_size=(100, 32), run_before=settled)
