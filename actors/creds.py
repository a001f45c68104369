"""`brainbus creds` and `brainbus run --listen`: connection details per role, exposing a brain safely.

Wiring (`actors.cli` adds the parser, `actors.commands` runs it):

    from actors import creds
    creds.add_parser(sub)                        # in actors.cli.build_parser
    handlers["creds"] = creds.run                # in actors.commands.dispatch

and for `--listen`:

    creds.add_listen_argument(run)               # in actors.cli.build_parser, on the `run` parser
    config = creds.apply_listen(config, args.listen, url)   # in actors.commands.cmd_run

No suggested command carries the password: on a command line every user of the machine sees it
(`ps`, /proc/PID/cmdline), and it stays in the shell's history. The `nats` CLI reads the user and
password from its environment (NATS_USER, NATS_PASSWORD), which `eval "$(brainbus creds --env)"`
sets in the current shell (`export` is a shell builtin: no process is started with the password
among its arguments); the nats-py snippet reads the same variables.
"""

from __future__ import annotations

import argparse
import ipaddress
import shlex
import sys
from typing import Any, cast

import orjson

from actors.config import BrainConfig
from bus.auth import ROLES, Role, inbox_prefix, permissions, redact_url, with_credentials
from bus.errors import BadInput, BusError
from bus.runtime import RUNTIME_FILE, read_runtime

__all__ = ["add_listen_argument", "add_parser", "apply_listen", "details", "parse_listen", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `creds` command to `brainbus`'s subparsers; returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "creds", help="print how to connect to the brain running here, as one role (URL, nats CLI, nats-py)")
    parser.add_argument("--role", choices=ROLES, default="agent",
                        help="agent (default): talk to the brain; observer: watch; admin: also control "
                             "actors; brain: run actors")
    parser.add_argument("--json", action="store_true", help="one JSON object (url, user, password, ...)")
    parser.add_argument("--env", action="store_true",
                        help="shell lines exporting NATS_USER and NATS_PASSWORD, for "
                             '`eval "$(brainbus creds --env)"` before the nats CLI')
    return parser


#: What the `nats` CLI (and the nats-py snippet) read the credentials from.
NATS_USER_VAR, NATS_PASSWORD_VAR = "NATS_USER", "NATS_PASSWORD"  # noqa: S105 (names, not passwords)


def details(role: Role) -> dict[str, Any]:
    """Connection details of `role` for the brain of this directory's runtime file.

    Raises BusError when no brain runs here, or when it runs on a server of someone else's
    (`--nats`), whose credentials brainbus did not make.
    """
    runtime = read_runtime()
    if runtime is None:
        raise BusError(f"no brain is running from this directory ({RUNTIME_FILE} not found or stale): "
                       "start one with `brainbus run`")
    cred = runtime.credentials.get(role)
    if cred is None:
        raise BusError(f"the brain here runs on NATS at {redact_url(runtime.url)}, not on a server of its own: "
                       "it has no generated credentials (ask that server's operator)")
    perms = permissions(role, runtime.namespace)
    return {
        "role": role,
        "url": with_credentials(runtime.url, cred),
        "server": runtime.url,
        "user": cred.user,
        "password": cred.password,
        "namespace": runtime.namespace,
        "inbox_prefix": inbox_prefix(cred.user),
        "tls_ca": runtime.tls_ca,
        "publish": perms["publish"].get("allow", []),
        "subscribe": perms["subscribe"].get("allow", []),
    }


def _env_lines(d: dict[str, Any]) -> str:
    """`export` lines for a POSIX shell: the credentials where the nats CLI looks for them."""
    return "".join(f"export {name}={shlex.quote(value)}\n"
                   for name, value in ((NATS_USER_VAR, d["user"]), (NATS_PASSWORD_VAR, d["password"])))


def _snippets(d: dict[str, Any]) -> tuple[str, str, str]:
    """How to connect as `d`'s role: the shell line that puts the credentials in the environment,
    a `nats` CLI command that takes them from there, and a nats-py program that does too."""
    ns, prefix = d["namespace"], d["inbox_prefix"]
    watch = f"{ns}.motor.action" if d["role"] == "agent" else f"{ns}.>"
    setup = f'eval "$(brainbus creds --role {d["role"]} --env)"'
    cli = ["nats", "--server", d["server"], "--inbox-prefix", prefix]
    if d["tls_ca"]:
        cli += ["--tlsca", d["tls_ca"]]
    tls_import, tls_arg = "", ""
    if d["tls_ca"]:
        tls_import = "import ssl\n"
        tls_arg = f",\n                             tls=ssl.create_default_context(cafile={d['tls_ca']!r})"
    py = (
        f"import asyncio\nimport os\n{tls_import}import nats\n\n"
        "async def main() -> None:\n"
        f"    nc = await nats.connect({d['server']!r}, user=os.environ[{NATS_USER_VAR!r}],\n"
        f"                             password=os.environ[{NATS_PASSWORD_VAR!r}],\n"
        f"                             inbox_prefix={prefix!r}{tls_arg})\n"
        f"    sub = await nc.subscribe({watch!r})\n"
        "    async for msg in sub.messages:\n"
        "        print(msg.subject, msg.data)\n\n"
        "asyncio.run(main())\n"
    )
    return setup, shlex.join([*cli, "sub", watch]), py


async def run(args: argparse.Namespace) -> int:
    """Print the connection details of `args.role` (JSON with `--json`, shell exports of the
    credentials with `--env`); 1 when no brain runs here."""
    d = details(cast(Role, args.role))
    setup, cli, py = _snippets(d)
    if getattr(args, "env", False):
        sys.stdout.write(_env_lines(d))
        return 0
    if args.json:
        sys.stdout.write(orjson.dumps({**d, "nats_env": setup, "nats_cli": cli, "nats_py": py}).decode() + "\n")
        return 0
    lines = [
        f"role        {d['role']}",
        f"url         {d['url']}",
        f"namespace   {d['namespace']}",
        f"user        {d['user']}",
        f"password    {d['password']}",
        f"inbox       {d['inbox_prefix']} (request replies arrive only on this prefix)",
    ]
    if d["tls_ca"]:
        lines.append(f"tls ca      {d['tls_ca']}")
    lines += [
        f"publish     {', '.join(d['publish']) or 'nothing'}",
        f"subscribe   {', '.join(d['subscribe'])}",
        "",
        f"nats CLI (it takes {NATS_USER_VAR} and {NATS_PASSWORD_VAR} from its environment: a password on a "
        "command line shows in `ps`):",
        f"  {setup}",
        f"  {cli}",
        "",
        "nats-py (after the same eval):",
        *(f"  {line}" if line else "" for line in py.splitlines()),
        "",
        "brainbus SDK (from this directory it finds the brain by itself):",
        f"  async with bus.connect(role={d['role']!r}) as brain: ...",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


# ---------------------------------------------------------------- run --listen


def parse_listen(text: str) -> tuple[str, int | None]:
    """`ADDRESS[:PORT]` (`0.0.0.0`, `192.168.1.5:4222`, `[::]:4222`, `brain.example.com`) → (host, port)."""
    text = text.strip()
    port_text: str | None = None
    if text.startswith("["):  # [IPv6]:port
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BadInput(f"--listen {text!r}: write an IPv6 address as [ADDRESS] or [ADDRESS]:PORT")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text  # a bare IPv6 address has several colons and no port
    if not host:
        raise BadInput(f"--listen {text!r}: an address is required (0.0.0.0 for every interface)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        labels = host.split(".")
        if not all(label and len(label) <= 63 and label.replace("-", "").isalnum() for label in labels):
            raise BadInput(f"--listen {text!r}: {host!r} is neither an IP address nor a host name") from None
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise BadInput(f"--listen {text!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    return host, port


def add_listen_argument(run_parser: argparse.ArgumentParser) -> None:
    """Add `--listen ADDRESS[:PORT]` to the `run` parser."""
    run_parser.add_argument(
        "--listen", metavar="ADDRESS[:PORT]",
        help="expose the embedded NATS server on this address (default: 127.0.0.1 only); clients need "
             "credentials (`brainbus creds`), and TLS belongs in the config (nats.tls)")


def apply_listen(config: BrainConfig, listen: str | None, nats_url: str | None) -> BrainConfig:
    """The config with the embedded server on `listen`'s address; BadInput when that cannot be.

    `--listen` applies to the embedded server only, which always requires the generated
    credentials; against a server of someone else's (`--nats`, `nats.url`) it is refused, since
    brainbus could not make that server require any.
    """
    if listen is None:
        return config
    host, port = parse_listen(listen)
    if nats_url:
        raise BadInput("--listen exposes the brain's own embedded server; with --nats (or nats.url) "
                       "the brain runs on another server, whose listening address and auth are its own")
    # Without TLS it is allowed (a trusted network) but the server logs a warning: passwords and
    # messages would cross the network in clear.
    nats = config.nats.model_copy(update={"host": host, "port": port if port is not None else config.nats.port})
    return config.model_copy(update={"nats": nats})
