"""The runtime file: how `brainbus pub/sub/status/tui` and SDK users find the brain to talk to.

`brainbus run` writes `./.brainbus/runtime.json` (owner-only) with the URL and namespace of the
brain it started, and removes it on exit. Resolution order for tools: `--nats` flag, `NATS_URL`,
the runtime file of the current directory.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from bus.errors import BusError

__all__ = ["RUNTIME_FILE", "Runtime", "read_runtime", "remove_runtime", "resolve_connection", "write_runtime"]

RUNTIME_FILE = Path(".brainbus") / "runtime.json"


@dataclass(frozen=True, slots=True)
class Runtime:
    url: str
    namespace: str
    pid: int
    started: float


def write_runtime(runtime: Runtime, path: Path = RUNTIME_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(_as_dict(runtime)))
    os.replace(tmp, path)


def _as_dict(runtime: Runtime) -> dict[str, object]:
    return {"url": runtime.url, "namespace": runtime.namespace, "pid": runtime.pid,
            "started": runtime.started}


def read_runtime(path: Path = RUNTIME_FILE) -> Runtime | None:
    """The runtime of a live brain started from this directory, or None."""
    try:
        data = orjson.loads(path.read_bytes())
        runtime = Runtime(url=str(data["url"]), namespace=str(data["namespace"]), pid=int(data["pid"]),
                          started=float(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(runtime.pid, 0)
    except ProcessLookupError:
        return None  # the brain that wrote it is gone: a stale file
    except PermissionError:
        pass
    return runtime


def remove_runtime(pid: int, path: Path = RUNTIME_FILE) -> None:
    """Remove the runtime file if this process wrote it."""
    runtime = read_runtime(path)
    if runtime is not None and runtime.pid == pid:
        with contextlib.suppress(OSError):
            path.unlink()


def resolve_connection(url: str | None, namespace: str | None) -> tuple[str, str]:
    """(url, namespace) from flags, then `NATS_URL`, then the runtime file; BusError if none."""
    runtime = read_runtime()
    url = url or os.environ.get("NATS_URL") or (runtime.url if runtime else None)
    if not url:
        raise BusError(
            f"no brain is running from this directory ({RUNTIME_FILE} not found or stale): "
            "start one with `brainbus run`, or give --nats URL"
        )
    return url, namespace or (runtime.namespace if runtime else "brain")
