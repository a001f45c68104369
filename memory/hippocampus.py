"""The hippocampus coordinator: grows the memory by starting new shard actors at run time.

It watches the shards' heartbeats (`ShardWatch`). When every live shard is above
``fill_threshold``, it asks the supervisor of its own process to start one more shard
(`Supervisor.add_child`) with the same options as the existing ones. Full shards then seal
themselves (see `memory.shard`), so new episodes go to the new shard.

How it reaches the supervisor: it implements `actors.supervisor.SupervisorAware`, so the
supervisor hands itself over before each start. Nothing else of the supervisor leaks to actors.

Memory pressure (DESIGN 6.10): with ``sleep_at_fill`` set, a shard whose heartbeat reports a fill
at or above it puts the whole brain to sleep (``sys.ctl.all sleep``) for ``sleep_s`` seconds, then
wakes it. While it sleeps the thalamus gates intake and the shards replay and prune (see
`memory.shard`), so consolidation comes before growth when ``sleep_at_fill < fill_threshold``.

Grown shards are written to a manifest (``<root>/grown.json``, atomic replace) and re-added when
the coordinator starts again, so a restarted brain recalls from every shard it ever had, not
only from those in its config file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from actors.actor import Actor, every, on
from actors.config import ActorConfig
from actors.supervisor import ActorChild, Supervisor
from bus import Meta
from bus.errors import ActorError
from bus.models import CtlRequest, Heartbeat
from bus.runtime import open_private, private_dir
from memory.recall import ShardWatch
from memory.shard import HippocampusShard, ShardOptions

__all__ = ["Hippocampus", "HippocampusOptions"]

# By module path, so growth works whether or not the kind name is in the built-in registry.
SHARD_KIND_PATH = f"{HippocampusShard.__module__}:{HippocampusShard.__qualname__}"


class HippocampusOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Grow when every live shard holds at least this fraction of its capacity.
    fill_threshold: Annotated[float, Field(gt=0, le=1)] = 0.9
    max_shards: Annotated[int, Field(ge=1, le=1024)] = 64
    #: New shards are named ``<prefix><n>``.
    name_prefix: Annotated[str, Field(pattern=r"^[a-z0-9_-]+$", max_length=48)] = "shard-g"
    #: Options of new shards; default: those of a shard of this process (same dim, capacity...).
    shard: dict[str, Any] | None = None
    #: Seconds between two growths (a new shard needs a heartbeat or two to be seen).
    cooldown_s: Annotated[float, Field(gt=0)] = 5.0
    #: Where the manifest lives; default: the shards' data_dir, else <brain data_dir>/hippocampus.
    data_dir: str | None = None
    #: Memory pressure: sleep when a shard is at least this full (None = never sleep by itself).
    sleep_at_fill: Annotated[float, Field(gt=0, le=1)] | None = None
    #: How long a pressure sleep lasts, and the least time between two of them.
    sleep_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    sleep_cooldown_s: Annotated[float, Field(gt=0)] = 60.0


class Hippocampus(Actor):
    """Coordinator of the shards (growth); stores and recalls go to the shards directly."""

    kind = "hippocampus"
    Options = HippocampusOptions
    options: HippocampusOptions

    def attach_supervisor(self, supervisor: Supervisor) -> None:
        self.supervisor: Supervisor | None = supervisor

    async def on_start(self) -> None:
        self.watch = ShardWatch(self.bus, stale_after=3 * self.heartbeat_interval + 0.5)
        self._last_growth = 0.0
        self._last_sleep: float | None = None
        self.pressure_sleeps = 0
        self.grown: list[str] = []
        self._to_restore: list[str] = []
        sup = getattr(self, "supervisor", None)
        if sup is None:
            self.log.warning("hippocampus.no_supervisor", detail="cannot grow: not started by a supervisor")
            return
        self._template = self._shard_template(sup)
        self._manifest = self._root(sup) / "grown.json"
        # Started from the first tick: while the supervisor is still starting its children,
        # it does not take new ones.
        self._to_restore = self._read_manifest()

    def _shard_template(self, sup: Supervisor) -> dict[str, Any]:
        if self.options.shard is not None:
            return dict(self.options.shard)
        for child in sup.children:
            if isinstance(child, ActorChild) and issubclass(child.cls, HippocampusShard):
                return dict(child.options.model_dump(exclude_defaults=True))
        return {}

    def _root(self, sup: Supervisor) -> Path:
        root = self.options.data_dir or ShardOptions.model_validate(self._template).data_dir
        return Path(root) if root else Path(sup.config.data_dir) / "hippocampus"

    def _read_manifest(self) -> list[str]:
        try:
            names = orjson.loads(self._manifest.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, orjson.JSONDecodeError) as exc:
            self.report_soon(str(self._manifest), f"unreadable grown-shards manifest: {exc}",
                             kind="handler_error")
            return []
        return [str(n) for n in names] if isinstance(names, list) else []

    def _write_manifest(self) -> None:
        private_dir(self._manifest.parent, existing=False)  # the root may be a folder the user named
        tmp = self._manifest.with_suffix(".tmp")
        with os.fdopen(open_private(tmp), "wb") as f:
            f.write(orjson.dumps(self.grown))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._manifest)

    @on("sys.heartbeat.*")
    async def beat(self, msg: Heartbeat, meta: Meta) -> None:
        self.watch.update(msg)

    @every(0.5)
    async def check(self) -> None:
        """Sleep under memory pressure; grow when every live shard is above the fill threshold."""
        await self._sleep_if_pressed()
        sup = getattr(self, "supervisor", None)
        if sup is not None and self._to_restore:
            await self._restore_grown(sup)
            return
        fills = self.watch.fills()
        if sup is None or not fills or min(fills.values()) < self.options.fill_threshold:
            return
        if len(fills) >= self.options.max_shards:
            return
        if time.monotonic() - self._last_growth < self.options.cooldown_s:
            return
        if ShardOptions.model_validate(self._template).mode == "mirrored":
            return  # a new mirror would start empty: mirrored memories grow by capacity, not shards
        taken = {c.name for c in sup.children} | set(fills)
        n = len(self.grown)
        while f"{self.options.name_prefix}{n}" in taken:
            n += 1
        await self._start_shard(sup, f"{self.options.name_prefix}{n}")
        self._write_manifest()
        self.log.info("hippocampus.grew", shard=self.grown[-1], shards=len(fills) + 1,
                      fills={k: round(v, 3) for k, v in fills.items()})

    async def _sleep_if_pressed(self) -> None:
        o = self.options
        now = time.monotonic()
        if o.sleep_at_fill is None or (self._last_sleep is not None and now - self._last_sleep < o.sleep_cooldown_s):
            return
        fills = self.watch.fills()
        if not fills or max(fills.values()) < o.sleep_at_fill:
            return
        self._last_sleep = now
        self.pressure_sleeps += 1
        self.log.info("hippocampus.pressure_sleep", fills={k: round(v, 3) for k, v in fills.items()},
                      sleep_s=o.sleep_s)
        await self.publish(self.bus.subjects.ctl_all, CtlRequest(verb="sleep"))
        self.call_later(o.sleep_s, "wake_brain")

    async def wake_brain(self) -> None:
        """End a pressure sleep."""
        await self.publish(self.bus.subjects.ctl_all, CtlRequest(verb="wake"))

    async def _restore_grown(self, sup: Supervisor) -> None:
        """Start the shards grown in an earlier run (their files hold episodes to recall)."""
        while self._to_restore:
            name = self._to_restore[0]
            if not any(c.name == name for c in sup.children):
                try:
                    await self._start_shard(sup, name)
                except ActorError:
                    return  # the supervisor is not running yet: next tick
            elif name not in self.grown:
                self.grown.append(name)
            self._to_restore.pop(0)

    async def _start_shard(self, sup: Supervisor, name: str) -> None:
        spec = ActorConfig(kind=SHARD_KIND_PATH, options=self._template)
        await sup.add_child(ActorChild(name, spec, sup.bus, sup.config))
        self._last_growth = time.monotonic()
        if name not in self.grown:
            self.grown.append(name)

    def extra_stats(self) -> dict[str, Any]:
        return {"shards": self.watch.count, "grown": list(self.grown), "pressure_sleeps": self.pressure_sleeps}
