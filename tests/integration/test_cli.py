"""The `brainbus` command line as a user runs it: real subprocesses against real nats-servers."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from actors.config import load_config
from bus import EmbeddedServer
from bus.errors import ConfigError

BRAINBUS = Path(sys.executable).parent / "brainbus"
REPO = Path(__file__).resolve().parents[2]
_ns = itertools.count(1)


def env() -> dict[str, str]:
    """The user's environment without NATS_URL or inherited brain credentials; the repo on the path
    (for `tests.actors_for_tests`)."""
    e = {k: v for k, v in os.environ.items() if k != "NATS_URL" and not k.startswith("BRAINBUS_")}
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), e.get("PYTHONPATH", "")) if p)
    return e


def fresh_ns() -> str:
    return f"cli{os.getpid() % 10000}x{next(_ns)}"


def cli(*args: str, cwd: Path, timeout: float = 20.0, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BRAINBUS), *args], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=timeout, **kw)


def sub_while_publishing(sub_args: list[str], pub_args: list[str], *, cwd: Path, what: str) -> list[str]:
    """Run `brainbus sub SUB_ARGS --count 1 --json` and `brainbus pub PUB_ARGS` every 0.2 s until the
    subscriber (started asynchronously) has printed its message; its output lines."""
    sub = subprocess.Popen([str(BRAINBUS), "sub", *sub_args, "--count", "1", "--json", "--timeout", "20"],
                           cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while sub.poll() is None:
            assert time.monotonic() < deadline, f"sub never printed {what}"
            r = cli("pub", *pub_args, cwd=cwd)
            assert r.returncode == 0, r.stderr
            assert r.stdout.startswith("published") and f".{pub_args[0]}" in r.stdout, r.stdout
            time.sleep(0.2)
        out, err = sub.communicate(timeout=10)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.communicate(timeout=5)
    assert sub.returncode == 0, err
    return out.splitlines()


def wait_until(cond: Callable[[], Any], *, within: float = 15.0, what: str = "condition",
               proc: subprocess.Popen[str] | None = None) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"brainbus exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        time.sleep(0.05)


class Brain:
    """A `brainbus run` subprocess; its output goes to files in its working directory."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.cwd = cwd
        self.out = open(cwd / "brain.out", "w")  # noqa: SIM115 - closed in stop()
        self.err = open(cwd / "brain.err", "w")  # noqa: SIM115
        self.proc = subprocess.Popen([str(BRAINBUS), "run", *args], cwd=cwd, env=env(), stdout=self.out,
                                     stderr=self.err, text=True)

    @property
    def runtime_file(self) -> Path:
        return self.cwd / ".brainbus" / "runtime.json"

    def runtime(self) -> dict[str, Any] | None:
        try:
            return dict(orjson.loads(self.runtime_file.read_bytes()))
        except (OSError, orjson.JSONDecodeError):
            return None

    def stderr(self) -> str:
        self.err.flush()
        return (self.cwd / "brain.err").read_text()

    def wait_ready(self, *actors: str, within: float = 15.0) -> list[dict[str, Any]]:
        """Wait for the runtime file, then for a heartbeat of each actor (via `brainbus status --json`)."""
        wait_until(self.runtime, within=within, what="the runtime file", proc=self.proc)
        return wait_until(lambda: self._status_has(actors), within=within, what=f"heartbeats of {actors}",
                          proc=self.proc)

    def _status_has(self, actors: tuple[str, ...]) -> list[dict[str, Any]] | None:
        r = cli("status", "--json", "--wait", "0.6", cwd=self.cwd)
        if r.returncode != 0:
            return None
        rows: list[dict[str, Any]] = orjson.loads(r.stdout)
        return rows if {row["actor"] for row in rows} >= set(actors) else None

    def interrupt(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.out.close()
        self.err.close()


@pytest.fixture
def brains() -> Iterator[Callable[..., Brain]]:
    started: list[Brain] = []

    def start(cwd: Path, *args: str) -> Brain:
        brain = Brain(cwd, *args)
        started.append(brain)
        return brain

    yield start
    for brain in started:
        brain.stop()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# The default config loads MiniLM and a whole brain (slow to start); most tests run this one.
LIGHT_CONFIG = (
    "supervisor: {heartbeat_interval: 0.5}\n"
    "actors:\n"
    "  thalamus: {kind: thalamus, options: {dim: 384, encoder: hashing}}\n"
    "  echo: {kind: 'tests.actors_for_tests:Echo'}\n"
)


@pytest.fixture(scope="module")
def shared_brain(nats_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brain]:
    """One light brain (thalamus, echo) on the session server, for the tests that only talk to it."""
    cwd = tmp_path_factory.mktemp("brain")
    config = write(cwd / "light.yaml", LIGHT_CONFIG)
    brain = Brain(cwd, "--config", str(config), "--nats", nats_server.url, "--namespace", fresh_ns(),
                  "--data-dir", str(cwd / "data"))
    try:
        brain.wait_ready("thalamus", "echo")
        yield brain
    finally:
        brain.stop()




# ---------------------------------------------------------------- talking to a running brain


def test_status_lists_the_actors_from_the_runtime_file(shared_brain: Brain) -> None:
    r = cli("status", "--wait", "1.2", cwd=shared_brain.cwd)
    assert r.returncode == 0, r.stderr
    header, *rows = r.stdout.splitlines()
    assert header.split()[:5] == ["actor", "kind", "group", "pid", "state"]
    thalamus = next(row.split() for row in rows if row.startswith("thalamus"))
    assert thalamus[1:5] == ["thalamus", "main", str(shared_brain.proc.pid), "running"]
    runtime = shared_brain.runtime()
    assert runtime is not None and runtime["pid"] == shared_brain.proc.pid


def test_pub_reaches_sub_as_a_percept(shared_brain: Brain) -> None:
    lines = sub_while_publishing(["region.>"], ["stim.text", '{"text":"hi","id":"x1"}'], cwd=shared_brain.cwd,
                                 what="a percept")
    assert len(lines) == 1
    msg = orjson.loads(lines[0])
    assert msg["data"]["stimulus_id"] == "x1"
    assert msg["subject"].endswith(f".region.{msg['data']['region']}.out")
    if msg["data"]["region"] == "thalamus":
        assert msg["data"]["kind"] == "percept"
        assert msg["data"]["data"]["modality"] == "text" and msg["data"]["data"]["text"] == "hi"
        assert len(msg["data"]["vector"]) == 384  # --json prints vectors in full
    else:
        assert msg["data"]["region"] == "echo" and msg["data"]["data"] == {"text": "hi"}


def test_req_to_one_actor_and_to_all(shared_brain: Brain) -> None:
    r = cli("req", "sys.ctl.thalamus", "status", cwd=shared_brain.cwd)
    assert r.returncode == 0, r.stderr
    reply = orjson.loads(r.stdout)
    assert reply["ok"] is True and reply["actor"] == "thalamus" and reply["verb"] == "status"
    assert reply["data"]["pid"] == shared_brain.proc.pid

    # every actor of the brain answers sys.ctl.all, each once
    r = cli("req", "sys.ctl.all", "pause", "--timeout", "0.7", cwd=shared_brain.cwd)
    assert r.returncode == 0, r.stderr
    replies = [orjson.loads(line) for line in r.stdout.splitlines()]
    actors = sorted(x["actor"] for x in replies)
    assert actors == ["echo", "thalamus"]
    assert all((x["verb"], x["ok"], x["state"]) == ("pause", True, "paused") for x in replies)
    r = cli("req", "sys.ctl.all", "resume", "--timeout", "0.7", cwd=shared_brain.cwd)
    assert r.returncode == 0, r.stderr
    replies = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert sorted(x["actor"] for x in replies) == actors and {x["state"] for x in replies} == {"running"}


def test_req_to_a_missing_actor_fails_with_exit_1(shared_brain: Brain) -> None:
    r = cli("req", "sys.ctl.nobody", "status", "--timeout", "0.5", cwd=shared_brain.cwd)
    assert r.returncode == 1
    assert "sys.ctl.nobody" in r.stderr


# ---------------------------------------------------------------- bad arguments


def cli_all(cases: list[list[str]], *, cwd: Path, timeout: float = 30.0) -> list[tuple[int, str]]:
    """Run several `brainbus` commands at once (each pays the interpreter start-up); (code, stderr)."""
    procs = [subprocess.Popen([str(BRAINBUS), *args], cwd=cwd, env=env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for args in cases]
    results = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=5)
            raise
        results.append((proc.returncode, err))
    return results


def test_bad_arguments_exit_2_with_a_message(nats_server: EmbeddedServer, tmp_path: Path) -> None:
    url = nats_server.url
    cases: list[tuple[list[str], list[str]]] = [
        (["frobnicate"], ["invalid choice", "frobnicate"]),
        (["pub", "--nats", url, "Stim.Text", '{"text":"hi"}'], ["Stim.Text"]),
        (["pub", "--nats", url, "stim.text", '{"text": 5}'], ["field 'text'", "valid string"]),
        (["sub", "--nats", url, "region.>", "--count", "-1"], ["--count", "must be 0 or more"]),
        (["run", "--nats", url, "--namespace", fresh_ns(), "--data-dir", str(tmp_path / "d"),
          "--only", "ghost"], ["--only", "ghost", "thalamus"]),
        # rejected locally even with no brain to connect to (no --nats, no runtime file here)
        (["pub", "Stim.Text", '{"text":"hi"}'], ["Stim.Text"]),
        (["req", "sys.ctl.thalamus", "explode"], ["field 'verb'", "explode"]),
    ]
    results = cli_all([args for args, _ in cases], cwd=tmp_path)
    for (args, expected), (code, err) in zip(cases, results, strict=True):
        assert code == 2, (args, code, err)
        for text in expected:
            assert text in err, (args, text, err)
        assert "Traceback" not in err, (args, err)
    assert not (tmp_path / ".brainbus").exists() and not (tmp_path / "d").exists()


def test_no_brain_running_is_a_failure_with_a_hint(tmp_path: Path) -> None:
    r = cli("status", cwd=tmp_path)
    assert r.returncode == 1
    assert "no brain is running" in r.stderr and "brainbus run" in r.stderr


BAD_CONFIGS: list[tuple[str, list[str]]] = [
    ("actors:\n  thalamus:\n    kind: thalamus\n    mailbox: {capacity: -1}\n",
     ["actors.thalamus.mailbox.capacity", "(got -1)"]),
    ("actors:\n  x:\n    kind: nosuch\n", ["actors.x.kind", "unknown actor kind 'nosuch'"]),
    ("namespace: brain\nactors:\n  a: [1, 2\n  b: 3\n", ["not valid YAML at line 4, column 4"]),
]
# The same validation, in-process (each subprocess costs an interpreter start on a busy machine).
MORE_BAD_CONFIGS: list[tuple[str, list[str]]] = [
    ("actors:\n  x:\n    kind: tests.actors_for_tests:Nope\n", ["actors.x.kind", "Nope"]),
    ("actors:\n  x:\n    kind: tests.actors_for_tests:eventually\n", ["actors.x.kind", "not an Actor"]),
    ("actors:\n  thalamus:\n    kind: thalamus\n    options: {dim: 2}\n", ["actors.thalamus.options.dim"]),
    ("actors:\n  thalamus:\n    kind: thalamus\n    colour: red\n",
     ["actors.thalamus.colour", "unknown key"]),
    ("actors:\n  thalamus:\n    restart: sometimes\n", ["actors.thalamus.kind: required key is missing",
                                                         "actors.thalamus.restart"]),
    ("supervisor:\n  strategy: all_for_none\n", ["supervisor.strategy"]),
    ("processes:\n  - {name: g, actors: [ghost]}\n", ["unknown actor 'ghost'"]),
    ("- just\n- a list\n", ["top level must be a mapping"]),
]


@pytest.mark.parametrize(("yaml_text", "expected"), MORE_BAD_CONFIGS)
def test_config_errors_name_file_and_key_path(tmp_path: Path, yaml_text: str, expected: list[str]) -> None:
    path = write(tmp_path / "bad.yaml", yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    for text in expected:
        assert text in message


def test_a_bad_config_exits_2_naming_file_and_key_before_anything_starts(tmp_path: Path) -> None:
    paths = [write(tmp_path / f"bad{i}.yaml", text) for i, (text, _) in enumerate(BAD_CONFIGS)]
    t0 = time.monotonic()
    results = cli_all([["run", "--config", str(p)] for p in paths], cwd=tmp_path)
    assert time.monotonic() - t0 < 20
    for path, (_, expected), (code, err) in zip(paths, BAD_CONFIGS, results, strict=True):
        assert code == 2, (path.name, err)
        assert err.startswith(f"brainbus run: {path}: "), (path.name, err)
        for text in expected:
            assert text in err, (path.name, text, err)
        assert "Traceback" not in err
    assert not (tmp_path / ".brainbus").exists()  # no data dir, server or runtime file


# ---------------------------------------------------------------- lifecycles


def test_only_runs_a_subset_against_an_existing_server(
    nats_server: EmbeddedServer, tmp_path: Path, brains: Callable[..., Brain]
) -> None:
    config = write(tmp_path / "brain.yaml", (
        "supervisor: {heartbeat_interval: 0.2}\n"
        "actors:\n"
        "  thalamus: {kind: thalamus, options: {dim: 32}}\n"
        "  echo: {kind: 'tests.actors_for_tests:Echo'}\n"))
    ns = fresh_ns()
    brain = brains(tmp_path, "--config", str(config), "--nats", nats_server.url, "--namespace", ns,
                   "--data-dir", str(tmp_path / "data"), "--only", "thalamus")
    rows = brain.wait_ready("thalamus")
    assert [row["actor"] for row in rows] == ["thalamus"]  # echo is not run by this process
    assert rows[0]["pid"] == brain.proc.pid
    assert brain.runtime() == {"url": nats_server.url, "namespace": ns, "pid": brain.proc.pid,
                               "started": pytest.approx(time.time(), abs=60)}
    assert brain.runtime_file.stat().st_mode & 0o777 == 0o600
    # SIGINT: a clean stop, exit 0, and the runtime file is gone
    assert brain.interrupt() == 0, brain.stderr()
    assert not brain.runtime_file.exists()
    assert "Traceback" not in brain.stderr()


@pytest.mark.slow
def test_a_process_group_runs_in_its_own_process(
    nats_server: EmbeddedServer, tmp_path: Path, brains: Callable[..., Brain]
) -> None:
    config = write(tmp_path / "brain.yaml", (
        "supervisor: {heartbeat_interval: 0.2, shutdown_grace: 1}\n"
        "actors:\n"
        "  thalamus: {kind: thalamus, options: {dim: 32}}\n"
        "  echo: {kind: 'tests.actors_for_tests:Echo'}\n"
        "processes:\n"
        "  - {name: senses, actors: [thalamus]}\n"))
    brain = brains(tmp_path, "--config", str(config), "--nats", nats_server.url, "--namespace", fresh_ns(),
                   "--data-dir", str(tmp_path / "data"))
    rows = {row["actor"]: row for row in brain.wait_ready("thalamus", "echo", )}
    assert rows["echo"]["group"] == "main" and rows["echo"]["pid"] == brain.proc.pid
    assert rows["thalamus"]["group"] == "senses" and rows["thalamus"]["pid"] != brain.proc.pid
    group_pid = rows["thalamus"]["pid"]

    r = cli("req", "stim.text", '{"text": "hello", "id": "p1"}', cwd=tmp_path)  # Echo answers requests
    assert r.returncode == 0, r.stderr
    assert orjson.loads(r.stdout)["data"] == {"text": "hello"}
    lines = sub_while_publishing(["region.thalamus.out"], ["stim.text", '{"text":"hi","id":"p2"}'], cwd=tmp_path,
                                 what="a percept from the senses process")
    percept = orjson.loads(lines[0])
    assert percept["data"]["stimulus_id"] == "p2"
    assert percept["headers"]["Bb-Src"] == "thalamus"

    assert brain.interrupt() == 0, brain.stderr()
    wait_until(lambda: not _alive(group_pid), within=10, what="the group process to exit")
    assert not brain.runtime_file.exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of the (exited) brain counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_the_embedded_server_and_runtime_file(tmp_path: Path, brains: Callable[..., Brain],
                                              nats_server: EmbeddedServer) -> None:
    config = write(tmp_path / "light.yaml", LIGHT_CONFIG)
    brain = brains(tmp_path, "--config", str(config))  # no --nats: an embedded server of its own
    check_embedded(brain, nats_server)


@pytest.mark.slow
def test_the_default_brain_with_no_flags_at_all(tmp_path: Path, brains: Callable[..., Brain],
                                                nats_server: EmbeddedServer) -> None:
    brain = brains(tmp_path)  # `brainbus run`: default config (MiniLM, every region), embedded server
    check_embedded(brain, nats_server, within=90)


def check_embedded(brain: Brain, nats_server: EmbeddedServer, within: float = 15.0) -> None:
    tmp_path = brain.cwd
    rows = brain.wait_ready("thalamus", within=within)
    runtime = brain.runtime()
    assert runtime is not None and runtime["namespace"] == "brain"
    assert runtime["url"].startswith("nats://127.0.0.1:") and runtime["url"] != nats_server.url
    thalamus = next(row for row in rows if row["actor"] == "thalamus")
    assert thalamus["pid"] == brain.proc.pid and thalamus["group"] == "main"
    r = cli("status", cwd=tmp_path)  # no flags: the runtime file says where
    assert r.returncode == 0 and "thalamus" in r.stdout
    ports = list((tmp_path / ".brainbus" / "nats" / "ports").glob("*.ports"))
    assert len(ports) == 1
    server_pid = int(ports[0].stem.rsplit("_", 1)[1])
    assert _alive(server_pid)
    assert brain.interrupt() == 0, brain.stderr()
    assert not brain.runtime_file.exists()
    wait_until(lambda: not _alive(server_pid), within=10, what="the embedded server to stop")


def test_restart_intensity_exceeded_exits_1_naming_the_actor(
    nats_server: EmbeddedServer, tmp_path: Path, brains: Callable[..., Brain]
) -> None:
    config = write(tmp_path / "crash.yaml", (
        "supervisor: {max_restarts: 2, max_seconds: 30}\n"
        "actors:\n"
        "  echo: {kind: 'tests.actors_for_tests:Echo'}\n"
        "  crasher: {kind: 'tests.actors_for_tests:TickCrasher'}\n"))
    brain = brains(tmp_path, "--config", str(config), "--nats", nats_server.url, "--namespace", fresh_ns(),
                   "--data-dir", str(tmp_path / "data"))
    code = brain.proc.wait(timeout=30)
    err = brain.stderr()
    assert code == 1, err
    assert "actor 'crasher' failed 3 times" in err and "restart intensity exceeded" in err
    assert "RuntimeError: tick crasher crasher fails" in err
    assert "Traceback" not in err.split("supervisor.escalated", 1)[-1]
    assert not brain.runtime_file.exists()
