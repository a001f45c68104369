"""Probabilistic reversal learning over semantic categories: an external agent on raw NATS.

This teacher is an *environment*: it knows nothing of brainbus beyond the subjects of the public
contract (DESIGN §3) and uses only nats-py, so any NATS client in any language could do the same.

The task. Words from four semantic categories (fruits, vehicles, colours, animals) are shown one
at a time; each category has one correct action among four (``press_a`` .. ``press_d``). The
correct action is rewarded (+1) with p = 0.8 and punished (-1) otherwise; any other action is
rewarded with p = 0.2. So a perfect agent earns reward on 80 % of trials and a random one on
0.25 * 0.8 + 0.75 * 0.2 = 35 %. After a fixed number of trials (a *phase*) the mapping reverses:
every category's correct action moves to a different one (a random derangement). Four actions
rather than two because then each category needs its own answer (a 4-way discrimination with a
wide gap between chance and ceiling) instead of two categories sharing one response, and a
reversal cannot be undone by one global "do the other thing" rule.

Generalization. Each category also has held-out words that are never shown during training. At
the end of every phase they are presented once each, in random order, as *probes*: the answer is
scored against the category's current correct action, and no reward is sent (a reward would
teach the very words being tested). An unanswered probe counts as wrong.

Protocol per trial: ``NS.stim.text {"text", "id"}`` -> wait for ``NS.motor.action`` naming that
id (the motor gate may withhold it: ``NS.region.motor.out`` with kind ``withheld``, or nothing
within ``--timeout``: the trial is unanswered, counted, and gets no reward) ->
``NS.feedback.reward {"value": +-1, "stimulus_id"}`` -> ``--iti`` seconds pause. Trials are
strictly sequential, so each reward reaches the brain before the next stimulus.

The whole trial sequence (words, categories, correct actions and the uniform draw ``u`` that
decides each outcome: rewarded iff ``u < 0.8`` for a correct action, ``u < 0.2`` otherwise) is a
function of ``--seed`` alone, so other agents can be scored on exactly the same trials with the
same luck (common random numbers); ``--json`` writes it with the brain's answers.

Run against a brain started with ``brainbus run`` in the same directory::

    python examples/reversal_teacher.py --trials 120 --reversals 2 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nats

ACTIONS = ["press_a", "press_b", "press_c", "press_d"]
P_CORRECT = 0.8
P_WRONG = 0.2
HORMONES = ("dopamine", "serotonin", "norepinephrine", "acetylcholine")
CRITERION = (8, 10)  # 8 correct choices among the last 10 trials

#: Training words (10 per category) and held-out words (6 per category, never trained). Held-out
#: words share no long letter sequence with a training word of their category (no "pineapple"
#: after "apple"), so a lexical encoder cannot pass the probes by spelling alone.
CATEGORIES: dict[str, dict[str, list[str]]] = {
    "fruit": {
        "train": ["apple", "banana", "grape", "mango", "pear", "fig", "coconut", "guava", "melon", "lemon"],
        "test": ["apricot", "kiwi", "raspberry", "papaya", "lychee", "tangerine"],
    },
    "vehicle": {
        "train": ["car", "bus", "truck", "bicycle", "motorcycle", "tractor", "van", "taxi", "scooter",
                  "wagon"],
        "test": ["ambulance", "tram", "lorry", "jeep", "limousine", "sedan"],
    },
    "colour": {
        "train": ["red", "blue", "green", "yellow", "purple", "pink", "brown", "black", "white", "grey"],
        "test": ["crimson", "turquoise", "magenta", "beige", "scarlet", "maroon"],
    },
    "animal": {
        "train": ["dog", "cat", "horse", "cow", "lion", "tiger", "rabbit", "sheep", "elephant", "monkey"],
        "test": ["giraffe", "zebra", "wolf", "donkey", "squirrel", "kangaroo"],
    },
}


@dataclass
class Trial:
    """One stimulus presentation and, once run, the brain's answer."""

    i: int
    phase: int
    kind: str  # "train" (rewarded) or "probe" (held-out word, never rewarded)
    word: str
    category: str
    correct: str  # the category's correct action in this phase
    u: float  # the outcome draw: rewarded iff u < P_CORRECT (correct action) or u < P_WRONG
    action: str | None = None
    answered: bool = False
    rewarded: bool | None = None
    latency_ms: float | None = None
    confidence: float | None = None
    levels: dict[str, float] | None = None  # the hormone levels last published when the answer came
    t_s: float | None = None  # when the stimulus was sent, seconds since the first trial


def derangement(rng: random.Random, items: list[str]) -> dict[str, str]:
    """A random permutation of ``items`` that moves every item (so a reversal changes every answer)."""
    while True:
        shuffled = items[:]
        rng.shuffle(shuffled)
        if all(a != b for a, b in zip(items, shuffled, strict=True)):
            return dict(zip(items, shuffled, strict=True))


def make_trials(seed: int, trials_per_phase: int, reversals: int, words_per_category: int = 10,
                probes: bool = True, n_actions: int = 4) -> tuple[list[Trial], list[dict[str, str]]]:
    """The full trial sequence and the category -> correct action mapping of every phase.

    Training words are shown in shuffled passes over all of them, so every word (and every
    category) appears equally often within each phase. With two actions (``n_actions=2``, the
    easier variant for smoke tests) two categories share each action and a reversal swaps them.
    """
    rng = random.Random(seed)
    cats = list(CATEGORIES)
    actions = ACTIONS[:n_actions]
    rng.shuffle(actions)
    mapping = {c: actions[i % n_actions] for i, c in enumerate(cats)}
    mappings = [mapping]
    for _ in range(reversals):
        move = derangement(rng, ACTIONS[:n_actions])
        mapping = {c: move[a] for c, a in mapping.items()}
        mappings.append(mapping)
    train = [(w, c) for c in cats for w in CATEGORIES[c]["train"][:words_per_category]]
    test = [(w, c) for c in cats for w in CATEGORIES[c]["test"]]
    trials: list[Trial] = []
    for phase, mp in enumerate(mappings):
        shown: list[tuple[str, str]] = []
        while len(shown) < trials_per_phase:
            block = train[:]
            rng.shuffle(block)
            shown.extend(block)
        for w, c in shown[:trials_per_phase]:
            trials.append(Trial(len(trials), phase, "train", w, c, mp[c], rng.random()))
        if probes:
            block = test[:]
            rng.shuffle(block)
            for w, c in block:
                trials.append(Trial(len(trials), phase, "probe", w, c, mp[c], rng.random()))
    return trials, mappings


def trials_to_criterion(correct: list[bool], k: int = CRITERION[0], n: int = CRITERION[1]) -> int | None:
    """Trials needed until ``k`` of the last ``n`` choices were correct (None if never)."""
    for t in range(n, len(correct) + 1):
        if sum(correct[t - n:t]) >= k:
            return t
    return None


def summarize(trials: list[Trial], n_phases: int) -> dict[str, Any]:
    """Per-phase reward rate, trials to criterion and probe accuracy of the answers in ``trials``."""
    phases = []
    for p in range(n_phases):
        tr = [t for t in trials if t.phase == p and t.kind == "train"]
        pr = [t for t in trials if t.phase == p and t.kind == "probe"]
        half = tr[len(tr) // 2:]
        phases.append({
            "phase": p,
            "trials": len(tr),
            "answered": sum(t.answered for t in tr),
            "reward_rate": sum(bool(t.rewarded) for t in tr) / max(1, len(tr)),
            "late_reward_rate": sum(bool(t.rewarded) for t in half) / max(1, len(half)),
            "accuracy": sum(t.action == t.correct for t in tr) / max(1, len(tr)),
            "trials_to_criterion": trials_to_criterion([t.action == t.correct for t in tr]),
            "probes": len(pr),
            "probe_accuracy": sum(t.action == t.correct for t in pr) / len(pr) if pr else None,
            "probes_answered": sum(t.answered for t in pr),
        })
    return {"phases": phases}


def resolve_connection(url: str | None, namespace: str | None) -> tuple[str, str]:
    """``--nats``, then ``NATS_URL``, then the runtime file that `brainbus run` writes here."""
    runtime: dict[str, Any] = {}
    try:
        runtime = json.loads(Path(".brainbus/runtime.json").read_text())
    except (OSError, ValueError):
        pass
    url = url or os.environ.get("NATS_URL") or with_role(runtime, "admin")
    if not url:
        raise SystemExit("no NATS URL: pass --nats, set NATS_URL, or start `brainbus run` in this directory")
    return url, namespace or runtime.get("namespace") or "brain"


def with_role(runtime: dict[str, Any], role: str) -> str | None:
    """The runtime file's URL with the credentials of `role` (a brain's own server requires them).

    `admin` reads everything the teacher watches (motor.action, region.motor.out) and sends
    stimuli and rewards; `brainbus creds --role ROLE` prints the same for any client.
    """
    url = runtime.get("url")
    cred = (runtime.get("credentials") or {}).get(role)
    if not url or not cred:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{quote(cred['user'], safe='')}:{quote(cred['password'], safe='')}@{rest}"


class Teacher:
    """Runs the trial sequence against a brain over one NATS connection."""

    def __init__(self, nc: Any, ns: str, actions: list[str], timeout: float, iti: float, log: Any) -> None:
        self.nc, self.ns, self.actions, self.timeout, self.iti, self.log = nc, ns, actions, timeout, iti, log
        self.pending: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self.bg_actions = 0
        self.bg_alive = asyncio.Event()
        self.running: set[str] = set()
        self.levels: dict[str, float] | None = None
        self.t_start = time.perf_counter()

    async def start(self) -> None:
        await self.nc.subscribe(f"{self.ns}.motor.action", cb=self._action)
        await self.nc.subscribe(f"{self.ns}.region.motor.out", cb=self._motor_out)
        await self.nc.subscribe(f"{self.ns}.sys.heartbeat.*", cb=self._heartbeat)
        await self.nc.subscribe(f"{self.ns}.neuromod.levels", cb=self._levels)

    async def _action(self, msg: Any) -> None:
        body = json.loads(msg.data)
        fut = self.pending.pop(str(body.get("stimulus_id")), None)
        if fut is not None and not fut.done():
            fut.set_result(body)

    async def _motor_out(self, msg: Any) -> None:
        body = _json_part(msg)
        if body.get("kind") == "withheld":
            fut = self.pending.pop(str(body.get("stimulus_id")), None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def _levels(self, msg: Any) -> None:
        body = _json_part(msg)
        self.levels = {h: round(float(body[h]), 4) for h in HORMONES if h in body}

    async def _heartbeat(self, msg: Any) -> None:
        beat = _json_part(msg)
        if beat.get("state") == "running":
            self.running.add(str(beat.get("actor")))
        if beat.get("actor") == "basal_ganglia":
            self.bg_actions = int(beat.get("stats", {}).get("actions", 0))
            self.bg_alive.set()

    async def declare(self, wait: float, ready: set[str]) -> None:
        """Wait for the brain, then declare the actions until the basal ganglia's heartbeat shows them.

        Actors start concurrently and a message sent before its receiver subscribes is lost: a
        declaration before the basal ganglia are up, or a first stimulus while the thalamus is still
        loading its encoder. So wait for a heartbeat of every actor in ``ready`` (actors heartbeat
        once they are running); re-declaring the same repertoire is harmless.
        """
        deadline = time.monotonic() + wait
        while not ready <= self.running:
            if time.monotonic() > deadline:
                raise SystemExit(f"no heartbeat from {sorted(ready - self.running)} within {wait:g} s")
            await asyncio.sleep(0.1)
        await asyncio.wait_for(self.bg_alive.wait(), max(0.1, deadline - time.monotonic()))
        while self.bg_actions != len(self.actions):
            if time.monotonic() > deadline:
                raise SystemExit("the basal ganglia never showed the declared actions in their heartbeat")
            await self.nc.publish(f"{self.ns}.env.actions",
                                  json.dumps({"actions": self.actions, "env": "reversal"}).encode())
            self.bg_alive.clear()
            await asyncio.wait_for(self.bg_alive.wait(), max(0.1, deadline - time.monotonic()))

    async def run_trial(self, trial: Trial, sid: str, wait_s: float) -> None:
        fut: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self.pending[sid] = fut
        t0 = time.perf_counter()
        trial.t_s = round(t0 - self.t_start, 3)
        await self.nc.publish(f"{self.ns}.stim.text", json.dumps({"text": trial.word, "id": sid}).encode())
        try:
            answer = await asyncio.wait_for(fut, wait_s)
        except TimeoutError:
            answer = None
        self.pending.pop(sid, None)
        if answer is not None:
            trial.action = str(answer["action"])
            trial.answered = True
            trial.latency_ms = round((time.perf_counter() - t0) * 1000, 2)
            trial.confidence = float(answer.get("confidence", 0.0))
        trial.levels = self.levels
        if trial.kind == "train":
            if trial.answered:
                p = P_CORRECT if trial.action == trial.correct else P_WRONG
                trial.rewarded = trial.u < p
                await self.nc.publish(f"{self.ns}.feedback.reward", json.dumps(
                    {"value": 1.0 if trial.rewarded else -1.0, "stimulus_id": sid}).encode())
            else:
                trial.rewarded = False  # unanswered: counted against the reward rate, nothing to reward
        await self.nc.flush()
        if self.iti > 0:
            await asyncio.sleep(self.iti)


def _json_part(msg: Any) -> dict[str, Any]:
    """The JSON object of a brainbus message; binary vector bytes (header ``Bb-Vec``) follow it."""
    data: bytes = msg.data
    spec = (msg.headers or {}).get("Bb-Vec")
    if spec:
        size = {"f32": 4, "f16": 2}
        tail = sum(size[p.split(":")[1]] * int(p.split(":")[2]) for p in spec.split(","))
        data = data[:len(data) - tail]
    out: dict[str, Any] = json.loads(data)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url, ns = resolve_connection(args.nats, args.namespace)
    log = sys.stderr if args.json == "-" else sys.stdout
    trials, mappings = make_trials(args.seed, args.trials, args.reversals, args.words, not args.no_probes,
                                   args.actions)
    actions = ACTIONS[:args.actions]
    nc = await nats.connect(url, name="reversal-teacher")
    teacher = Teacher(nc, ns, actions, args.timeout, args.iti, log)
    await teacher.start()
    await nc.flush()
    try:
        await teacher.declare(args.wait, {a.strip() for a in args.ready.split(",") if a.strip()})
        print(f"teacher: {len(trials)} trials, {args.reversals + 1} phases on {url} ns={ns}; "
              f"mapping {mappings[0]}", file=log)
        run_id = f"rev{args.seed}-{os.getpid():x}{int(time.time()) & 0xFFFF:x}"
        started = time.monotonic()
        teacher.t_start = time.perf_counter()
        window: list[bool] = []
        for trial in trials:
            if trial.kind == "train" and trial.i > 0 and trials[trial.i - 1].phase != trial.phase:
                print(f"  -- reversal: {mappings[trial.phase]}", file=log)
            # The first stimulus may wait for lazy model loads; later ones get the normal timeout.
            wait_s = args.timeout if trial.i else 5 * args.timeout
            await teacher.run_trial(trial, f"{run_id}-{trial.i}", wait_s)
            if trial.kind == "train":
                window.append(bool(trial.rewarded))
                if len(window) == args.report_every:
                    print(f"  phase {trial.phase} trial {trial.i + 1:4d}: reward rate "
                          f"{sum(window) / len(window):.2f} (ceiling {P_CORRECT})", file=log)
                    window = []
        elapsed = time.monotonic() - started
    finally:
        await nc.drain()
    summary = summarize(trials, len(mappings))
    for ph in summary["phases"]:
        probe = "-" if ph["probe_accuracy"] is None else f"{ph['probe_accuracy']:.2f}"
        print(f"phase {ph['phase']}: reward rate {ph['reward_rate']:.2f}, accuracy {ph['accuracy']:.2f}, "
              f"to criterion {ph['trials_to_criterion']}, answered {ph['answered']}/{ph['trials']}, "
              f"held-out probe accuracy {probe}", file=log)
    return {
        "task": {"actions": actions, "categories": CATEGORIES, "p_correct": P_CORRECT, "p_wrong": P_WRONG,
                 "trials_per_phase": args.trials, "reversals": args.reversals, "seed": args.seed,
                 "words_per_category": args.words, "iti_s": args.iti, "timeout_s": args.timeout,
                 "criterion": list(CRITERION)},
        "mappings": mappings, "elapsed_s": round(elapsed, 2), **summary,
        "trials": [asdict(t) for t in trials],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--nats", help="NATS URL (default: NATS_URL, then .brainbus/runtime.json here)")
    p.add_argument("--namespace", help="the brain's namespace (default: the runtime file's, else brain)")
    p.add_argument("--trials", type=int, default=120, help="training trials per phase (default 120)")
    p.add_argument("--reversals", type=int, default=2, help="number of reversals (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the whole trial sequence")
    p.add_argument("--words", type=int, default=10, choices=range(1, 11), metavar="1..10",
                   help="training words per category (default 10)")
    p.add_argument("--actions", type=int, default=4, choices=(2, 4),
                   help="4 (one per category, default) or 2 (two categories per action)")
    p.add_argument("--no-probes", action="store_true", help="skip the held-out word probes")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for an action (default 2)")
    p.add_argument("--iti", type=float, default=0.05, help="pause between trials, seconds (default 0.05)")
    p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the brain to come up")
    p.add_argument("--ready", default="thalamus,basal_ganglia,motor",
                   help="actors whose heartbeat to wait for before the first trial (default: %(default)s)")
    p.add_argument("--report-every", type=int, default=40, help="print the reward rate every N trials")
    p.add_argument("--json", metavar="PATH", help="write results and every trial as JSON ('-' = stdout)")
    args = p.parse_args()
    result = asyncio.run(run(args))
    if args.json == "-":
        sys.stdout.write(json.dumps(result) + "\n")
    elif args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
