"""`brainbus bench memory`: hippocampal recall through the bus vs faiss-cpu in-process.

In one run, on the same random unit vectors (384-d):
1. recall top-10 over 10^4, 10^5 and 10^6 episodes spread over 4 shard actors, every query going
   through NATS (`memory.recall`: scatter to 4 shards, gather, merge), against faiss-cpu
   `IndexFlatIP` searched in-process; recall@10 against faiss's exact answer; p50 latencies.
   float16 storage is the default (half the memory); float32 rows show what the float16->float32
   conversion inside the search costs.
2. the bus overhead alone: the same scatter-gather over 4 empty shards.
3. store throughput: episodes acknowledged per second through the bus by 4 shards that fsync
   their log (group commit), with 512 stores in flight, the storing client in its own OS process
   (as an agent that stores episodes is in real use); the same without fsync; and, as the
   same-run reference, the same requests from the same client process answered by a bare
   responder (no shard, no log) in the shards' place: the request/reply ceiling of that setup.
   The CPU each process spends per store is reported beside the rates (on a shared machine it
   moves less than they do). The one-process setup (client and shards on one event loop) is
   measured too, against its own bare-responder ceiling.
4. bytes per episode held by the shards vs the raw float16 key (768 bytes), and process RSS.

Honest note on filling: the recall rows bulk-load the shards by calling `VectorStore.add` on
the shard actors in this process (no bus, no log): pushing 10^6 episodes through acknowledged
stores would take minutes and measure the store path, which row 3 measures on its own. Every
recall query does go through the bus. `--quick` stops at 10^5.
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import orjson

from bus import Bus, EmbeddedServer, Meta
from bus.models import MemStore, MemStoreAck
from memory.episodes import Episode
from memory.recall import recall, store
from memory.shard import STORE_QUEUE, HippocampusShard, ShardOptions

__all__ = ["run_memory_bench"]

DIM = 384
SHARDS = 4
K = 10


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.empty((n, DIM), dtype=np.float32)
    for s in range(0, n, 100_000):  # in blocks: a float64 temporary of 10^6 rows would be 3 GB
        x = rng.standard_normal((min(100_000, n - s), DIM), dtype=np.float32)
        out[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


async def _start_shards(bus: Bus, tag: str, **opts: Any) -> list[HippocampusShard]:
    shards = []
    for i in range(SHARDS):
        shard = HippocampusShard(f"{tag}-{i}", bus, ShardOptions(dim=DIM, **opts), heartbeat_interval=5.0)
        await shard.start()
        shards.append(shard)
    await bus.flush()
    return shards


def _bulk_load(shards: list[HippocampusShard], vectors: np.ndarray) -> list[tuple[str, int]]:
    """Round-robin the vectors into the shards' stores; returns (shard, episode id) per vector."""
    where: list[tuple[str, int]] = [("", -1)] * len(vectors)
    for si, shard in enumerate(shards):
        rows = np.arange(si, len(vectors), SHARDS)
        for s in range(0, len(rows), 50_000):
            part = rows[s:s + 50_000]
            ids = shard.store.add([Episode(-1, vectors[r], stimulus_id=f"v{r}") for r in part])
            for r, eid in zip(part, ids, strict=True):
                where[r] = (shard.name, int(eid))
    return where


async def _recall_row(url: str, ns: str, n: int, dtype: str, vectors: np.ndarray, queries: np.ndarray,
                      exact: np.ndarray, faiss_ms: float) -> dict[str, Any]:
    async with Bus(url, namespace=ns, name=f"bench-shards-{n}-{dtype}") as shard_bus, \
            Bus(url, namespace=ns, name="bench-client") as client:
        shards = await _start_shards(shard_bus, f"s{dtype[-2:]}", capacity=n // SHARDS + 1, dtype=dtype,
                                     persist=False)
        try:
            where = await asyncio.to_thread(_bulk_load, shards, vectors)
            index = {w: i for i, w in enumerate(where)}
            await recall(client, queries[0], k=K, shards_expected=SHARDS, deadline=30)  # warm-up
            lat, hits = [], 0
            for qi, q in enumerate(queries):
                t0 = time.perf_counter()
                reply = await recall(client, q, k=K, shards_expected=SHARDS, deadline=30)
                lat.append((time.perf_counter() - t0) * 1000)
                assert not reply.partial, "a shard missed the 30 s deadline"
                got = {index[(h.shard, h.episode_id)] for h in reply.hits}
                hits += len(got & set(exact[qi].tolist()))
            mem = sum(s.store.memory_bytes() for s in shards)
            return {"episodes": n, "dtype": dtype, "bus_p50_ms": statistics.median(lat),
                    "faiss_p50_ms": faiss_ms, "recall_at_10": hits / (K * len(queries)),
                    "bytes_per_episode": mem / n, "rss_mb": _rss_mb(),
                    "shard_last_recall_ms": [round(s._last_recall_ms, 2) for s in shards]}
        finally:
            for s in shards:
                await s.stop(0)


def _faiss(vectors: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact top-k and the p50 of single queries, with faiss's default threads and with one
    (OpenMP spin-waiting next to torch threads can make the default slower): the faster counts."""
    index = faiss.IndexFlatIP(DIM)
    index.add(vectors)
    default_threads = faiss.omp_get_max_threads()
    p50s = []
    for threads in (default_threads, 1):
        faiss.omp_set_num_threads(threads)
        lat = []
        for q in queries:
            t0 = time.perf_counter()
            index.search(q[None, :], K)
            lat.append((time.perf_counter() - t0) * 1000)
        p50s.append(statistics.median(lat))
    faiss.omp_set_num_threads(default_threads)
    _, exact = index.search(queries, K)
    return exact, min(p50s)


async def _bus_overhead(url: str, ns: str, queries: np.ndarray) -> float:
    async with Bus(url, namespace=ns, name="bench-empty") as shard_bus, \
            Bus(url, namespace=ns, name="bench-client") as client:
        shards = await _start_shards(shard_bus, "empty", capacity=16, persist=False)
        try:
            lat = []
            for q in queries:
                t0 = time.perf_counter()
                await recall(client, q, k=K, shards_expected=SHARDS, deadline=5)
                lat.append((time.perf_counter() - t0) * 1000)
            return statistics.median(lat)
        finally:
            for s in shards:
                await s.stop(0)


async def _store_load(client: Bus, vectors: np.ndarray, in_flight: int) -> float:
    """Store every vector through the bus with ``in_flight`` requests outstanding; seconds taken.

    A fixed set of workers each sending its next store once the previous is acknowledged (not
    one task per store queued on a semaphore: waking one of thousands of waiters scans them all).
    """
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(vectors):
            i = next_index
            next_index += 1
            await store(client, MemStore(key=vectors[i], stimulus_id=f"e{i}", action="act", reward=0.5),
                        timeout=30)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - t0


async def _client_process_seconds(url: str, ns: str, n: int, in_flight: int) -> tuple[float, float]:
    """Run `_store_load` in a separate OS process (`python -m bench.memory store-client ...`), as
    a storing agent runs in real use; the seconds it took and the CPU seconds it used, as
    measured by that process from its first store to its last acknowledgement (its start-up is
    not counted)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.memory", "store-client", url, ns, str(n), str(in_flight),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"store client exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    report = orjson.loads(out.splitlines()[-1])
    return float(report["seconds"]), float(report["cpu_seconds"])


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process so far, all its threads (the log writers too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _store_throughput(url: str, ns: str, n: int, *, fsync: bool = True, in_flight: int = 512,
                            client_process: bool = True) -> dict[str, Any]:
    """Acknowledged stores per second into 4 shards in this process; the storing client in its
    own process (``client_process``) or sharing this process's event loop with the shards.

    CPU per store is reported too (this process: shards, their log threads and, in one process,
    the client; the client process on its own): on a shared machine it moves less than rates do.
    """
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        async with Bus(url, namespace=ns, name="bench-store-shards") as shard_bus:
            shards = await _start_shards(shard_bus, "dur", capacity=n, data_dir=tmp, fsync=fsync)
            try:
                cpu0 = _cpu_seconds()
                elapsed, client_cpu = await _run_store_client(url, ns, n, in_flight, client_process)
                cpu = _cpu_seconds() - cpu0
                commits = sum(s._counts["commits"] for s in shards)
                stored = sum(len(s.store) for s in shards)
            finally:
                for s in shards:
                    await s.stop(0)
    assert stored == n, f"{stored} episodes stored of {n} acknowledged"
    return {"stores": n, "acked_per_s": n / elapsed, "fsync_batches": commits,
            "mean_batch": stored / max(commits, 1), "in_flight": in_flight, "fsync": fsync,
            "client_process": client_process, "shard_process_cpu_us": cpu / n * 1e6,
            "client_process_cpu_us": client_cpu / n * 1e6}


async def _bare_responder_rate(url: str, ns: str, n: int, in_flight: int = 512, *,
                               client_process: bool = True) -> dict[str, Any]:
    """The same store requests answered at once by one bare responder in this process (no shard,
    no log), the client placed as in `_store_throughput`: the request/reply ceiling of that
    setup, the reference for the store rates (and the CPU each side spends per request)."""
    async with Bus(url, namespace=ns, name="bench-bare-responder") as responder_bus:
        async def ack(msg: MemStore, meta: Meta) -> None:
            await responder_bus.respond(meta, MemStoreAck(shard="bare", episode_id=0))

        sub = await responder_bus.subscribe("mem.store", ack, model=MemStore, queue=STORE_QUEUE)
        await responder_bus.flush()
        try:
            cpu0 = _cpu_seconds()
            elapsed, client_cpu = await _run_store_client(url, ns, n, in_flight, client_process)
            cpu = _cpu_seconds() - cpu0
        finally:
            await sub.stop()
    return {"per_s": n / elapsed, "responder_process_cpu_us": cpu / n * 1e6,
            "client_process_cpu_us": client_cpu / n * 1e6, "client_process": client_process}


async def _run_store_client(url: str, ns: str, n: int, in_flight: int, client_process: bool) -> tuple[float, float]:
    """Send the n stores: (seconds, the client process's CPU seconds; 0 when it is this process)."""
    if client_process:
        return await _client_process_seconds(url, ns, n, in_flight)
    async with Bus(url, namespace=ns, name="bench-store-client") as client:
        return await _store_load(client, _store_vectors(n), in_flight), 0.0


def _store_vectors(n: int) -> np.ndarray:
    return _unit(np.random.default_rng(9), n)


async def _store_client_main(url: str, ns: str, n: int, in_flight: int) -> None:
    vectors = _store_vectors(n)
    async with Bus(url, namespace=ns, name="bench-store-client") as client:
        cpu0 = _cpu_seconds()
        seconds = await _store_load(client, vectors, in_flight)
        cpu = _cpu_seconds() - cpu0
    print(orjson.dumps({"seconds": seconds, "cpu_seconds": cpu, "stores": n}).decode(), flush=True)


async def run_memory_bench(out: Path, *, quick: bool) -> dict[str, Any]:
    """Run the memory benchmark, print a table, write JSON to ``out``; returns the results."""
    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {"dim": DIM, "shards": SHARDS, "k": K, "cpus": os.cpu_count(), "rows": []}
    async with EmbeddedServer() as server:
        queries = _unit(rng, 30)
        results["bus_overhead_p50_ms"] = await _bus_overhead(server.url, "benchmem", queries)
        for n in sizes:
            vectors = _unit(rng, n)
            exact, faiss_ms = await asyncio.to_thread(_faiss, vectors, queries)
            for dtype in ("float16", "float32") if n < 1_000_000 else ("float16",):
                row = await _recall_row(server.url, "benchmem", n, dtype, vectors, queries, exact, faiss_ms)
                results["rows"].append(row)
            del vectors
        n_store = 5_000 if quick else 20_000
        url = server.url
        # Stores and their reference alternate, and the best round of each counts: other work on
        # a shared machine only ever slows a round down, and it comes and goes within seconds.
        stores, bares = [], []
        for _ in range(2 if quick else 3):
            stores.append(await _store_throughput(url, "benchmem", n_store))
            bares.append(await _bare_responder_rate(url, "benchmem", n_store))
        results["store"] = max(stores, key=lambda r: r["acked_per_s"])
        results["store_bare_responder"] = max(bares, key=lambda r: r["per_s"])
        results["store_rounds_per_s"] = [r["acked_per_s"] for r in stores]
        results["store_bare_responder_rounds_per_s"] = [r["per_s"] for r in bares]
        results["store_no_fsync"] = await _store_throughput(url, "benchmem", n_store, fsync=False)
        results["store_one_process"] = await _store_throughput(url, "benchmem", n_store, client_process=False)
        results["store_one_process_bare_responder"] = await _bare_responder_rate(
            url, "benchmem", n_store, client_process=False)
    overhead = results["bus_overhead_p50_ms"]
    print(f"memory bench: {DIM}-d, {SHARDS} shards, top-{K}; "
          f"bus scatter-gather overhead p50 {overhead:.2f} ms")
    header = (f"{'episodes':>10}{'dtype':>9}{'bus p50 ms':>12}{'faiss p50 ms':>14}{'target ms':>11}"
              f"{'recall@10':>11}{'B/episode':>11}{'x raw f16':>10}{'RSS MB':>9}")
    print(header)
    print("-" * len(header))
    for r in results["rows"]:
        r["target_ms"] = 2 * r["faiss_p50_ms"] + overhead
        print(f"{r['episodes']:>10,}{r['dtype']:>9}{r['bus_p50_ms']:>12.2f}{r['faiss_p50_ms']:>14.2f}"
              f"{r['target_ms']:>11.2f}{r['recall_at_10']:>11.3f}{r['bytes_per_episode']:>11.0f}"
              f"{r['bytes_per_episode'] / (DIM * 2):>10.2f}{r['rss_mb']:>9.0f}")
    s = results["store"]
    print(f"store: {s['acked_per_s']:,.0f} acknowledged episodes/s (fsync group commit, {s['in_flight']} in "
          f"flight, mean {s['mean_batch']:.0f} episodes per fsync) — target >= 5,000/s")
    c = results["store_no_fsync"]
    b = results["store_bare_responder"]
    rounds = ", ".join(f"{r:,.0f}" for r in results["store_rounds_per_s"])
    bare_rounds = ", ".join(f"{r:,.0f}" for r in results["store_bare_responder_rounds_per_s"])
    print(f"  client in its own process; best of rounds ({rounds} /s; bare responder {bare_rounds} /s); "
          f"CPU per store: shard process {s['shard_process_cpu_us']:.0f} us, "
          f"client {s['client_process_cpu_us']:.0f} us")
    print(f"  without fsync: {c['acked_per_s']:,.0f} /s; the same requests answered by a bare responder (no shard, "
          f"no log; CPU per request {b['responder_process_cpu_us']:.0f} us, "
          f"client {b['client_process_cpu_us']:.0f} us): {b['per_s']:,.0f} /s; "
          f"acknowledged stores = {s['acked_per_s'] / b['per_s']:.2f}x that ceiling")
    o, ob = results["store_one_process"], results["store_one_process_bare_responder"]
    print(f"  client and shards in one process: {o['acked_per_s']:,.0f} /s vs a bare responder's {ob['per_s']:,.0f} /s"
          f" = {o['acked_per_s'] / ob['per_s']:.2f}x")
    data = orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    await asyncio.to_thread(_write, out, data)
    return results


if __name__ == "__main__":
    # The storing client of the store rows, in its own process: store-client URL NS N IN_FLIGHT.
    if len(sys.argv) != 6 or sys.argv[1] != "store-client":
        sys.exit("usage: python -m bench.memory store-client URL NAMESPACE STORES IN_FLIGHT")
    asyncio.run(_store_client_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
