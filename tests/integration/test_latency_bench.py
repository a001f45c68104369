"""`brainbus bench latency` end to end, small: its accounting, not its speed (speed is what the
bench itself reports). The brain runs as its own process, as in the bench."""

from __future__ import annotations

from pathlib import Path

import nats
import orjson
import pytest

import bench.text_rate as text_rate
from bench.latency import run_latency_bench
from bench.text_rate import minilm_missing, text_throughput
from bus import EmbeddedServer


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_quick_latency_bench_traces_every_stimulus_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "latency.json"
    results = await run_latency_bench(out, quick=True)
    assert orjson.loads(out.read_bytes())["closed_loop"] == results["closed_loop"]
    closed = results["closed_loop"]
    assert 0 < closed["p50_ex_window_ms"] <= closed["p99_ex_window_ms"]
    assert closed["raw_hop_ms"] > 0
    for layout in ("sustained", "sustained_two_processes", "sustained_spread"):
        run = results[layout]
        # Every stimulus that got no answer stopped at a stage whose next actor counted it.
        assert run["uncounted"] == 0, run["stages"]
        assert run["answered"] > 0 and run["answered_rate"] > 0
        assert run["brain_cpu_ms_per_answer"] > 0
    assert "text" not in results  # --quick leaves MiniLM out


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(minilm_missing() is not None, reason="the minilm extra is not installed")
async def test_text_part_reads_the_thalamus_pace_and_cpu_split_off_heartbeats(
        nats_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # A short version of the real measure: the same code, fewer texts and one pass per side.
    monkeypatch.setattr(text_rate, "TEXTS_PER_PASS", 128)
    monkeypatch.setattr(text_rate, "TEXT_PASSES", 1)
    nc = await nats.connect(nats_server.url)
    try:
        result = await text_throughput(nats_server.url, nc)
    finally:
        await nc.close()
    for run in (result, result["two_processes"], result["spread"]):
        assert run["encoder_batched_rate"] > 0 and len(run["encoder_rates"]) == 1
        assert run["ratio"] == pytest.approx(run["brain_rate"] / run["encoder_batched_rate"])
        # Texts the workspace lets go are counted by verdict; every other one is answered.
        let_go = sum(n for verdict, n in run["workspace_verdicts"].items() if verdict != "won")
        assert run["answered"] + let_go >= 128 and run["answered"] > 0
        # The thalamus's pace comes from its heartbeats, read after the pass.
        assert run["perceived_rate"] > 0
        assert run["encoder_cpu_ms_per_text"] > 0 and run["other_cpu_ms_per_text"] > 0
