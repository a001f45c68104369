"""The CUDA path: the brain's torch work on a GPU computes what it computes on the CPU.

CI has no GPU, so every test here is skipped there; they run wherever torch sees a CUDA device
(`make test-gpu`). The CPU results are the reference: the GPU must match them, not just run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch

from actors.device import resolve_device
from bus import Bus, EnvActions, Meta, MotorAction, VectorStimulus
from bus.models import MemStore
from memory.episodes import Episode
from memory.recall import recall, store
from memory.shard import HippocampusShard, ShardOptions
from memory.store import VectorStore
from regions.cortex import Cortex
from regions.encoders import MiniLMEncoder
from regions.plasticity import OjaFeatureMap
from tests.actors_for_tests import eventually
from tests.integration.test_brain import start_brain

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def test_auto_picks_cuda() -> None:
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:0") == "cuda:0"


def test_feature_map_learns_on_cuda_what_it_learns_on_cpu() -> None:
    rng = np.random.default_rng(0)
    # A few strong directions plus noise, so the features have something to find.
    basis = _unit(rng, 4, 64)
    xs = (rng.standard_normal((300, 4)).astype(np.float32) @ basis
          + 0.05 * rng.standard_normal((300, 64)).astype(np.float32))
    cpu = OjaFeatureMap(64, 8, lr=0.05, seed=3)
    gpu = OjaFeatureMap(64, 8, lr=0.05, seed=3, device="cuda")
    # One input at a time (numpy on the CPU, torch on CUDA), then a batch (torch on both).
    novelty_cpu = [cpu.learn(x) for x in xs[:200]]
    novelty_gpu = [gpu.learn(x) for x in xs[:200]]
    cpu.learn(xs[200:])
    gpu.learn(xs[200:])
    assert gpu.weight.device.type == "cuda" and gpu.usage.device.type == "cuda"
    np.testing.assert_allclose(novelty_gpu, novelty_cpu, atol=1e-4)
    np.testing.assert_allclose(gpu.weight.cpu().numpy(), cpu.weight.numpy(), atol=1e-4)
    np.testing.assert_allclose(gpu.usage.cpu().numpy(), cpu.usage.numpy(), atol=1e-5)
    # What it learned is real: the four directions are now explained (low novelty) ...
    assert float(np.mean(novelty_gpu[-20:])) < 0.5 * float(np.mean(novelty_gpu[:20]))
    np.testing.assert_allclose(gpu.forward(xs[:5]), cpu.forward(xs[:5]), atol=1e-4)
    # On CUDA, `observe` (the cortex's per-percept call) learns at once: nothing waits in a queue.
    samples = gpu.samples
    gpu.observe(xs[0])
    assert gpu.queued == 0 and gpu.samples == samples + 1


def test_feature_map_snapshot_moves_between_devices_and_prunes_on_cuda() -> None:
    gpu = OjaFeatureMap(32, 8, lr=0.05, seed=1, device="cuda")
    rng = np.random.default_rng(1)
    for x in _unit(rng, 600, 4):  # inputs in 4 of the 32 dimensions
        gpu.learn(np.r_[x, np.zeros(28, dtype=np.float32)])
    back = OjaFeatureMap.restore(gpu.snapshot(), device="cpu")
    np.testing.assert_allclose(back.weight.numpy(), gpu.weight.cpu().numpy(), atol=0)
    again = OjaFeatureMap.restore(back.snapshot(), device="cuda")
    assert again.weight.device.type == "cuda"
    # Inputs in 4 of 32 dimensions leave units unused: pruning recycles them on the GPU,
    # orthogonal to the live ones (QR on CUDA).
    before = again.weight.clone()
    pruned = again.prune_dead(threshold=1e-2, min_samples=100)
    assert pruned > 0
    w = again.weight.cpu().numpy()
    fresh = (again.weight != before).any(dim=1).cpu().numpy()
    assert fresh.sum() == pruned
    np.testing.assert_allclose(np.linalg.norm(w[fresh], axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(w[fresh] @ w[~fresh].T, 0.0, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_vector_store_finds_on_cuda_what_it_finds_on_cpu(dtype: str) -> None:
    rng = np.random.default_rng(2)
    keys = _unit(rng, 2000, 48)
    stores = [VectorStore(48, 2000, dtype=dtype, device=d) for d in ("cpu", "cuda")]  # type: ignore[arg-type]
    for s in stores:
        s.add([Episode(episode_id=-1, key=k, action="a") for k in keys])
    queries = keys[:40] + 0.1 * rng.standard_normal((40, 48)).astype(np.float32)
    (score_cpu, ids_cpu), (score_gpu, ids_gpu) = (s.search(queries, 5) for s in stores)
    assert (ids_gpu[:, 0] == np.arange(40)).all()  # each query's own key comes first
    np.testing.assert_array_equal(ids_gpu[:, 0], ids_cpu[:, 0])
    np.testing.assert_allclose(score_gpu, score_cpu, atol=2e-3 if dtype == "float16" else 1e-5)
    completed = [s.complete(queries[0], beta=8.0) for s in stores]
    np.testing.assert_allclose(completed[1], completed[0], atol=2e-3 if dtype == "float16" else 1e-5)
    removed = stores[1].remove(ids_gpu[:10, 0])
    assert len(removed) == 10 and not np.isin(stores[1].search(queries[:10], 5)[1], removed).any()


def test_minilm_encodes_on_cuda_what_it_encodes_on_cpu() -> None:
    try:
        MiniLMEncoder.model_path()
    except RuntimeError:
        pytest.skip("the minilm extra is not installed")
    texts = ["a red apple", "the truck is loud", "rain on the window"]
    cpu, gpu = MiniLMEncoder(device="cpu"), MiniLMEncoder(device="cuda")
    out_cpu, out_gpu = cpu.encode(texts), gpu.encode(texts)
    assert out_gpu.dtype == np.float32 and out_gpu.shape == (3, 384)
    np.testing.assert_allclose((out_gpu * out_cpu).sum(axis=1), 1.0, atol=1e-3)  # same directions


async def test_a_brain_on_cuda_answers_and_learns_on_the_gpu(bus: Bus, tmp_path: Path) -> None:
    """The small brain with `device: cuda`: its cortices learn on the GPU, and it still answers."""
    sup, task = await start_brain(bus, tmp_path, top={"device": "cuda"})
    try:
        answers: dict[str, MotorAction] = {}

        async def on_action(msg: MotorAction, meta: Meta) -> None:
            answers[msg.stimulus_id] = msg

        await bus.subscribe("motor.action", on_action, model=MotorAction)
        await bus.publish("env.actions", EnvActions(actions=["left", "right"], env="test"))
        await bus.flush()
        await asyncio.sleep(0.1)
        rng = np.random.default_rng(3)
        for i, vec in enumerate(_unit(rng, 20, 384)):
            await bus.publish("stim.vector", VectorStimulus(vector=vec, id=f"g{i}"))
            await asyncio.sleep(0.02)
        await eventually(lambda: len(answers) >= 15, within=10, what="answers from the brain on CUDA")
        visual = sup.child("visual").actor  # type: ignore[attr-defined]
        assert isinstance(visual, Cortex)
        assert visual.features.weight.device.type == "cuda"
        assert visual.features.samples >= 15
        assert visual.restore(visual.snapshot()) is None and visual.features.weight.device.type == "cuda"
    finally:
        sup.request_stop()
        await asyncio.wait_for(task, 30)


async def test_a_memory_shard_on_the_brain_device_stores_and_recalls(bus: Bus) -> None:
    shard = HippocampusShard("shard0", bus, ShardOptions(dim=32, persist=False), heartbeat_interval=0.2,
                             device="cuda")
    await shard.start()
    try:
        await bus.flush()
        keys = _unit(np.random.default_rng(4), 30, 32)
        for i, k in enumerate(keys):
            acks = await store(bus, MemStore(key=k, stimulus_id=f"s{i}", action="a", reward=0.5))
            assert acks and acks[0].ok
        assert shard.store.device.type == "cuda"
        reply = await recall(bus, keys[7], k=3, shards_expected=1, deadline=2.0)
        assert reply.hits[0].stimulus_id == "s7"
    finally:
        await shard.stop(0.5)
