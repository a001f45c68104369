"""Roles and credentials of a brain's embedded NATS server (DESIGN §5, issue 6 "Security").

Every embedded server gets fresh random passwords, one user per role, and NATS enforces what each
role may publish and subscribe to. Users are named after their roles, and each role receives
request replies on an inbox prefix of its own (`_INBOX.<role>.`), so a role can make requests
without being able to read the replies meant for another role.

The roles live in two NATS accounts, which share no subjects but those exported and imported:

| role       | account | publish                                      | subscribe                                    |
|------------|---------|----------------------------------------------|----------------------------------------------|
| `brain`    | `BRAIN` | `NS.>`, `_INBOX.>` and `_R_.>` (replies to   | `NS.>`, `_INBOX.>`                           |
|            |         | anyone), `$JS.>` (JetStream, durable intake) |                                              |
| `observer` | `BRAIN` | nothing                                      | `NS.>`                                       |
| `admin`    | `BRAIN` | the agent's subjects, `NS.sys.ctl.>`         | `NS.>`, `_INBOX.admin.>`                     |
| `agent`    | `AGENT` | `NS.stim.>`, `NS.env.>`, `NS.feedback.>`,    | `NS.motor.>`, `NS.gw.broadcast`,             |
|            |         | `NS.durable.stim.>`, `NS.durable.feedback.>` | `NS.neuromod.levels`, `NS.sys.heartbeat.>`,  |
|            |         |                                              | `NS.sys.error`, `_INBOX.agent.>`             |

`BRAIN` exports what agents publish as services, and `AGENT` imports them: a message crosses into
the brain's account, and its reply subject, whatever the agent chose, is replaced by one that
leads back into the agent's account (core replies and JetStream's PubAcks alike). NATS does not
check a reply subject against the publisher's permissions, so without the second account an
agent could have the brain, or the server's JetStream API, answer on `NS.sys.ctl.all`,
`NS.mem.store` or another role's inbox. What agents may read (`agent_streams`) is exported as
streams. Agents have no JetStream API: publishing on a durable subject is all durable intake asks
of them (the brain creates the stream). JetStream is enabled for `BRAIN` only.

`admin` is the operator at the keyboard (`brainbus req`, the TUI, which also sends stimuli);
`observer` watches (`brainbus sub`, `status`); `agent` is a program living with the brain (the
SDK). Only `brain` may touch memory, regions and the workspace's bids, and create streams.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

__all__ = [
    "ENV_PASSWORD",
    "ENV_TLS_CA",
    "ENV_USER",
    "ACCOUNTS",
    "ROLES",
    "Credential",
    "Role",
    "TlsFiles",
    "account_of",
    "accounts_block",
    "agent_services",
    "agent_streams",
    "generate_credentials",
    "inbox_prefix",
    "is_loopback",
    "permissions",
    "redact_url",
    "split_credentials",
    "tls_block",
    "url_user",
    "with_credentials",
]

Role = Literal["brain", "agent", "observer", "admin"]
ROLES: tuple[Role, ...] = ("brain", "agent", "observer", "admin")
INBOX = "_INBOX"
#: The accounts of an embedded server with auth, and who is in which (see the module table).
ACCOUNTS: tuple[str, str] = ("BRAIN", "AGENT")
#: Where a NATS server puts the replies of requests that crossed into the account serving them.
RESPONSE_PREFIX = "_R_"
# How a brain hands its process groups their credentials: the environment, which only the owner
# can read (/proc/PID/environ), where the command line would show them to everyone in `ps`.
ENV_USER = "BRAINBUS_NATS_USER"
ENV_PASSWORD = "BRAINBUS_NATS_PASSWORD"  # noqa: S105 (the variable's name, not a password)
ENV_TLS_CA = "BRAINBUS_TLS_CA"


@dataclass(frozen=True, slots=True)
class Credential:
    """A user and password of the embedded server."""

    user: str
    password: str


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a server's TLS: its certificate chain, its key, and the CA that signed it (optional).

    The CA is what clients need to trust a private (self-signed) certificate; it is recorded in the
    runtime file for the tools of the brain's directory.
    """

    cert: str
    key: str
    ca: str | None = None


def tls_block(tls: TlsFiles) -> str:
    """The `tls { ... }` block of a nats-server config file (clients must then connect with TLS)."""
    lines = [f"  cert_file: {json.dumps(tls.cert)}", f"  key_file: {json.dumps(tls.key)}"]
    if tls.ca:
        lines.append(f"  ca_file: {json.dumps(tls.ca)}")
    return "tls {\n" + "\n".join(lines) + "\n}\n"


def generate_credentials() -> dict[Role, Credential]:
    """Fresh random passwords (~190 bits each), one user per role, named after the role."""
    return {role: Credential(user=role, password=secrets.token_urlsafe(24)) for role in ROLES}


def inbox_prefix(user: str | None) -> str | None:
    """The inbox prefix a client connecting as `user` must use: `_INBOX.<role>` for our roles, else None.

    Users of other deployments (a `--nats` URL with credentials) keep the client's default.
    """
    return f"{INBOX}.{user}" if user in ROLES else None


def account_of(role: Role) -> str:
    """The NATS account a role's user lives in: agents have one of their own."""
    return ACCOUNTS[1] if role == "agent" else ACCOUNTS[0]


def agent_services(namespace: str) -> list[str]:
    """What agents publish (world input, core and durable): services of the brain's account."""
    ns = namespace
    return [f"{ns}.stim.>", f"{ns}.env.>", f"{ns}.feedback.>", f"{ns}.durable.stim.>", f"{ns}.durable.feedback.>"]


def agent_streams(namespace: str) -> list[str]:
    """What agents may read: streams of the brain's account (`sys.error` tells them what was refused)."""
    ns = namespace
    return [f"{ns}.motor.>", f"{ns}.gw.broadcast", f"{ns}.neuromod.levels", f"{ns}.sys.heartbeat.>",
            f"{ns}.sys.error"]


def permissions(role: Role, namespace: str) -> dict[str, dict[str, list[str]]]:
    """The nats-server `permissions` map of one role in one namespace (see the module table)."""
    ns = namespace
    if role == "brain":
        # The brain answers requests from every role, so it may publish on any inbox, and on the
        # reply subjects of requests that came from the agents' account.
        return {"publish": {"allow": [f"{ns}.>", f"{INBOX}.>", f"{RESPONSE_PREFIX}.>", "$JS.>"]},
                "subscribe": {"allow": [f"{ns}.>", f"{INBOX}.>"]}}
    if role == "agent":
        return {"publish": {"allow": agent_services(ns)},
                "subscribe": {"allow": [*agent_streams(ns), f"{INBOX}.agent.>"]}}
    if role == "observer":
        return {"publish": {"deny": [">"]}, "subscribe": {"allow": [f"{ns}.>"]}}
    if role == "admin":
        return {"publish": {"allow": [*agent_services(ns), f"{ns}.sys.ctl.>"]},
                "subscribe": {"allow": [f"{ns}.>", f"{INBOX}.admin.>"]}}
    raise ValueError(f"unknown role {role!r}; the roles are {', '.join(ROLES)}")


def _quoted(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def _user_entry(role: Role, cred: Credential, namespace: str) -> str:
    perms = permissions(role, namespace)
    rules = "; ".join(
        f"{direction}: {{{'; '.join(f'{kind}: {_quoted(subjects)}' for kind, subjects in rule.items())}}}"
        for direction, rule in perms.items())
    # Passwords are token_urlsafe ([A-Za-z0-9_-]) and subjects are tokens: quoting is enough.
    return f'      {{user: "{cred.user}", password: "{cred.password}", permissions: {{{rules}}}}}'


def accounts_block(credentials: dict[Role, Credential], namespace: str, *, jetstream: bool = True) -> str:
    """The `accounts { ... }` block of a nats-server config file: the users of each account, and
    what the brain's account exports to the agents' (see the module docstring)."""
    brain_account, agent_account = ACCOUNTS
    blocks = []
    for account in ACCOUNTS:
        lines = [f"  {account} {{"]
        if account == brain_account and jetstream:
            lines.append("    jetstream: enabled")
        users = [_user_entry(role, cred, namespace) for role, cred in credentials.items()
                 if account_of(role) == account]
        lines += ["    users = [", *users, "    ]"]
        if account == brain_account:
            lines += ["    exports = [",
                      *(f'      {{service: "{s}"}}' for s in agent_services(namespace)),
                      *(f'      {{stream: "{s}"}}' for s in agent_streams(namespace)),
                      "    ]"]
        else:
            lines += ["    imports = [",
                      *(f'      {{service: {{account: {brain_account}, subject: "{s}"}}}}'
                        for s in agent_services(namespace)),
                      *(f'      {{stream: {{account: {brain_account}, subject: "{s}"}}}}'
                        for s in agent_streams(namespace)),
                      "    ]"]
        lines.append("  }")
        blocks.append("\n".join(lines))
    return "accounts {\n" + "\n".join(blocks) + "\n}\n"


def with_credentials(url: str, cred: Credential) -> str:
    """`url` with `user:password@` in it (replacing any there), as every NATS client understands."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(cred.user, safe='')}:{quote(cred.password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def split_credentials(url: str) -> tuple[str, Credential | None]:
    """(`url` without `user:password@`, the credential it carried), for each of `a,b,...`."""
    bare, found = [], None
    for part in (p.strip() for p in url.split(",")):
        parts = urlsplit(part)
        if parts.username is not None and found is None:
            found = Credential(user=unquote(parts.username), password=unquote(parts.password or ""))
        bare.append(urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])))
    return ",".join(bare), found


def url_user(url: str) -> str | None:
    """The user named in a URL's `user:password@`, if any."""
    username = urlsplit(url).username
    return unquote(username) if username else None


def redact_url(url: str) -> str:
    """`url` fit for logs and screens: a password (or token) becomes `***` (in each of `a,b,...`)."""
    if "," in url:
        return ",".join(redact_url(part.strip()) for part in url.split(","))
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}" if user else f"***@{host}"))


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or `localhost`) reaches this machine only."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
