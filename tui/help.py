"""The help screen: every key, from `tui.keys`."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.keys import KEYMAP, MORE_KEYS, display

__all__ = ["HelpScreen", "help_table"]


def help_table() -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for keys, _, _, description, _ in KEYMAP:
        table.add_row(display(keys), description)
    for keys, description in MORE_KEYS:
        table.add_row(keys, description)
    return table


class HelpScreen(ModalScreen[None]):
    """Lists every key; any of esc, q, ? closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static("[b]brainbus tui — keys[/]\n")
            yield Static(help_table())
            yield Static("\n[dim]Every control goes over the public bus contract. esc closes this.[/]")
