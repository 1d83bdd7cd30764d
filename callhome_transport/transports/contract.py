"""The contract every call-home connection keeps, whatever carries it (SSH,
Junos outbound-ssh, TLS through ``ssl`` or tlslite-ng, RESTCONF handed over
whole).  The registry, the server and the gateway use only this: they never
ask which class they hold.

A connection is *pooled* when it carries one session and the device calls
again for the next (NETCONF over TLS, RFC 7589; RESTCONF): the registry keeps
every such call of a device and hands out an unused one.  Otherwise (SSH: one
connection, many channels) a new call of the device replaces the old one.

:class:`ConnectionBase` holds what the classes share (who, since when, the
``closed`` future and its reason, the facts of the connect event).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from .._log import ContextAdapter
from ..addresses import PeerAddress, format_peer
from ..errors import TransportError
from ..identity.inventory import Transport
from ..protocol.session import SingleSession

if TYPE_CHECKING:
    from ..errors import CallHomeError
    from ..protocol.session import DeviceSession, DeviceStream, DeviceTraits
    from .preauth import PendingConnection
    from .relay import ChannelRelay

__all__ = ["Acceptor", "ConnectionBase", "DeviceConnection", "Handshake", "NetconfSessions", "next_conn_id"]


class NetconfSessions(Protocol):
    """The NETCONF sessions a connection carries, greeted by the server
    (:class:`~callhome_transport.protocol.session.SessionPool` for SSH,
    :class:`~callhome_transport.protocol.session.SingleSession` for TLS)."""

    hold: bool

    @property
    def ready(self) -> DeviceSession | None: ...

    @property
    def claimed(self) -> bool: ...

    def start(self) -> None: ...

    async def take(self, timeout: float, capabilities: tuple[str, ...] = ...) -> DeviceSession: ...

    def close(self) -> None: ...


@runtime_checkable
class DeviceConnection(Protocol):
    """An identified, authenticated call-home connection to one device."""

    device: str
    transport: Transport  # how the device calls (its inventory transport)
    pooled: ClassVar[bool]  # one session per connection: the device's calls are pooled
    peer_address: PeerAddress
    fingerprint: str  # its identity: SSH host key or TLS certificate, "SHA256:..."
    connected_at: float  # time.time() when authenticated
    handshake_seconds: float  # accept -> authenticated
    log: ContextAdapter
    closed: asyncio.Future[str]  # resolved with the reason when the connection ends

    @property
    def sessions(self) -> NetconfSessions | None:
        """The NETCONF sessions it carries; ``None``: none (RESTCONF)."""
        ...

    @property
    def is_closed(self) -> bool: ...

    @property
    def close_reason(self) -> str | None: ...

    @property
    def available(self) -> bool:
        """Whether a caller can use it now (live; for a pooled one, unused)."""
        ...

    async def wait_closed(self) -> str: ...

    async def start_sessions(
        self, *, hold: bool, hello_timeout: float, traits: DeviceTraits, warm: float = 0.0
    ) -> None:
        """Give the connection its NETCONF sessions (greeted now with ``hold``;
        with ``warm``, one kept ready while the device was used within that
        many seconds, where sessions are opened per caller); raises
        :class:`TransportError` if it cannot carry one."""
        ...

    def holds_by_default(self, traits: DeviceTraits) -> bool:
        """Whether to keep a greeted session ready when the device's policy is ``auto``."""
        ...

    def ended(self, traits: DeviceTraits) -> None:
        """The connection closed: learn what it taught about the device."""
        ...

    async def open_stream(self, local: socket.socket | None = None) -> socket.socket:
        """The connection's byte stream, given to its user (pooled connections, once)."""
        ...

    async def open_terminal(
        self, local: socket.socket, *, term_type: str = "xterm", cols: int = 80, rows: int = 24
    ) -> ChannelRelay:
        """An interactive shell relayed to ``local`` (SSH devices)."""
        ...

    def facts(self) -> dict[str, Any]:
        """What the connect event says beyond the common fields (certificate, heartbeat)."""
        ...

    def close(self) -> None: ...


_conn_ids = itertools.count(1)


def next_conn_id() -> int:
    """A number for the next accepted connection's log lines (``conn=``), unique across transports."""
    return next(_conn_ids)


@dataclass(frozen=True, kw_only=True)
class Handshake:
    """What a finished handshake knows: who called (identified and
    authenticated), from where, since when.  Every connection is built from one."""

    device: str
    fingerprint: str  # the identity: SSH host key or TLS certificate, "SHA256:..."
    peer_address: PeerAddress
    log: ContextAdapter
    accepted_at: float  # time.monotonic() when the handshake began
    conn_id: int | str | None = None

    @classmethod
    def of(
        cls, who: _Identified, peer: PeerAddress, log: ContextAdapter, accepted_at: float, conn_id: int | str | None
    ) -> Handshake:
        """The record of a handshake that identified ``who`` (an SSH
        ``Identity`` or a ``TLSIdentified``: a device and its fingerprint)."""
        return cls(
            device=who.device,
            fingerprint=who.fingerprint,
            peer_address=peer,
            log=log,
            accepted_at=accepted_at,
            conn_id=conn_id,
        )


class _Identified(Protocol):
    @property
    def device(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...


class ConnectionBase:
    """What every connection class shares.  A subclass sets ``transport``
    (or passes it), ``pooled``, and resolves :attr:`closed` with the reason
    when the connection ends."""

    transport: Transport
    pooled: ClassVar[bool] = True

    def __init__(
        self, handshake: Handshake, *, closed: asyncio.Future[str] | None = None, transport: Transport | None = None
    ) -> None:
        self.device = handshake.device
        self.fingerprint = handshake.fingerprint
        self.peer_address = handshake.peer_address
        self.log = handshake.log
        self.conn_id = handshake.conn_id
        self.connected_at = time.time()
        self.accepted_at = handshake.accepted_at
        self.handshake_seconds = time.monotonic() - handshake.accepted_at  # accept -> authenticated
        if transport is not None:
            self.transport = transport
        self.sessions: NetconfSessions | None = None
        self.claimed = False  # a pooled connection given to its user
        self.closed = closed if closed is not None else asyncio.get_running_loop().create_future()

    @property
    def is_closed(self) -> bool:
        return self.closed.done()

    @property
    def close_reason(self) -> str | None:
        return self.closed.result() if self.closed.done() and not self.closed.cancelled() else None

    async def wait_closed(self) -> str:
        """Wait until the connection ends; return why."""
        return await asyncio.shield(self.closed)

    @property
    def available(self) -> bool:
        if self.is_closed:
            return False
        if not self.pooled:
            return True
        return not (self.sessions.claimed if self.sessions is not None else self.claimed)

    async def start_sessions(
        self, *, hold: bool, hello_timeout: float, traits: DeviceTraits, warm: float = 0.0
    ) -> None:
        return None  # no NETCONF session (RESTCONF)

    def _one_session(self, stream: DeviceStream, hold: bool, hello_timeout: float) -> None:
        """Give a pooled connection its one NETCONF session on ``stream`` (greeted now with ``hold``)."""
        self.sessions = SingleSession(
            device=self.device,
            stream=stream,
            hold=hold,
            hello_timeout=hello_timeout,
            peer_address=self.peer_address,
            logger=self.log,
        )
        self.sessions.start()

    def holds_by_default(self, traits: DeviceTraits) -> bool:
        return True  # the connection carries that one session anyway (RFC 7589)

    def ended(self, traits: DeviceTraits) -> None:
        return None

    async def open_stream(self, local: socket.socket | None = None) -> socket.socket:
        raise TransportError(
            f"device {self.device}: its {self.transport.value} connection hands out no stream",
            device=self.device,
            peer_address=self.peer_address,
        )

    async def open_terminal(
        self, local: socket.socket, *, term_type: str = "xterm", cols: int = 80, rows: int = 24
    ) -> ChannelRelay:
        raise TransportError(f"device {self.device} calls home over TLS: terminal access needs SSH", device=self.device)

    def facts(self) -> dict[str, Any]:
        return {}

    def _unavailable(self, what: str) -> TransportError:
        return TransportError(what, device=self.device, peer_address=self.peer_address)

    def __repr__(self) -> str:
        conn = "" if self.conn_id is None else f" conn={self.conn_id}"
        return f"<{type(self).__name__} device={self.device} peer={format_peer(self.peer_address)}{conn}>"


class Acceptor(Protocol):
    """How one listener's connections become :class:`DeviceConnection` s:
    what to wait for before the handshake (the SSH banner, a Junos preamble
    line, a TLS device's first bytes), then the handshake, which raises a
    refusal (a :class:`~callhome_transport.errors.CallHomeError`).  Each
    transport module defines its acceptor beside its connection class; the
    server runs one accept path for all of them."""

    label: str  # the listener: admission slots, refused-connection metrics
    kind: str  # handshake metrics and refusals
    tls: bool  # the device's first bytes are counted by the kernel (TLS) rather than peeked
    transports: tuple[Transport, ...]  # the devices it serves

    async def before_handshake(self, pending: PendingConnection) -> None:
        """Wait for (or start watching) the device's first bytes; raises
        :class:`~callhome_transport.transports.preauth.PreauthEnded`."""
        ...

    async def handshake(self, pending: PendingConnection) -> DeviceConnection: ...

    def refusal_kind(self, exc: CallHomeError) -> str:
        """The metrics label of a refusal (``kind``, unless the refusal is another transport's)."""
        ...
