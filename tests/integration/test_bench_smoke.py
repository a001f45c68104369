"""`brainbus bench bus` and `brainbus bench memory` end to end with `--quick`: what they measure
must be right (every store acknowledged, recall exact, the wire as documented) and written out;
their speed is what the benches themselves report, not what a test asserts."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench.bus import run_bus_bench
from bench.memory import run_memory_bench


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_quick_bus_bench_compares_with_raw_nats_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "bus.json"
    results = await run_bus_bench(out, quick=True)
    assert orjson.loads(out.read_bytes()) == orjson.loads(orjson.dumps(results))
    for name in ("small_throughput", "embedding_throughput", "two_process_small_throughput",
                 "two_process_embedding_throughput", "request_p50_ms"):
        row = results[name]
        assert row["typed"] > 0 and row["raw"] > 0 and row["ratio"] == pytest.approx(row["typed"] / row["raw"])
    wire = results["embedding_wire_bytes"]
    # A 384-d float32 embedding is its 1,536 bytes plus the JSON head and headers.
    assert wire["raw_bytes"] == 384 * 4 and 0 < wire["overhead"] < wire["target_overhead"]


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_quick_memory_bench_recalls_exactly_and_acknowledges_every_store(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    results = await run_memory_bench(out, quick=True)
    assert orjson.loads(out.read_bytes())["rows"] == orjson.loads(orjson.dumps(results["rows"]))
    for row in results["rows"]:
        # Exact search over float32 keys finds faiss's top 10; float16 keys nearly all of them.
        assert row["recall_at_10"] >= (1.0 if row["dtype"] == "float32" else 0.99), row
        assert row["bus_p50_ms"] > 0 and row["faiss_p50_ms"] > 0
    for name in ("store", "store_no_fsync", "store_one_process"):
        store = results[name]
        assert store["stores"] > 0 and store["acked_per_s"] > 0 and store["fsync_batches"] > 0
