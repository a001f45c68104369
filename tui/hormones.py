"""The hormone panel: each level against its baseline, with a sparkline of its history."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static

from tui.panel import Panel
from tui.state import HORMONES, BrainState

__all__ = ["HormonesPanel", "render_hormones", "sparkline"]

SPARK = "▁▂▃▄▅▆▇█"
HORMONE_STYLE = {"dopamine": "bold yellow", "serotonin": "bold cyan", "norepinephrine": "bold red",
                 "acetylcholine": "bold green"}


class HormonesPanel(Panel):
    period, phase = 2, 1
    text = Text()

    def build(self) -> list[Widget]:
        self.body = Static(id="hormones-body")
        return [self.body]

    def show(self, state: BrainState, now: float) -> None:
        width = max(self.content_size.width, 20)
        if not self.changed((state.versions["hormones"], width)):
            return
        self.subtitle("frozen" if state.levels_frozen else "")
        lines = self.text.plain.count("\n")
        self.text = render_hormones(state, width)
        self.put(self.body, self.text, layout=self.text.plain.count("\n") != lines)


def sparkline(values: list[float], base: float | None = None, *, min_span: float = 0.2) -> str:
    """Block characters for `values`, scaled to their range (at least `min_span` wide, around the baseline).

    A fixed 0..1 scale would draw a flat line: hormone moves are a few hundredths to a few tenths.
    """
    if not values:
        return ""
    lo, hi = min(values), max(values)
    if base is not None:
        lo, hi = min(lo, base), max(hi, base)
    if hi - lo < min_span:
        mid = (hi + lo) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    top = len(SPARK) - 1
    return "".join(SPARK[min(top, max(0, round((v - lo) / (hi - lo) * top)))] for v in values)


def render_hormones(state: BrainState, width: int) -> Text:
    """Each hormone: its level against its baseline, then a sparkline of its history (scale 0..1)."""
    if not state.levels:
        return Text("no neuromod.levels yet", style="dim italic")
    out = Text()
    names = list(HORMONES) + [k for k in state.levels if k not in HORMONES]
    for name in names:
        if name not in state.levels:
            continue
        value = state.levels[name]
        base = state.baseline.get(name)
        style = HORMONE_STYLE.get(name, "bold magenta")
        out.append(f"{name:<15}", style=style)
        out.append(f"{value:5.2f}", style="bold")
        if base is not None:
            delta = value - base
            arrow = "▲" if delta > 0.02 else "▼" if delta < -0.02 else "="
            arrow_style = "green" if delta > 0.02 else "red" if delta < -0.02 else "dim"
            out.append(f" {arrow}", style=arrow_style)
            out.append(f" base {base:.2f}", style="dim")
        out.append("\n")
        history = list(state.history.get(name, ()))[-width:]
        spark = sparkline(history, base)
        out.append(spark.rjust(width), style=style.replace("bold ", ""))
        out.append("\n")
    out.rstrip()
    return out
