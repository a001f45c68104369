"""Watch a brain from the outside: motor actions, workspace broadcasts and hormone levels.

Plain nats-py, no brainbus imports: every brainbus body is a JSON object, and a message that
carries vectors appends their raw little-endian bytes after it, announced by the ``Bb-Vec``
header (``name:dtype:length,...``; dtype f32 or f16). Strip those bytes and the rest is JSON.

    python examples/observer.py                 # the brain started by `brainbus run` here
    python examples/observer.py --nats nats://127.0.0.1:4222 --namespace brain
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nats

_BYTES = {"f32": 4, "f16": 2}


def json_part(msg: Any) -> dict[str, Any]:
    """The JSON object of a message, without the vector bytes that may follow it."""
    data: bytes = msg.data
    spec = (msg.headers or {}).get("Bb-Vec")
    if spec:
        tail = sum(_BYTES[dtype] * int(n) for _, dtype, n in (part.split(":") for part in spec.split(",")))
        data = data[:len(data) - tail]
    out: dict[str, Any] = json.loads(data)
    return out


async def observe(url: str, ns: str, levels_every: float) -> None:
    nc = await nats.connect(url, name="observer")
    last_levels = 0.0

    async def action(msg: Any) -> None:
        b = json_part(msg)
        print(f"ACTION    {b['action']:<12} for {b['stimulus_id']}  confidence {b.get('confidence', 0):.2f}")

    async def broadcast(msg: Any) -> None:
        b = json_part(msg)
        text = b.get("detail", {}).get("text")
        print(f"BROADCAST cycle {b['cycle']:<6} {b['source']:<10} {b['kind']:<8} salience {b['salience']:.2f}"
              f"  {b.get('stimulus_id') or ''} {repr(text) if text else ''}")

    async def levels(msg: Any) -> None:
        nonlocal last_levels
        loop_now = asyncio.get_running_loop().time()
        if loop_now - last_levels < levels_every:
            return  # levels arrive at 10 Hz and on every change: print a few per second at most
        last_levels = loop_now
        b = json_part(msg)
        print("HORMONES  " + "  ".join(f"{h[:3].upper()} {b[h]:.2f}"
                                       for h in ("dopamine", "serotonin", "norepinephrine", "acetylcholine")))

    await nc.subscribe(f"{ns}.motor.action", cb=action)
    await nc.subscribe(f"{ns}.gw.broadcast", cb=broadcast)
    await nc.subscribe(f"{ns}.neuromod.levels", cb=levels)
    print(f"observing {ns}.* on {url} (Ctrl-C to stop)")
    try:
        await asyncio.Event().wait()
    finally:
        await nc.drain()


def with_role(runtime: dict[str, Any], role: str) -> str | None:
    """The runtime file's URL with the credentials of `role` (a brain's own server requires them)."""
    url = runtime.get("url")
    cred = (runtime.get("credentials") or {}).get(role)
    if not url or not cred:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{quote(cred['user'], safe='')}:{quote(cred['password'], safe='')}@{rest}"


def main() -> None:
    p = argparse.ArgumentParser(description="Print a brain's motor actions, broadcasts and hormone levels.")
    p.add_argument("--nats", help="NATS URL (default: NATS_URL, then .brainbus/runtime.json here)")
    p.add_argument("--namespace", help="the brain's namespace (default: the runtime file's, else brain)")
    p.add_argument("--levels-every", type=float, default=1.0,
                   help="seconds between hormone lines (default 1)")
    args = p.parse_args()
    runtime: dict[str, Any] = {}
    try:
        runtime = json.loads(Path(".brainbus/runtime.json").read_text())
    except (OSError, ValueError):
        pass
    url = args.nats or os.environ.get("NATS_URL") or with_role(runtime, "observer")
    if not url:
        raise SystemExit("no NATS URL: pass --nats, set NATS_URL, or start `brainbus run` in this directory")
    try:
        asyncio.run(observe(url, args.namespace or runtime.get("namespace") or "brain", args.levels_every))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
