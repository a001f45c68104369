"""The base of every panel (`Panel`) and the small formatters the panels share."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from tui.state import BrainState

__all__ = ["STREAM_ROWS", "Panel", "age", "num"]

STREAM_ROWS = 30  # newest rows kept in a stream table (more than a panel shows; the rest scroll)


def age(seconds: float) -> str:
    """A short age: '0s', '12s', '3m', '2h' (whole units, so a cell changes at most once a second)."""
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def num(value: float | None, digits: int = 1) -> str:
    """A rate or figure for a table cell; '–' when unknown."""
    if value is None:
        return "–"
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:,.{digits}f}"


class Panel(Vertical):
    """A bordered box with a title; subclasses compose their content and implement `show`.

    `period` and `phase` say on which refresh ticks the app calls `show` (every `period`-th, at
    offset `phase`): repainting a table costs about a millisecond per row, so the streams that
    change on every tick under load are redrawn at half or a quarter of the refresh rate, on
    staggered ticks so the work does not pile up on one.
    """

    period = 1
    phase = 0

    def __init__(self, title: str, *, id: str) -> None:
        super().__init__(id=id, classes="panel")
        self.border_title = title
        self._seen: Any = None
        self._shown: dict[int, Text | str] = {}
        self._subtitle: str | None = None
        # Children are made here and kept, so `show` never queries the DOM: a refresh tick that
        # lands while the app shuts down (children already removed) then touches detached widgets.
        self._parts = self.build()

    def build(self) -> list[Widget]:
        """Make this panel's child widgets (kept as attributes by subclasses)."""
        return []

    def compose(self) -> ComposeResult:
        yield from self._parts

    def put(self, widget: Static, content: Text | str, *, layout: bool = False) -> None:
        """Update `widget` only when its content changed.

        `layout=False` (the one-line summaries, whose height is fixed in the stylesheet) spares
        Textual a layout of the whole screen on every change.
        """
        key = id(widget)
        if self._shown.get(key) == content:
            return
        self._shown[key] = content
        widget.update(content, layout=layout)

    def subtitle(self, text: str) -> None:
        """Set the border subtitle only when it changed (setting it repaints the whole panel)."""
        if text != self._subtitle:
            self._subtitle = text
            self.border_subtitle = text

    def changed(self, marker: Any) -> bool:
        """True once per new `marker` value (a version tuple): lets `show` skip unchanged ticks."""
        if marker == self._seen:
            return False
        self._seen = marker
        return True

    def show(self, state: BrainState, now: float) -> None:
        """Redraw from `state`; every panel defines its own (this base class draws nothing)."""
        raise NotImplementedError(f"{type(self).__name__} must define show()")
