"""Actor kinds by name: the built-in ones and `package.module:Class` for users' own actors."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bus.errors import BadInput

if TYPE_CHECKING:
    from actors.actor import Actor

__all__ = ["BUILTIN_KINDS", "resolve_kind"]

# Imported lazily: a brain that runs no language area never loads its encoder.
BUILTIN_KINDS: dict[str, str] = {
    "thalamus": "regions.thalamus:Thalamus",
    "cortex": "regions.cortex:Cortex",
    "workspace": "regions.workspace:GlobalWorkspace",
    "prefrontal": "regions.prefrontal:Prefrontal",
    "basal_ganglia": "regions.basal_ganglia:BasalGanglia",
    "motor": "regions.motor:Motor",
    "amygdala": "regions.amygdala:Amygdala",
    "hormones": "neuromod.actor:Hormones",
    "hippocampus_shard": "memory.shard:HippocampusShard",
    "hippocampus": "memory.hippocampus:Hippocampus",
    "episodic": "memory.episodic:Episodic",
}


def resolve_kind(kind: str) -> type[Actor]:
    """The Actor class for a kind name (`thalamus`) or a dotted path (`my_pkg.agents:Logger`)."""
    from actors.actor import Actor

    target = BUILTIN_KINDS.get(kind, kind)
    if ":" not in target:
        known = ", ".join(sorted(BUILTIN_KINDS))
        raise BadInput(f"unknown actor kind {kind!r}; built-in kinds are {known}, or give 'module:Class'")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadInput(f"cannot import module {module_name!r} for actor kind {kind!r}: {exc}") from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise BadInput(f"{target!r} is not an Actor subclass")
    return cls
