"""Every attack an agent could send, in one burst, at a running `brainbus run` (its embedded,
authenticated server): afterwards the brain answers ordinary stimuli within its usual latency, no
actor restarted, its memory is within 10% of before, and SIGINT exits 0.

The attacks use the agent role's credentials and raw nats-py or raw protocol lines, as an
outside agent would. The test prints each attack with what became of it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
import orjson
import pytest
from nats.aio.client import Client as NatsClient

from bus.auth import Credential, with_credentials
from tests.integration.test_cli import BRAINBUS, env, wait_until

REPO = Path(__file__).resolve().parents[2]
CONFIG = (REPO / "configs" / "small.yaml").read_text().replace("heartbeat_interval: 1.0", "heartbeat_interval: 0.5")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def raw_hpub(url: str, cred: Credential, subject: bytes, header: bytes, payload: bytes,
             reply: bytes = b"") -> bytes:
    """One HPUB over a raw socket with the agent's credentials; what the server answered."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as s:
        s.recv(65536)  # INFO
        connect = {"verbose": False, "pedantic": False, "headers": True, "protocol": 1,
                   "user": cred.user, "pass": cred.password}
        s.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\n")
        target = subject + (b" " + reply if reply else b"")
        s.sendall(b"HPUB %s %d %d\r\n" % (target, len(header), len(header) + len(payload))
                  + header + payload + b"\r\nPING\r\n")
        got = b""
        deadline = time.monotonic() + 5
        while b"PONG" not in got and b"-ERR" not in got and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        return got.split(b"\r\n")[0]


class Brain:
    def __init__(self, cwd: Path) -> None:
        (cwd / "brain.yaml").write_text(CONFIG)
        self.cwd = cwd
        self.err = open(cwd / "brain.err", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(BRAINBUS), "run", "--config", "brain.yaml"], cwd=cwd, env=env(),
                                     stdout=subprocess.DEVNULL, stderr=self.err)

    def runtime(self) -> dict[str, Any] | None:
        try:
            return dict(orjson.loads((self.cwd / ".brainbus" / "runtime.json").read_bytes()))
        except (OSError, orjson.JSONDecodeError):
            return None

    def credential(self, role: str) -> Credential:
        runtime = self.runtime()
        assert runtime is not None
        c = runtime["credentials"][role]
        return Credential(user=c["user"], password=c["password"])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()
        return self.proc.returncode


@pytest.fixture
async def brain(tmp_path: Path) -> AsyncIterator[Brain]:
    b = Brain(tmp_path)
    wait_until(b.runtime, within=30, what="the runtime file", proc=b.proc)
    yield b
    b.stop()


class Agent:
    """An agent on the bus: probes and watches what the brain says."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.actions: dict[str, float] = {}
        self.beats: dict[str, dict[str, Any]] = {}
        self.sent: dict[str, float] = {}

    async def start(self) -> None:
        async def on_action(msg: Any) -> None:
            sid = json.loads(msg.data).get("stimulus_id")
            if sid in self.sent:
                self.actions[sid] = time.monotonic() - self.sent[sid]

        async def on_beat(msg: Any) -> None:
            beat = json.loads(msg.data)
            self.beats[beat["actor"]] = beat

        await self.nc.subscribe("brain.motor.action", cb=on_action, pending_msgs_limit=100_000)
        await self.nc.subscribe("brain.sys.heartbeat.>", cb=on_beat)
        await self.nc.flush()

    async def probe(self, tag: str, n: int = 30) -> list[float]:
        """Latencies (s) of `n` ordinary stimuli, one at a time; a missing answer fails the test."""
        out = []
        for i in range(n):
            sid = f"{tag}-{i}"
            self.sent[sid] = time.monotonic()
            body = {"text": f"ordinary {tag} {i % 5}", "id": sid}
            await self.nc.publish("brain.stim.text", json.dumps(body).encode())
            deadline = time.monotonic() + 3
            while sid not in self.actions:
                assert time.monotonic() < deadline, f"no answer to {sid}"
                await asyncio.sleep(0.002)
            out.append(self.actions[sid])
        return out


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_burst_of_every_attack_leaves_the_brain_as_it_was(brain: Brain) -> None:
    runtime = brain.runtime()
    assert runtime is not None
    url, agent_cred = str(runtime["url"]), brain.credential("agent")
    async def quiet(exc: Exception) -> None:
        pass

    nc = await nats.connect(with_credentials(url, agent_cred), inbox_prefix=b"_INBOX.agent", name="attacker",
                            error_cb=quiet, max_reconnect_attempts=-1)
    agent = Agent(nc)
    await agent.start()
    await asyncio.sleep(1.5)  # heartbeats of every actor
    await nc.publish("brain.env.actions", json.dumps({"actions": ["yes", "no"], "env": "burst"}).encode())
    await asyncio.sleep(0.5)
    await agent.probe("warm", 150)
    before = await agent.probe("before")
    rss_before = rss_mb(brain.proc.pid)
    outcomes: list[tuple[str, str]] = []

    async def attack(name: str, *coros: Any) -> None:
        try:
            for c in coros:
                await c
            outcomes.append((name, "sent"))
        except Exception as exc:  # a refusal at the client or server is an outcome too
            outcomes.append((name, f"refused: {type(exc).__name__}: {str(exc)[:80]}"))

    # 1. huge header values on messages the brain rejects (and one it would take)
    await attack("600 KB Bb-Sid on stim.vector", nc.publish("brain.stim.vector", b'{"vector":[1.0,2.0]}',
                                                             headers={"Bb-Sid": "S" * 600_000}))
    await attack("600 KB Bb-Sid on env.actions", nc.publish("brain.env.actions", b'{"actions":["a"]}',
                                                             headers={"Bb-Sid": "S" * 600_000}))
    said = raw_hpub(url, agent_cred, b"brain.stim.text", b"NATS/1.0\r\nBb-Type: " + b"T" * 1_000_000 + b"\r\n\r\n",
                    b'{"text":"x"}')
    outcomes.append(("1 MB Bb-Type on stim.text (raw)", said.decode(errors="replace").strip()[:60]))
    for i in range(50):
        await nc.publish("brain.stim.text", b'{"text":"hi"}', headers={"X-Pad": "p" * 500_000, "Bb-Sid": f"s{i}"})
    outcomes.append(("50 x 500 KB headers on stim.text", "sent"))
    # 2. finite numbers that overflow float32 arithmetic
    for big in ([1e20] * 384, [3.4e38] * 384, [-3.4e38, 3.4e38] * 192, [1e-45] * 384, [1e20] * 7):
        for _ in range(6):
            await nc.publish("brain.stim.vector", json.dumps({"vector": big}).encode())
    outcomes.append(("30 vectors at float32's extremes (1e20, 3.4e38, 1e-45; lengths 384 and 7)", "sent"))
    for value in (1e308, -1e308, 10_000, -10_000, 5e-324):
        await nc.publish("brain.feedback.reward", json.dumps({"value": value, "terminal": False}).encode())
    outcomes.append(("rewards 1e308, -1e308, 10,000, -10,000, 5e-324", "sent"))
    # 3. header blocks that are status lines, not UTF-8
    for block in (b"NATS/1.0 503 \xff\xfe\r\n\r\n", b"NATS/1.0 \xff\r\nA: b\r\n\r\n",
                  b"NATS/1.0 100 Idle\r\n\xc3\x28: \xff\r\n\r\n"):
        for subject in (b"brain.stim.text", b"brain.feedback.reward", b"brain.env.actions"):
            raw_hpub(url, agent_cred, subject, block, b'{"text":"status"}')
    outcomes.append(("9 status-line header blocks with non-UTF-8 reasons (raw)", "sent"))
    raw_hpub(url, agent_cred, b"brain.stim.\xff", b"NATS/1.0\r\nA: b\r\n\r\n", b"{}")
    outcomes.append(("a subject that is not UTF-8 (raw)", "sent"))
    # 5. padded vector specs (once cached before the body was checked)
    body = b"{}" + bytes(384 * 4)
    for i in range(400):
        await nc.publish("brain.stim.vector", body, headers={"Bb-Vec": "vector:f32:" + " " * (3000 + i) + "384"})
    outcomes.append(("400 Bb-Vec specs padded with 3,000+ spaces", "sent"))
    # 6. replies aimed at the brain's subjects
    for reply in (b"brain.sys.ctl.all", b"brain.motor.action", b"brain.mem.store", b"_INBOX.admin.x"):
        said = raw_hpub(url, agent_cred, b"$JS.API.STREAM.INFO.BRAIN_INTAKE_brain", b"NATS/1.0\r\n\r\n", b"",
                        reply=reply)
        outcomes.append((f"STREAM.INFO with reply {reply.decode()} (raw)", said.decode().strip()[:60]))
        said = raw_hpub(url, agent_cred, b"brain.durable.stim.text", b"NATS/1.0\r\nNats-Msg-Id: x\r\n\r\n",
                        b'{"text":"durable"}', reply=reply)
        outcomes.append((f"durable publish with reply {reply.decode()} (raw)", said.decode().strip()[:60]))
    # 7. a durable stream filled with what it cannot hold
    for i in range(30):
        said = raw_hpub(url, agent_cred, b"brain.durable.stim.text",
                        b"NATS/1.0\r\nNats-Msg-Id: big%d\r\n\r\n" % i, b'{"text":"' + b"x" * 900_000 + b'"}',
                        reply=b"_INBOX.agent.big")
    outcomes.append(("30 x 900 KB durable messages (raw)", said.decode(errors="replace").strip()[:60]))
    # and episodes: ids too long, interleaved and never ended
    for i in range(200):
        step = {"vector": [float(i % 3), 1.0], "episode": f"open-{i}"}
        await nc.publish("brain.stim.vector", json.dumps(step).encode())
    await nc.publish("brain.stim.vector", json.dumps({"vector": [1.0], "episode": "e" * 129}).encode())
    outcomes.append(("200 episodes opened and never ended, one id of 129 characters", "sent"))
    await nc.flush()

    # The burst is over: the brain is as it was.
    await asyncio.sleep(3.0)
    assert brain.proc.poll() is None, "the brain exited"
    after = await agent.probe("after")
    for name, outcome in outcomes:
        print(f"attack: {name} -> {outcome}")
    p50_before, p50_after = statistics.median(before), statistics.median(after)
    print(f"p50 before {p50_before * 1e3:.1f} ms, after {p50_after * 1e3:.1f} ms")
    assert p50_after <= 1.5 * p50_before + 0.010, (p50_before, p50_after)
    await asyncio.sleep(1.2)
    restarts = {name: beat.get("restarts", 0) for name, beat in agent.beats.items()}
    assert restarts and all(r == 0 for r in restarts.values()), restarts
    rss_after = rss_mb(brain.proc.pid)
    print(f"memory before {rss_before:.0f} MB, after {rss_after:.0f} MB")
    assert rss_after <= 1.10 * rss_before, (rss_before, rss_after)
    await nc.close()
    assert brain.stop() == 0
    # Memories and everything else the brain wrote: owner-only.
    for path in (brain.cwd / ".brainbus").rglob("*"):
        mode = path.stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
