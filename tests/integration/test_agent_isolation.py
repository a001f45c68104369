"""Agents in a NATS account of their own: whatever reply subject an agent names stays in its account.

nats-server does not check a publisher's reply subject against its permissions, so with every role
in one account an agent could have the server's JetStream API, a PubAck of the durable intake, or
an actor answering a request publish on the brain's control, memory or motor subjects, or on
another role's inbox. Here a `brainbus run` brain (the small brain, durable intake, an echo actor
that answers requests) is attacked that way by an agent while an observer and an admin of the
brain's account watch; then the same agent does everything agents are for.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NatsClient

from actors.config import load_config
from bus import (
    Broadcast,
    Bus,
    CtlReply,
    CtlRequest,
    Heartbeat,
    NeuromodLevels,
    Reward,
    SysError,
    TextStimulus,
    connect,
)
from bus.auth import ACCOUNTS, accounts_block, generate_credentials, permissions
from bus.durable import publish_durable, stream_name
from tests.integration import test_security
from tests.integration.test_security import Client, SecureBrain, eventually, settle

REPO = Path(__file__).resolve().parents[2]
clients = test_security.clients  # the security tests' fixture: clients closed after each test
ACTIONS = ["eat", "drive", "wait"]


@pytest.fixture(scope="module")
def brain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBrain]:
    cwd = tmp_path_factory.mktemp("isolation")
    data = load_config(REPO / "configs" / "small.yaml").model_dump(mode="json")
    data["intake"] = "durable"
    data["data_dir"] = str(cwd / ".brainbus")
    data["supervisor"]["heartbeat_interval"] = 0.5
    data["actors"]["echo"] = {"kind": "tests.actors_for_tests:Echo"}
    (cwd / "brain.json").write_bytes(orjson.dumps(data))  # JSON is YAML
    b = SecureBrain(cwd, "--config", str(cwd / "brain.json"))
    try:
        b.wait_ready("thalamus", "basal_ganglia", "motor", "hormones", "echo", within=60)
        yield b
    finally:
        b.stop()


class Recorder:
    """Every message a client of the brain's account sees on its subscriptions."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self.types: dict[str, set[str]] = {}  # the `Bb-Type` of what came on each subject

    async def record(self, msg: Any) -> None:
        self.seen.append((msg.subject, msg.data))
        kind = (msg.headers or {}).get("Bb-Type", "untyped").split("/", 1)[0]
        self.types.setdefault(msg.subject, set()).add(kind)

    def on(self, *prefixes: str) -> list[tuple[str, bytes]]:
        return [(s, d) for s, d in self.seen if s.startswith(prefixes)]


def _stimulus(text: str) -> bytes:
    return orjson.dumps({"text": text, "id": f"iso-{uuid.uuid4().hex[:8]}"})


async def test_replies_an_agent_names_never_land_in_the_brains_account(
        brain: SecureBrain, clients: Callable[[], Client]) -> None:
    ns = brain.namespace
    watched = Recorder()
    observer = await clients().connect(brain.url_for("observer"))
    await observer.subscribe(f"{ns}.>", cb=watched.record)
    admin = await clients().connect(brain.url_for("admin"))
    await admin.subscribe("_INBOX.admin.>", cb=watched.record)
    await settle(observer, admin)

    agent = clients()
    nc: NatsClient = await agent.connect(brain.url_for("agent"))
    targets = [f"{ns}.sys.ctl.all", f"{ns}.motor.action", f"{ns}.gw.broadcast", f"{ns}.mem.store",
               "_INBOX.admin.forged.1"]
    for reply in targets:
        # 1. the JetStream API, asked directly
        await nc.publish(f"$JS.API.STREAM.INFO.{stream_name(ns)}", b"", reply=reply)
        # 2. the durable intake: the stream stores the stimulus and acknowledges on the reply subject
        await nc.publish(f"{ns}.durable.stim.text", _stimulus(f"forged durable {reply}"), reply=reply,
                         headers={"Nats-Msg-Id": uuid.uuid4().hex})
        # 3. a core request an actor answers (the echo returns a RegionOutput)
        await nc.publish(f"{ns}.stim.text", _stimulus(f"forged request {reply}"), reply=reply)
    # Then the same, honestly: once these are answered, the forged ones had their answers before.
    ack = await nc.request(f"{ns}.durable.stim.text", _stimulus("honest durable"), timeout=5,
                           headers={"Nats-Msg-Id": uuid.uuid4().hex})
    assert orjson.loads(ack.data)["stream"] == stream_name(ns)
    echo = await nc.request(f"{ns}.stim.text", _stimulus("honest request"), timeout=5)
    assert orjson.loads(echo.data)["data"] == {"text": "honest request"}
    await settle(nc, observer, admin)
    await asyncio.sleep(0.5)

    # What the brain's account saw of the forgeries: the stimuli themselves, nothing else.
    assert watched.on(f"{ns}.sys.ctl.", f"{ns}.mem.", "_INBOX.") == []
    for subject, data in watched.on(f"{ns}.motor.", f"{ns}.gw.broadcast"):
        assert b"io.nats.jetstream" not in data and not data.startswith(b'{"stream"'), (subject, data)
    # only the brain's own messages (an API answer or a PubAck is untyped, the echo a region_output)
    assert watched.types.get(f"{ns}.motor.action", {"motor_action"}) == {"motor_action"}, watched.types
    assert watched.types.get(f"{ns}.gw.broadcast", {"broadcast"}) == {"broadcast"}, watched.types
    assert any(s == f"{ns}.durable.stim.text" and b"forged durable" in d for s, d in watched.seen)
    # The agent may not use the JetStream API at all (NATS reports it; nats-py lower-cases it).
    assert [v for v in agent.violations("publish") if "$js.api" in v.lower()], agent.errors
    # No forged control reached the actors: echo is still running, not paused.
    async with Bus(brain.url_for("admin"), namespace=ns, name="admin") as bus:
        status = await bus.request("sys.ctl.echo", CtlRequest(verb="status"), CtlReply, timeout=3)
    assert status.ok and status.state == "running"
    assert brain.proc.poll() is None


async def test_an_agent_still_does_everything_agents_do(brain: SecureBrain) -> None:
    ns = brain.namespace
    watched = Recorder()
    async with Bus(brain.url_for("observer"), namespace=ns, name="observer") as observer:
        await observer.nc.subscribe(f"{ns}.feedback.>", cb=watched.record)
        await observer.nc.subscribe(f"{ns}.env.>", cb=watched.record)
        await observer.nc.subscribe(f"{ns}.durable.feedback.>", cb=watched.record)
        await observer.flush()
        async with connect(brain.url_for("agent"), namespace=ns, name="isolated") as agent:
            got: dict[str, list[Any]] = {}

            async def read(pattern: str, model: type[Any], key: str) -> None:
                async for msg in agent.subscribe(pattern, model):
                    got.setdefault(key, []).append(msg)

            readers = [asyncio.ensure_future(read(p, m, k)) for p, m, k in [
                ("gw.broadcast", Broadcast, "broadcast"), ("neuromod.levels", NeuromodLevels, "levels"),
                ("sys.heartbeat.*", Heartbeat, "heartbeat"), ("sys.error", SysError, "error")]]
            try:
                await agent.bus.flush()
                await agent.wait_ready(("thalamus", "basal_ganglia", "motor"), timeout=20)
                await agent.declare_actions(ACTIONS, env="isolation")
                await asyncio.sleep(0.3)
                # core: a stimulus answered by a motor action, then a reward for it
                sid = await agent.stimulus(text="ripe banana")
                action = await agent.action_for(sid, timeout=10)
                assert action.action in ACTIONS
                await agent.reward(1.0, stimulus_id=sid, action=action.action)
                # durable: stored (acknowledged to the agent), deduplicated, and answered
                msg = TextStimulus(text="cold river", id="iso-durable-1")
                first = await publish_durable(agent.bus, "stim.text", msg, msg_id="iso-d1")
                again = await publish_durable(agent.bus, "stim.text", msg, msg_id="iso-d1")
                assert first.stream == stream_name(ns) and not first.duplicate
                assert again.duplicate and again.seq == first.seq
                durable_action = await agent.action_for("iso-durable-1", timeout=10)
                rewarded = await publish_durable(agent.bus, "feedback.reward",
                                                 Reward(value=0.5, stimulus_id="iso-durable-1",
                                                        action=durable_action.action), msg_id="iso-r1")
                assert rewarded.stream == stream_name(ns)
                # a refused input: the agent learns why on sys.error
                await agent.bus.publish_raw("stim.text", b'{"text": 5}')
                await agent.bus.flush()
                await eventually(lambda: {"broadcast", "levels", "heartbeat", "error"} <= set(got), within=10,
                                 what=f"every readable subject (got {sorted(got)})")
            finally:
                for task in readers:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        await eventually(lambda: len(watched.on(f"{ns}.feedback.reward", f"{ns}.durable.feedback.reward")) >= 2,
                         within=5, what="the rewards in the brain's account")
    assert any(e.actor == "thalamus" and e.subject == f"{ns}.stim.text" for e in got["error"])
    assert any(s == f"{ns}.env.actions" for s, _ in watched.seen)
    assert any(s == f"{ns}.feedback.reward" and sid.encode() in d for s, d in watched.seen)


def test_the_server_config_puts_agents_in_an_account_of_their_own() -> None:
    creds = generate_credentials()
    text = accounts_block(creds, "b")
    brain_account, agent_account = ACCOUNTS
    brain_part, agent_part = text.split(f"  {agent_account} {{", 1)
    assert "jetstream: enabled" in brain_part and "jetstream" not in agent_part
    assert all(f'user: "{role}"' in brain_part for role in ("brain", "observer", "admin"))
    assert 'user: "agent"' in agent_part and 'user: "agent"' not in brain_part
    for subject in ("b.stim.>", "b.env.>", "b.feedback.>", "b.durable.stim.>", "b.durable.feedback.>"):
        assert f'{{service: "{subject}"}}' in brain_part
        assert f'{{service: {{account: {brain_account}, subject: "{subject}"}}}}' in agent_part
    for subject in ("b.motor.>", "b.gw.broadcast", "b.neuromod.levels", "b.sys.heartbeat.>", "b.sys.error"):
        assert f'{{stream: "{subject}"}}' in brain_part
        assert f'{{stream: {{account: {brain_account}, subject: "{subject}"}}}}' in agent_part
    assert "sys.ctl" not in agent_part and "mem." not in agent_part
    agent = permissions("agent", "b")
    assert not any(s.startswith("$JS") for s in agent["publish"]["allow"])
    assert "b.sys.error" in agent["subscribe"]["allow"]
    assert "_R_.>" in permissions("brain", "b")["publish"]["allow"]  # replies into the agents' account
    assert accounts_block(creds, "b", jetstream=False).count("jetstream") == 0
