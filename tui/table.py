"""A `DataTable` that is refreshed from plain rows, touching only the cells that changed.

Panels call `KeyedTable.sync(rows)` on every tick. When the row keys are the same as last time
only changed cells are updated (no flicker, the cursor stays put); when they differ the table
is rebuilt and the cursor goes back to the row it was on, by key. Streams (newest first) key
their rows by position instead (`KeyedTable.stream`): once the table is full, a tick only
rewrites cells, which costs far less than a rebuild (that changes the table's size and makes
Textual lay out and repaint the whole screen).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from rich.text import Text
from textual.widgets import DataTable

__all__ = ["Cell", "Column", "KeyedTable", "cell_text"]

#: A cell: plain text, or (text, rich style).
Cell = str | tuple[str, str]
Justify = Literal["left", "right", "center"]
#: A column: (label, key, justification).
Column = tuple[str, str, Justify]


def cell_text(cell: Cell, justify: Justify = "left") -> Text:
    text, style = (cell, "") if isinstance(cell, str) else cell
    return Text(text, style=style, justify=justify, no_wrap=True, overflow="ellipsis")


class KeyedTable(DataTable[Any]):
    """A read-mostly table whose rows are identified by string keys."""

    def __init__(self, columns: Sequence[Column], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, show_cursor=True)
        self._columns = list(columns)
        self._keys: list[str] = []
        self._cells: dict[str, tuple[Cell, ...]] = {}
        self._meta: list[Any] = []

    def on_mount(self) -> None:
        for label, key, justify in self._columns:
            self.add_column(Text(label, justify=justify), key=key)

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, if any."""
        row = self.cursor_row
        return self._keys[row] if 0 <= row < len(self._keys) else None

    @property
    def selected_meta(self) -> Any:
        """What the caller attached to the row under the cursor (see `stream`), if anything."""
        row = self.cursor_row
        return self._meta[row] if 0 <= row < len(self._meta) else None

    def stream(self, rows: Sequence[tuple[tuple[Cell, ...], Any]]) -> None:
        """Show `rows` (cells, meta) keyed by position; `selected_meta` gives the meta under the cursor."""
        self.sync([(str(i), cells) for i, (cells, _) in enumerate(rows)])
        self._meta = [meta for _, meta in rows]

    def sync(self, rows: Sequence[tuple[str, tuple[Cell, ...]]]) -> None:
        """Show exactly `rows` (key, cells), in order."""
        keys = [k for k, _ in rows]
        if keys == self._keys:
            for key, cells in rows:
                old = self._cells.get(key)
                if old == cells:
                    continue
                for i, cell in enumerate(cells):
                    if old is None or old[i] != cell:
                        label, col, justify = self._columns[i]
                        self.update_cell(key, col, cell_text(cell, justify))
                self._cells[key] = cells
            return
        selected = self.selected_key
        self.clear()
        for key, cells in rows:
            self.add_row(*(cell_text(c, self._columns[i][2]) for i, c in enumerate(cells)), key=key)
        self._keys = keys
        self._cells = dict(rows)
        if selected in self._cells:
            self.move_cursor(row=keys.index(selected), scroll=False)
