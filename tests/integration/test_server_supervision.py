"""The embedded nats-server is supervised by the brain that owns it.

`kill -9` of the server: `brainbus run` restarts it on the same address with the same config,
credentials and JetStream store, and the brain (whose connections come back by themselves)
answers again. A server that cannot be brought back, or that keeps dying, ends the brain with
exit 1 and one line naming the server and its last exit status.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from actors.config import load_config
from bus import Bus, EmbeddedServer, Heartbeat, Meta, TextStimulus, connect
from bus.auth import with_credentials
from bus.durable import publish_durable, stream_name
from bus.runtime import Runtime, read_runtime
from bus.server import EmbeddedServerFailed
from tests.actors_for_tests import eventually
from tests.integration.test_cli import BRAINBUS, REPO, env

ACTIONS = ["left", "right", "up"]


class BrainRun:
    """`brainbus run` in `cwd`, its output (structlog lines and the final message) in brain.log."""

    def __init__(self, cwd: Path, config: dict[str, object]) -> None:
        self.cwd = cwd
        (cwd / "brain.json").write_bytes(orjson.dumps(config))  # JSON is YAML
        self.log = cwd / "brain.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([str(BRAINBUS), "run", "--config", str(cwd / "brain.json")], cwd=cwd,
                                         env=env(), stdout=out, stderr=subprocess.STDOUT)
        self.ports = cwd / ".brainbus" / "nats" / "ports"

    async def runtime(self) -> Runtime:
        path = self.cwd / ".brainbus" / "runtime.json"
        await eventually(lambda: path.exists() or self.proc.poll() is not None, within=30, what="the runtime file")
        assert self.proc.poll() is None, self.output()
        runtime = read_runtime(path)
        assert runtime is not None
        return runtime

    def server_pid(self) -> int | None:
        """The embedded server's pid, from its ports file (a restarted server writes a new one)."""
        found = sorted(self.ports.glob("nats-server_*.ports"), key=lambda p: p.stat().st_mtime)
        return int(found[-1].stem.rsplit("_", 1)[1]) if found else None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def exit_code(self, within: float = 20.0) -> int:
        return await asyncio.to_thread(self.proc.wait, within)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test left it stopped
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def brains() -> Iterator[list[BrainRun]]:
    made: list[BrainRun] = []
    yield made
    for b in made:
        b.stop()


def small(tmp_path: Path, **overrides: object) -> dict[str, object]:
    data = load_config(REPO / "configs" / "small.yaml").model_dump(mode="json")
    data["data_dir"] = str(tmp_path / ".brainbus")
    data["supervisor"]["heartbeat_interval"] = 0.3
    data.update(overrides)
    return data


def light(tmp_path: Path) -> dict[str, object]:
    return {"data_dir": str(tmp_path / ".brainbus"), "supervisor": {"heartbeat_interval": 0.3},
            "actors": {"echo": {"kind": "tests.actors_for_tests:Echo"}}}


def take_port(port: int, within: float = 5.0) -> socket.socket:
    """Listen on 127.0.0.1:`port` as soon as a dying server has let go of it.

    Blocking on purpose (no await): the brain's supervision runs on this event loop in the
    in-process test and must not restart the server before the port is taken.
    """
    deadline = time.monotonic() + within
    while True:
        s = socket.socket()
        # As a server does: the dead server's connections in TIME_WAIT must not keep us out.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
            return s
        except OSError as exc:
            s.close()
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_a_killed_server_is_restarted_and_the_brain_answers_again(
        tmp_path: Path, brains: list[BrainRun]) -> None:
    brain = BrainRun(tmp_path, small(tmp_path, intake="durable"))
    brains.append(brain)
    runtime = await brain.runtime()
    url = with_credentials(runtime.url, runtime.credentials["agent"])
    beats: dict[str, float] = {}

    async def beat(msg: Heartbeat, meta: Meta) -> None:
        beats[msg.actor] = time.monotonic()

    async with connect(url, namespace=runtime.namespace, name="world") as agent:
        await agent.bus.subscribe("sys.heartbeat.*", beat, model=Heartbeat)
        await agent.wait_ready(timeout=30)
        await agent.declare_actions(ACTIONS)
        await asyncio.sleep(0.3)
        first = await agent.action_for(await agent.stimulus(text="violin meadow"), timeout=10)
        assert first.action in ACTIONS
        before = await publish_durable(agent.bus, "stim.text", TextStimulus(text="piston harbor", id="dur-1"))
        await agent.action_for("dur-1", timeout=10)

        old_pid = brain.server_pid()
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        killed = time.monotonic()
        await eventually(lambda: brain.server_pid() not in (None, old_pid) or brain.proc.poll() is not None,
                         within=10, what="a new server")
        assert brain.proc.poll() is None, brain.output()
        # The brain's actors heartbeat again through the new server, on the same address.
        await eventually(lambda: all(beats.get(a, 0.0) > killed for a in ("thalamus", "basal_ganglia", "motor")),
                         within=10, what="heartbeats after the restart")
        assert agent.bus.connected and (await brain.runtime()).url == runtime.url
        sid = await agent.stimulus(text="falcon quartz")
        again = await agent.action_for(sid, timeout=10)
        assert again.action in ACTIONS
        # The JetStream store came back with it: the stream, its sequence, the brain's consumers.
        after = await publish_durable(agent.bus, "stim.text", TextStimulus(text="lantern glacier", id="dur-2"))
        assert after.stream == before.stream == stream_name(runtime.namespace) and after.seq == before.seq + 1
        await agent.action_for("dur-2", timeout=10)
    text = brain.output()
    assert "bus.server_restarted" in text and "exit_code=-9" in text, text
    assert brain.proc.poll() is None
    brain.proc.send_signal(signal.SIGINT)
    assert await brain.exit_code() == 0, brain.output()


async def test_brainbus_run_exits_naming_the_server_when_it_cannot_come_back(
        tmp_path: Path, brains: list[BrainRun]) -> None:
    brain = BrainRun(tmp_path, light(tmp_path))
    brains.append(brain)
    runtime = await brain.runtime()
    server_pid = brain.server_pid()
    assert server_pid is not None
    # Hold the brain still while its server dies and another process takes the port.
    brain.proc.send_signal(signal.SIGSTOP)
    try:
        os.kill(server_pid, signal.SIGKILL)
        squatter = take_port(port_of(runtime.url))
    finally:
        brain.proc.send_signal(signal.SIGCONT)
    with squatter:
        code = await brain.exit_code()
    text = brain.output()
    assert code == 1, text
    said = [line for line in text.splitlines() if line.startswith("brainbus: ")]
    assert len(said) == 1, text
    last = said[0]
    assert last.startswith("brainbus: the embedded nats-server at nats://127.0.0.1:"), text
    assert "killed by SIGKILL (-9)" in last and "could not be restarted" in last
    assert "nats-server exited with code 1" in last  # the restart's own failure: the port was taken
    assert "Traceback" not in text
    assert not (tmp_path / ".brainbus" / "runtime.json").exists()


async def test_supervision_gives_up_when_a_restart_cannot_come_up(tmp_path: Path) -> None:
    server = EmbeddedServer(data_dir=tmp_path / "nats", auth=True, namespace="sup")
    await server.start()
    watch = server.supervise()
    try:
        assert server.proc is not None
        server.kill()
        squatter = take_port(port_of(server.url))  # before the loop runs again: no restart yet
        with squatter, pytest.raises(EmbeddedServerFailed) as caught:
            await asyncio.wait_for(watch, 10)
    finally:
        await server.stop()
    assert caught.value.returncode == -9
    message = str(caught.value)
    assert message.startswith(f"the embedded nats-server at {server.url} exited (killed by SIGKILL (-9))")
    assert "could not be restarted: nats-server exited with code 1" in message
    assert "address already in use" in server.log_path.read_text()


async def test_supervision_gives_up_past_its_restart_intensity(tmp_path: Path) -> None:
    server = EmbeddedServer(data_dir=tmp_path / "nats", auth=True, namespace="sup")
    await server.start()
    watch = server.supervise(max_restarts=2, max_seconds=60)
    url = server.url
    try:
        for restarts in (1, 2):
            proc = server.proc
            assert proc is not None
            server.kill()
            await eventually(lambda: server.restarts == restarts, within=10,  # noqa: B023 (awaited here)
                             what="the server restarted")
            assert server.proc is not proc and server.running and server.url == url
            async with Bus(server.url_for("agent"), namespace="sup", name="agent") as bus:
                assert bus.connected  # the same credentials still work
        server.kill()
        with pytest.raises(EmbeddedServerFailed) as caught:
            await asyncio.wait_for(watch, 10)
    finally:
        await server.stop()
    message = str(caught.value)
    assert "exited 3 times within 60 s (restart intensity exceeded)" in message
    assert "last exit status: killed by SIGKILL (-9)" in message and str(server.log_path) in message


async def test_a_stopped_server_is_not_restarted(tmp_path: Path) -> None:
    server = EmbeddedServer(data_dir=tmp_path / "nats")
    await server.start()
    watch = server.supervise()
    await server.stop()
    assert watch.done() and server.proc is None and server.restarts == 0
    take_port(port_of(server.url), within=1).close()  # nobody listens there any more
