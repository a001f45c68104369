"""A brain in its own process for the benchmarks, reached only over the bus: start and stop it,
wait until it is ready, read its heartbeats and its CPU time."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

__all__ = ["ACTIONS", "ALL_ACTORS", "CONFIGS", "LAYOUTS", "BrainProcess", "heartbeats", "layout_config", "wait_ready"]

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
#: The actors of the default and the small brain, all of which must heartbeat before a bench starts.
ALL_ACTORS = ["thalamus", "language", "visual", "workspace", "prefrontal", "basal_ganglia", "motor",
              "hormones", "amygdala"]
#: How the benches lay a brain over OS processes (config `processes:`; what is in no group runs in
#: the main process): all in one; the senses apart (thalamus and cortices: about half of the work
#: per stimulus, and the MiniLM encoders); and spread, one process for each stage of the path,
#: for machines with cores to spare. Each process has an event loop of its own, and each stage
#: boundary costs a hop through nats-server; on two cores the processes only take turns.
LAYOUTS: dict[str, dict[str, list[str]]] = {
    "one_process": {},
    "two_processes": {"senses": ["thalamus", "language", "visual"]},
    "spread": {"thalamus": ["thalamus"], "cortices": ["language", "visual"], "workspace": ["workspace"],
               "prefrontal": ["prefrontal"], "action": ["basal_ganglia", "motor"]},
}
#: The repertoire the benchmarks declare.
ACTIONS = ["a", "b", "c", "d"]


class BrainProcess:
    """`brainbus run` against our server, in its own data directory."""

    def __init__(self, url: str, namespace: str, config: Path) -> None:
        self.dir = tempfile.mkdtemp(prefix="brainbus-bench-")
        self.args = [sys.executable, "-m", "actors.cli", "run", "--nats", url, "--namespace", namespace,
                     "--config", str(config), "--data-dir", self.dir,
                     "--log-level", os.environ.get("BENCH_BRAIN_LOG", "warning")]
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> BrainProcess:
        # The brain writes to its own copy of the descriptor; ours is closed once it has one.
        with open(Path(self.dir) / "brain.log", "wb") as log:  # noqa: ASYNC230 (opened once, before the run)
            self.proc = await asyncio.create_subprocess_exec(*self.args, stdout=log, stderr=log)
        return self

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) of the brain and its process groups so far; None off Linux."""
        if self.proc is None:
            return None
        try:
            return _tree_cpu_seconds(self.proc.pid)
        except OSError:
            return None

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(2)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def _tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process `root` and its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += (int(stats[pid][11]) + int(stats[pid][12])) / tick
        todo.extend(children.get(pid, []))
    return total


async def wait_ready(nc: Any, ns: str, actors: list[str], timeout: float = 60) -> None:
    """Until each actor heartbeats, and not as `loading` (a thalamus loading its language encoder
    heartbeats at once, and texts sent meanwhile wait for the encoder)."""
    seen: set[str] = set()
    sub = await nc.subscribe(f"{ns}.sys.heartbeat.*")
    deadline = time.monotonic() + timeout
    try:
        while not set(actors) <= seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"brain not ready: heartbeats only from {sorted(seen)}")
            msg = await sub.next_msg(timeout=left)
            if orjson.loads(msg.data).get("state") != "loading":
                seen.add(msg.subject.rsplit(".", 1)[1])
    finally:
        await sub.unsubscribe()


async def heartbeats(nc: Any, ns: str, wait: float = 1.5) -> dict[str, dict[str, Any]]:
    beats: dict[str, dict[str, Any]] = {}

    async def keep(msg: Any) -> None:
        beats[msg.subject.rsplit(".", 1)[1]] = orjson.loads(msg.data)

    sub = await nc.subscribe(f"{ns}.sys.heartbeat.*", cb=keep)
    await asyncio.sleep(wait)
    await sub.unsubscribe()
    return beats


def layout_config(path: Path, layout: str) -> Path:
    """The config at `path` laid out as `LAYOUTS[layout]` says: itself for one process, else a
    copy with those process groups."""
    groups = LAYOUTS[layout]
    if not groups:
        return path
    config = yaml.safe_load(path.read_text())
    config["processes"] = [{"name": name, "actors": actors} for name, actors in groups.items()]
    copy = Path(tempfile.mkdtemp(prefix="brainbus-bench-")) / path.name
    copy.write_text(yaml.safe_dump(config))
    return copy
