"""`brainbus run`: one lifespan for a brain process.

Start-up: embedded nats-server (unless a URL is given) → connection → supervisor with the
actors of this process (and the process groups, in the main process) → runtime file.
The embedded server is supervised too: one that dies is restarted on the same address (the
connections come back by themselves); past its restart intensity the brain shuts down, exit 1.
Shutdown (SIGINT/SIGTERM): stop intake and drain mailboxes under the grace period, snapshot
state, drain the NATS connection, stop the embedded server last.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import structlog
import torch
from threadpoolctl import threadpool_limits

from actors.config import BrainConfig
from actors.placement import ProcessChild
from actors.supervisor import Supervisor
from bus import Bus, EmbeddedServer
from bus.auth import ENV_PASSWORD, ENV_TLS_CA, ENV_USER, TlsFiles, split_credentials
from bus.errors import BadInput, EscalationError
from bus.runtime import Runtime, open_private, private_dir, remove_runtime, write_runtime
from bus.server import EmbeddedServerFailed

__all__ = ["run_brain", "select_actors"]

log = structlog.get_logger("actors.brain")


def select_actors(config: BrainConfig, only: list[str] | None, group: str) -> list[str]:
    """The actors this process runs: `--only` names, else those not placed in a process group."""
    if only is not None:
        unknown = [name for name in only if name not in config.actors]
        if unknown:
            raise BadInput(f"--only names unknown actors {unknown}; this config has {sorted(config.actors)}")
        return only
    return [name for name in config.actors if config.group_of(name) == group]


def server_failure(watch: asyncio.Task[None] | None) -> str | None:
    """Why the embedded server's supervision gave up, if it did (one line)."""
    if watch is None or not watch.done() or watch.cancelled():
        return None
    exc = watch.exception()
    if exc is None or isinstance(exc, EmbeddedServerFailed):
        return str(exc) if exc else "supervising the embedded nats-server ended unexpectedly"
    return f"supervising the embedded nats-server failed: {type(exc).__name__}: {exc}"


async def run_brain(config: BrainConfig, *, url: str | None = None, only: list[str] | None = None,
                    group: str = "main", log_json: bool = False,
                    attach: Callable[[str, str], Awaitable[None]] | None = None) -> int:
    """Run a brain (or the `--only` part of one) until SIGINT/SIGTERM; returns the exit code.

    `attach(url, namespace)` runs beside the brain once it is up; the brain stops when it returns.
    """
    names = select_actors(config, only, group)  # a bad --only fails before anything is created
    torch.set_num_threads(config.torch_threads)
    threadpool_limits(1, user_api="blas")  # numpy's BLAS (see BrainConfig.torch_threads)
    data_dir = Path(config.data_dir)
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    server: EmbeddedServer | None = None
    tls = config.nats.tls
    # A process group (or an operator with an external server) gets its credentials from the
    # environment, never the command line; the embedded server's are made here.
    user, password = os.environ.get(ENV_USER) or None, os.environ.get(ENV_PASSWORD) or None
    tls_ca = os.environ.get(ENV_TLS_CA) or None
    if url is None:
        server = EmbeddedServer(data_dir=data_dir / "nats", host=config.nats.host, port=config.nats.port,
                                jetstream=config.nats.jetstream, auth=True, namespace=config.namespace,
                                tls=TlsFiles(cert=tls.cert, key=tls.key, ca=tls.ca) if tls else None)
        url = runtime_url = await server.start()
        brain_cred = server.credentials["brain"]
        user, password, tls_ca = brain_cred.user, brain_cred.password, tls.ca if tls else None
    else:
        # Credentials in a --nats URL move to the environment too: the URL goes on the process
        # groups' command lines. The runtime file (owner-only) keeps the URL as given.
        runtime_url = url
        url, in_url = split_credentials(url)
        if in_url is not None and user is None:
            user, password = in_url.user, in_url.password
    bus = Bus(url, namespace=config.namespace, name=f"brainbus:{config.namespace}:{group}", source=group,
              user=user, password=password, tls_ca=tls_ca)
    group_env = {ENV_USER: user or "", ENV_PASSWORD: password or "", ENV_TLS_CA: tls_ca or ""}
    try:
        await bus.connect()
        sup = Supervisor.for_actors(bus, config, names, data_dir / "snapshots")
        if only is None and group == "main" and config.processes:
            effective = private_dir(data_dir / "run") / "config.json"
            with os.fdopen(open_private(effective), "wb") as f:
                f.write(orjson.dumps(config.model_dump(mode="json")))
            sup.children.extend(ProcessChild(g, config_file=effective, bus=bus, url=url, log_json=log_json,
                                             env=group_env) for g in config.processes)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, sup.request_stop)
        watch: asyncio.Task[None] | None = None
        if server is not None:
            # A server that dies is restarted; one that cannot be kept up stops the brain.
            watch = server.supervise()
            watch.add_done_callback(lambda _: sup.request_stop())
        if group == "main":
            write_runtime(Runtime(url=runtime_url, namespace=config.namespace, pid=os.getpid(), started=time.time(),
                                  credentials=dict(server.credentials) if server else {}, tls_ca=tls_ca))
        log.info("brain.running", url=url, namespace=config.namespace, group=group, actors=names,
                 auth=user is not None, groups=[g.name for g in config.processes] if only is None else [])
        companion: asyncio.Task[None] | None = None
        if attach is not None:
            # E.g. the TUI of `brainbus run --tui`: when it ends, the brain stops with it.
            # The operator's TUI connects as admin, as it does through the runtime file.
            companion = asyncio.ensure_future(attach(server.url_for("admin") if server else url,
                                                     config.namespace))
            companion.add_done_callback(lambda _: sup.request_stop())
        try:
            await sup.run()
        except EscalationError as exc:
            sys.stderr.write(f"brainbus: {exc}\n")
            return 1
        else:
            failed = server_failure(watch)
            if failed is not None:
                sys.stderr.write(f"brainbus: {failed}\n")
                return 1
        finally:
            if companion is not None and not companion.done():
                companion.cancel()
                await asyncio.gather(companion, return_exceptions=True)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if group == "main":
                remove_runtime(os.getpid())
        return 0
    finally:
        with contextlib.suppress(Exception):
            await bus.close(drain=True)
        if server is not None:
            await server.stop()
        log.info("brain.stopped", group=group)
