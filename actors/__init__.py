"""actors: the Actor base class, the supervisor, configs, placement and the `brainbus` CLI."""

from actors.actor import Actor, ActorState, NoOptions, RestartRequested, every, on
from actors.config import BrainConfig, load_config, parse_config
from actors.registry import BUILTIN_KINDS, resolve_kind
from actors.supervisor import ActorChild, Supervisor

__all__ = [
    "Actor",
    "ActorChild",
    "ActorState",
    "BUILTIN_KINDS",
    "BrainConfig",
    "NoOptions",
    "RestartRequested",
    "Supervisor",
    "every",
    "load_config",
    "on",
    "parse_config",
    "resolve_kind",
]
