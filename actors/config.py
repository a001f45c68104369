"""Brain configuration: YAML files validated by pydantic before anything starts.

A bad file fails with a `ConfigError` naming the file, the key path and what was expected:
`configs/x.yaml: actors.thalamus.mailbox.capacity: Input should be greater than 0 (got -1)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from actors.registry import resolve_kind
from bus.errors import BadInput, ConfigError

__all__ = [
    "ActorConfig",
    "BrainConfig",
    "MailboxConfig",
    "NatsConfig",
    "ProcessGroup",
    "SupervisorConfig",
    "TlsConfig",
    "load_config",
    "parse_config",
]

Token = Annotated[str, Field(pattern=r"^[a-z0-9_-]+$", min_length=1, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MailboxConfig(_Strict):
    capacity: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest"


class ActorConfig(_Strict):
    """One actor: its kind (a built-in name or `package.module:Class`) and how it is supervised."""

    kind: str
    restart: Literal["permanent", "transient", "temporary"] = "permanent"
    mailbox: MailboxConfig = MailboxConfig()
    options: dict[str, Any] = Field(default_factory=dict)


class SupervisorConfig(_Strict):
    strategy: Literal["one_for_one", "rest_for_one", "one_for_all"] = "one_for_one"
    max_restarts: Annotated[int, Field(ge=0)] = 5
    max_seconds: Annotated[float, Field(gt=0)] = 30.0
    hang_timeout: Annotated[float, Field(gt=0)] = 10.0
    heartbeat_interval: Annotated[float, Field(gt=0, le=60)] = 1.0
    shutdown_grace: Annotated[float, Field(ge=0)] = 5.0
    snapshot_interval: Annotated[float, Field(gt=0)] = 30.0


def _existing_file(value: str) -> str:
    """An absolute path to a readable file (process groups and the runtime file use it from anywhere)."""
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f"file not found: {value}")
    return str(path.resolve())


PemFile = Annotated[str, AfterValidator(_existing_file)]


class TlsConfig(_Strict):
    """TLS for the embedded server (PEM files): clients then connect with `tls://`.

    `ca` is the CA that signed `cert`; give it for a private (self-signed) CA so the tools of the
    brain's directory can verify the server (it goes into the runtime file).
    """

    cert: PemFile
    key: PemFile
    ca: PemFile | None = None


class NatsConfig(_Strict):
    """Where NATS is: `url` for an existing deployment, else an embedded server on host:port.

    The embedded server always requires the generated per-role credentials; `host` other than a
    loopback address (`brainbus run --listen`) exposes it to the network, where `tls` belongs.
    """

    url: str | None = None
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    jetstream: bool = True
    tls: TlsConfig | None = None


class ProcessGroup(_Strict):
    """Actors that run together in their own OS process (to use more cores)."""

    name: Token
    actors: Annotated[list[Token], Field(min_length=1)]


class BrainConfig(_Strict):
    namespace: Token = "brain"
    data_dir: str = ".brainbus"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    #: torch intra-op threads per brain process. The per-message tensors are small: one thread is
    #: fastest, and several threads per process fight each other (and other processes) for cores.
    #: (numpy's BLAS always runs one thread in a brain: waking its workers for one small matrix
    #: product costs more than the product.)
    torch_threads: Annotated[int, Field(ge=1, le=256)] = 1
    seed: int = 0
    #: Fixed seeds and one input in flight at a time, so a replayed session gives the same
    #: actions (actors.determinism). Off by default: it serializes the brain.
    deterministic: bool = False
    #: `core`: stimuli and rewards on core NATS only (fast, lost while no brain listens). `durable`:
    #: also through the JetStream intake stream (bus.durable), at least once, deduplicated.
    intake: Literal["core", "durable"] = "core"
    nats: NatsConfig = NatsConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    actors: dict[Token, ActorConfig] = Field(default_factory=dict)
    processes: list[ProcessGroup] = Field(default_factory=list)

    @model_validator(mode="after")
    def _groups_name_known_actors(self) -> BrainConfig:
        seen: dict[str, str] = {}
        for group in self.processes:
            for actor in group.actors:
                if actor not in self.actors:
                    raise ValueError(f"process group {group.name!r} names unknown actor {actor!r}")
                if actor in seen:
                    raise ValueError(
                        f"actor {actor!r} is in process groups {seen[actor]!r} and {group.name!r}")
                seen[actor] = group.name
        return self

    def group_of(self, actor: str) -> str:
        for group in self.processes:
            if actor in group.actors:
                return group.name
        return "main"


def parse_config(data: Any, *, source: str = "<config>") -> BrainConfig:
    """Validate a config mapping, including each actor's kind and its `options`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        config = BrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(source, exc)) from None
    for name, actor in config.actors.items():
        try:
            cls = resolve_kind(actor.kind)
        except BadInput as exc:
            raise ConfigError(f"{source}: actors.{name}.kind: {exc.reason}") from None
        try:
            cls.Options.model_validate(actor.options)
        except ValidationError as exc:
            raise ConfigError(_describe(source, exc, prefix=f"actors.{name}.options")) from None
    return config


def load_config(path: str | Path) -> BrainConfig:
    """Read and validate a YAML brain configuration."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    return parse_config(data if data is not None else {}, source=str(path))


def _describe(source: str, exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(err["loc"])) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: {loc}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"{source}: {loc}: required key is missing")
        else:
            got = repr(err.get("input"))
            lines.append(f"{source}: {loc}: {msg} (got {got[:60]})")
    return "\n".join(lines)
