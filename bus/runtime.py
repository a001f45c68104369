"""The runtime file: how `brainbus pub/sub/status/tui` and SDK users find the brain to talk to.

`brainbus run` writes `./.brainbus/runtime.json` (owner-only) with the URL and namespace of the
brain it started, and removes it on exit. Resolution order for tools: `--nats` flag, `NATS_URL`,
the runtime file of the current directory.

For a brain with an embedded server the file also holds the generated credentials of every role
(`bus.auth`) and, for a TLS server with a private CA, that CA: a tool resolving the brain through
the file connects as the role it asks for, with no flags. A URL given by flag or `NATS_URL` is
used as it is (credentials in it, `user:password@`, work as with any NATS client).

Everything the brain writes under its data directory (memories, snapshots, recordings, this file)
is its owner's only: `private_dir` makes folders 0700 and `open_private` files 0600, where they
are created, whatever the umask.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import orjson

from bus.auth import ROLES, Credential, Role, with_credentials
from bus.errors import BusError

__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "RUNTIME_FILE",
    "Runtime",
    "open_private",
    "private_dir",
    "read_runtime",
    "remove_runtime",
    "resolve_connection",
    "trusted_ca",
    "write_runtime",
]

RUNTIME_FILE = Path(".brainbus") / "runtime.json"
#: The modes of the folders and files the brain writes: its owner's only.
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: str | os.PathLike[str], *, existing: bool = True) -> Path:
    """Make `path` a folder only its owner can enter (0700), creating it and missing parents so.

    With `existing` (for a folder that is the brain's own) one that exists already, made by an
    older version, is made 0700 too; without (a folder the user may have named, such as the data
    directory) it is left as it is. Parents that exist are always left alone.
    """
    path = Path(path)
    missing: list[Path] = []
    at = path
    while not at.exists():
        missing.append(at)
        if at.parent == at:
            break
        at = at.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by someone else meanwhile
            folder.mkdir(PRIVATE_DIR)
        _chmod(folder, PRIVATE_DIR)  # mkdir's mode passes through the umask
    if existing and not missing:
        _chmod(path, PRIVATE_DIR)
    return path


def _chmod(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.stat().st_mode) != mode:
        path.chmod(mode)


def open_private(path: str | os.PathLike[str], flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """`os.open` a file for writing as its owner's only (0600); returns the descriptor.

    A file that exists keeps its mode through O_CREAT, so one made by an older version is made
    0600 here too.
    """
    fd = os.open(path, flags | os.O_CREAT, PRIVATE_FILE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_FILE:
            os.fchmod(fd, PRIVATE_FILE)
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True, slots=True)
class Runtime:
    """A running brain: where its NATS is (the URL without credentials), its namespace, its process.

    `credentials` (one per role) and `tls_ca` are there only for a brain's own embedded server.
    """

    url: str
    namespace: str
    pid: int
    started: float
    credentials: dict[Role, Credential] = field(default_factory=dict)
    tls_ca: str | None = None


def write_runtime(runtime: Runtime, path: Path = RUNTIME_FILE) -> None:
    private_dir(path.parent)
    tmp = path.with_suffix(".tmp")
    with os.fdopen(open_private(tmp), "wb") as f:
        f.write(orjson.dumps(_as_dict(runtime)))
    os.replace(tmp, path)


def _as_dict(runtime: Runtime) -> dict[str, object]:
    data: dict[str, object] = {"url": runtime.url, "namespace": runtime.namespace, "pid": runtime.pid,
                               "started": runtime.started}
    if runtime.credentials:
        data["credentials"] = {role: {"user": c.user, "password": c.password}
                               for role, c in runtime.credentials.items()}
    if runtime.tls_ca:
        data["tls_ca"] = runtime.tls_ca
    return data


def _credentials(data: object) -> dict[Role, Credential]:
    if not isinstance(data, dict):
        return {}
    return {cast(Role, role): Credential(user=str(c["user"]), password=str(c["password"]))
            for role, c in data.items() if role in ROLES and isinstance(c, dict)}


def read_runtime(path: Path = RUNTIME_FILE) -> Runtime | None:
    """The runtime of a live brain started from this directory, or None."""
    try:
        data = orjson.loads(path.read_bytes())
        runtime = Runtime(url=str(data["url"]), namespace=str(data["namespace"]), pid=int(data["pid"]),
                          started=float(data["started"]), credentials=_credentials(data.get("credentials")),
                          tls_ca=str(data["tls_ca"]) if data.get("tls_ca") else None)
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


def resolve_connection(url: str | None, namespace: str | None, *, role: Role = "admin") -> tuple[str, str]:
    """(url, namespace) from flags, then `NATS_URL`, then the runtime file; BusError if none.

    A URL from the runtime file carries the credentials of `role` (`user:password@`) when the brain
    has them. The default, `admin`, is the operator at this keyboard, who can read the file (and so
    every role's password) anyway; programs that only talk to the brain ask for `agent`, watchers
    for `observer`.
    """
    runtime = read_runtime()
    given = url or os.environ.get("NATS_URL")
    ns = namespace or (runtime.namespace if runtime else "brain")
    if given:
        return given, ns
    if runtime is None:
        raise BusError(
            f"no brain is running from this directory ({RUNTIME_FILE} not found or stale): "
            "start one with `brainbus run`, or give --nats URL"
        )
    if not runtime.credentials:
        return runtime.url, ns  # a brain on a server of someone else's (`--nats`): no credentials of ours
    cred = runtime.credentials.get(role)
    if cred is None:
        raise BusError(f"the runtime file {RUNTIME_FILE} has no credentials for role {role!r}")
    return with_credentials(runtime.url, cred), ns


def trusted_ca(url: str, path: Path = RUNTIME_FILE) -> str | None:
    """The CA file to trust for `url`: the runtime file's, when `url` is the TLS server it records.

    So every client of this directory (CLI, TUI, SDK) verifies a brain's private certificate
    without being told where the CA is.
    """
    runtime = read_runtime(path)
    if runtime is None or runtime.tls_ca is None:
        return None
    mine, theirs = urlsplit(url), urlsplit(runtime.url)
    return runtime.tls_ca if (mine.hostname, mine.port) == (theirs.hostname, theirs.port) else None
