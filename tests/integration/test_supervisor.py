"""The Supervisor against a real nats-server: OTP strategies, restart types, intensity, hangs, state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import torch

from actors.actor import Actor, ActorState
from actors.config import parse_config
from actors.supervisor import ActorChild, Supervisor
from bus import Bus, Meta
from bus.errors import ConfigError, EscalationError
from bus.models import CtlReply, CtlRequest, SysError, TextStimulus
from tests.actors_for_tests import Counter, Hanger, eventually

T = "tests.actors_for_tests:"


class Running:
    """A supervisor running in a task, with helpers to look at its children."""

    def __init__(self, sup: Supervisor, task: asyncio.Task[None]) -> None:
        self.sup = sup
        self.task = task

    def child(self, name: str) -> ActorChild:
        return cast(ActorChild, self.sup.child(name))

    def actor(self, name: str) -> Any:
        actor = self.child(name).actor
        assert actor is not None
        return actor

    def names(self) -> list[str]:
        return [c.name for c in self.sup.children]

    async def restarted(self, name: str, before: Actor, restarts: int = 1) -> Any:
        """Wait until `name` runs as a new instance with `restarts` restarts; return it."""
        def ok() -> bool:
            child = self.child(name)
            return (child.restarts == restarts and child.actor is not before and child.actor is not None
                    and child.actor.state is ActorState.RUNNING)

        await eventually(ok, what=f"{name} restarted ({restarts})")
        await self.sup.bus.flush()
        return self.actor(name)


Start = Callable[..., Any]


@pytest.fixture
async def supervise(bus: Bus, namespace: str) -> AsyncIterator[Start]:
    running: list[Running] = []

    async def start(actors: dict[str, Any], *, snapshot_dir: Path | None = None, **sup: Any) -> Running:
        config = parse_config({"namespace": namespace, "supervisor": {"heartbeat_interval": 0.2, **sup},
                               "actors": actors})
        supervisor = Supervisor.for_actors(bus, config, list(actors), snapshot_dir)
        run = Running(supervisor, asyncio.create_task(supervisor.run()))
        running.append(run)

        def all_running() -> bool:
            return all(isinstance(c, ActorChild) and c.actor is not None
                       and c.actor.state is ActorState.RUNNING for c in supervisor.children)

        await eventually(all_running, what="every child running")
        await bus.flush()
        return run

    yield start
    for run in running:
        run.sup.request_stop()
        with contextlib.suppress(EscalationError):
            await asyncio.wait_for(run.task, 10)


async def say(bus: Bus, *texts: str) -> None:
    for text in texts:
        await bus.publish("stim.text", TextStimulus(text=text))
    await bus.flush()


def counters(*names: str, restart: str = "permanent") -> dict[str, Any]:
    return {n: {"kind": f"{T}Counter", "restart": restart} for n in names}


# ---------------------------------------------------------------- strategies


async def test_one_for_one_restarts_only_the_crashed_child(supervise: Start, other_bus: Bus) -> None:
    run = await supervise(counters("a", "b", "c"), strategy="one_for_one")
    before = {n: run.actor(n) for n in "abc"}
    await say(other_bus, "crash b")
    new_b = await run.restarted("b", before["b"])
    assert before["b"].state is ActorState.STOPPED and new_b.restarts == 1
    for n in "ac":
        assert run.actor(n) is before[n] and run.child(n).restarts == 0
        assert before[n].state is ActorState.RUNNING
    assert run.names() == ["a", "b", "c"] and not run.task.done()


async def test_rest_for_one_restarts_the_child_and_those_after_it(supervise: Start, other_bus: Bus) -> None:
    run = await supervise(counters("a", "b", "c"), strategy="rest_for_one")
    before = {n: run.actor(n) for n in "abc"}
    await say(other_bus, "crash b")
    await run.restarted("b", before["b"])
    await run.restarted("c", before["c"])
    assert run.actor("a") is before["a"] and run.child("a").restarts == 0
    assert before["c"].state is ActorState.STOPPED
    assert run.names() == ["a", "b", "c"]


async def test_one_for_all_restarts_every_child_and_keeps_healthy_state(
    supervise: Start, other_bus: Bus
) -> None:
    run = await supervise(counters("a", "b", "c"), strategy="one_for_all")
    await say(other_bus, "x", "y")
    await eventually(lambda: all(run.actor(n).count == 2 for n in "abc"), what="two counted everywhere")
    before = {n: run.actor(n) for n in "abc"}
    await say(other_bus, "crash b")
    new = {n: await run.restarted(n, before[n]) for n in "abc"}
    assert all(before[n].state is ActorState.STOPPED for n in "abc")
    # the healthy ones were stopped cleanly and checkpointed; the crashed one had no checkpoint
    assert new["a"].count == 2 and new["c"].count == 2
    assert new["b"].count == 0 and new["b"].restored is None


# ---------------------------------------------------------------- restart types


async def test_transient_is_not_restarted_after_a_normal_stop_but_is_after_a_crash(
    supervise: Start, other_bus: Bus
) -> None:
    run = await supervise(counters("t1", "t2", restart="transient"))
    t1, t2 = run.actor("t1"), run.actor("t2")
    await t1.stop()  # a normal exit
    await eventually(lambda: run.names() == ["t2"], what="t1 removed")
    assert t1.state is ActorState.STOPPED and run.child("t2").restarts == 0
    await say(other_bus, "crash t2")
    await run.restarted("t2", t2)
    assert run.names() == ["t2"]


async def test_temporary_is_never_restarted(supervise: Start, other_bus: Bus) -> None:
    actors = {**counters("tmp1", "tmp2", restart="temporary"), **counters("keep")}
    run = await supervise(actors)
    tmp1 = run.actor("tmp1")
    await say(other_bus, "crash tmp1")
    await eventually(lambda: "tmp1" not in run.names(), what="tmp1 removed")
    assert tmp1.state is ActorState.STOPPED
    await run.actor("tmp2").stop()
    await eventually(lambda: run.names() == ["keep"], what="tmp2 removed")
    assert run.child("keep").restarts == 0 and not run.task.done()


# ---------------------------------------------------------------- intensity


async def test_restart_intensity_exceeded_escalates_and_stops_every_child(
    supervise: Start, bus: Bus, other_bus: Bus
) -> None:
    errors: list[SysError] = []

    async def on_error(err: SysError, meta: Meta) -> None:
        errors.append(err)

    await bus.subscribe("sys.error", on_error, model=SysError)
    run = await supervise({"crasher": {"kind": f"{T}Crasher"}, "echo": {"kind": f"{T}Echo"}},
                          max_restarts=2, max_seconds=30)
    echo = run.actor("echo")
    crasher_instances = []
    for i in range(3):
        crasher_instances.append(run.actor("crasher"))
        await say(other_bus, f"boom{i}")
        if i < 2:
            await run.restarted("crasher", crasher_instances[-1], restarts=i + 1)
    with pytest.raises(EscalationError) as caught:
        await asyncio.wait_for(run.task, 5)
    exc = caught.value
    assert exc.actor == "crasher"
    assert exc.last_error == "RuntimeError: crasher crasher fails on 'boom2'"
    assert "'crasher'" in str(exc) and "restart intensity exceeded" in str(exc) and "boom2" in str(exc)
    assert run.sup.escalation is exc
    assert echo.state is ActorState.STOPPED and echo.done.result() is None
    assert all(a.state is ActorState.STOPPED for a in crasher_instances)
    assert run.child("crasher").restarts == 2
    await eventually(lambda: any(e.kind == "escalation" for e in errors), what="an escalation report")
    report = next(e for e in errors if e.kind == "escalation")
    assert report.actor == "supervisor" and "crasher" in report.reason


async def test_failures_outside_the_window_do_not_escalate(supervise: Start, other_bus: Bus) -> None:
    run = await supervise(counters("c"), max_restarts=1, max_seconds=0.3)
    for i in range(3):
        old = run.actor("c")
        await say(other_bus, "crash c")
        await run.restarted("c", old, restarts=i + 1)
        await asyncio.sleep(0.35)  # the previous failure leaves the window
    assert not run.task.done()


async def test_a_hung_handler_is_detected_and_restarted(supervise: Start, other_bus: Bus) -> None:
    run = await supervise({"hanger": {"kind": f"{T}Hanger"}, **counters("calm")}, hang_timeout=0.5)
    hanger: Hanger = run.actor("hanger")
    loop = asyncio.get_running_loop()
    await say(other_bus, "hang hanger")
    await asyncio.wait_for(hanger.entered.wait(), 2)
    t0 = loop.time()
    new = await run.restarted("hanger", hanger)
    assert 0.45 <= loop.time() - t0 < 2.0
    assert hanger.state is ActorState.STOPPED and hanger.busy_for() == 0.0
    assert new.busy_for() == 0.0 and run.child("calm").restarts == 0
    await say(other_bus, "counted")  # the new instance handles messages again (and does not hang)
    await eventually(lambda: run.actor("calm").count == 2, what="calm counted both")
    await asyncio.sleep(0.1)
    assert not new.entered.is_set() and new.stats["msgs_in"] == 1 and new.busy_for() < 0.1


async def test_a_hang_counts_toward_restart_intensity(supervise: Start, other_bus: Bus) -> None:
    run = await supervise({"hanger": {"kind": f"{T}Hanger"}}, hang_timeout=0.3, max_restarts=0)
    await say(other_bus, "hang")
    with pytest.raises(EscalationError) as caught:
        await asyncio.wait_for(run.task, 5)
    assert caught.value.actor == "hanger" and "hung" in caught.value.last_error


async def test_operator_restart_does_not_count_toward_intensity(supervise: Start, other_bus: Bus) -> None:
    run = await supervise(counters("c"), max_restarts=1, max_seconds=30)
    await say(other_bus, "one", "two", "three")
    await eventually(lambda: run.actor("c").count == 3, what="three counted")
    for i in range(3):
        old = run.actor("c")
        reply = await other_bus.request("sys.ctl.c", CtlRequest(verb="restart"), CtlReply, timeout=2)
        assert reply.ok and reply.detail == "restarting"
        new = await run.restarted("c", old, restarts=i + 1)
        assert new.count == 3  # an operator restart keeps the state the actor had
    assert not run.task.done()
    old = run.actor("c")
    await say(other_bus, "crash c")  # one failure is within max_restarts=1 ...
    await run.restarted("c", old, restarts=4)
    await say(other_bus, "crash c")  # ... a second one is not
    with pytest.raises(EscalationError, match="'c'"):
        await asyncio.wait_for(run.task, 5)


# ---------------------------------------------------------------- state


async def test_restored_state_comes_from_the_last_checkpoint(supervise: Start, other_bus: Bus) -> None:
    run = await supervise(counters("counter"), snapshot_interval=3600)
    await say(other_bus, "1", "2", "3")
    await eventually(lambda: run.actor("counter").count == 3, what="three counted")
    run.child("counter").checkpoint()
    await say(other_bus, "4", "5")
    await eventually(lambda: run.actor("counter").count == 5, what="five counted")
    old: Counter = run.actor("counter")
    await say(other_bus, "crash")
    new: Counter = await run.restarted("counter", old)
    assert new.restored == {"count": 3} and new.count == 3


async def test_periodic_checkpoints(supervise: Start, other_bus: Bus) -> None:
    run = await supervise(counters("counter"), snapshot_interval=0.1)
    await say(other_bus, "1", "2")
    await eventually(lambda: run.child("counter").saved == {"count": 2}, what="a checkpoint of count 2")


async def test_snapshots_are_written_on_shutdown_and_restored_by_the_next_run(
    supervise: Start, other_bus: Bus, tmp_path: Path
) -> None:
    run = await supervise(counters("counter"), snapshot_dir=tmp_path)
    await say(other_bus, "1", "2", "3", "4")
    await eventually(lambda: run.actor("counter").count == 4, what="four counted")
    run.sup.request_stop()
    await asyncio.wait_for(run.task, 10)
    assert run.actor("counter").state is ActorState.STOPPED
    assert orjson.loads((tmp_path / "counter.json").read_bytes()) == {"count": 4}
    again = await supervise(counters("counter"), snapshot_dir=tmp_path)
    assert again.actor("counter").count == 4 and again.actor("counter").restored == {"count": 4}


async def test_a_corrupt_snapshot_does_not_block_start(supervise: Start, tmp_path: Path) -> None:
    (tmp_path / "counter.json").write_text("{not json")
    run = await supervise(counters("counter"), snapshot_dir=tmp_path)
    assert run.actor("counter").count == 0 and run.actor("counter").restored is None


async def test_a_child_that_cannot_restart_escalates_cleanly(supervise: Start, other_bus: Bus) -> None:
    run = await supervise({"fragile": {"kind": f"{T}FailsOnRestart"}, **counters("calm")})
    calm = run.actor("calm")
    await say(other_bus, "crash fragile")
    with pytest.raises(EscalationError) as caught:
        await asyncio.wait_for(run.task, 5)
    assert caught.value.actor == "fragile"
    assert "RuntimeError: fragile cannot start again" in caught.value.last_error
    assert calm.state is ActorState.STOPPED


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_where_there_is_none_fails_before_anything_starts(bus: Bus, namespace: str) -> None:
    shard = {"kind": "hippocampus_shard", "options": {"dim": 8, "persist": False}}
    brain = parse_config({"namespace": namespace, "device": "cuda", "actors": {"shard0": shard}})
    with pytest.raises(ConfigError, match="device 'cuda' requested but CUDA is not available"):
        Supervisor.for_actors(bus, brain, ["shard0"], None)
    own = parse_config({"namespace": namespace, "actors": {"shard0": {**shard, "options": {
        **shard["options"], "device": "cuda"}}}})
    with pytest.raises(ConfigError, match=r"actors\.shard0\.options\.device: device 'cuda' requested"):
        Supervisor.for_actors(bus, own, ["shard0"], None)
    with pytest.raises(ConfigError, match=r"actors\.shard0\.options\.device"):
        parse_config({"namespace": namespace, "actors": {"shard0": {**shard, "options": {"dim": 8, "device": "gpu"}}}})
