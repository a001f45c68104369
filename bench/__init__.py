"""bench: the harnesses behind `brainbus bench NAME` (each prints a table and writes JSON)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bench.bus import run_bus_bench
from bench.cognition import run_cognition_bench
from bench.latency import run_latency_bench
from bench.memory import run_memory_bench

__all__ = ["BENCHMARKS"]

BENCHMARKS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "bus": run_bus_bench,
    "cognition": run_cognition_bench,
    "latency": run_latency_bench,
    "memory": run_memory_bench,
}
