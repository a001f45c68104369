"""The key map, in one place: the app's bindings, the footer and the help screen all read it."""

from __future__ import annotations

from textual.binding import Binding, BindingType

__all__ = ["KEYMAP", "MORE_KEYS", "bindings"]

#: (keys, action, footer label, help text, shown in the footer)
KEYMAP: list[tuple[str, str, str, str, bool]] = [
    ("slash,i", "focus_input", "stimulus", "type a stimulus (Enter sends it on stim.text, Esc leaves)", True),
    ("plus,equals_sign", "reward(1.0)", "reward", "reward the last action (+1 on feedback.reward)", True),
    ("minus", "reward(-1.0)", "punish", "punish the last action (-1 on feedback.reward)", True),
    ("p", "control('pause')", "pause", "pause the selected actor (request on sys.ctl.<actor>)", True),
    ("r", "control('resume')", "resume", "resume the selected actor", True),
    ("R", "control('restart')", "restart", "restart the selected actor", True),
    ("s", "control_all('sleep')", "sleep", "put the whole brain to sleep (request on sys.ctl.all)", True),
    ("w", "control_all('wake')", "wake", "wake the whole brain", False),
    ("f", "follow", "follow", "Flow: follow the newest action's stimulus again", False),
    ("question_mark", "help", "help", "this help", True),
    ("q", "quit", "quit", "quit", True),
]

#: Keys handled by widgets rather than app bindings, for the help screen.
MORE_KEYS: list[tuple[str, str]] = [
    ("↑ ↓  PgUp PgDn", "move the selection in the focused table"),
    ("tab / shift+tab", "focus the next / previous table (Actors, Workspace, Actions, ...)"),
    ("enter", "in Actions or Workspace: show that row's stimulus in Flow"),
    ("ctrl+q", "quit (also works while typing)"),
]

_SHOWN = {"slash,i": "/", "plus,equals_sign": "+", "minus": "-", "question_mark": "?"}


def display(keys: str) -> str:
    """How a key spec reads on screen: 'slash,i' → '/ or i'."""
    names = {"slash": "/", "plus": "+", "equals_sign": "=", "minus": "-", "question_mark": "?"}
    return " or ".join(names.get(k, k) for k in keys.split(","))


def bindings() -> list[BindingType]:
    return [Binding(keys, action, label, show=shown, key_display=_SHOWN.get(keys))
            for keys, action, label, _, shown in KEYMAP]
