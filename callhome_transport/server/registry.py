"""The registry of connected devices: which connections each device has, who
waits for which device, what each device's state is, the refused attempts,
and the events that tell observers.  It opens no socket and reads no clock
but ``time.time()`` for event stamps: the tests drive it with fake
connections (tests/unit/test_registry.py).

Only the :class:`~callhome_transport.transports.contract.DeviceConnection`
contract is used: a connection that is not *pooled* (SSH) replaces the
device's previous one; pooled ones (TLS, RESTCONF: one session per
connection) are kept side by side and handed out while unused.

Observers (:class:`RegistryObserver`) are the seam for what builds on device
arrival: the gateway's log lines, its event stream (``GET /events``,
:class:`callhome_transport.events.RegistryFeed`), a registry shared between
gateways.  Each gets every :class:`DeviceConnected`, :class:`DeviceDisconnected`,
:class:`RejectedAttempt`, :class:`Blocked` and :class:`LocalSession` (opened,
then closed), on the event loop, after the registry changed; it must not block.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ..addresses import PeerAddress, format_peer
from ..errors import CallHomeError, DeviceNotConnectedError, UnknownDeviceNameError, refused_while_waiting
from ..identity.inventory import Transport
from ..status import BlockKind, DeviceState, DeviceStatus, RefusalReason
from ..transports.contract import DeviceConnection

__all__ = [
    "Blocked",
    "DeviceConnected",
    "DeviceDisconnected",
    "LocalSession",
    "Registry",
    "RegistryObserver",
    "RejectedAttempt",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DeviceConnected:
    """A device called home and was identified and authenticated."""

    device: str
    transport: Transport
    peer_address: PeerAddress
    fingerprint: str  # SSH host key or TLS certificate, "SHA256:..."
    connected_at: float  # time.time() when authenticated
    handshake_seconds: float  # TCP accept to authenticated
    certificate_subject: str | None = None  # TLS devices
    certificate_serial: str | None = None  # TLS devices
    heartbeat_negotiated: bool | None = None  # strict C4 TLS devices: did the device accept heartbeats
    reconnects: int = 0  # the device's calls before this one (0: its first since it joined the registry)

    @classmethod
    def of(cls, conn: DeviceConnection, facts: dict[str, Any] | None = None, *, reconnects: int = 0) -> DeviceConnected:
        """``conn``'s event; ``facts``: its :meth:`~DeviceConnection.facts`, when already read."""
        return cls(
            device=conn.device,
            transport=conn.transport,
            peer_address=conn.peer_address,
            fingerprint=conn.fingerprint,
            connected_at=conn.connected_at,
            handshake_seconds=conn.handshake_seconds,
            reconnects=reconnects,
            **(conn.facts() if facts is None else facts),
        )


@dataclass(frozen=True, kw_only=True)
class DeviceDisconnected:
    """A connection of a device ended (for a pooled device: one of its calls)."""

    device: str
    reason: str
    at: float
    state: DeviceState  # the device's state after it (connected while another call is usable)
    state_changed: bool  # False: another call is still usable, or the connection was handed over
    transport: Transport  # of the connection that ended
    peer_address: PeerAddress
    connected_at: float  # when that connection was authenticated


@dataclass(frozen=True, kw_only=True)
class RejectedAttempt:
    """A call-home attempt that was refused, kept so an operator can onboard
    or investigate it."""

    peer_address: PeerAddress
    reason: RefusalReason
    fingerprint: str
    key_type: str
    device: str | None
    at: float
    detail: str = ""  # e.g. why a certificate was refused, with its subject, issuer and serial
    device_id: str | None = None  # Junos outbound-ssh: the DEVICE-ID the device sent
    transport: str = ""  # the listener: ssh, tls, restconf, tls-strict, outbound-ssh
    certificate_subject: str | None = None  # TLS: the subject of the certificate refused


@dataclass(frozen=True, kw_only=True)
class Blocked:
    """Admission started refusing a source address or a device."""

    kind: BlockKind
    key: str  # the source address, or the device's name
    seconds: float  # how long the block lasts
    at: float


@dataclass(frozen=True, kw_only=True)
class LocalSession:
    """A local client's session on a device (a NETCONF session, a terminal, a
    RESTCONF connection on the gateway's endpoints): observers get it when it
    opens (``closed_at`` None) and again when it closes."""

    device: str
    endpoint: str  # netconf, terminal, restconf
    session: int  # unique within the registry: pairs the opening with the closing
    opened_at: float
    closed_at: float | None = None


class RegistryObserver(Protocol):
    """Told of every change of the registry (on the event loop; must not block)."""

    def connected(self, event: DeviceConnected) -> None: ...

    def disconnected(self, event: DeviceDisconnected) -> None: ...

    def rejected(self, attempt: RejectedAttempt) -> None: ...

    def blocked(self, block: Blocked) -> None: ...

    def local_session(self, session: LocalSession) -> None: ...


@dataclass
class _Observers:
    connected: list[Callable[[DeviceConnected], None]] = field(default_factory=list)
    disconnected: list[Callable[[DeviceDisconnected], None]] = field(default_factory=list)
    rejected: list[Callable[[RejectedAttempt], None]] = field(default_factory=list)
    blocked: list[Callable[[Blocked], None]] = field(default_factory=list)
    local_session: list[Callable[[LocalSession], None]] = field(default_factory=list)


class Registry:
    """The connected devices, by name.

    ``is_known(name)`` says whether a name may be waited for (the inventory);
    ``on_closed(conn, reason)`` runs first when a connection ends (the
    server closes its sessions and learns from it there)."""

    def __init__(
        self,
        *,
        is_known: Callable[[str], bool],
        describe_source: Callable[[], str] = lambda: "the inventory",
        history: int = 256,
        on_closed: Callable[[DeviceConnection, str], None] | None = None,
    ) -> None:
        self._is_known = is_known
        self._describe_source = describe_source
        self._on_closed = on_closed
        self._conns: dict[str, list[DeviceConnection]] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._status: dict[str, DeviceStatus] = {}
        self._observers = _Observers()
        self.rejected: collections.deque[RejectedAttempt] = collections.deque(maxlen=history)
        self._local: dict[str, int] = {}  # local sessions open now, by device
        self._session_ids = itertools.count(1)
        # the last refusal of each device since it last connected: (time.time(), error)
        self._refusals: dict[str, tuple[float, CallHomeError]] = {}

    # -- observers ----------------------------------------------------------------------

    def add_observer(self, observer: RegistryObserver) -> None:
        self.on_connected(observer.connected)
        self.on_disconnected(observer.disconnected)
        self.on_rejected(observer.rejected)
        self.on_blocked(observer.blocked)
        self.on_local_session(observer.local_session)

    def on_connected(self, callback: Callable[[DeviceConnected], None]) -> None:
        self._observers.connected.append(callback)

    def on_disconnected(self, callback: Callable[[DeviceDisconnected], None]) -> None:
        self._observers.disconnected.append(callback)

    def on_rejected(self, callback: Callable[[RejectedAttempt], None]) -> None:
        self._observers.rejected.append(callback)

    def on_blocked(self, callback: Callable[[Blocked], None]) -> None:
        self._observers.blocked.append(callback)

    def on_local_session(self, callback: Callable[[LocalSession], None]) -> None:
        self._observers.local_session.append(callback)

    # -- connections ------------------------------------------------------------------------

    def add(self, conn: DeviceConnection) -> None:
        """Register an authenticated connection; a not-pooled one replaces the
        device's previous one (closed, with no disconnect event)."""
        device = conn.device
        conns = self._conns.setdefault(device, [])
        replaced = [] if conn.pooled else [c for c in conns if not c.pooled]
        for old in replaced:
            conns.remove(old)
        conns.append(conn)
        for old in replaced:
            if not old.is_closed:
                old.log.info("replaced by a new call home from %s", format_peer(conn.peer_address))
                old.close()
        self._refusals.pop(device, None)
        facts = conn.facts()
        status = self.status(device)
        status.on_connected(
            peer_address=format_peer(conn.peer_address),
            identity=facts.get("certificate_subject") or conn.fingerprint,
            at=conn.connected_at,
        )
        event = DeviceConnected.of(conn, facts, reconnects=status.reconnects)
        self._signal(device)
        # a callback, not a task per connection: thousands of devices sit connected for hours
        conn.closed.add_done_callback(functools.partial(self._closed, conn))
        _emit(self._observers.connected, event, f"connect callback failed for device {device}")

    def _closed(self, conn: DeviceConnection, closed: asyncio.Future[str]) -> None:
        if closed.cancelled():
            return
        reason = closed.result()
        if self._on_closed is not None:
            self._on_closed(conn, reason)
        conns = self._conns.get(conn.device, [])
        if conn not in conns:
            return  # replaced, or the registry closed it
        conns.remove(conn)
        self._signal(conn.device)
        status = self.status(conn.device)
        changed = status.on_ended(reason, still_connected=self.current(conn.device) is not None)
        event = DeviceDisconnected(
            device=conn.device,
            reason=reason,
            at=time.time(),
            state=status.state,
            state_changed=changed,
            transport=conn.transport,
            peer_address=conn.peer_address,
            connected_at=conn.connected_at,
        )
        _emit(self._observers.disconnected, event, f"disconnect callback failed for device {conn.device}")

    def current(self, device: str) -> DeviceConnection | None:
        """The device's connection a caller can use now, if any."""
        return next((c for c in self._conns.get(device, ()) if c.available), None)

    def connections(self, device: str) -> list[DeviceConnection]:
        """Every registered connection of ``device`` (used or not)."""
        return list(self._conns.get(device, ()))

    def connected(self) -> dict[str, DeviceConnection]:
        """The devices connected now (for pooled ones: with an unused call), by name."""
        live = {}
        for name in self._conns:
            conn = self.current(name)
            if conn is not None:
                live[name] = conn
        return live

    def census(self) -> tuple[dict[Transport, int], int]:
        """The devices connected now by transport, and how many of them have a
        greeted NETCONF session ready: one walk of the registry (``/metrics``
        at 10,000 devices had walked it three times, 38 ms)."""
        by_transport: dict[Transport, int] = {}
        held = 0
        for conns in self._conns.values():
            for conn in conns:
                if conn.available:
                    by_transport[conn.transport] = by_transport.get(conn.transport, 0) + 1
                    break
            else:
                continue
            for conn in conns:
                sessions = conn.sessions
                if sessions is not None and sessions.ready is not None:
                    held += 1
                    break
        return by_transport, held

    def session_held(self, device: str) -> bool:
        """Whether a greeted NETCONF session is ready for ``device``'s next caller."""
        return any(c.sessions is not None and c.sessions.ready is not None for c in self._conns.get(device, ()))

    async def wait_for(self, device: str, timeout: float) -> DeviceConnection:
        """The device's usable connection, waiting up to ``timeout`` seconds
        for it to call home.  A name that is not known raises
        :class:`~callhome_transport.errors.UnknownDeviceNameError` (a
        ``KeyError``) at once.

        A refusal of the device during the wait (authentication failed,
        certificate revoked or refused, blocked) is raised at once; at the
        end of the wait, a refusal since the device last connected is raised
        in place of :class:`DeviceNotConnectedError`."""
        if not self._is_known(device):
            raise UnknownDeviceNameError(device=device, source=self._describe_source())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        started = time.time()
        while True:
            conn = self.current(device)
            if conn is not None:
                return conn
            refusal = self._refusals.get(device)
            remaining = deadline - loop.time()
            if refusal is not None and (refusal[0] >= started or remaining <= 0):
                raise refused_while_waiting(refusal[1], refusal[0])
            if remaining <= 0:
                raise DeviceNotConnectedError(device=device, timeout=timeout)
            event = self._changed.setdefault(device, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    async def disconnect(self, device: str) -> bool:
        """Close ``device``'s connections; wait until they are closed.
        Returns whether there was one."""
        conns = self.connections(device)
        for conn in conns:
            conn.log.info("disconnecting on request")
            conn.close()
        await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)
        return bool(conns)

    async def close_all(self) -> None:
        """Close every connection (no disconnect events: the registry is ending)."""
        conns = [c for pool in self._conns.values() for c in pool]
        self._conns.clear()
        for conn in conns:
            conn.close()
        await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)

    def _signal(self, device: str) -> None:
        event = self._changed.pop(device, None)
        if event is not None:
            event.set()

    # -- states and refusals ------------------------------------------------------------------

    def status(self, device: str) -> DeviceStatus:
        """``device``'s state (never-connected until something happens)."""
        return self._status.setdefault(device, DeviceStatus())

    def touch(self, device: str, at: float | None = None) -> None:
        """The device was used (a local session, a relayed request)."""
        status = self._status.get(device)
        if status is not None:
            status.last_seen = time.time() if at is None else at

    def forget(self, device: str) -> None:
        """Start ``device``'s state afresh (it left the inventory, or changed transport)."""
        self._status.pop(device, None)

    def reject(self, attempt: RejectedAttempt, error: CallHomeError | None = None) -> None:
        """Record a refused attempt.  ``error``: the refusal of an identified
        device: a caller waiting for that device gets it."""
        self.rejected.append(attempt)
        device = attempt.device
        if device is not None:
            if device in self._status or self._is_known(device):
                self.status(device).on_refused(attempt.reason, attempt.detail, attempt.at)
            if error is not None:
                self._refusals[device] = (attempt.at, error)
                self._signal(device)
        _emit(self._observers.rejected, attempt, "reject callback failed")

    def forget_refusals(self) -> None:
        """Refusals made with keys, certificates or credentials no longer in use."""
        self._refusals.clear()

    def block(self, kind: BlockKind, key: str, seconds: float) -> None:
        """Admission started a block (the server calls it after the refusal
        that started it, so observers see that refusal first)."""
        _emit(
            self._observers.blocked,
            Blocked(kind=kind, key=key, seconds=seconds, at=time.time()),
            "block callback failed",
        )

    # -- local sessions ------------------------------------------------------------------

    @contextlib.contextmanager
    def local_session(self, device: str, endpoint: str) -> Iterator[LocalSession]:
        """A local client's session on ``device`` while the block runs:
        counted in :meth:`local_sessions`, the device touched, observers told
        when it opens and when it closes."""
        opened = LocalSession(device=device, endpoint=endpoint, session=next(self._session_ids), opened_at=time.time())
        self._local[device] = self._local.get(device, 0) + 1
        self.touch(device, opened.opened_at)
        _emit(self._observers.local_session, opened, f"local session callback failed for device {device}")
        try:
            yield opened
        finally:
            left = self._local[device] - 1
            if left:
                self._local[device] = left
            else:
                del self._local[device]
            closed = dataclasses.replace(opened, closed_at=time.time())
            _emit(self._observers.local_session, closed, f"local session callback failed for device {device}")

    def local_sessions(self, device: str | None = None) -> int:
        """Local sessions open now on ``device`` (None: on every device)."""
        return sum(self._local.values()) if device is None else self._local.get(device, 0)


_E = TypeVar("_E")


def _emit(callbacks: list[Callable[[_E], None]], event: _E, what: str) -> None:
    for callback in list(callbacks):
        try:
            callback(event)
        except Exception:
            log.exception("%s", what)
