"""bench: the harnesses behind `brainbus bench NAME` (each prints a table and writes JSON)."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["BENCHMARKS", "benchmark"]

#: Each benchmark's module and function, imported when it runs: one benchmark's own references
#: (faiss-cpu for `memory`, MiniLM for `latency`'s text part) are not needed to run another.
BENCHMARKS: dict[str, str] = {
    "bus": "bench.bus:run_bus_bench",
    "cognition": "bench.cognition:run_cognition_bench",
    "latency": "bench.latency:run_latency_bench",
    "memory": "bench.memory:run_memory_bench",
    "reversal": "bench.reversal:run_reversal_bench",
    "worlds": "bench.worlds:run_worlds_bench",
}


def benchmark(name: str) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The function that runs benchmark `name` (`brainbus bench NAME`)."""
    module, function = BENCHMARKS[name].split(":")
    run: Callable[..., Awaitable[dict[str, Any]]] = getattr(importlib.import_module(module), function)
    return run
