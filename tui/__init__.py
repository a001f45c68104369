"""tui: the Textual terminal UI that watches a running brain and steers it over the bus."""

from tui.app import BrainApp
from tui.state import BrainState

__all__ = ["BrainApp", "BrainState"]
