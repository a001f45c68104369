"""The SDK against a real brain, and the public surface of each package."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import actors
import bus as bus_pkg
import memory
import neuromod
import regions
from bus import Bus
from tests.integration.test_brain import start_brain


async def test_sdk_agent_learns_through_the_bus(
    bus: Bus, tmp_path: Path, nats_server: bus_pkg.EmbeddedServer
) -> None:
    sup, task = await start_brain(bus, tmp_path)
    try:
        async with bus_pkg.connect(nats_server.url, namespace=bus.subjects.ns, name="sdk-test") as brain:
            await brain.wait_ready(timeout=10)
            await brain.declare_actions(["eat", "drive"])
            await asyncio.sleep(0.1)
            hits = []
            for i in range(40):
                word, right = (("apple", "eat"), ("truck", "drive"))[i % 2]
                sid = await brain.stimulus(text=word)
                action = await brain.action_for(sid, timeout=5)
                assert action.stimulus_id == sid
                hits.append(action.action == right)
                await brain.reward(1.0 if hits[-1] else -1.0, stimulus_id=sid)
            assert sum(hits[-10:]) >= 9
            with pytest.raises(bus_pkg.RequestTimeout):
                await brain.action_for("never-sent", timeout=0.2)
            with pytest.raises(ValueError):
                await brain.stimulus()
    finally:
        sup.request_stop()
        await asyncio.wait_for(task, 30)


@pytest.mark.parametrize("package", [actors, bus_pkg, memory, neuromod, regions])
def test_each_package_exports_what_it_names(package: object) -> None:
    names = getattr(package, "__all__", None)
    assert names, f"{package} has no __all__"
    assert names == sorted(names)
    for name in names:
        assert hasattr(package, name), f"{package.__name__}.{name} is in __all__ but missing"
