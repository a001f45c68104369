"""Security of a brain's embedded server: credentials, per-role NATS permissions, TLS, `--listen`.

One light brain (`brainbus run`, no `--nats`: an embedded server with generated credentials) is
shared by the tests that talk to it; every connection to it is a real client on a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import orjson
import pytest
from nats.aio.client import Client as NatsClient

from actors import creds
from actors.config import BrainConfig, load_config
from bus import Bus, CtlReply, CtlRequest, EmbeddedServer, RegionOutput, TextStimulus
from bus.auth import (
    ROLES,
    Credential,
    TlsFiles,
    inbox_prefix,
    permissions,
    redact_url,
    split_credentials,
    with_credentials,
)
from bus.errors import BadInput, BusError, ConfigError
from bus.runtime import Runtime, resolve_connection, write_runtime
from tests.integration.test_cli import BRAINBUS, cli, env, sub_while_publishing, wait_until

LIGHT_CONFIG = (
    "supervisor: {heartbeat_interval: 0.5}\n"
    "actors:\n"
    "  thalamus: {kind: thalamus, options: {dim: 64, encoder: hashing}}\n"
    "  echo: {kind: 'tests.actors_for_tests:Echo'}\n"
)


class SecureBrain:
    """A `brainbus run` subprocess on its own embedded (authenticated) server."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.cwd = cwd
        self.err = open(cwd / "brain.err", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(BRAINBUS), "run", *args], cwd=cwd, env=env(),
                                     stdout=subprocess.DEVNULL, stderr=self.err, text=True)
        self.runtime_file = cwd / ".brainbus" / "runtime.json"

    def runtime(self) -> dict[str, Any] | None:
        try:
            return dict(orjson.loads(self.runtime_file.read_bytes()))
        except (OSError, orjson.JSONDecodeError):
            return None

    def wait_ready(self, *actors: str, within: float = 30.0) -> None:
        wait_until(self.runtime, within=within, what="the runtime file", proc=self.proc)

        def alive() -> bool:
            r = cli("status", "--json", "--wait", "0.6", cwd=self.cwd)
            return r.returncode == 0 and {row["actor"] for row in orjson.loads(r.stdout)} >= set(actors)

        wait_until(alive, within=within, what=f"heartbeats of {actors}", proc=self.proc)

    @property
    def url(self) -> str:
        runtime = self.runtime()
        assert runtime is not None
        return str(runtime["url"])

    @property
    def namespace(self) -> str:
        runtime = self.runtime()
        assert runtime is not None
        return str(runtime["namespace"])

    def url_for(self, role: str) -> str:
        runtime = self.runtime()
        assert runtime is not None
        cred = runtime["credentials"][role]
        return with_credentials(str(runtime["url"]), Credential(cred["user"], cred["password"]))

    def stderr(self) -> str:
        self.err.flush()
        return (self.cwd / "brain.err").read_text()

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.err.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def brain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBrain]:
    cwd = tmp_path_factory.mktemp("secure")
    (cwd / "light.yaml").write_text(LIGHT_CONFIG)
    b = SecureBrain(cwd, "--config", str(cwd / "light.yaml"))
    try:
        b.wait_ready("thalamus", "echo")
        yield b
    finally:
        b.stop()


class Client:
    """A plain nats-py client that records what the server said was not allowed."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: NatsClient | None = None

    async def connect(self, url: str) -> NatsClient:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        user = split_credentials(url)[1]
        prefix = inbox_prefix(user.user if user else None) or "_INBOX"
        self.nc = await nats.connect(url, error_cb=on_error, inbox_prefix=prefix, allow_reconnect=False,
                                     max_reconnect_attempts=1, connect_timeout=3)
        return self.nc

    def violations(self, kind: str) -> list[str]:
        return [e for e in self.errors if f"permissions violation for {kind}" in e.lower()]


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[], Client]]:
    made: list[Client] = []

    def make() -> Client:
        made.append(Client())
        return made[-1]

    yield make
    for c in made:
        if c.nc is not None and not c.nc.is_closed:
            await c.nc.close()


async def eventually(cond: Callable[[], Any], *, within: float, what: str) -> None:
    """Wait (without blocking the event loop, where the clients' callbacks run) until `cond()`."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.05)


async def settle(*ncs: NatsClient) -> None:
    """Flush each connection: the server has handled (and answered) everything sent before."""
    for nc in ncs:
        await nc.flush(timeout=3)
    await asyncio.sleep(0.1)  # error callbacks run as tasks after the -ERR is read


# ---------------------------------------------------------------- credentials and the runtime file


def test_runtime_file_and_server_config_are_owner_only(brain: SecureBrain) -> None:
    runtime = brain.runtime()
    assert runtime is not None
    assert brain.runtime_file.stat().st_mode & 0o777 == 0o600
    assert runtime["url"].startswith("nats://127.0.0.1:") and "@" not in runtime["url"]
    assert set(runtime["credentials"]) == set(ROLES)
    passwords = {c["password"] for c in runtime["credentials"].values()}
    assert len(passwords) == 4 and all(len(p) >= 32 for p in passwords)
    conf = brain.cwd / ".brainbus" / "nats" / "nats.conf"
    assert conf.stat().st_mode & 0o777 == 0o600
    assert runtime["credentials"]["agent"]["password"] in conf.read_text()
    # the brain logs where it runs, never a password
    assert not any(p in brain.stderr() for p in passwords)


async def test_a_connection_without_credentials_is_refused(brain: SecureBrain) -> None:
    with pytest.raises(BusError, match="Authorization Violation"):
        await Bus(brain.url, namespace=brain.namespace, name="stranger").connect(timeout=3)
    wrong = with_credentials(brain.url, Credential("agent", "not-the-password"))
    with pytest.raises(BusError, match="Authorization Violation") as caught:
        await Bus(wrong, namespace=brain.namespace, name="guesser").connect(timeout=3)
    assert "not-the-password" not in str(caught.value)  # errors show the URL redacted
    async with Bus(brain.url_for("agent"), namespace=brain.namespace, name="agent") as bus:
        assert bus.connected and "***" in bus.url


# ---------------------------------------------------------------- what each role may do


async def test_an_agent_cannot_publish_control_or_memory_messages(
    brain: SecureBrain, clients: Callable[[], Client]
) -> None:
    ns = brain.namespace
    watcher = await clients().connect(brain.url_for("brain"))
    seen: list[str] = []

    async def record(msg: Any) -> None:
        seen.append(msg.subject)

    for pattern in (f"{ns}.sys.ctl.>", f"{ns}.mem.>", f"{ns}.region.>", f"{ns}.stim.text"):
        await watcher.subscribe(pattern, cb=record)
    await watcher.flush()

    agent = Client()
    nc = await agent.connect(brain.url_for("agent"))
    try:
        await nc.publish(f"{ns}.sys.ctl.echo", b"pause")
        await nc.publish(f"{ns}.sys.ctl.all", b"restart")
        await nc.publish(f"{ns}.mem.store", b'{"vector": [0.1], "text": "forged memory"}')
        await nc.publish(f"{ns}.region.echo.out", b"{}")
        # then something it may send: it arrives, so the forbidden ones had their chance before it
        await nc.publish(f"{ns}.stim.text", orjson.dumps({"text": "allowed", "id": "sec-a1"}))
        await settle(nc, watcher)
        await eventually(lambda: f"{ns}.region.echo.out" in seen, within=5, what="the echo of the allowed stimulus")
    finally:
        await nc.close()
    assert sorted(s.split(".", 1)[1] for s in agent.violations("publish")) == [
        'mem.store"', 'region.echo.out"', 'sys.ctl.all"', 'sys.ctl.echo"']
    assert not [s for s in seen if ".sys.ctl." in s or ".mem." in s]
    assert f"{ns}.stim.text" in seen
    # echo was not paused by the forged control message
    async with Bus(brain.url_for("admin"), namespace=ns, name="admin") as admin:
        reply = await admin.request("sys.ctl.echo", CtlRequest(verb="status"), CtlReply, timeout=3)
    assert reply.ok and reply.state == "running"


async def test_an_agent_reads_only_what_it_is_granted(brain: SecureBrain, clients: Callable[[], Client]) -> None:
    ns = brain.namespace
    agent = clients()
    nc = await agent.connect(brain.url_for("agent"))
    got: dict[str, list[str]] = {}

    def keep(name: str) -> Callable[[Any], Any]:
        async def cb(msg: Any) -> None:
            got.setdefault(name, []).append(msg.subject)
        return cb

    for name, pattern in [("mem", f"{ns}.mem.>"), ("region", f"{ns}.region.>"), ("all", f"{ns}.>"),
                          ("inboxes", "_INBOX.>"), ("admin_inbox", "_INBOX.admin.>"),
                          ("heartbeat", f"{ns}.sys.heartbeat.>")]:
        await nc.subscribe(pattern, cb=keep(name))
    # a request: the reply comes back on the agent's own inbox prefix
    answer = await nc.request(f"{ns}.stim.text", orjson.dumps({"text": "granted?", "id": "sec-r1"}), timeout=3)
    assert orjson.loads(answer.data)["data"] == {"text": "granted?"}
    assert answer.subject.startswith("_INBOX.agent.")
    # the brain's traffic meanwhile: region outputs and an admin's control reply
    async with Bus(brain.url_for("admin"), namespace=ns, name="admin") as admin:
        await admin.request("sys.ctl.echo", CtlRequest(verb="status"), CtlReply, timeout=3)
    await asyncio.sleep(1.2)  # two heartbeat intervals
    await settle(nc)
    # (nats-py lower-cases the server's error text)
    denied = sorted(v.split('"')[1] for v in agent.violations("subscription"))
    assert denied == sorted([f"{ns}.mem.>", f"{ns}.region.>", f"{ns}.>", "_inbox.>", "_inbox.admin.>"])
    assert set(got) == {"heartbeat"}, got  # nothing reached the denied subscriptions
    assert nc.is_connected  # a violation is reported, not punished with a disconnect


async def test_an_observer_watches_but_cannot_publish(brain: SecureBrain, clients: Callable[[], Client]) -> None:
    ns = brain.namespace
    observer = clients()
    nc = await observer.connect(brain.url_for("observer"))
    seen: list[tuple[str, bytes]] = []

    async def record(msg: Any) -> None:
        seen.append((msg.subject, msg.data))

    await nc.subscribe(f"{ns}.>", cb=record)
    await nc.publish(f"{ns}.stim.text", orjson.dumps({"text": "from the observer", "id": "sec-o1"}))
    await nc.publish(f"{ns}.sys.ctl.all", b"pause")
    await settle(nc)
    assert len(observer.violations("publish")) == 2
    async with Bus(brain.url_for("agent"), namespace=ns, name="agent") as agent:
        await agent.publish("stim.text", TextStimulus(text="watch this", id="sec-o2"))
        await agent.flush()
    await eventually(lambda: any(s == f"{ns}.region.echo.out" and b"sec-o2" in d for s, d in seen), within=5,
                     what="the observer to see the echo")
    assert not any(b"from the observer" in d for _, d in seen)  # its own publish never happened


async def test_admin_pauses_and_resumes_an_actor(brain: SecureBrain) -> None:
    async with Bus(brain.url_for("admin"), namespace=brain.namespace, name="admin") as admin:
        paused = await admin.request("sys.ctl.echo", CtlRequest(verb="pause"), CtlReply, timeout=3)
        assert (paused.ok, paused.actor, paused.state) == (True, "echo", "paused")
        resumed = await admin.request("sys.ctl.echo", CtlRequest(verb="resume"), CtlReply, timeout=3)
        assert (resumed.ok, resumed.state) == (True, "running")


async def test_oversized_and_malformed_payloads_from_an_agent_do_not_disturb_the_brain(
    brain: SecureBrain,
) -> None:
    ns = brain.namespace
    runtime = brain.runtime()
    assert runtime is not None
    agent_cred = runtime["credentials"]["agent"]
    host, port = brain.url.removeprefix("nats://").rsplit(":", 1)
    # Oversized: a raw client, since nats-py refuses to send past max_payload itself.
    reader, writer = await asyncio.open_connection(host, int(port))
    info = orjson.loads((await reader.readline()).split(b" ", 1)[1])
    size = int(info["max_payload"]) + 1024
    connect = {"user": agent_cred["user"], "pass": agent_cred["password"], "verbose": False, "pedantic": False}
    writer.write(b"CONNECT " + orjson.dumps(connect) + b"\r\nPING\r\n")
    assert (await asyncio.wait_for(reader.readline(), 3)).startswith(b"PONG")
    # The server judges the size from the PUB line and closes the connection at once (its reset
    # would swallow the answer if a megabyte of payload were still on the way).
    writer.write(f"PUB {ns}.stim.text {size}\r\n".encode())
    said = await asyncio.wait_for(reader.readline(), 5)
    assert said.startswith(b"-ERR") and b"Maximum Payload" in said
    with contextlib.suppress(ConnectionError):
        writer.write(b"x" * size + b"\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    writer.close()
    # Malformed: bodies that are not the messages of their subjects
    async with Bus(brain.url_for("agent"), namespace=ns, name="agent") as agent:
        for subject, body in [("stim.text", b"\xff\xfe\xfd not utf-8"), ("stim.text", b'{"text": 5}'),
                              ("stim.vector", b'{"vector": "nope"}'), ("stim.vector", b"[1, 2"),
                              ("feedback.reward", b'{"value": 7}'), ("env.actions", b"{"),
                              ("stim.text", b'{"text": "x", "id": "' + b"i" * 5000 + b'"}')]:
            await agent.publish_raw(subject, body, headers={"Bb-Type": "nonsense"})
        await agent.flush()
        # the brain still answers a stimulus
        out = await agent.request("stim.text", TextStimulus(text="still here", id="sec-m1"), RegionOutput,
                                  timeout=5)
    assert out.stimulus_id == "sec-m1" and out.data == {"text": "still here"}
    assert brain.proc.poll() is None
    status = cli("status", "--json", "--wait", "1.2", cwd=brain.cwd)
    rows = {row["actor"]: row for row in orjson.loads(status.stdout)}
    assert rows["echo"]["state"] == "running" and rows["echo"]["restarts"] == 0
    assert rows["thalamus"]["state"] == "running" and rows["thalamus"]["restarts"] == 0
    assert rows["thalamus"]["rejected"] >= 3  # counted and reported, not crashed on


# ---------------------------------------------------------------- tools with no flags


def test_cli_tools_connect_through_the_runtime_file_with_no_flags(brain: SecureBrain) -> None:
    r = cli("status", cwd=brain.cwd)
    assert r.returncode == 0, r.stderr
    assert "echo" in r.stdout and "thalamus" in r.stdout
    lines = sub_while_publishing(["region.echo.out"], ["stim.text", '{"text":"no flags","id":"sec-c1"}'],
                                 cwd=brain.cwd, what="the echo")
    assert orjson.loads(lines[0])["data"]["data"] == {"text": "no flags"}
    r = cli("req", "sys.ctl.echo", "status", cwd=brain.cwd)
    assert r.returncode == 0, r.stderr
    assert orjson.loads(r.stdout)["state"] == "running"


async def test_creds_prints_what_a_role_connects_with(brain: SecureBrain, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    monkeypatch.chdir(brain.cwd)
    assert await creds.run(argparse.Namespace(role="observer", json=True)) == 0
    d = orjson.loads(capsys.readouterr().out)
    assert d["url"] == brain.url_for("observer") and d["namespace"] == brain.namespace
    assert d["inbox_prefix"] == "_INBOX.observer" and d["publish"] == []
    assert "nats --server" in d["nats_cli"] and "--inbox-prefix _INBOX.observer" in d["nats_cli"]
    compile(d["nats_py"], "<snippet>", "exec")  # the nats-py snippet is a valid program
    assert await creds.run(argparse.Namespace(role="agent", json=False)) == 0
    text = capsys.readouterr().out
    assert brain.url_for("agent") in text and f"{brain.namespace}.stim.>" in text
    # the URL it prints works
    async with Bus(d["url"], namespace=d["namespace"], name="observer") as bus:
        assert bus.connected
    # resolve_connection: the SDK default is agent, the CLI's admin
    assert resolve_connection(None, None, role="agent") == (brain.url_for("agent"), brain.namespace)
    assert resolve_connection(None, None)[0] == brain.url_for("admin")


def test_creds_without_a_brain_here_fails_with_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BusError, match="no brain is running"):
        creds.details("agent")
    # a brain on someone else's server: no generated credentials to give
    write_runtime(Runtime(url="nats://127.0.0.1:4222", namespace="brain", pid=os.getpid(), started=0.0))
    with pytest.raises(BusError, match="no generated credentials"):
        creds.details("agent")
    assert resolve_connection(None, None) == ("nats://127.0.0.1:4222", "brain")


# ---------------------------------------------------------------- TLS and --listen


def make_cert(tmp: Path) -> TlsFiles:
    """A private CA and a server certificate it signed, for 127.0.0.1 and localhost (openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    files = TlsFiles(cert=str(tmp / "server.pem"), key=str(tmp / "server-key.pem"), ca=str(tmp / "ca.pem"))
    assert files.ca is not None
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (tmp / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for args in (
        ["req", "-x509", *ec, "-keyout", str(tmp / "ca-key.pem"), "-out", files.ca, "-days", "1",
         "-subj", "/CN=brainbus test CA"],
        ["req", *ec, "-keyout", files.key, "-out", str(tmp / "server.csr"), "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", str(tmp / "server.csr"), "-CA", files.ca, "-CAkey", str(tmp / "ca-key.pem"),
         "-CAcreateserial", "-out", files.cert, "-days", "1", "-extfile", str(tmp / "san.ext")],
    ):
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30)
    return files


async def test_tls_server_with_a_private_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tls = make_cert(tmp_path)
    async with EmbeddedServer(data_dir=tmp_path / "nats", auth=True, namespace="sec", tls=tls,
                              jetstream=False) as server:
        assert server.url.startswith("tls://127.0.0.1:")
        async with Bus(server.url_for("agent"), namespace="sec", name="tls-agent", tls_ca=tls.ca) as bus:
            assert bus.connected
        # not without the CA (the system does not trust it), nor in plain text, nor without credentials
        with pytest.raises(BusError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await Bus(server.url_for("agent"), namespace="sec", name="untrusting").connect(timeout=3)
        # plain text (a raw client: nats-py would upgrade to TLS by itself, as the server demands)
        host, port = server.url.removeprefix("tls://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            assert orjson.loads((await reader.readline()).split(b" ", 1)[1])["tls_required"] is True
            agent = server.credentials["agent"]
            writer.write(b"CONNECT " + orjson.dumps({"user": agent.user, "pass": agent.password}) + b"\r\nPING\r\n")
            with contextlib.suppress(ConnectionError):
                answer = await asyncio.wait_for(reader.read(), 5)
                assert b"PONG" not in answer
        finally:
            writer.close()
        with pytest.raises(BusError, match="Authorization Violation"):
            await Bus(server.url, namespace="sec", name="anonymous", tls_ca=tls.ca).connect(timeout=3)
        # a brain recorded in this directory's runtime file: its CA is trusted with no flags
        monkeypatch.chdir(tmp_path)
        write_runtime(Runtime(url=server.url, namespace="sec", pid=os.getpid(), started=time.time(),
                              credentials=dict(server.credentials), tls_ca=tls.ca))
        url, ns = resolve_connection(None, None, role="observer")
        async with Bus(url, namespace=ns, name="from-runtime") as bus:
            assert bus.connected and ns == "sec"


def test_tls_config_files_must_exist(tmp_path: Path) -> None:
    tls = make_cert(tmp_path)
    ok = BrainConfig.model_validate({"nats": {"tls": {"cert": tls.cert, "key": tls.key}}})
    assert ok.nats.tls is not None and ok.nats.tls.ca is None and Path(ok.nats.tls.cert).is_absolute()
    path = tmp_path / "bad.yaml"
    path.write_text(f"nats:\n  tls: {{cert: {tls.cert}, key: {tmp_path / 'missing.pem'}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "nats.tls.key" in str(caught.value) and "missing.pem" in str(caught.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("0.0.0.0", ("0.0.0.0", None)), ("192.168.1.5:4222", ("192.168.1.5", 4222)),
    ("[::]:4333", ("::", 4333)), ("::1", ("::1", None)), ("brain.example.com:4222", ("brain.example.com", 4222)),
])
def test_listen_addresses(text: str, expected: tuple[str, int | None]) -> None:
    assert creds.parse_listen(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    (":4222", "an address is required"), ("0.0.0.0:99999", "port must be"), ("0.0.0.0:http", "port must be"),
    ("bad host!", "neither an IP address nor a host name"), ("[::1", "IPv6"),
])
def test_bad_listen_addresses(text: str, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        creds.parse_listen(text)


def test_listen_applies_to_the_embedded_server_only() -> None:
    config = BrainConfig()
    exposed = creds.apply_listen(config, "0.0.0.0:4333", None)
    assert (exposed.nats.host, exposed.nats.port) == ("0.0.0.0", 4333)
    assert creds.apply_listen(config, None, None) is config
    with pytest.raises(BadInput, match="--nats"):
        creds.apply_listen(config, "0.0.0.0", "nats://example.com:4222")


def test_the_command_line_checks_listen_and_prints_creds(brain: SecureBrain, tmp_path: Path) -> None:
    cases = [(["run", "--listen", "0.0.0.0:http"], tmp_path),
             (["run", "--listen", "0.0.0.0", "--nats", "nats://127.0.0.1:1"], tmp_path),
             (["creds", "--role", "agent", "--json"], brain.cwd)]
    procs = [subprocess.Popen([str(BRAINBUS), *args], cwd=cwd, env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args, cwd in cases]
    outputs = [p.communicate(timeout=30) for p in procs]
    bad_port, bad_combo, printed = [(p.returncode, *out) for p, out in zip(procs, outputs, strict=True)]
    assert bad_port[0] == 2 and "port must be a number" in bad_port[2]
    assert bad_combo[0] == 2 and "--listen exposes the brain's own embedded server" in bad_combo[2]
    assert printed[0] == 0, printed[2]
    assert orjson.loads(printed[1])["url"] == brain.url_for("agent")
    assert not (tmp_path / ".brainbus").exists()  # refused before anything started


async def test_a_server_without_auth_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    # Refused before any process starts, so nothing binds to a public address here.
    server = EmbeddedServer(data_dir=tmp_path / "nats", host="0.0.0.0", auth=False)
    with pytest.raises(BusError, match="refusing to listen on 0.0.0.0 without authentication"):
        await server.start()
    assert server.proc is None


# ---------------------------------------------------------------- the pieces


def test_permissions_follow_the_roles() -> None:
    agent = permissions("agent", "b")
    assert "b.stim.>" in agent["publish"]["allow"] and "b.sys.ctl.>" not in agent["publish"]["allow"]
    assert not any(s.startswith("b.mem") or s.startswith("b.region") for s in agent["subscribe"]["allow"])
    assert permissions("observer", "b")["publish"] == {"deny": [">"]}
    assert "b.sys.ctl.>" in permissions("admin", "b")["publish"]["allow"]
    assert "b.>" in permissions("brain", "b")["publish"]["allow"]


def test_urls_carry_and_hide_credentials() -> None:
    url = with_credentials("nats://127.0.0.1:4222", Credential("agent", "s3cret"))
    assert url == "nats://agent:s3cret@127.0.0.1:4222"
    assert redact_url(url) == "nats://agent:***@127.0.0.1:4222"
    assert redact_url(f"{url},nats://h:1") == "nats://agent:***@127.0.0.1:4222,nats://h:1"
    assert split_credentials(url) == ("nats://127.0.0.1:4222", Credential("agent", "s3cret"))
    assert split_credentials("tls://h:1") == ("tls://h:1", None)


@pytest.mark.slow
def test_a_process_group_gets_the_brain_credentials_from_its_environment(tmp_path: Path) -> None:
    (tmp_path / "grouped.yaml").write_text(LIGHT_CONFIG + "processes:\n  - {name: senses, actors: [thalamus]}\n")
    b = SecureBrain(tmp_path, "--config", str(tmp_path / "grouped.yaml"))
    try:
        b.wait_ready("thalamus", "echo", within=60)
        rows = {row["actor"]: row for row in orjson.loads(cli("status", "--json", cwd=tmp_path).stdout)}
        group_pid = rows["thalamus"]["pid"]
        assert group_pid != b.proc.pid and rows["thalamus"]["group"] == "senses"
        runtime = b.runtime()
        assert runtime is not None
        password = runtime["credentials"]["brain"]["password"]
        cmdline = Path(f"/proc/{group_pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline and b"--nats" in cmdline  # not on the command line
        assert f"BRAINBUS_NATS_PASSWORD={password}".encode() in Path(f"/proc/{group_pid}/environ").read_bytes()
    finally:
        assert b.stop() == 0, b.stderr()
