"""The call-home configuration of a NETCONF server, as the agent honours it.

Frozen, keyword-only dataclasses built by :mod:`.config` from the
``ietf-netconf-server`` call-home subtree (``netconf-server/call-home``), with
the model's defaults already applied for the revision in use.  Nothing here
does I/O.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, field

__all__ = [
    "NETCONF_CH_SSH_PORT",
    "NETCONF_CH_TLS_PORT",
    "NETCONF_SSH_PORT",
    "NETCONF_TLS_PORT",
    "REVISIONS",
    "AgentConfig",
    "Endpoint",
    "HostPort",
    "IgnoredPart",
    "LocalServers",
    "NetconfClient",
    "Periodic",
    "Persistent",
    "ReconnectStrategy",
    "StartWith",
    "TcpKeepalives",
    "Transport",
]

REVISIONS = ("2019-07-02", "2023-12-28", "2025-04-24")
"""The ietf-netconf-server revisions whose call-home payload the agent takes."""

NETCONF_CH_SSH_PORT = 4334  # RFC 8071 s6: netconf-ch-ssh, remote-port's default for ssh endpoints
NETCONF_CH_TLS_PORT = 4335  # RFC 8071 s6: netconf-ch-tls, remote-port's default for tls endpoints
NETCONF_SSH_PORT = 830  # RFC 6242 s3: where a device's own NETCONF/SSH server listens
NETCONF_TLS_PORT = 6513  # RFC 7589 s3: where a device's own NETCONF/TLS server listens


class Transport(enum.Enum):
    """The ``transport`` choice of an endpoint."""

    SSH = "ssh"
    TLS = "tls"


class StartWith(enum.Enum):
    """``reconnect-strategy/start-with``."""

    FIRST_LISTED = "first-listed"
    LAST_CONNECTED = "last-connected"
    RANDOM_SELECTION = "random-selection"


@dataclass(frozen=True, kw_only=True)
class HostPort:
    """Where a local server listens (``--local-ssh HOST:PORT``)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class LocalServers:
    """The device's own NETCONF servers: SSH endpoints are spliced to ``ssh``,
    TLS endpoints to ``tls`` (the agent-only section of the file)."""

    ssh: HostPort = field(default_factory=lambda: HostPort(host="127.0.0.1", port=NETCONF_SSH_PORT))
    tls: HostPort = field(default_factory=lambda: HostPort(host="127.0.0.1", port=NETCONF_TLS_PORT))

    def for_transport(self, transport: Transport) -> HostPort:
        return self.ssh if transport is Transport.SSH else self.tls


@dataclass(frozen=True, kw_only=True)
class TcpKeepalives:
    """``tcp-client-parameters/keepalives`` (ietf-tcp-common): probe after
    ``idle_time`` s of silence, every ``probe_interval`` s, give up after
    ``max_probes`` unanswered probes."""

    idle_time: int
    max_probes: int
    probe_interval: int


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """One ``endpoints/endpoint`` entry: where to call and how."""

    name: str
    transport: Transport
    remote_address: str
    remote_port: int
    local_address: str | None = None
    local_port: int = 0
    keepalives: TcpKeepalives | None = None

    @property
    def remote(self) -> str:
        host = self.remote_address
        return f"[{host}]:{self.remote_port}" if ":" in host else f"{host}:{self.remote_port}"


@dataclass(frozen=True, kw_only=True)
class Persistent:
    """``connection-type/persistent``: call again as soon as a session ends."""


@dataclass(frozen=True, kw_only=True)
class Periodic:
    """``connection-type/periodic``: call at ``anchor_time + k * period``
    (``period`` in minutes, as the model says); a session idle for
    ``idle_timeout`` seconds is closed (0: never)."""

    period: int
    anchor_time: datetime.datetime | None
    idle_timeout: int


@dataclass(frozen=True, kw_only=True)
class ReconnectStrategy:
    """``reconnect-strategy``: ``max_wait`` seconds per connection attempt,
    ``max_attempts`` attempts per endpoint before the next one."""

    start_with: StartWith = StartWith.FIRST_LISTED
    max_wait: int = 5
    max_attempts: int = 3


@dataclass(frozen=True, kw_only=True)
class NetconfClient:
    """One ``call-home/netconf-client``: an independent manager to keep calling."""

    name: str
    endpoints: tuple[Endpoint, ...]
    connection: Persistent | Periodic
    reconnect: ReconnectStrategy


@dataclass(frozen=True, kw_only=True)
class IgnoredPart:
    """A configured node the agent cannot honour (it belongs to the real
    server, which terminates SSH/TLS); logged once at INFO."""

    key_path: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """A parsed call-home configuration."""

    revision: str
    clients: tuple[NetconfClient, ...]
    local: LocalServers = field(default_factory=LocalServers)
    ignored: tuple[IgnoredPart, ...] = ()
    source: str = "<config>"

    def client(self, name: str) -> NetconfClient:
        return next(c for c in self.clients if c.name == name)
