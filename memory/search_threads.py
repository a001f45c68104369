"""The worker threads that run shard searches, each with torch limited to one thread.

Shards get their parallelism from each other: a recall scatters to every shard, and each shard
searches in a thread of its own, so the shards of one process use all its cores. If every one of
those searches also ran torch's intra-op OpenMP team (one thread per core), four searching shards
on two cores would run eight spinning threads (measured: a 2,500-episode shard search took 16 ms
instead of well under one). So the threads of this pool set torch's thread count to one for
themselves only; the rest of the process keeps its setting.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["run_search", "search_executor"]

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _single_threaded_torch() -> None:
    # torch.get_num_threads() first: it runs torch's once-per-thread initialisation, which
    # would otherwise later copy the process-wide count over this thread's own setting.
    process_wide = torch.get_num_threads()
    # Sets this thread's OpenMP and MKL thread counts (per-thread settings) and, as a side
    # effect, the process-wide count that threads starting later inherit ...
    torch.set_num_threads(1)
    # ... which a short-lived thread puts back; its own per-thread setting dies with it.
    restore = threading.Thread(target=torch.set_num_threads, args=(process_wide,), name="memory-search-init")
    restore.start()
    restore.join()


def search_executor() -> ThreadPoolExecutor:
    """The process's search pool: one worker per CPU core, started on first use."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=os.cpu_count() or 1,
                thread_name_prefix="memory-search",
                initializer=_single_threaded_torch,
            )
        return _executor


async def run_search(fn: Callable[..., T], /, *args: object) -> T:
    """Run ``fn(*args)`` in the search pool and return its result."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(search_executor(), functools.partial(fn, *args))
