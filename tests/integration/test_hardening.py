"""Limits and refusals on a real nats-server: the durable intake stream's bounds, poison messages
given up instead of redelivered, files of the brain readable by its owner only, a replay that
says what the server refused, and `brainbus creds` keeping the password off command lines."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import stat
import sys
import time
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats.js.errors
import numpy as np
import orjson
import pytest
from nats.aio.msg import Msg
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from actors import creds
from actors.cli import build_parser
from actors.config import parse_config
from actors.recordcmd import run as record_run
from actors.supervisor import ActorChild, Supervisor
from bus import Bus, EmbeddedServer, Meta, TextStimulus
from bus.durable import (
    MAX_BYTES,
    MAX_HANDLER_FAILURES,
    MAX_MSG_SIZE,
    durable_subject,
    ensure_stream,
    publish_durable,
    stream_name,
)
from bus.errors import BusError, EscalationError
from bus.models import MemStore, SysError
from bus.recording import RecordedMessage, read_recording, replay
from bus.runtime import RUNTIME_FILE, Runtime, write_runtime
from memory.recall import store
from tests.actors_for_tests import eventually
from tests.integration.test_cli import BRAINBUS
from tests.integration.test_cli import env as cli_env

# ---------------------------------------------------------------- the durable intake stream


async def test_the_intake_stream_is_bounded_and_an_older_one_is_brought_up_to_the_bounds(bus: Bus) -> None:
    js = bus.nc.jetstream()
    name = stream_name(bus.subjects.ns)
    # A stream as an older version made it: no byte bound, no message size bound.
    await js.add_stream(StreamConfig(
        name=name, subjects=[durable_subject(bus, s) for s in ("stim.>", "feedback.>")],
        retention=RetentionPolicy.LIMITS, storage=StorageType.FILE, max_age=86_400.0, max_msgs=1_000_000,
        discard=DiscardPolicy.OLD, duplicate_window=120.0))
    old = (await js.stream_info(name)).config
    assert (old.max_bytes, old.max_msg_size) == (-1, -1)
    await ensure_stream(bus)  # a publisher only looks (its role may not manage streams)
    assert (await js.stream_info(name)).config.max_bytes == -1
    await ensure_stream(bus, update=True)  # the brain brings it up to date
    config = (await js.stream_info(name)).config
    assert config.max_bytes == MAX_BYTES == 256 * 1024 * 1024
    assert config.max_msg_size == MAX_MSG_SIZE and MAX_MSG_SIZE > 256 * 1024
    assert config.discard == DiscardPolicy.OLD


async def test_a_fresh_intake_stream_has_the_bounds(bus: Bus) -> None:
    name = await ensure_stream(bus)
    config = (await bus.nc.jetstream().stream_info(name)).config
    assert (config.max_bytes, config.max_msg_size, config.discard) == (MAX_BYTES, MAX_MSG_SIZE, DiscardPolicy.OLD)


async def test_a_durable_message_larger_than_any_consumer_takes_is_refused_and_not_stored(bus: Bus) -> None:
    name = await ensure_stream(bus)
    js = bus.nc.jetstream()
    await publish_durable(bus, "stim.text", TextStimulus(text="a small one"), msg_id="small")
    before = (await js.stream_info(name)).state
    # 1 MB: past the codec's 256 KiB, still under the server's 1 MiB payload limit.
    huge = TextStimulus.model_construct(text="x" * 1_000_000)
    with pytest.raises(BusError, match="not acknowledged"):
        await publish_durable(bus, "stim.text", huge, msg_id="huge")
    with pytest.raises(nats.js.errors.APIError):  # an outside client's raw publish too
        await js.publish(durable_subject(bus, "stim.text"), b"x" * 1_000_000)
    after = (await js.stream_info(name)).state
    assert (after.messages, after.bytes) == (before.messages, before.bytes) == (1, before.bytes)
    assert before.bytes < 2048


def _counter_brain(bus: Bus, namespace: str) -> Supervisor:
    config = parse_config({"namespace": namespace, "intake": "durable",
                           "supervisor": {"heartbeat_interval": 0.2, "max_restarts": 10},
                           "actors": {"counter": {"kind": "tests.actors_for_tests:Counter"}}})
    return Supervisor.for_actors(bus, config, ["counter"], None)


async def _reports(bus: Bus) -> list[SysError]:
    reports: list[SysError] = []

    async def on_error(msg: SysError, meta: Meta) -> None:
        reports.append(msg)

    await bus.subscribe("sys.error", on_error, model=SysError)
    await bus.flush()
    return reports


async def test_a_malformed_durable_message_is_delivered_once_terminated_and_reported_once(
        bus: Bus, other_bus: Bus, namespace: str) -> None:
    reports = await _reports(other_bus)
    sup = _counter_brain(bus, namespace)
    task = asyncio.create_task(sup.run())
    try:
        await eventually(lambda: sup._running, what="the supervisor running")
        child = sup.child("counter")
        assert isinstance(child, ActorChild)
        await ensure_stream(other_bus)
        js = other_bus.nc.jetstream()
        ack = await js.publish(durable_subject(other_bus, "stim.text"), b'{"text": 42}',
                               headers={"Bb-Type": "text_stimulus/1", "Nats-Msg-Id": "bad-1"})
        await eventually(lambda: any(r.kind == "bad_input" for r in reports), within=5, what="the report")
        await asyncio.sleep(1.5)  # past the redelivery delay: nothing comes again
        info = await js.consumer_info(stream_name(namespace), "counter__stim_text")
        assert info.delivered.stream_seq == ack.seq
        assert (info.num_ack_pending, info.num_redelivered, info.num_pending) == (0, 0, 0)
        assert [r.kind for r in reports] == ["bad_input"] and "text" in reports[0].reason
        assert child.restarts == 0
        await publish_durable(other_bus, "stim.text", TextStimulus(text="count me"), msg_id="good-1")
        await eventually(lambda: child.actor is not None and getattr(child.actor, "count", 0) == 1,
                         what="the next message counted")
    finally:
        sup.request_stop()
        with contextlib.suppress(EscalationError):
            await task


async def test_a_message_its_handler_keeps_crashing_on_is_given_up_not_redelivered_for_ever(
        bus: Bus, other_bus: Bus, namespace: str) -> None:
    reports = await _reports(other_bus)
    sup = _counter_brain(bus, namespace)
    task = asyncio.create_task(sup.run())
    try:
        await eventually(lambda: sup._running, what="the supervisor running")
        child = sup.child("counter")
        assert isinstance(child, ActorChild)
        await publish_durable(other_bus, "stim.text", TextStimulus(text="crash counter"), msg_id="poison")

        def given_up() -> list[SysError]:
            return [r for r in reports if r.kind == "handler_error" and "terminated" in r.reason]

        await eventually(lambda: given_up(), within=15, what="the poison message given up")
        await asyncio.sleep(2.0)  # several redelivery delays: it does not come back
        assert child.restarts == MAX_HANDLER_FAILURES == 3
        assert len(given_up()) == 1 and given_up()[0].actor == "counter"
        assert f"{MAX_HANDLER_FAILURES} times" in given_up()[0].reason
        info = await other_bus.nc.jetstream().consumer_info(stream_name(namespace), "counter__stim_text")
        assert (info.num_ack_pending, info.num_redelivered, info.num_pending) == (0, 0, 0)
        # The actor goes on with what comes next.
        await publish_durable(other_bus, "stim.text", TextStimulus(text="count me"), msg_id="after")
        await eventually(lambda: child.actor is not None and getattr(child.actor, "count", 0) == 1,
                         what="the next message counted")
    finally:
        sup.request_stop()
        with contextlib.suppress(EscalationError):
            await task


# ---------------------------------------------------------------- files under the data directory


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0: whatever is not made owner-only explicitly comes out world-readable (and writable)."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def not_owner_only(root: Path) -> dict[str, str]:
    wrong = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            p = Path(dirpath) / name
            want = 0o700 if p.is_dir() else 0o600
            if stat.S_IMODE(p.lstat().st_mode) != want:
                wrong[str(p.relative_to(root))] = oct(stat.S_IMODE(p.lstat().st_mode))
    return wrong


async def test_what_a_brain_writes_under_its_data_dir_is_owner_only(
        bus: Bus, other_bus: Bus, namespace: str, tmp_path: Path, open_umask: None) -> None:
    data = tmp_path / "data"
    config = parse_config({
        "namespace": namespace, "data_dir": str(data),
        "supervisor": {"heartbeat_interval": 0.2},
        "actors": {
            "shard0": {"kind": "memory.shard:HippocampusShard", "options": {"dim": 16, "capacity": 40}},
            "hippocampus": {"kind": "memory.hippocampus:Hippocampus",
                            "options": {"fill_threshold": 0.5, "cooldown_s": 0.5}},
            "counter": {"kind": "tests.actors_for_tests:Counter"},
        },
    })
    sup = Supervisor.for_actors(bus, config, ["shard0", "hippocampus", "counter"], data / "snapshots")
    task = asyncio.create_task(sup.run())
    try:
        await eventually(lambda: sup._running, what="the supervisor running")
        keys = np.random.default_rng(5).standard_normal((30, 16)).astype(np.float32)
        acks = await asyncio.gather(*(store(other_bus, MemStore(key=k, stimulus_id=f"s{i}"))
                                      for i, k in enumerate(keys)))
        assert all(a[0].ok for a in acks)
        await eventually(lambda: any(c.name == "shard-g0" for c in sup.children), within=5.0,
                         what="a grown shard (and its manifest)")
        await other_bus.publish("stim.text", TextStimulus(text="count me"))
        counter = sup.child("counter")
        assert isinstance(counter, ActorChild)
        await eventually(lambda: counter.actor is not None and getattr(counter.actor, "count", 0) == 1,
                         what="the counter counting")
    finally:
        sup.request_stop()
        await task
    # The shards' logs and snapshots, the grown-shards manifest, the actors' snapshots.
    names = {p.relative_to(data).as_posix() for p in data.rglob("*")}
    assert {"hippocampus/grown.json", "snapshots/counter.json"} <= names
    assert any(n.startswith("hippocampus/shard0/log-") for n in names)
    assert any(n.startswith("hippocampus/shard0/snap-") for n in names)
    assert not_owner_only(data) == {}


async def test_brainbus_record_writes_an_owner_only_recording(
        nats_server: EmbeddedServer, namespace: str, tmp_path: Path, open_umask: None) -> None:
    file = tmp_path / "session.jsonl"
    file.write_bytes(b"")
    file.chmod(0o644)  # an older recording it writes over
    args = build_parser().parse_args(["record", str(file), "--nats", nats_server.url, "--namespace", namespace,
                                      "--duration", "0.3"])
    assert await record_run(args) == 0
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    fresh = tmp_path / "fresh.jsonl"
    args = build_parser().parse_args(["record", str(fresh), "--nats", nats_server.url, "--namespace", namespace,
                                      "--duration", "0.2"])
    assert await record_run(args) == 0
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


# ---------------------------------------------------------------- replay that the server refuses


@pytest.fixture
async def secure_server(tmp_path: Path, namespace: str) -> AsyncIterator[EmbeddedServer]:
    """A server of its own with the roles' permissions (an agent may not publish on sys.ctl)."""
    async with EmbeddedServer(data_dir=tmp_path / "nats", auth=True, namespace=namespace, jetstream=False) as s:
        yield s


def write_recording(path: Path, *messages: RecordedMessage) -> Path:
    path.write_bytes(b"".join(m.to_line() for m in messages))
    return path


async def test_replay_counts_what_the_server_refused_and_exits_1(
        secure_server: EmbeddedServer, namespace: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    allowed = RecordedMessage(t=0.0, wall=0.0, subject=f"{namespace}.stim.text", data=b"hello")
    denied = RecordedMessage(t=0.01, wall=0.0, subject=f"{namespace}.sys.ctl.echo", data=b'{"verb": "pause"}')
    file = write_recording(tmp_path / "session.jsonl", allowed, denied)
    seen: list[str] = []
    async with Bus(secure_server.url_for("observer"), namespace=namespace, name="watch") as watcher:
        async def got(msg: Msg) -> None:
            seen.append(msg.subject)

        await watcher.subscribe_raw(">", got)
        await watcher.flush()
        # The library: both counted, the refused one apart.
        async with Bus(secure_server.url_for("agent"), namespace=namespace, name="replayer") as agent:
            result = await replay(agent, read_recording(file), rate=0)
        assert (result.published, result.refused, result.accepted) == (2, 1, 1)
        denial = f'permissions violation for publish to "{namespace}.sys.ctl.echo"'
        assert [r.lower() for r in result.reasons] == [denial]
        # The command line: says both numbers and why, and fails.
        args = build_parser().parse_args(["replay", str(file), "--rate", "0",
                                          "--nats", secure_server.url_for("agent")])
        assert await record_run(args) == 1
        out, err = capsys.readouterr()
        assert f"replayed 1 of 2 messages from {file} into namespace {namespace}; the server refused 1" in out
        assert err.lower() == f"brainbus replay: 1 refused: {denial}\n"
        await eventually(lambda: len(seen) == 2, what="the allowed message, once per replay")
        await asyncio.sleep(0.2)
    assert seen == [f"{namespace}.stim.text"] * 2
    # Everything allowed: exit 0, one number.
    ok = write_recording(tmp_path / "ok.jsonl", allowed, allowed)
    args = build_parser().parse_args(["replay", str(ok), "--rate", "0", "--nats", secure_server.url_for("agent")])
    assert await record_run(args) == 0
    # (Only the summary line: log lines of other tests' connections may share this stdout.)
    assert f"replayed 2 messages from {ok} into namespace {namespace}\n" in capsys.readouterr().out


async def test_replay_counts_a_message_over_the_payload_limit_as_refused(
        nats_server: EmbeddedServer, bus: Bus, namespace: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    small = RecordedMessage(t=0.0, wall=0.0, subject=f"{namespace}.stim.text", data=b"hello")
    huge = RecordedMessage(t=0.0, wall=0.0, subject=f"{namespace}.stim.text", data=b"x" * 1_100_000)
    file = write_recording(tmp_path / "huge.jsonl", small, huge, small)
    args = build_parser().parse_args(["replay", str(file), "--rate", "0", "--nats", nats_server.url])
    assert await record_run(args) == 1
    out, err = capsys.readouterr()
    assert "replayed 2 of 3 messages" in out and "the server refused 1" in out
    assert "1100000 bytes" in err and "limit" in err
    assert bus.connected


# ---------------------------------------------------------------- brainbus creds


@pytest.fixture
async def brain_dir(tmp_path: Path, namespace: str, monkeypatch: pytest.MonkeyPatch
                    ) -> AsyncIterator[tuple[Path, EmbeddedServer]]:
    """A directory whose runtime file names a brain on an authenticated server (this process)."""
    async with EmbeddedServer(data_dir=tmp_path / "nats", auth=True, namespace=namespace, jetstream=False) as s:
        cwd = tmp_path / "brain"
        cwd.mkdir()
        write_runtime(Runtime(url=s.url, namespace=namespace, pid=os.getpid(), started=0.0,
                              credentials=dict(s.credentials)), cwd / RUNTIME_FILE)
        monkeypatch.chdir(cwd)
        yield cwd, s


async def test_creds_never_puts_the_password_on_a_suggested_command_line(
        brain_dir: tuple[Path, EmbeddedServer], capsys: pytest.CaptureFixture[str]) -> None:
    _, server = brain_dir
    for role in ("agent", "observer", "admin"):
        password = server.credentials[role].password
        assert await creds.run(argparse.Namespace(role=role, json=False, env=False)) == 0
        text = capsys.readouterr().out
        # Shown as a detail (the URL, the password line), never in a command to run.
        assert [line.split()[0] for line in text.splitlines() if password in line] == ["url", "password"]
        assert "--password" not in text and "--user" not in text
        assert f'eval "$(brainbus creds --role {role} --env)"' in text
        assert await creds.run(argparse.Namespace(role=role, json=True, env=False)) == 0
        d = orjson.loads(capsys.readouterr().out)
        assert d["password"] == password
        for key in ("nats_env", "nats_cli", "nats_py"):
            assert password not in d[key], key
        assert d["nats_cli"].startswith("nats --server ") and f"--inbox-prefix {d['inbox_prefix']}" in d["nats_cli"]
        assert await creds.run(argparse.Namespace(role=role, json=False, env=True)) == 0
        assert capsys.readouterr().out == (f"export NATS_USER={server.credentials[role].user}\n"
                                           f"export NATS_PASSWORD={shlex.quote(password)}\n")


async def test_the_suggested_eval_and_program_connect_with_no_password_in_any_process_arguments(
        brain_dir: tuple[Path, EmbeddedServer], namespace: str) -> None:
    cwd, server = brain_dir
    password = server.credentials["agent"].password
    e = cli_env()
    e["PATH"] = os.pathsep.join((str(BRAINBUS.parent), e.get("PATH", "")))
    printed = await asyncio.create_subprocess_exec(str(BRAINBUS), "creds", "--role", "agent", "--json", cwd=cwd,
                                                   env=e, stdout=PIPE, stderr=PIPE)
    out, err = await asyncio.wait_for(printed.communicate(), 30)
    assert printed.returncode == 0, err.decode()
    d = orjson.loads(out)
    # What the text tells a user to run, as a shell runs it: the eval, then the nats-py program.
    e["SNIPPET"] = d["nats_py"]
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", f'{d["nats_env"]} && exec "{sys.executable}" -u -c "$SNIPPET"', cwd=cwd, env=e,
        stdout=PIPE, stderr=PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = asyncio.ensure_future(proc.stdout.readline())
        async with Bus(server.url_for("brain"), namespace=namespace, name="brain") as brain:
            deadline = time.monotonic() + 20
            while not line.done() and proc.returncode is None and time.monotonic() < deadline:
                await brain.publish_raw("motor.action", b"left")
                await asyncio.sleep(0.1)
        assert line.done(), (await proc.stderr.read(4096)).decode() if proc.returncode is not None else "no line"
        assert line.result().decode().startswith(f"{namespace}.motor.action b'left'")
        # What `ps` shows of the running client (the program is on its command line): no password.
        cmdline = await asyncio.to_thread(Path(f"/proc/{proc.pid}/cmdline").read_bytes)
        assert b"os.environ" in cmdline and password.encode() not in cmdline
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
