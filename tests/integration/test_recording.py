"""Recording and replay (bus.recording, `brainbus record` / `replay`) and the deterministic mode
(actors.determinism): a recorded session replayed into a fresh deterministic brain reproduces it."""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from actors.cli import build_parser
from actors.recordcmd import run as record_run
from actors.supervisor import Supervisor
from bus import Bus, EmbeddedServer, EnvActions, Meta, MotorAction, RegionOutput, Reward, TextStimulus, codec
from bus.recording import RecordedMessage, Recorder, RecordingError, read_recording, replay
from tests.actors_for_tests import eventually
from tests.integration.test_brain import start_brain

SMALL = Path(__file__).resolve().parents[2] / "configs" / "small.yaml"
REPO = Path(__file__).resolve().parents[2]


async def start_deterministic_brain(bus: Bus, data_dir: Path) -> tuple[Supervisor, asyncio.Task[None]]:
    """The small config (hashing encoder) with `deterministic: true`, in-process, on `bus`'s namespace."""
    return await start_brain(bus, data_dir, top={"deterministic": True})


async def stop_brain(sup: Supervisor, task: asyncio.Task[None]) -> None:
    sup.request_stop()
    await asyncio.wait_for(task, 30)


@pytest.fixture
async def second_bus(nats_server: EmbeddedServer, namespace: str) -> AsyncIterator[Bus]:
    """A bus on a namespace of its own: the fresh brain a session is replayed into."""
    async with Bus(nats_server.url, namespace=f"{namespace}r", name="test-replay") as b:
        yield b


# ---------------------------------------------------------------- the deterministic replay


WORDS = ["apple", "truck", "pear", "bus", "plum", "train", "apple", "bus", "pear", "truck", "plum", "train",
         "apple", "train", "pear", "bus"]
FRUIT = {"apple", "pear", "plum"}


async def test_a_replayed_session_reproduces_the_actions_of_a_deterministic_brain(
        bus: Bus, second_bus: Bus, tmp_path: Path) -> None:
    # 1. Record a session of stimuli and rewards driven against a deterministic brain.
    sup, task = await start_deterministic_brain(bus, tmp_path / "a")
    actions: asyncio.Queue[MotorAction] = asyncio.Queue()

    async def acted(msg: MotorAction, meta: Meta) -> None:
        await actions.put(msg)

    await bus.subscribe("motor.action", acted, model=MotorAction)
    file = tmp_path / "session.jsonl"
    original: list[tuple[str, str]] = []
    with file.open("wb") as out:
        recorder = Recorder(bus, out)  # everything in the namespace, as `brainbus record` does
        await recorder.start()
        await bus.publish("env.actions", EnvActions(actions=["eat", "drive"], env="test"))
        for i, word in enumerate(WORDS):
            sid = f"s{i}"
            await bus.publish("stim.text", TextStimulus(text=f"a {word}", id=sid))
            action = await asyncio.wait_for(actions.get(), 5)
            assert action.stimulus_id == sid
            original.append((sid, action.action))
            right = (action.action == "eat") == (word in FRUIT)
            await bus.publish("feedback.reward", Reward(value=1.0 if right else -1.0, stimulus_id=sid))
        await asyncio.sleep(0.2)  # the last reward's effects land before the recording ends
        await recorder.stop()
    await stop_brain(sup, task)
    assert {a for _, a in original} == {"eat", "drive"}, "a session that explores both actions"

    # 2. Replay its stimuli and rewards, as fast as possible, into a fresh deterministic brain.
    sup, task = await start_deterministic_brain(second_bus, tmp_path / "b")
    replayed: list[tuple[str, str]] = []

    async def replay_acted(msg: MotorAction, meta: Meta) -> None:
        replayed.append((msg.stimulus_id, msg.action))

    await second_bus.subscribe("motor.action", replay_acted, model=MotorAction)
    messages = read_recording(file)
    sent = await replay(second_bus, messages, rate=0, namespace=second_bus.subjects.ns,
                        patterns=["env.>", "stim.>", "feedback.>"])
    assert (sent.published, sent.refused) == (1 + 2 * len(WORDS), 0)  # the declaration, every stimulus and reward
    try:
        await eventually(lambda: len(replayed) >= len(WORDS), within=15, what="an action for every stimulus")
        await asyncio.sleep(0.1)
    finally:
        await stop_brain(sup, task)
    assert replayed == original


# ---------------------------------------------------------------- the file format


async def test_recording_round_trips_text_binary_vectors_and_headers(
        bus: Bus, second_bus: Bus, tmp_path: Path) -> None:
    vector = np.linspace(-1, 1, 384, dtype=np.float32)
    out = io.BytesIO()
    recorder = Recorder(bus, out, ["stim.>", "region.>", "stim.text"])  # overlapping: recorded once
    await recorder.start()
    await bus.publish("stim.text", TextStimulus(text="héllo", id="x1"))
    await bus.publish("region.thalamus.out", RegionOutput(region="thalamus", kind="percept", vector=vector,
                                                          stimulus_id="x1"), stimulus_id="x1")
    await bus.publish_raw("stim.vector", b"\xff\xfe not utf-8")
    await bus.flush()
    await eventually(lambda: recorder.recorded == 3, what="three recorded messages")
    await recorder.stop()

    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [line["subject"] for line in lines] == [bus.resolve(s) for s in
                                                   ("stim.text", "region.thalamus.out", "stim.vector")]
    assert [line["encoding"] for line in lines] == ["utf8", "base64", "base64"]
    assert orjson.loads(lines[0]["body"]) == {"text": "héllo", "id": "x1", "episode": None}
    assert lines[1]["headers"][codec.H_VEC] == "vector:f32:384"
    assert lines[1]["headers"][codec.H_SID] == "x1"
    assert 0 <= lines[0]["t"] <= lines[1]["t"] <= lines[2]["t"] < 5
    assert abs(lines[0]["wall"] - time.time()) < 30

    # Read back, replay into another namespace: the same bytes and headers arrive there.
    path = tmp_path / "rec.jsonl"
    path.write_bytes(out.getvalue())
    messages = read_recording(path)
    got: list[Any] = []

    async def seen(msg: Any) -> None:
        got.append(msg)

    await second_bus.subscribe_raw(">", seen)
    await second_bus.flush()
    assert (await replay(second_bus, messages, rate=0, namespace=second_bus.subjects.ns)).published == 3
    await eventually(lambda: len(got) == 3, what="three replayed messages")
    assert [m.subject for m in got] == [second_bus.resolve(s) for s in
                                        ("stim.text", "region.thalamus.out", "stim.vector")]
    assert [m.data for m in got] == [m.data for m in messages]
    assert got[2].data == b"\xff\xfe not utf-8"
    decoded, meta = codec.decode(RegionOutput, got[1].data, got[1].headers, got[1].subject)
    assert decoded.vector is not None and np.array_equal(decoded.vector, vector)
    assert meta.stimulus_id == "x1" and meta.source == "test"


async def test_replay_keeps_the_recorded_timing_scaled_by_the_rate(bus: Bus) -> None:
    subject = bus.resolve("stim.text")
    messages = [RecordedMessage(t=t, wall=0.0, subject=subject, data=b'{"text": "tick"}') for t in (0.0, 0.2, 0.4)]
    arrivals: list[float] = []

    async def seen(msg: Any) -> None:
        arrivals.append(time.monotonic())

    await bus.subscribe_raw("stim.text", seen)
    await bus.flush()
    spans = {}
    for rate in (1.0, 2.0, 0.0):
        arrivals.clear()
        await replay(bus, messages, rate=rate)
        await eventually(lambda: len(arrivals) == 3, what="three replayed messages")
        spans[rate] = arrivals[-1] - arrivals[0]
    assert 0.35 <= spans[1.0] <= 0.8
    assert 0.17 <= spans[2.0] <= 0.4
    assert spans[0.0] < 0.1
    with pytest.raises(ValueError, match="rate"):
        await replay(bus, messages, rate=-1)


def _args(*argv: str) -> Any:
    return build_parser().parse_args(list(argv))


async def test_a_bad_recording_exits_2_naming_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = RecordedMessage(t=0.0, wall=0.0, subject="brain.stim.text", data=b"hi").to_line()
    cases = {
        b"{not json\n": "line 2: not a JSON object",
        b'{"t": 1, "subject": "brain.stim.text"}\n': "line 2: missing field(s) body",
        b'{"t": -1, "subject": "brain.stim.text", "body": ""}\n': "line 2: field 't'",
        b'{"t": 1, "subject": "brain..x", "body": ""}\n': "line 2: subject",
        b'{"t": 1, "subject": "brain.x", "body": "%%", "encoding": "base64"}\n':
            "line 2: field 'body' is not valid base64",
    }
    for bad, message in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_bytes(good + bad)
        with pytest.raises(RecordingError, match=re.escape(message)):
            read_recording(path)
        # No NATS needed: the file is checked before anything connects.
        assert await record_run(_args("replay", str(path), "--nats", "nats://127.0.0.1:1")) == 2
        assert message.split(":")[0] in capsys.readouterr().err


def test_the_command_line_exits_2_on_a_bad_recording(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"t": 0, "subject": "brain.stim.text", "body": "ok"}\n\n[1, 2]\n')
    done = subprocess.run([sys.executable, "-m", "actors.cli", "replay", str(path), "--nats", "nats://127.0.0.1:1"],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert "line 3: expected a JSON object" in done.stderr
