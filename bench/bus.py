"""`brainbus bench bus`: the typed bus against raw nats-py on the same server, in the same run.

Three measurements, each as a ratio to its raw reference (these machines are shared and noisy,
so only ratios measured side by side mean anything):
1. publish→subscribe throughput of small control messages (typed models vs the same JSON bytes);
2. the same for 384-d float32 embeddings (typed model with the binary vector encoding vs the
   vector's raw 1536 bytes), plus the on-wire size of one message;
   both measured twice: publisher and subscriber in one process (sharing one core), and in two
   processes (an agent process publishing to a brain process, as the bus is used);
3. request/reply latency p50 (typed request and reply models vs raw bytes).
Rounds alternate raw and typed; the median of the rounds is reported.

Like with like: the same message count, server and process layout on both sides, and both
publishers wait for their flusher past 2 MiB pending. The raw side is plain nats-py as a user
would write it (a callback subscription: nats-py's per-subscription queue and task); the typed
side is what actors get (`subscribe_direct` into the handler, the bus's own MSG/HMSG parser).
So the ratios are "brainbus vs plain nats-py", not "the codec alone": the typed side's transport
is the cheaper of the two, and the codec pays for the headers, ids, timestamps and validation.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import nats
import nats.errors
import numpy as np
import orjson
from nats.aio.client import Client as NatsClient

from bus import Bus, CtlReply, CtlRequest, EmbeddedServer, Meta, RegionOutput, Reward, codec
from bus.errors import NoRespondersError

__all__ = ["run_bus_bench"]

ROUNDS = 5


async def _raw_throughput(url: str, subject: str, payload: bytes, n: int) -> float:
    pub = await nats.connect(url, name="bench-raw-pub")
    sub_nc = await nats.connect(url, name="bench-raw-sub")
    got = 0
    done = asyncio.Event()

    async def cb(msg: Any) -> None:
        nonlocal got
        got += 1
        if got == n:
            done.set()

    await sub_nc.subscribe(subject, cb=cb, pending_msgs_limit=n + 10)
    await sub_nc.flush()
    t0 = time.perf_counter()
    for _ in range(n):
        await pub.publish(subject, payload)
    await pub.flush()
    await asyncio.wait_for(done.wait(), 60)
    elapsed = time.perf_counter() - t0
    await pub.close()
    await sub_nc.close()
    return n / elapsed


async def _typed_throughput(url: str, subject: str, model: Any, n: int) -> float:
    pub = Bus(url, namespace="bench", name="bench-typed-pub")
    sub = Bus(url, namespace="bench", name="bench-typed-sub")
    await pub.connect()
    await sub.connect()
    got = 0
    done = asyncio.Event()
    cls = type(model)

    # The path every actor's mailbox uses: decode, then a quick synchronous hand-over.
    def handler(msg: Any, meta: Meta) -> None:
        nonlocal got
        got += 1
        if got == n:
            done.set()

    def bad(exc: Exception, meta: Meta) -> None:
        raise AssertionError(f"bench message failed to decode: {exc}")

    await sub.subscribe_direct(subject, handler, model=cls, on_bad=bad)
    await sub.flush()
    t0 = time.perf_counter()
    for _ in range(n):
        await pub.publish(subject, model, stimulus_id="s-1")
    await pub.flush()
    await asyncio.wait_for(done.wait(), 60)
    elapsed = time.perf_counter() - t0
    await pub.close()
    await sub.close()
    return n / elapsed


async def _raw_latency(url: str, n: int) -> list[float]:
    req_nc = await nats.connect(url, name="bench-raw-req")
    rep_nc = await nats.connect(url, name="bench-raw-rep")
    answer = codec.to_json(CtlReply(actor="x", verb="status", ok=True, state="running"))

    async def cb(msg: Any) -> None:
        await rep_nc.publish(msg.reply, answer)

    await rep_nc.subscribe("bench.req.raw", cb=cb)
    await rep_nc.flush()
    body = codec.to_json(CtlRequest(verb="status"))
    for attempt in range(50):  # warm-up: the route is in place before anything is timed
        try:
            await req_nc.request("bench.req.raw", body, timeout=2)
            break
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.02 * (attempt + 1))
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        await req_nc.request("bench.req.raw", body, timeout=2)
        lat.append(time.perf_counter() - t0)
    await req_nc.close()
    await rep_nc.close()
    return lat


async def _typed_latency(url: str, n: int) -> list[float]:
    req = Bus(url, namespace="bench", name="bench-typed-req")
    rep = Bus(url, namespace="bench", name="bench-typed-rep")
    await req.connect()
    await rep.connect()
    reply = CtlReply(actor="x", verb="status", ok=True, state="running")

    async def handler(msg: CtlRequest, meta: Meta) -> None:
        await rep.respond(meta, reply)

    await rep.subscribe("req.typed", handler, model=CtlRequest)
    await rep.flush()
    request = CtlRequest(verb="status")
    for attempt in range(50):  # warm-up, as for the raw side
        try:
            await req.request("req.typed", request, CtlReply, timeout=2)
            break
        except NoRespondersError:
            await asyncio.sleep(0.02 * (attempt + 1))
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        await req.request("req.typed", request, CtlReply, timeout=2)
        lat.append(time.perf_counter() - t0)
    await req.close()
    await rep.close()
    return lat


# The publisher of the two-process measurement: an agent process sending to a brain process is
# how the bus is used, and there each side has its own core.
_PUBLISHER = """
import asyncio, sys
import nats, numpy as np
from bus import Bus, RegionOutput, Reward, codec

async def main(url, mode, kind, n):
    if kind == "small":
        model = Reward(value=0.5, stimulus_id="s-12345", action="left")
        raw = codec.to_json(model)
    else:
        vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
        model = RegionOutput(region="cortex", kind="embedding", stimulus_id="s-12345", vector=vector)
        raw = vector.tobytes()
    if mode == "raw":
        nc = await nats.connect(url)
        async def send():
            await nc.publish("bench.x.raw", raw)
        flush, close = nc.flush, nc.close
    else:
        bus = Bus(url, namespace="bench", name="bench-typed-pub")
        await bus.connect()
        async def send():
            await bus.publish("x.typed", model, stimulus_id="s-12345")
        flush, close = bus.flush, bus.close
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(n):
        await send()
    await flush()
    await close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


async def _two_process_throughput(url: str, mode: str, kind: str, n: int) -> float:
    """Messages/s received here from a publisher in another process (raw or typed on both ends)."""
    got = 0
    done = asyncio.Event()

    def count() -> None:
        nonlocal got
        got += 1
        if got == n:
            done.set()

    async def raw_cb(msg: Any) -> None:
        count()

    # Raw on both ends is plain nats-py: the bus's own client parses faster than nats-py does.
    sub: Bus | NatsClient
    if mode == "raw":
        sub = await nats.connect(url, name="bench-raw-sub")
        await sub.subscribe("bench.x.raw", cb=raw_cb, pending_msgs_limit=n + 10)
    else:
        sub = Bus(url, namespace="bench", name="bench-sub")
        await sub.connect()
        model = Reward if kind == "small" else RegionOutput

        def bad(exc: Exception, meta: Meta) -> None:
            raise AssertionError(f"bench message failed to decode: {exc}")

        await sub.subscribe_direct("x.typed", lambda msg, meta: count(), model=model, on_bad=bad)
    await sub.flush()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _PUBLISHER, url, mode, kind, str(n),
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    await proc.stdout.readline()
    t0 = time.perf_counter()
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - t0
    await proc.wait()
    await sub.close()
    return n / elapsed


async def run_bus_bench(out: Path, *, quick: bool = False) -> dict[str, Any]:
    n_small, n_vec, n_req = (4000, 2000, 300) if quick else (40000, 15000, 2000)
    small = Reward(value=0.5, stimulus_id="s-12345", action="left")
    vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    embedding = RegionOutput(region="cortex", kind="embedding", stimulus_id="s-12345", vector=vector)
    small_raw = codec.to_json(small)
    vec_raw = vector.tobytes()
    body, block = codec.encode_wire(embedding, source="cortex", stimulus_id="s-12345")
    sizes = {"raw_bytes": len(vec_raw), "typed_wire_bytes": len(body) + len(block)}  # what `Bus.publish` sends

    runs: dict[str, list[float]] = {k: [] for k in ("small_raw", "small_typed", "vec_raw", "vec_typed",
                                                    "x_small_raw", "x_small_typed", "x_vec_raw", "x_vec_typed")}
    lat_raw: list[float] = []
    lat_typed: list[float] = []
    async with EmbeddedServer() as server:
        url = server.url
        for _ in range(ROUNDS):
            runs["small_raw"].append(await _raw_throughput(url, "bench.small.raw", small_raw, n_small))
            runs["small_typed"].append(await _typed_throughput(url, "small.typed", small, n_small))
            runs["vec_raw"].append(await _raw_throughput(url, "bench.vec.raw", vec_raw, n_vec))
            runs["vec_typed"].append(await _typed_throughput(url, "vec.typed", embedding, n_vec))
            for kind, n in (("small", n_small), ("vec", n_vec)):
                for mode in ("raw", "typed"):
                    runs[f"x_{kind}_{mode}"].append(await _two_process_throughput(url, mode, kind, n))
            lat_raw += await _raw_latency(url, n_req // ROUNDS)
            lat_typed += await _typed_latency(url, n_req // ROUNDS)

    med = {k: statistics.median(v) for k, v in runs.items()}
    p50_raw, p50_typed = statistics.median(lat_raw), statistics.median(lat_typed)
    rows = [
        ("small control msgs/s", med["small_typed"], med["small_raw"], med["small_typed"] / med["small_raw"],
         ">= 0.75"),
        ("384-d embedding msgs/s", med["vec_typed"], med["vec_raw"], med["vec_typed"] / med["vec_raw"], ">= 0.60"),
        ("  two processes, small", med["x_small_typed"], med["x_small_raw"],
         med["x_small_typed"] / med["x_small_raw"], ">= 0.75"),
        ("  two processes, 384-d", med["x_vec_typed"], med["x_vec_raw"], med["x_vec_typed"] / med["x_vec_raw"],
         ">= 0.60"),
        ("request/reply p50 ms", p50_typed * 1e3, p50_raw * 1e3, p50_typed / p50_raw, "<= 1.30"),
        ("embedding bytes on wire", sizes["typed_wire_bytes"], sizes["raw_bytes"],
         sizes["typed_wire_bytes"] - sizes["raw_bytes"], "< +256 B"),
    ]
    results = {
        "benchmark": "bus",
        "rounds": ROUNDS,
        "messages": {"small": n_small, "embedding": n_vec, "requests": n_req},
        "small_throughput": {"typed": med["small_typed"], "raw": med["small_raw"],
                             "ratio": med["small_typed"] / med["small_raw"], "target": 0.75},
        "embedding_throughput": {"typed": med["vec_typed"], "raw": med["vec_raw"],
                                 "ratio": med["vec_typed"] / med["vec_raw"], "target": 0.6},
        "two_process_small_throughput": {"typed": med["x_small_typed"], "raw": med["x_small_raw"],
                                         "ratio": med["x_small_typed"] / med["x_small_raw"], "target": 0.75},
        "two_process_embedding_throughput": {"typed": med["x_vec_typed"], "raw": med["x_vec_raw"],
                                             "ratio": med["x_vec_typed"] / med["x_vec_raw"], "target": 0.6},
        "request_p50_ms": {"typed": p50_typed * 1e3, "raw": p50_raw * 1e3, "ratio": p50_typed / p50_raw,
                           "target": 1.3},
        "embedding_wire_bytes": {**sizes, "overhead": sizes["typed_wire_bytes"] - sizes["raw_bytes"],
                                 "target_overhead": 256},
        "rounds_detail": runs,
    }
    header = f"{'measure':<26}{'brainbus':>12}{'raw nats-py':>14}{'ratio':>10}  target"
    print(header)
    print("-" * len(header))
    for name, typed, raw, ratio, target in rows:
        unit = "B" if "bytes" in name else ""
        ratio_text = f"+{ratio:.0f} B" if "bytes" in name else f"{ratio:.2f}x"
        print(f"{name:<26}{typed:>12,.2f}{raw:>14,.2f}{ratio_text:>10}  {target}{unit and ''}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return results
