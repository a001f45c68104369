"""`brainbus bench latency`: stimulus → motor action through the default brain.

Measured in one run, against references from the same run:
1. closed loop: one vector stimulus at a time, time until its `motor.action`; the workspace's
   collection window (reported in each broadcast) is subtracted, as the targets exclude it;
   the reference is one raw nats-py hop (request/reply p50 / 2) times the 7 hops of the path
   (stimulus → thalamus → cortex → workspace → prefrontal → basal ganglia → motor → agent);
2. sustained: an open-loop stream at a fixed rate above the target (1,250/s for a 1,000/s
   target), its answering rate measured from the first answer to the last (a brain that cannot
   keep up answers at its own pace, its backlog growing); every stimulus traced by its id to
   the last stage it reached; the stimuli that stopped after a stage must be matched by the counters of the
   actor of the next stage (mailbox drops, rejections, workspace losers, gated in sleep) — what is
   not is "uncounted" and must be zero; the brain's CPU time per answer (its process and its
   process groups) is reported too, as the figure least moved by other work on the machine.
   Run twice: the brain in one process, then over two (`processes:`, the senses apart);
3. text through MiniLM: the brain's sustained text rate (2,048 texts sent at once, answers over
   the time to the last one) vs the encoder's own batched throughput measured in this process;
   the two take turns, a warm-up pass each and then three, the best on each side kept (skipped
   with --quick). Run twice too, in one process and over two.
The brain runs as a separate process (`brainbus run`), reached only over the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import nats
import numpy as np
import orjson
import yaml

from bus import EmbeddedServer

__all__ = ["run_latency_bench"]

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
HOPS = 7
#: Stimuli/s offered in the sustained test: above the 1,000/s target, so the answering rate shows
#: what the brain can do rather than what it was given.
SUSTAINED_OFFERED = 1250
#: The process group of the two-process run: the senses, about half of the brain's work per stimulus.
SENSES = ["thalamus", "language", "visual"]
ACTIONS = ["a", "b", "c", "d"]


class BrainProcess:
    """`brainbus run` against our server, in its own data directory."""

    def __init__(self, url: str, namespace: str, config: Path) -> None:
        self.dir = tempfile.mkdtemp(prefix="brainbus-bench-")
        self.args = [sys.executable, "-m", "actors.cli", "run", "--nats", url, "--namespace", namespace,
                     "--config", str(config), "--data-dir", self.dir,
                     "--log-level", os.environ.get("BENCH_BRAIN_LOG", "warning")]
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> BrainProcess:
        log = open(Path(self.dir) / "brain.log", "wb")  # noqa: ASYNC230 (opened once, before the run)
        self.proc = await asyncio.create_subprocess_exec(*self.args, stdout=log, stderr=log)
        return self

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) of the brain and its process groups so far; None off Linux."""
        if self.proc is None:
            return None
        try:
            return _tree_cpu_seconds(self.proc.pid)
        except OSError:
            return None

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(2)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def _tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process `root` and its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += (int(stats[pid][11]) + int(stats[pid][12])) / tick
        todo.extend(children.get(pid, []))
    return total


async def _wait_ready(nc: Any, ns: str, actors: list[str], timeout: float = 60) -> None:
    """Until each actor heartbeats, and not as `loading` (a thalamus loading its language encoder
    heartbeats at once, and texts sent meanwhile wait for the encoder)."""
    seen: set[str] = set()
    sub = await nc.subscribe(f"{ns}.sys.heartbeat.*")
    deadline = time.monotonic() + timeout
    try:
        while not set(actors) <= seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"brain not ready: heartbeats only from {sorted(seen)}")
            msg = await sub.next_msg(timeout=left)
            if orjson.loads(msg.data).get("state") != "loading":
                seen.add(msg.subject.rsplit(".", 1)[1])
    finally:
        await sub.unsubscribe()


async def _raw_hop(url: str, n: int) -> float:
    a = await nats.connect(url)
    b = await nats.connect(url)

    async def echo(msg: Any) -> None:
        await b.publish(msg.reply, msg.data)

    await b.subscribe("bench.hop", cb=echo)
    await b.flush()
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        await a.request("bench.hop", b"x" * 64, timeout=2)
        lat.append(time.perf_counter() - t0)
    await a.close()
    await b.close()
    return statistics.median(lat) / 2


async def _heartbeats(nc: Any, ns: str, wait: float = 1.5) -> dict[str, dict[str, Any]]:
    beats: dict[str, dict[str, Any]] = {}

    async def keep(msg: Any) -> None:
        beats[msg.subject.rsplit(".", 1)[1]] = orjson.loads(msg.data)

    sub = await nc.subscribe(f"{ns}.sys.heartbeat.*", cb=keep)
    await asyncio.sleep(wait)
    await sub.unsubscribe()
    return beats


# The path of a vector stimulus, and the actor whose counters explain a loss after each stage.
STAGES = [("stim.vector", "thalamus"), ("region.thalamus.out", "visual"), ("gw.bid", "workspace"),
          ("gw.broadcast", "prefrontal"), ("region.prefrontal.out", "basal_ganglia"),
          ("region.basal_ganglia.out", "motor"), ("motor.action", "")]


def _losses_by_actor(beats: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Each path actor's counters of messages it did not pass on (drops, rejections, lost bids)."""
    counted = {a: int(b.get("dropped", 0)) + int(b.get("rejected", 0)) for a, b in beats.items()}
    stats = {a: b.get("stats", {}) for a, b in beats.items()}
    counted["thalamus"] = counted.get("thalamus", 0) + int(stats.get("thalamus", {}).get("gated", 0))
    verdicts = stats.get("workspace", {}).get("verdicts", {})
    counted["workspace"] = counted.get("workspace", 0) + sum(int(v) for k, v in verdicts.items() if k != "won")
    unanswered = int(stats.get("basal_ganglia", {}).get("unanswered", 0))
    counted["basal_ganglia"] = counted.get("basal_ganglia", 0) + unanswered
    return counted


async def _closed_loop(nc: Any, ns: str, n: int, rng: np.random.Generator) -> dict[str, Any]:
    actions: dict[str, float] = {}
    windows: dict[str, float] = {}
    arrived = asyncio.Event()

    async def on_action(msg: Any) -> None:
        actions[orjson.loads(msg.data)["stimulus_id"]] = time.perf_counter()
        arrived.set()

    sub_a = await nc.subscribe(f"{ns}.motor.action", cb=on_action)
    full, ex_window, missing = [], [], 0
    sub_b = await nc.subscribe(f"{ns}.gw.broadcast")
    for i in range(n):
        sid = f"c{i}"
        arrived.clear()
        t0 = time.perf_counter()
        vec = rng.standard_normal(384).astype(np.float32).tolist()
        await nc.publish(f"{ns}.stim.vector", orjson.dumps({"vector": vec, "id": sid}))
        try:
            while sid not in actions:
                await asyncio.wait_for(arrived.wait(), 1.0)
                arrived.clear()
        except TimeoutError:
            missing += 1
            continue
        full.append(actions[sid] - t0)
    # Each broadcast's detail says how long its collection window stayed open.
    while True:
        try:
            msg = await sub_b.next_msg(timeout=0.2)
        except Exception:
            break
        bsid: str | None = (msg.headers or {}).get("Bb-Sid")
        detail = _broadcast_detail(msg)
        if bsid and "window_ms" in detail:
            windows[bsid] = float(detail["window_ms"]) / 1000
    await sub_a.unsubscribe()
    await sub_b.unsubscribe()
    for i, t in enumerate(full):
        ex_window.append(t - windows.get(f"c{i}", 0.0))
    return {"n": n, "missing": missing, "p50_ms": _pct(full, 50), "p99_ms": _pct(full, 99),
            "p50_ex_window_ms": _pct(ex_window, 50), "p99_ex_window_ms": _pct(ex_window, 99),
            "mean_window_ms": statistics.mean(windows.values()) * 1000 if windows else 0.0}


def _broadcast_detail(msg: Any) -> dict[str, Any]:
    """The JSON part of a broadcast body (its vector bytes follow it, see the Bb-Vec header)."""
    spec = (msg.headers or {}).get("Bb-Vec", "")
    vec_bytes = sum({"f32": 4, "f16": 2}[d] * int(n) for _, d, n in (s.split(":") for s in spec.split(",") if s))
    body = orjson.loads(msg.data[: len(msg.data) - vec_bytes])
    detail = body.get("detail", {})
    return detail if isinstance(detail, dict) else {}


def _pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values) * 1000, q))


async def _sustained(nc: Any, ns: str, rate: int, seconds: float, make: Any,
                     brain: BrainProcess | None = None) -> dict[str, Any]:
    """Open loop at `rate`; every stimulus is traced by its id to the last stage it reached.

    With `brain`, also the brain's CPU time per answered stimulus: on a shared machine the
    answered rate follows the CPU the brain gets, its CPU cost per stimulus much less so."""
    stage_of = {f"{ns}.{subject}": i for i, (subject, _) in enumerate(STAGES)}
    reached: dict[str, int] = {}
    last_stage = len(STAGES) - 1
    answer_times: list[float] = []

    async def trace(msg: Any) -> None:
        i = stage_of.get(msg.subject)
        sid = (msg.headers or {}).get("Bb-Sid") if i else None
        if i == 0:
            reached.setdefault(orjson.loads(msg.data)["id"], 0)
        elif sid is not None and i is not None and i > reached.get(sid, -1):
            reached[sid] = i
            if i == last_stage:
                answer_times.append(time.perf_counter())

    before = _losses_by_actor(await _heartbeats(nc, ns, 1.2))
    sub = await nc.subscribe(f"{ns}.>", cb=trace, pending_msgs_limit=1_000_000)
    total = int(rate * seconds)
    payloads = [make(i) for i in range(min(total, 2000))]
    cpu0 = brain.cpu_seconds() if brain is not None else None
    t0 = time.perf_counter()
    for i in range(total):
        await nc.publish(f"{ns}.stim.{payloads[i % len(payloads)][0]}", payloads[i % len(payloads)][1](i))
        ahead = (i + 1) / rate - (time.perf_counter() - t0)
        if ahead > 0.001:
            await asyncio.sleep(ahead)
    await nc.flush()
    sent_s = time.perf_counter() - t0
    answered = 0
    # Until the brain has answered all it will (nothing new for a second): a brain slower than the
    # offered rate drains its mailboxes long after the last send, and what it still answers then
    # was not lost.
    for _ in range(60):
        await asyncio.sleep(1.0)
        if len(answer_times) == answered:
            break
        answered = len(answer_times)
    await sub.unsubscribe()
    cpu1 = brain.cpu_seconds() if brain is not None else None
    after = _losses_by_actor(await _heartbeats(nc, ns, 1.2))
    lost_after = [0] * len(STAGES)
    for i in reached.values():
        lost_after[i] += 1
    stages = []
    uncounted = total - len(reached)  # never seen on stim.vector at all
    for i, (subject, actor) in enumerate(STAGES[:-1]):
        counted = after.get(actor, 0) - before.get(actor, 0)
        stages.append({"last_reached": subject, "stimuli": lost_after[i], "explained_by": actor,
                       "counted": counted})
        uncounted += max(0, lost_after[i] - counted)
    # The answering rate over the stretch from the first answer to the last: what the brain kept
    # up (offered faster than it can answer, its backlog grows and the stretch with it).
    span = answer_times[-1] - answer_times[0] if len(answer_times) > 1 else 0.0
    result = {"offered_rate": rate, "sent": total, "send_seconds": sent_s, "answered": lost_after[-1],
              "answered_rate": (len(answer_times) - 1) / span if span > 0 else 0.0,
              "last_answer_after_last_send_s": answer_times[-1] - t0 - sent_s if answer_times else None,
              "stages": stages, "uncounted": uncounted}
    if cpu0 is not None and cpu1 is not None and lost_after[-1]:
        # Idle seconds after the last answer cost next to nothing (heartbeats, hormone ticks).
        result["brain_cpu_ms_per_answer"] = (cpu1 - cpu0) * 1000 / lost_after[-1]
    return result


def _split_config(path: Path, group: list[str]) -> Path:
    """A copy of the config at `path` with the actors of `group` in a process group of their own."""
    config = yaml.safe_load(path.read_text())
    config["processes"] = [{"name": "senses", "actors": group}]
    copy = Path(tempfile.mkdtemp(prefix="brainbus-bench-")) / path.name
    copy.write_text(yaml.safe_dump(config))
    return copy


async def run_latency_bench(out: Path, *, quick: bool = False) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {"benchmark": "latency", "hops": HOPS}
    async with EmbeddedServer() as server:
        nc = await nats.connect(server.url, name="bench-latency")
        ns = "lat"
        async with BrainProcess(server.url, ns, CONFIGS / "small.yaml") as brain:
            await _wait_ready(nc, ns, ["thalamus", "language", "visual", "workspace", "prefrontal",
                                       "basal_ganglia", "motor", "hormones", "amygdala"])
            await nc.publish(f"{ns}.env.actions", orjson.dumps({"actions": ACTIONS}))
            await nc.flush()
            await asyncio.sleep(0.2)
            hop = await _raw_hop(server.url, 300 if quick else 1000)
            closed = await _closed_loop(nc, ns, 200 if quick else 1000, rng)
            closed["raw_hop_ms"] = hop * 1000
            closed["ratio_to_raw_path"] = closed["p50_ex_window_ms"] / (HOPS * hop * 1000)
            results["closed_loop"] = closed

            def vector(i: int) -> tuple[str, Any]:
                vec = rng.standard_normal(384).astype(np.float32).tolist()
                return "vector", lambda j, v=vec: orjson.dumps({"vector": v, "id": f"s{j}"})

            results["sustained"] = await _sustained(nc, ns, SUSTAINED_OFFERED, 2.0 if quick else 5.0, vector, brain)
        # The same brain over two OS processes (config `processes:`), the way a brain uses a
        # second core: the senses (thalamus and cortices) in one, the rest in the other.
        ns = "lat2"
        async with BrainProcess(server.url, ns, _split_config(CONFIGS / "small.yaml", SENSES)) as brain:
            await _wait_ready(nc, ns, ["thalamus", "language", "visual", "workspace", "prefrontal",
                                       "basal_ganglia", "motor", "hormones", "amygdala"])
            await nc.publish(f"{ns}.env.actions", orjson.dumps({"actions": ACTIONS}))
            await nc.flush()
            await asyncio.sleep(0.2)
            results["sustained_two_processes"] = await _sustained(
                nc, ns, SUSTAINED_OFFERED, 2.0 if quick else 5.0, vector, brain)
        if not quick:
            missing = _minilm_missing()
            if missing is None:
                results["text"] = await _text_throughput(server.url, nc)
            else:
                results["text_skipped"] = missing
        await nc.close()
    _print(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return results


def _minilm_missing() -> str | None:
    """Why the text part cannot run here (the `minilm` extra is not installed), or None."""
    from regions.encoders import MiniLMEncoder

    try:
        MiniLMEncoder.model_path()
    except RuntimeError as exc:
        return str(exc)
    return None


#: Texts per pass of the text part: long enough that the rate is the pipeline's throughput, with
#: its start (the first answer waits for a whole encoder batch) and its end (the last texts go on
#: through the brain after the encoders are done) a small part of the pass.
TEXTS_PER_PASS = 2048
#: Passes measured on each side, the best kept: a pass slowed down by other work on the machine
#: must flatter neither the encoder nor the brain.
TEXT_PASSES = 3


async def _text_throughput(url: str, nc: Any) -> dict[str, Any]:
    from regions.encoders import MiniLMEncoder

    topics = ["fruit", "cars", "music", "rain"]
    words = [f"stimulus number {i} about {topics[i % 4]}" for i in range(TEXTS_PER_PASS)]
    encoder = MiniLMEncoder()
    await asyncio.to_thread(encoder.load)

    async def encoder_alone() -> float:
        """One pass of the encoder alone: torch's default threads, batches of 64, back to back."""
        t0 = time.perf_counter()
        for i in range(0, len(words), 64):
            await asyncio.to_thread(encoder.encode, words[i:i + 64])
        return len(words) / (time.perf_counter() - t0)

    one = await _brain_text_rate(url, nc, "txt", CONFIGS / "default.yaml", words, encoder_alone)
    # As for vectors: the senses (the thalamus with its encoders, and the cortices) in a process
    # of their own, so the event loop that feeds the encoders is not the one running the rest.
    two = await _brain_text_rate(url, nc, "txt2", _split_config(CONFIGS / "default.yaml", SENSES), words,
                                 encoder_alone)
    return {"texts": len(words), **one, "two_processes": two}


async def _brain_text_rate(url: str, nc: Any, ns: str, config: Path, words: list[str],
                           encoder_alone: Callable[[], Awaitable[float]]) -> dict[str, Any]:
    """The brain's text rate against the encoder's own, each the best of `TEXT_PASSES` passes
    after a warm-up pass; the pace of the thalamus in the brain's best pass; and where the
    brain's CPU went. The encoder's passes and the brain's alternate, so a change in what else
    the machine runs meanwhile weighs on both (the brain waits idle during the encoder's)."""
    async with BrainProcess(url, ns, config) as brain:
        await _wait_ready(nc, ns, ["thalamus", "basal_ganglia", "motor"], timeout=120)
        await nc.publish(f"{ns}.env.actions", orjson.dumps({"actions": ACTIONS}))
        await nc.flush()
        await asyncio.sleep(0.2)

        async def one_pass(tag: str) -> tuple[float, int, float]:
            """Send every word at once: the rate of answers up to the last one, how many were
            answered, and when (wall clock) the pass began."""
            answered: set[str] = set()
            all_in = asyncio.Event()
            last_answer = [0.0]

            async def on_action(msg: Any) -> None:
                sid = orjson.loads(msg.data)["stimulus_id"]
                if sid.startswith(tag):
                    answered.add(sid)
                    last_answer[0] = time.perf_counter()
                    if len(answered) == len(words):
                        all_in.set()

            sub = await nc.subscribe(f"{ns}.motor.action", cb=on_action)
            began, t0 = time.time(), time.perf_counter()
            for i, w in enumerate(words):
                await nc.publish(f"{ns}.stim.text", orjson.dumps({"text": w, "id": f"{tag}{i}"}))
            await nc.flush()
            # Until every text is answered, or none is for a second after the first answer: the
            # workspace lets some texts go (a near-copy of a text that just won, a bid that found no
            # capacity for too long): counted verdicts, no action.
            deadline = t0 + 120
            while not all_in.is_set() and time.perf_counter() < deadline:
                before = len(answered)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_in.wait(), 1.0)
                if answered and len(answered) == before:
                    break
            await sub.unsubscribe()
            return len(answered) / max(last_answer[0] - t0, 1e-9), len(answered), began

        await encoder_alone()  # both warm up first
        await one_pass("warm-")
        # The counters come from heartbeats, so watching costs the measured passes nothing: the
        # thalamus's percepts (encoded and passed on) and the time of its last one give its pace;
        # its encoder threads' CPU time against the whole brain's says where the CPU went.
        first = seen = await _text_counters(nc, ns)
        passes, encoder_rates, brain_cpu = [], [], 0.0
        for n in range(TEXT_PASSES):
            encoder_rates.append(await encoder_alone())
            cpu0 = brain.cpu_seconds()
            rate, answered, began = await one_pass(f"t{n}-")
            cpu1 = brain.cpu_seconds()
            brain_cpu += (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else math.nan
            now = await _text_counters(nc, ns)
            perceived = (now.perceived - seen.perceived) / max((now.last_percept_at or began) - began, 1e-9)
            passes.append((rate, answered, perceived))
            seen = now
    brain_rate, answered, perceived_rate = max(passes)
    encoder_rate = max(encoder_rates)
    result: dict[str, Any] = {"brain_rate": brain_rate, "brain_rates": [round(p[0], 1) for p in passes],
                              "encoder_batched_rate": encoder_rate,
                              "encoder_rates": [round(r, 1) for r in encoder_rates],
                              "ratio": brain_rate / encoder_rate,
                              "answered": answered, "perceived_rate": perceived_rate,
                              "workspace_verdicts": dict(seen.verdicts - first.verdicts)}
    if first.encoder_cpu_s is not None and seen.encoder_cpu_s is not None and math.isfinite(brain_cpu):
        encoders = seen.encoder_cpu_s - first.encoder_cpu_s
        texts = len(words) * TEXT_PASSES
        result["encoder_cpu_ms_per_text"] = encoders * 1000 / texts
        result["other_cpu_ms_per_text"] = (brain_cpu - encoders) * 1000 / texts
    return result


class TextCounters(NamedTuple):
    """What the thalamus's and the workspace's heartbeats say about texts so far."""

    perceived: int  # percepts the thalamus passed on
    last_percept_at: float | None  # wall clock of the last one
    encoder_cpu_s: float | None  # CPU seconds of its encoder threads
    verdicts: Counter[str]  # the workspace's verdicts on bids (won, or why not)


async def _text_counters(nc: Any, ns: str) -> TextCounters:
    beats = await _heartbeats(nc, ns, 1.2)
    thalamus = beats.get("thalamus", {}).get("stats", {})
    cpu, last = thalamus.get("encoder_cpu_s"), thalamus.get("last_percept_at")
    return TextCounters(int(thalamus.get("perceived", 0)), float(last) if last is not None else None,
                        float(cpu) if cpu is not None else None,
                        Counter(beats.get("workspace", {}).get("stats", {}).get("verdicts", {})))


def _sustained_rows(label: str, s: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    if s is None:
        return []
    rows = [(f"{label}: offered / answered", f"{s['offered_rate']} / {s['answered_rate']:.0f} per s", ">= 1000/s"),
            (f"{label}: uncounted loss", f"{s['uncounted']} of {s['sent']}", "0")]
    if "brain_cpu_ms_per_answer" in s:
        ms = s["brain_cpu_ms_per_answer"]
        rows.append((f"{label}: brain CPU per answer", f"{ms:.2f} ms = {1000 / ms:.0f}/s per core", ""))
    return rows


def _print(r: dict[str, Any]) -> None:
    c, s = r["closed_loop"], r["sustained"]
    rows = [
        ("stimulus→action p50 (ex window)", f"{c['p50_ex_window_ms']:.2f} ms", "<= 5 ms"),
        ("stimulus→action p99 (ex window)", f"{c['p99_ex_window_ms']:.2f} ms", "<= 25 ms"),
        ("workspace window (mean)", f"{c['mean_window_ms']:.2f} ms", "excluded"),
        ("raw nats-py hop p50", f"{c['raw_hop_ms']:.3f} ms", "reference"),
        (f"brain p50 / ({HOPS} raw hops)", f"{c['ratio_to_raw_path']:.1f}x", ""),
        *_sustained_rows("sustained", s),
        *_sustained_rows("  two processes", r.get("sustained_two_processes")),
    ]
    if "text" in r:
        t = r["text"]
        for label, run in (("text via MiniLM", t), ("  two processes", t["two_processes"])):
            rows.append((f"{label}: brain / encoder",
                         f"{run['brain_rate']:.0f} / {run['encoder_batched_rate']:.0f} per s = {run['ratio']:.2f}x",
                         ">= 0.8x"))
            rows.append((f"{label}: answered", f"{run['answered']} of {t['texts']}", ""))
            rows.append((f"{label}: perceived (thalamus out)", f"{run['perceived_rate']:.0f} per s", ""))
            let_go = ", ".join(f"{n} {v}" for v, n in sorted(run["workspace_verdicts"].items()) if v != "won")
            rows.append((f"{label}: let go by the workspace", let_go or "none", ""))
            if "encoder_cpu_ms_per_text" in run:
                split = f"encoders {run['encoder_cpu_ms_per_text']:.2f} + rest {run['other_cpu_ms_per_text']:.2f} ms"
                rows.append((f"{label}: brain CPU per text", split, ""))
    elif "text_skipped" in r:
        rows.append(("text via MiniLM", "skipped (no minilm extra)", ">= 0.8x"))
    width = max(len(a) for a, _, _ in rows)
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>28}  {target}")
    for layout, run in (("one process", s), ("two processes", r.get("sustained_two_processes"))):
        for stage in run["stages"] if run else ():
            if stage["stimuli"]:
                print(f"  {layout}: {stage['stimuli']} stimuli stopped after {stage['last_reached']}; "
                      f"{stage['explained_by']} counted {stage['counted']} drops/losses")
