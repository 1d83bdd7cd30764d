"""Multi-device call home: a listener, device trust from an inventory, and a
registry of connected devices that callers reach by name.

:class:`AsyncCallHomeServer` is the asyncio core (the gateway builds on it);
:class:`CallHomeServer` runs it on a background event loop for synchronous
code and hands out standard ncclient Managers::

    inventory = Inventory.from_file("devices.yml")
    with CallHomeServer(inventory, listen_port=4334) as server:
        with server.netconf("SN-0001", timeout=120) as m:   # waits for the call
            print(m.get_config(source="running"))

A device that is not connected yet is waited for (deferral, call-home draft
s7); one that calls again replaces its stale connection.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ncclient.manager import Manager

from ..addresses import NETCONF_CH_SSH_PORT, NETCONF_CH_TLS_PORT, RESTCONF_CH_TLS_PORT, PeerAddress, format_peer
from ..engine import EventLoopThread
from ..errors import (
    AuthenticationFailedError,
    CallHomeError,
    CertificateRejectedError,
    DeviceBlockedError,
    DeviceDisconnectedError,
    DeviceNotConnectedError,
    HandshakeTimeoutError,
    HelloTimeoutError,
    OutboundSSHRefusedError,
    RevokedCertificateError,
    TransportError,
    UnknownDeviceError,
    refused_while_waiting,
)
from ..identity.inventory import HoldPolicy, Inventory, Transport
from ..identity.trust import Identity, InventoryTrust, PresentedKey, Trust
from ..integrations.netconf import DEFAULT_MAX_MESSAGE_SIZE, capabilities_for, manager_over_socket
from ..integrations.restconf import CallHomeAdapter
from ..metrics import Metrics
from ..protocol.hello import DEFAULT_CLIENT_CAPABILITIES
from ..protocol.session import DeviceSession, DeviceTraits, SessionPool, SingleSession, TransportStream, greet_local
from ..transports.listener import Listener
from ..transports.outbound_ssh import JUNOS_OUTBOUND_SSH_PORT, OutboundSSHConfig, outbound_ssh_handshake
from ..transports.relay import ChannelRelay
from ..transports.ssh import SSHClientConfig, SSHDeviceConnection, host_key_algorithms, ssh_handshake
from ..transports.tls import (
    DirectTLSConnection,
    TLSClientConfig,
    TLSDeviceConnection,
    TLSTrust,
    stream_pair,
    tls_handshake,
    tls_handshake_direct,
)
from ..transports.tls_strict import (
    HeartbeatConfig,
    StrictTLSConnection,
    strict_client_credentials,
    strict_tls_handshake,
)
from .admission import Admission, AdmissionConfig, FailureKind, Startups
from .preauth import PendingConnection, PreauthEnded

if TYPE_CHECKING:
    import asyncssh

AnyTLSConnection = TLSDeviceConnection | StrictTLSConnection | DirectTLSConnection
DeviceConnection = SSHDeviceConnection | AnyTLSConnection

__all__ = ["AsyncCallHomeServer", "CallHomeServer", "DeviceConnected", "RejectedAttempt"]

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


@dataclass(frozen=True, kw_only=True)
class RejectedAttempt:
    """A call-home attempt that was refused, kept so an operator can onboard
    or investigate it."""

    peer_address: PeerAddress
    reason: str  # "unknown-device", "auth-failed", "certificate-rejected", "revoked", "handshake-timeout", ...
    fingerprint: str
    key_type: str
    device: str | None
    at: float
    detail: str = ""  # e.g. why a certificate was refused, with its subject, issuer and serial
    device_id: str | None = None  # Junos outbound-ssh: the DEVICE-ID the device sent


@dataclass
class _TLSListenerState:
    """What a TLS listener checks devices against (replaced on reload)."""

    trust: TLSTrust
    context: ssl.SSLContext | None  # None: strict C4 listener (tlslite-ng)


@dataclass(frozen=True)
class PreparedInventory:
    """A new inventory with its trust and TLS contexts, ready to swap in
    (:meth:`AsyncCallHomeServer.prepare_inventory`)."""

    inventory: Inventory
    trust: Trust
    ssh_options: asyncssh.SSHClientConnectionOptions  # offering the pinned keys' host key algorithms
    tls_states: list[_TLSListenerState]


_DROP_LOG_INTERVAL = 10.0  # seconds between WARNINGs about early drops on one listener

# the penalty of each refusal (admission.FailureKind); None: no charge
_PENALTY_OF = {
    "unknown-device": FailureKind.UNKNOWN_KEY,
    "certificate-rejected": FailureKind.UNKNOWN_KEY,
    "revoked": FailureKind.UNKNOWN_KEY,
    "handshake-timeout": FailureKind.GRACE_TIMEOUT,
    "banner-timeout": FailureKind.GRACE_TIMEOUT,
    "dropped": FailureKind.GRACE_TIMEOUT,
    "transport-error": FailureKind.GARBAGE,
    "auth-failed": FailureKind.AUTH_FAILED,
    "device-blocked": None,
    # Junos outbound-ssh (outbound_ssh.py); malformed-preamble: GARBAGE, the default
    "preamble-timeout": FailureKind.GRACE_TIMEOUT,
    "unknown-device-id": FailureKind.UNKNOWN_KEY,
    "hmac-mismatch": FailureKind.UNKNOWN_KEY,
    "host-key-mismatch": FailureKind.UNKNOWN_KEY,
}


class _AdmittedTrust:
    """A :class:`Trust` that refuses, after identification and before any
    credential is sent, a device blocked for repeated authentication failures."""

    def __init__(self, trust: Trust, admission: Admission) -> None:
        self._trust = trust
        self._admission = admission

    def identify(self, presented: PresentedKey) -> Identity | None:
        identity = self._trust.identify(presented)
        if identity is not None:
            seconds = self._admission.device_blocked(identity.device)
            if seconds:
                raise DeviceBlockedError(
                    device=identity.device,
                    peer_address=presented.peer_address,
                    seconds=seconds,
                    fingerprint=presented.fingerprint,
                    key_type=presented.key_type,
                )
        return identity


def _make_metrics(server: AsyncCallHomeServer) -> Metrics:
    metrics = Metrics()
    metrics.counter(
        "callhome_handshakes_total", "Call-home handshakes by transport and result (ok or the refusal reason)"
    )
    metrics.counter(
        "callhome_connections_refused_total", "Connections refused before any handshake (admission control)"
    )
    metrics.histogram("callhome_handshake_seconds", "TCP accept to identified and authenticated, seconds")

    def connected() -> dict[tuple[tuple[str, str], ...], float]:
        counts: dict[tuple[tuple[str, str], ...], float] = {}
        for conn in server.connected().values():
            key = (("transport", conn.transport_kind.value),)
            counts[key] = counts.get(key, 0) + 1
        return counts

    metrics.gauge("callhome_connected_devices", "Devices connected now, by transport", connected)
    metrics.gauge(
        "callhome_held_sessions",
        "Devices with a greeted NETCONF session ready for their next caller",
        lambda: {(): float(sum(server.session_held(name) for name in server.connected()))},
    )
    metrics.gauge(
        "callhome_pending_handshakes",
        "Handshakes in progress, by listener",
        lambda: {(("transport", kind),): float(len(startups)) for kind, startups in server.startups.items()},
    )
    metrics.gauge(
        "callhome_blocked_sources",
        "Source addresses blocked after failed handshakes",
        lambda: {(): float(len(server.admission.blocked()))},
    )
    metrics.gauge(
        "callhome_blocked_devices",
        "Identified devices refused before authentication after repeated authentication failures",
        lambda: {(): float(len(server.admission.blocked_devices()))},
    )
    return metrics


class AsyncCallHomeServer:
    """The asyncio call-home server: NETCONF over SSH (port 4334) and, when
    ``tls`` is given, NETCONF over TLS (port 4335).

    ``trust`` defaults to the inventory's pinned host keys; TLS devices are
    identified by the inventory's ``tls`` sections.  ``listen_port=None``
    disables the SSH listener.  Junos devices with an ``outbound_ssh``
    inventory section call ``outbound_ssh_listen_port`` (7804; the listener
    runs when the inventory has such devices) with Juniper's outbound-ssh
    preamble (:mod:`callhome_transport.transports.outbound_ssh`).  Use ``async with`` or
    :meth:`start` / :meth:`close`.

    Every NETCONF session it hands out has had its hello exchange done by the
    server (bounded by ``hello_timeout``); for devices whose ``hold_session``
    policy says so, one such session is kept ready per device
    (:mod:`callhome_transport.protocol.session`).
    """

    def __init__(
        self,
        inventory: Inventory,
        *,
        listen_address: str | Sequence[str] | None = None,
        listen_port: int | None = NETCONF_CH_SSH_PORT,
        ssh: SSHClientConfig | None = None,
        trust: Trust | None = None,
        tls: TLSClientConfig | None = None,
        tls_listen_port: int | None = NETCONF_CH_TLS_PORT,
        tls_strict_listen_port: int | None = None,
        restconf_listen_port: int | None = RESTCONF_CH_TLS_PORT,
        heartbeat: HeartbeatConfig | None = None,
        admission: AdmissionConfig | None = None,
        restconf_direct: bool = True,
        rejected_history: int = 256,
        hello_timeout: float = 30.0,
        outbound_ssh_listen_port: int | None = JUNOS_OUTBOUND_SSH_PORT,
        outbound_ssh: OutboundSSHConfig | None = None,
    ) -> None:
        if hello_timeout <= 0:
            raise ValueError(f"hello_timeout must be > 0, not {hello_timeout}")
        self.inventory = inventory
        self.hello_timeout = hello_timeout
        self._traits: dict[str, DeviceTraits] = {}  # what each device taught us, across its calls
        self._lending: set[asyncio.Task[None]] = set()
        self.admission = Admission(admission)
        # pending handshakes, per listener (a flood on one port leaves the others alone)
        self.startups: dict[str, Startups[PendingConnection]] = {}
        self._drops: dict[str, tuple[float, int]] = {}  # listener -> (last WARNING, drops since)
        self.metrics = _make_metrics(self)
        self.ssh_config = ssh or SSHClientConfig()
        self._trust = trust or InventoryTrust(inventory)
        self._options = self._ssh_options(inventory, self._trust)
        self._listeners: list[Listener] = []
        self._listener: Listener | None = None
        if listen_port is not None:
            self._listener = Listener(self._on_accept, listen_address=listen_address, listen_port=listen_port)
            self._listeners.append(self._listener)
            self.startups["ssh"] = Startups(self.admission.config.max_pending_handshakes)
        self.tls_config = tls
        self.heartbeat = heartbeat or HeartbeatConfig()
        # blocking TLS handshakes of RESTCONF connections (bounded; each one
        # is also bounded by handshake_timeout)
        self._handshakes = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="callhome-tls")
        self._tls_states: list[_TLSListenerState] = []
        self._tls_strict_listener: Listener | None = None
        self._tls_listener: Listener | None = None
        self._restconf_listener: Listener | None = None
        if tls is not None:
            kinds = {device.transport for device in inventory}
            # the strict listener serves NETCONF/TLS and RESTCONF devices alike
            strict_trust = TLSTrust(inventory, (Transport.TLS, Transport.RESTCONF), strict_listener=True)
            if tls_listen_port is not None and Transport.TLS in kinds:
                self._tls_listener = self._tls_listener_for(
                    TLSTrust(inventory, (Transport.TLS,)), tls, listen_address, tls_listen_port
                )
            if restconf_listen_port is not None and Transport.RESTCONF in kinds:
                self._restconf_listener = self._tls_listener_for(
                    TLSTrust(inventory, (Transport.RESTCONF,)),
                    tls,
                    listen_address,
                    restconf_listen_port,
                    direct=restconf_direct,
                    kind="restconf",
                )
            if tls_strict_listen_port is not None:
                self._tls_strict_listener = self._tls_listener_for(
                    strict_trust, tls, listen_address, tls_strict_listen_port, strict=True
                )
        # Junos outbound-ssh (outbound_ssh.py): started when some device has an outbound_ssh section
        self.outbound_ssh_config = outbound_ssh or OutboundSSHConfig()
        self._outbound_ssh_listener: Listener | None = None
        if outbound_ssh_listen_port is not None and any(device.outbound_ssh for device in inventory):
            self._outbound_ssh_listener = Listener(
                self._on_accept_outbound_ssh, listen_address=listen_address, listen_port=outbound_ssh_listen_port
            )
            self._listeners.append(self._outbound_ssh_listener)
            self.startups["outbound-ssh"] = Startups(self.admission.config.max_pending_handshakes)
        if not self._listeners:
            raise ValueError("nothing to listen on: give listen_port and/or tls")
        self._tls_pool: dict[str, list[AnyTLSConnection]] = {}
        self._connections: dict[str, SSHDeviceConnection] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._callbacks: list[Callable[[DeviceConnected], None]] = []
        self._disconnect_callbacks: list[Callable[[str, str], None]] = []
        self._reject_callbacks: list[Callable[[RejectedAttempt], None]] = []
        self.rejected: collections.deque[RejectedAttempt] = collections.deque(maxlen=rejected_history)
        # the last refusal of each device since it last connected: (time.time(), error)
        self._refusals: dict[str, tuple[float, CallHomeError]] = {}

    @property
    def listen_port(self) -> int:
        """The SSH listener's bound port."""
        if self._listener is None:
            raise RuntimeError("no SSH listener (listen_port=None)")
        return self._listener.listen_port

    @property
    def outbound_ssh_listen_port(self) -> int:
        """The Junos outbound-ssh listener's bound port."""
        if self._outbound_ssh_listener is None:
            raise RuntimeError("no outbound-ssh listener (outbound_ssh_listen_port=None or no outbound_ssh device)")
        return self._outbound_ssh_listener.listen_port

    @property
    def tls_listen_port(self) -> int:
        """The TLS listener's bound port."""
        if self._tls_listener is None:
            raise RuntimeError("no TLS listener (no tls configuration or no TLS device)")
        return self._tls_listener.listen_port

    @property
    def restconf_listen_port(self) -> int:
        """The RESTCONF (TLS) listener's bound port."""
        if self._restconf_listener is None:
            raise RuntimeError("no RESTCONF listener (no tls configuration or no RESTCONF device)")
        return self._restconf_listener.listen_port

    @property
    def tls_strict_listen_port(self) -> int:
        """The strict C4 TLS listener's bound port."""
        if self._tls_strict_listener is None:
            raise RuntimeError("no strict C4 TLS listener (tls_strict_listen_port not set)")
        return self._tls_strict_listener.listen_port

    def serves(self, transport: Transport) -> bool:
        """Whether a listener for ``transport`` devices runs (TLS listeners
        start only for transports the inventory had when the server was made)."""
        strict = self._tls_strict_listener is not None
        if transport is Transport.SSH:
            return self._listener is not None
        if transport is Transport.TLS:
            return self._tls_listener is not None or strict
        return self._restconf_listener is not None or strict

    async def start(self) -> None:
        try:
            for listener in self._listeners:
                await listener.start()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop listening and close every device connection."""
        for listener in self._listeners:
            await listener.close()
        conns: list[DeviceConnection] = list(self._connections.values())
        conns += [c for pool in self._tls_pool.values() for c in pool]
        self._connections.clear()
        self._tls_pool.clear()
        for conn in conns:
            conn.close()
        for task in list(self._lending):
            task.cancel()
        await asyncio.gather(*(c.wait_closed() for c in conns), *self._lending, return_exceptions=True)
        self._handshakes.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> AsyncCallHomeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def add_connect_callback(self, callback: Callable[[DeviceConnected], None]) -> None:
        """Call ``callback(event)`` on the event loop each time a device is
        identified and authenticated.  It must not block."""
        self._callbacks.append(callback)

    def replace_inventory(self, inventory: Inventory) -> None:
        """Use ``inventory`` for every call from now on (host keys, certificate
        identities, credentials); listeners and current connections stay.
        Devices no longer listed keep their connections until
        :meth:`disconnect`.  Raises :class:`ValueError` (e.g. the manager's
        certificate no longer loads) and then changes nothing."""
        self.use_inventory(self.prepare_inventory(inventory))

    def prepare_inventory(self, inventory: Inventory) -> PreparedInventory:
        """Everything :meth:`replace_inventory` needs for ``inventory`` (trust,
        TLS contexts), built without changing this server; safe to run in a
        worker thread.  Raises :class:`ValueError`."""
        trust = InventoryTrust(inventory) if isinstance(self._trust, InventoryTrust) else self._trust
        ssh_options = self._ssh_options(inventory, trust)
        states = []
        for state in self._tls_states:
            tls_trust = TLSTrust(inventory, state.trust.transports, strict_listener=state.trust.strict_listener)
            context = state.context
            if context is not None and self.tls_config is not None:
                context = self.tls_config.context(tls_trust.anchors())
            states.append(_TLSListenerState(trust=tls_trust, context=context))
        return PreparedInventory(inventory=inventory, trust=trust, ssh_options=ssh_options, tls_states=states)

    def use_inventory(self, prepared: PreparedInventory) -> None:
        """Swap in what :meth:`prepare_inventory` built, in one step."""
        if len(prepared.tls_states) != len(self._tls_states):
            raise RuntimeError("prepared for another server")
        self.inventory = prepared.inventory
        self._refusals.clear()  # refused with the old keys, certificates or credentials
        self._traits = {name: traits for name, traits in self._traits.items() if name in prepared.inventory}
        self._trust = prepared.trust
        self._options = prepared.ssh_options
        for state, new in zip(self._tls_states, prepared.tls_states, strict=True):
            state.trust, state.context = new.trust, new.context
        if self._outbound_ssh_listener is None and any(device.outbound_ssh for device in prepared.inventory):
            log.warning(
                "the inventory now has Junos outbound-ssh devices but no outbound-ssh listener runs "
                "(it starts with the server when the inventory has such devices): restart to accept them"
            )

    def _ssh_options(self, inventory: Inventory, trust: Trust) -> asyncssh.SSHClientConnectionOptions:
        """asyncssh options offering the host key algorithms of every key
        pinned in ``inventory`` (every algorithm with a ``trust`` of the
        caller's, whose keys we do not know)."""
        pinned = [pin.key_type for device in inventory for pin in device.host_keys]
        offered = host_key_algorithms(pinned if isinstance(trust, InventoryTrust) else ())
        log.debug("offering SSH host key algorithms %s", ",".join(offered))
        return self.ssh_config.options(offered)

    def add_reject_callback(self, callback: Callable[[RejectedAttempt], None]) -> None:
        """Call ``callback(attempt)`` on the event loop for every refused
        call-home attempt (``attempt.device`` is set when the device was
        identified before it was refused, e.g. authentication failed).  It
        must not block."""
        self._reject_callbacks.append(callback)

    def add_disconnect_callback(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(device, reason)`` on the event loop when a device's
        connection ends (for TLS: an unused one closes).  It must not block."""
        self._disconnect_callbacks.append(callback)

    def _gone(self, device: str, reason: str) -> None:
        for callback in list(self._disconnect_callbacks):
            try:
                callback(device, reason)
            except Exception:
                log.exception("disconnect callback failed for device %s", device)

    # -- the accept path ----------------------------------------------------------

    def _admit(self, sock: socket.socket, peer: PeerAddress, listener: str, *, tls: bool) -> PendingConnection | None:
        """A pending connection with a slot among ``listener``'s startups (the
        oldest one whose device has not sent its first bytes may be dropped
        for it), or ``None``: refused and closed (source blocked, or every
        slot held by a device that has)."""
        refusal = self.admission.admit(peer[0])
        pending = PendingConnection(sock, peer, tls=tls)
        if refusal is None:
            admitted, dropped = self.startups[listener].admit(pending, PendingConnection.has_sent_first_bytes)
            if dropped is not None:
                dropped.end("dropped")
                self._dropped(listener)
            if admitted:
                return pending
            refusal = "too-many-handshakes"
        sock.close()
        self.metrics.inc("callhome_connections_refused_total", transport=listener, reason=refusal)
        log.debug("peer=%s refused before any handshake: %s", format_peer(peer), refusal)
        return None

    def _dropped(self, listener: str) -> None:
        """Early drops are a flood's signature: one WARNING per listener every 10 s at most."""
        now = time.monotonic()
        last, count = self._drops.get(listener, (0.0, 0))
        count += 1
        if now - last >= _DROP_LOG_INTERVAL:
            log.warning(
                "%s listener: %d pending handshakes (the cap): dropped %d connection(s) whose device had not "
                "sent its first bytes, to make room (admission.max_pending_handshakes)",
                listener,
                len(self.startups[listener]),
                count,
            )
            last, count = now, 0
        self._drops[listener] = (last, count)

    def _ended_early(self, pending: PendingConnection, reason: str, transport: str) -> None:
        """A connection ended before its device sent its first bytes:
        ``dropped`` (room made for a newer one), ``closed-early`` (the peer
        left without a byte: a port scan, a flood ending), or a timeout."""
        pending.sock.close()
        quiet = reason in ("dropped", "closed-early") or self.admission.admit(pending.peer[0]) == "blocked"
        if quiet:  # one of many in a flood (or the source is already blocked): counted, not logged one by one
            log.debug("peer=%s %s before its first bytes", format_peer(pending.peer), reason)
            self.metrics.inc("callhome_handshakes_total", transport=transport, result=reason)
            if reason != "closed-early":
                self._charge(pending.peer, FailureKind.GRACE_TIMEOUT)
            return
        log.warning("peer=%s %s: the device sent nothing in time", format_peer(pending.peer), reason)
        self._reject(pending.peer, reason, "", "", None, transport=transport)

    async def _on_accept(self, sock: socket.socket, peer: PeerAddress) -> None:
        pending = self._admit(sock, peer, "ssh", tls=False)
        if pending is None:
            return
        try:
            await self._accept_ssh(sock, peer, pending)
        finally:
            pending.finish()
            self.startups["ssh"].finished(pending)

    async def _on_accept_outbound_ssh(self, sock: socket.socket, peer: PeerAddress) -> None:
        pending = self._admit(sock, peer, "outbound-ssh", tls=False)
        if pending is None:
            return
        try:
            await self._accept_ssh(sock, peer, pending, outbound_ssh=True)
        finally:
            pending.finish()
            self.startups["outbound-ssh"].finished(pending)

    async def _accept_ssh(
        self, sock: socket.socket, peer: PeerAddress, pending: PendingConnection, *, outbound_ssh: bool = False
    ) -> None:
        """RFC 8071 SSH, or (``outbound_ssh``) Junos outbound-ssh: its preamble, then SSH."""
        handshake = self.ssh_config.handshake_timeout
        # the first line (the SSH banner, or the preamble's MSG-ID line) within the shortest bound;
        # the handshake timeout covers the banner too
        bounds = [(handshake, "handshake-timeout")]
        if self.admission.config.banner_timeout:
            bounds.append((self.admission.config.banner_timeout, "banner-timeout"))
        if outbound_ssh:
            bounds.append((self.outbound_ssh_config.preamble_timeout, "preamble-timeout"))
        first_line, reason = min(bounds, key=lambda bound: bound[0])
        try:
            await pending.ssh_banner(first_line, reason)
        except PreauthEnded as exc:
            self._ended_early(pending, exc.reason, "outbound-ssh" if outbound_ssh else "ssh")
            return
        # handshake_timeout bounds accept -> authenticated, the wait for the banner included
        left = max(0.1, handshake - (time.monotonic() - pending.accepted_at))
        config = dataclasses.replace(self.ssh_config, handshake_timeout=left)
        try:
            if outbound_ssh:
                conn = await outbound_ssh_handshake(
                    sock,
                    peer,
                    self.inventory,
                    config,
                    self.outbound_ssh_config,
                    accepted_at=pending.accepted_at,
                    guard=lambda trust: _AdmittedTrust(trust, self.admission),
                )
            else:
                trust = _AdmittedTrust(self._trust, self.admission)
                conn = await ssh_handshake(sock, peer, trust, config, self._options)
        except OutboundSSHRefusedError as exc:
            # the error never carries the secret.  Like a certificate claiming a device's identity,
            # a refusal naming a device (wrong HMAC, key mismatch) ends a wait for that device
            log.warning("peer=%s %s", format_peer(peer), exc)
            detail = f"DEVICE-ID {exc.device_id}: {exc.detail}" if exc.device_id is not None else exc.detail
            self._reject(
                peer,
                exc.reason,
                exc.fingerprint,
                "",
                exc.device,
                detail,
                transport="outbound-ssh",
                error=exc,
                device_id=exc.device_id,
            )
            return
        except DeviceBlockedError as exc:
            log.warning("device=%s peer=%s %s", exc.device, format_peer(peer), exc)
            self._reject(
                peer, "device-blocked", exc.fingerprint, exc.key_type, exc.device, str(exc), transport="ssh", error=exc
            )
            return
        except UnknownDeviceError as exc:
            log.warning(
                "peer=%s rejected unknown device: host key %s %s is not in the inventory; "
                "pin it under devices.<name>.ssh.host_keys to accept it",
                format_peer(peer),
                exc.key_type,
                exc.fingerprint,
            )
            self._reject(peer, "unknown-device", exc.fingerprint, exc.key_type, None, transport="ssh")
            return
        except AuthenticationFailedError as exc:
            log.warning("device=%s peer=%s %s", exc.device, format_peer(peer), exc)
            self._reject(
                peer, "auth-failed", exc.fingerprint, exc.key_type, exc.device, str(exc), transport="ssh", error=exc
            )
            return
        except HandshakeTimeoutError as exc:
            log.warning("peer=%s %s", format_peer(peer), exc)
            self._reject(peer, "handshake-timeout", "", "", exc.device, str(exc), transport="ssh")
            return
        except TransportError as exc:
            log.warning("peer=%s %s", format_peer(peer), exc)
            self._reject(peer, "transport-error", "", "", exc.device, str(exc), transport="ssh")
            return
        self._register(conn)

    def _tls_listener_for(
        self,
        trust: TLSTrust,
        config: TLSClientConfig,
        listen_address: str | Sequence[str] | None,
        port: int,
        *,
        strict: bool = False,
        direct: bool = False,
        kind: str = "tls",
    ) -> Listener:
        if strict:
            strict_client_credentials(config)  # a bad file fails the start, as config.context() does
        state = _TLSListenerState(trust=trust, context=None if strict else config.context(trust.anchors()))
        self._tls_states.append(state)

        label = "tls-strict" if strict else kind
        startups = self.startups[label] = Startups(self.admission.config.max_pending_handshakes)

        async def _on_accept(sock: socket.socket, peer: PeerAddress) -> None:
            pending = self._admit(sock, peer, label, tls=True)
            if pending is None:
                return
            assert self.tls_config is not None
            if self.admission.config.banner_timeout < self.tls_config.handshake_timeout:
                pending.watch_first_bytes(self.admission.config.banner_timeout)
            try:
                await self._accept_tls(sock, peer, state.trust, state.context, pending, direct=direct, kind=kind)
            finally:
                pending.finish()
                startups.finished(pending)

        listener = Listener(_on_accept, listen_address=listen_address, listen_port=port)
        self._listeners.append(listener)
        return listener

    async def _accept_tls(
        self,
        sock: socket.socket,
        peer: PeerAddress,
        trust: TLSTrust,
        context: ssl.SSLContext | None,
        pending: PendingConnection,
        *,
        direct: bool = False,
        kind: str = "tls",
    ) -> None:
        assert self.tls_config is not None
        conn: AnyTLSConnection
        try:
            if context is None:
                conn = await strict_tls_handshake(sock, peer, trust, self.tls_config, self.heartbeat)
            elif direct:
                conn = await tls_handshake_direct(sock, peer, trust, self.tls_config, context, self._handshakes)
            else:
                conn = await tls_handshake(sock, peer, trust, self.tls_config, context)
        except CallHomeError as exc:
            if pending.ended is None:
                self._tls_refused(peer, exc, kind)
            else:
                self._ended_early(pending, pending.ended, kind)
            return
        if pending.ended is not None:  # ended just as the handshake finished
            conn.close()
            self._ended_early(pending, pending.ended, kind)
            return
        if kind == Transport.RESTCONF.value:
            conn.transport_kind = Transport.RESTCONF  # a RESTCONF device, whichever TLS path carries it
        elif not await self._tls_sessions(conn):
            return
        pool = self._tls_pool.setdefault(conn.device, [])
        pool.append(conn)
        self._accepted(conn, peer)
        self._signal(conn.device)
        asyncio.get_running_loop().create_task(self._watch_tls(conn))
        self._notify(conn)

    def _tls_refused(self, peer: PeerAddress, exc: CallHomeError, kind: str) -> None:
        log.warning("peer=%s %s", format_peer(peer), exc)
        if isinstance(exc, CertificateRejectedError):
            reason = "revoked" if isinstance(exc, RevokedCertificateError) else "certificate-rejected"
            self._reject(peer, reason, exc.fingerprint, "x509", exc.device, detail=str(exc), transport=kind, error=exc)
        elif isinstance(exc, HandshakeTimeoutError):
            self._reject(peer, "handshake-timeout", "", "", None, detail=str(exc), transport=kind)
        else:
            self._reject(peer, "transport-error", "", "", None, detail=str(exc), transport=kind)

    async def _tls_sessions(self, conn: AnyTLSConnection) -> bool:
        """Give a NETCONF/TLS connection its one session (greeted now when the
        device's policy holds one).  ``False`` if the connection is unusable."""
        if isinstance(conn, DirectTLSConnection):
            return True  # RESTCONF only
        if isinstance(conn, StrictTLSConnection):
            # tlslite-ng pumps the session to a socket in its own threads: our
            # session reads the other end of that socket
            try:
                theirs = await conn.open_stream()
                _, stream = await asyncio.get_running_loop().connect_accepted_socket(TransportStream, theirs)
            except (OSError, CallHomeError) as exc:
                conn.log.warning("cannot start the NETCONF session: %s", exc)
                conn.close()
                return False
            conn.claimed = False  # its NETCONF session is still free
        else:
            stream = conn.stream
        conn.sessions = SingleSession(
            device=conn.device,
            stream=stream,
            hold=self._hold(conn),
            hello_timeout=self.hello_timeout,
            peer_address=conn.peer_address,
            logger=conn.log,
        )
        conn.sessions.start()
        return True

    def _hold(self, conn: DeviceConnection) -> bool:
        """Whether to keep a greeted NETCONF session ready for ``conn``'s device."""
        device = self.inventory.get(conn.device)
        policy = device.hold_session if device is not None else HoldPolicy.AUTO
        if policy is not HoldPolicy.AUTO:
            return policy is HoldPolicy.ALWAYS
        if not isinstance(conn, SSHDeviceConnection):
            return True  # the TLS connection carries that one session anyway (RFC 7589)
        if conn.server_version.startswith(LIBSSH_BANNER):
            return True  # libnetconf2 (netopeer2...) drops a call with no session within ~10 s
        return self.traits(conn.device).drops_idle

    def session_held(self, device: str) -> bool:
        """Whether a greeted NETCONF session is ready for ``device``'s next caller."""
        conn = self._connections.get(device)
        if conn is not None and conn.sessions is not None and conn.sessions.ready is not None:
            return True
        return any(
            c.sessions is not None and c.sessions.ready is not None
            for c in self._tls_pool.get(device, [])
            if not isinstance(c, DirectTLSConnection)
        )

    def traits(self, device: str) -> DeviceTraits:
        """What ``device`` taught the server (one session at a time, drops an
        idle call), kept across its calls."""
        return self._traits.setdefault(device, DeviceTraits())

    async def _watch_tls(self, conn: AnyTLSConnection) -> None:
        reason = await conn.wait_closed()
        pool = self._tls_pool.get(conn.device, [])
        if conn in pool:
            pool.remove(conn)
            self._signal(conn.device)
            self._gone(conn.device, reason)

    def _accepted(self, conn: DeviceConnection, peer: PeerAddress) -> None:
        self.admission.succeeded(peer[0])
        self.admission.device_succeeded(conn.device)
        self._refusals.pop(conn.device, None)
        kind = conn.transport_kind.value
        self.metrics.inc("callhome_handshakes_total", transport=kind, result="ok")
        self.metrics.observe("callhome_handshake_seconds", conn.handshake_seconds, transport=kind)

    def _reject(
        self,
        peer: PeerAddress,
        reason: str,
        fingerprint: str,
        key_type: str,
        device: str | None,
        detail: str = "",
        *,
        transport: str,
        error: CallHomeError | None = None,
        device_id: str | None = None,
    ) -> None:
        """Record a refused attempt.  ``error``: the refusal of an identified
        device (authentication failed, certificate refused): a caller waiting
        for that device gets it instead of "did not call home"."""
        self.metrics.inc("callhome_handshakes_total", transport=transport, result=reason)
        kind = _PENALTY_OF.get(reason, FailureKind.GARBAGE)
        if kind is FailureKind.AUTH_FAILED and device is not None:
            # an identified device: charged to it, not to an address it may share behind NAT
            if self.admission.device_failed(device):
                log.warning(
                    "device=%s peer=%s blocking device %s for %g s after repeated authentication failures: "
                    "check its credentials in the inventory",
                    device,
                    format_peer(peer),
                    device,
                    self.admission.config.block_seconds,
                )
        elif kind is not None:
            self._charge(peer, kind)
        attempt = RejectedAttempt(
            peer_address=peer,
            reason=reason,
            fingerprint=fingerprint,
            key_type=key_type,
            device=device,
            at=time.time(),
            detail=detail,
            device_id=device_id,
        )
        self.rejected.append(attempt)
        if device is not None and error is not None:
            self._refusals[device] = (attempt.at, error)
            self._signal(device)
        for callback in list(self._reject_callbacks):
            try:
                callback(attempt)
            except Exception:
                log.exception("reject callback failed")

    def _charge(self, peer: PeerAddress, kind: FailureKind) -> None:
        if self.admission.failed(peer[0], kind):
            log.warning(
                "peer=%s blocking source %s for %g s after %d failed handshakes within %g s",
                format_peer(peer),
                peer[0],
                self.admission.config.block_seconds,
                self.admission.config.failures_before_block,
                self.admission.config.failure_window,
            )

    def _register(self, conn: SSHDeviceConnection) -> None:
        self._accepted(conn, conn.peer_address)
        conn.sessions = SessionPool(
            device=conn.device,
            open_stream=conn.open_channel,
            is_closed=lambda: conn.is_closed,
            hold=self._hold(conn),
            traits=self.traits(conn.device),
            hello_timeout=self.hello_timeout,
            peer_address=conn.peer_address,
            logger=conn.log,
        )
        conn.sessions.start()
        old = self._connections.get(conn.device)
        self._connections[conn.device] = conn
        if old is not None and not old.is_closed:
            old.log.info("replaced by a new call home from %s", format_peer(conn.peer_address))
            old.close()
        self._signal(conn.device)
        asyncio.get_running_loop().create_task(self._watch(conn))
        self._notify(conn)

    def _notify(self, conn: DeviceConnection) -> None:
        event = _event(conn)
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                log.exception("connect callback failed for device %s", conn.device)

    async def _watch(self, conn: SSHDeviceConnection) -> None:
        reason = await conn.wait_closed()
        sessions = conn.sessions
        if sessions is not None:
            sessions.close()
            lived = time.time() - conn.connected_at
            traits = self.traits(conn.device)
            idle_drop = not conn.closed_by_us and not sessions.hold and sessions.opened == 0
            if idle_drop and lived < IDLE_DROP_WINDOW and not traits.drops_idle:
                traits.drops_idle = True
                conn.log.info(
                    "the device closed its call after %.1f s with no NETCONF session open: "
                    "holding one ready from its next call on (hold_session: auto)",
                    lived,
                )
        if self._connections.get(conn.device) is conn:
            del self._connections[conn.device]
            self._signal(conn.device)
            self._gone(conn.device, reason)

    def _signal(self, device: str) -> None:
        event = self._changed.pop(device, None)
        if event is not None:
            event.set()

    # -- the caller's side --------------------------------------------------------------

    def connected(self) -> dict[str, DeviceConnection]:
        """The devices connected now (for TLS: with an unused session), by name."""
        live: dict[str, DeviceConnection] = {
            name: conn for name, conn in self._connections.items() if not conn.is_closed
        }
        for name in self._tls_pool:
            idle = self._idle_tls(name)
            if idle is not None:
                live[name] = idle
        return live

    def _idle_tls(self, device: str) -> AnyTLSConnection | None:
        return next((c for c in self._tls_pool.get(device, []) if not _claimed(c) and not c.is_closed), None)

    def _current(self, device: str) -> DeviceConnection | None:
        conn = self._connections.get(device)
        if conn is not None and not conn.is_closed:
            return conn
        return self._idle_tls(device)

    async def wait_for(self, device: str, timeout: float) -> DeviceConnection:
        """The device's live connection, waiting up to ``timeout`` seconds for
        it to call home.  A name that is not in the inventory raises
        :class:`KeyError` at once.

        When the device calls during the wait and is refused (authentication
        failed, certificate revoked or refused, blocked after repeated
        authentication failures), that refusal is raised at once
        (:class:`AuthenticationFailedError`, :class:`RevokedCertificateError`,
        :class:`CertificateRejectedError`, :class:`DeviceBlockedError`, with
        ``refused_at``).  At the end of
        the wait, a refusal since the device last connected is raised in place
        of :class:`DeviceNotConnectedError`."""
        if device not in self.inventory:
            raise KeyError(f"device {device!r} is not in the inventory ({self.inventory.source})")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        started = time.time()
        while True:
            conn = self._current(device)
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
        """Close ``device``'s connection if it has one; wait until it is closed.
        Returns whether there was one."""
        conns: list[DeviceConnection] = [*self._tls_pool.get(device, [])]
        ssh_conn = self._connections.get(device)
        if ssh_conn is not None:
            conns.append(ssh_conn)
        for conn in conns:
            conn.log.info("disconnecting on request")
            conn.close()
        await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)
        return bool(conns)

    async def take_session(
        self, device: str, timeout: float, *, capabilities: tuple[str, ...] = DEFAULT_CLIENT_CAPABILITIES
    ) -> DeviceSession:
        """Wait for ``device`` and take a NETCONF session on it whose hellos
        are exchanged (``capabilities`` in ours): the held one, or one opened
        and greeted now.  The caller lends it (:meth:`DeviceSession.lend`, or
        :meth:`lend_to_local`) or closes it.

        SSH: a ``netconf`` channel on the device's connection.  TLS: the
        device's next unused call-home connection (one NETCONF session per
        TLS connection, RFC 7589).  Raises what :meth:`wait_for` raises,
        :class:`HelloTimeoutError` (the device accepted the session and never
        answered its hello), :class:`TransportError`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_error: CallHomeError | None = None
        while True:
            try:
                conn = await self.wait_for(device, max(0.0, deadline - loop.time()))
            except DeviceNotConnectedError:
                if last_error is not None:
                    raise last_error from None
                raise DeviceNotConnectedError(device=device, timeout=timeout) from None
            remaining = max(0.1, deadline - loop.time())
            if isinstance(conn, SSHDeviceConnection):
                sessions: SessionPool | SingleSession | None = conn.sessions
            elif isinstance(conn, DirectTLSConnection) or conn.transport_kind is Transport.RESTCONF:
                raise TransportError(f"device {device} calls home over RESTCONF: no NETCONF session", device=device)
            else:
                sessions = conn.sessions
            if sessions is None:  # pragma: no cover - every NETCONF connection gets one when accepted
                raise TransportError(f"device {device}: connection {conn!r} carries no NETCONF session", device=device)
            try:
                return await sessions.take(remaining, capabilities)
            except HelloTimeoutError:
                raise
            except CallHomeError as exc:
                if not conn.is_closed or loop.time() >= deadline:
                    raise
                last_error = exc  # that connection ended: the device's next one, within the wait

    async def lend_to_local(self, session: DeviceSession, local: socket.socket) -> None:
        """Lend ``session`` to a local NETCONF client on ``local``: replay the
        device's hello, answer the client's (never sent to the device), then
        relay both ways.  Raises :class:`ClientHelloError` (the session and
        ``local`` are closed then)."""
        try:
            rest = await greet_local(local, session, self.hello_timeout)
            await session.lend(local, to_device=rest)
        except BaseException:
            session.close()
            local.close()
            raise

    async def open_netconf(
        self, device: str, timeout: float, local: socket.socket | None = None
    ) -> tuple[socket.socket, DeviceConnection]:
        """Wait for ``device`` and open a session on it; return the local end
        of the relayed stream (``local`` when given, else a new blocking
        socket) and the device's connection.

        NETCONF devices: a session from :meth:`take_session`; the stream starts
        with the device's hello, and the hello the caller writes is answered
        by the server (:meth:`lend_to_local`, in the background), so to the
        caller it is a fresh session.  RESTCONF devices: the next unused
        call-home connection, an HTTP/1.1 keep-alive connection the caller owns."""
        conn = await self.wait_for(device, timeout)
        if conn.is_closed:
            raise DeviceDisconnectedError(device=device, reason=conn.close_reason or "closed")
        if isinstance(conn, DirectTLSConnection) or (
            isinstance(conn, TLSDeviceConnection) and conn.transport_kind is Transport.RESTCONF
        ):
            return await conn.open_stream(local), conn
        session = await self.take_session(device, timeout)
        if local is not None:
            ours, theirs = local, local
        else:
            ours, theirs = stream_pair()
            theirs.setblocking(True)
        task = asyncio.get_running_loop().create_task(self.lend_to_local(session, ours))
        task.add_done_callback(_log_lend_failure)
        self._lending.add(task)
        task.add_done_callback(self._lending.discard)
        return theirs, conn

    async def open_terminal(
        self,
        device: str,
        timeout: float,
        local: socket.socket,
        *,
        term_type: str = "xterm",
        cols: int = 80,
        rows: int = 24,
    ) -> tuple[DeviceConnection, ChannelRelay]:
        """Wait for ``device`` and open an interactive shell with a PTY on its
        call-home SSH connection, relayed to ``local`` (the call-home draft's
        remote terminal access). SSH devices only."""
        conn = await self.wait_for(device, timeout)
        if not isinstance(conn, SSHDeviceConnection):
            raise TransportError(f"device {device} calls home over TLS: terminal access needs SSH", device=device)
        relay = await conn.open_terminal(local, term_type=term_type, cols=cols, rows=rows)
        return conn, relay


class CallHomeServer:
    """Synchronous call-home server: :class:`AsyncCallHomeServer` on a
    background event loop, handing out standard ncclient Managers.

    ``listen_port`` defaults to 4334 (RFC 8071 s6; ``None`` disables SSH);
    with ``tls`` a TLS listener runs on ``tls_listen_port`` (4335), and a
    strict C4 one (heartbeat extension advertised, tlslite-ng) on
    ``tls_strict_listen_port`` if given; Junos outbound-ssh devices (inventory
    ``outbound_ssh``) on ``outbound_ssh_listen_port`` (7804).
    ``listen_address`` defaults to every interface, IPv4 and IPv6.  Use as a
    context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        inventory: Inventory,
        *,
        listen_address: str | Sequence[str] | None = None,
        listen_port: int | None = NETCONF_CH_SSH_PORT,
        ssh: SSHClientConfig | None = None,
        trust: Trust | None = None,
        tls: TLSClientConfig | None = None,
        tls_listen_port: int | None = NETCONF_CH_TLS_PORT,
        tls_strict_listen_port: int | None = None,
        restconf_listen_port: int | None = RESTCONF_CH_TLS_PORT,
        heartbeat: HeartbeatConfig | None = None,
        admission: AdmissionConfig | None = None,
        hello_timeout: float = 30.0,
        outbound_ssh_listen_port: int | None = JUNOS_OUTBOUND_SSH_PORT,
        outbound_ssh: OutboundSSHConfig | None = None,
    ) -> None:
        self._engine = EventLoopThread()
        self._callback_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="callhome-cb")

        async def _make() -> AsyncCallHomeServer:
            server = AsyncCallHomeServer(
                inventory,
                listen_address=listen_address,
                listen_port=listen_port,
                ssh=ssh,
                trust=trust,
                tls=tls,
                tls_listen_port=tls_listen_port,
                tls_strict_listen_port=tls_strict_listen_port,
                restconf_listen_port=restconf_listen_port,
                heartbeat=heartbeat,
                admission=admission,
                hello_timeout=hello_timeout,
                outbound_ssh_listen_port=outbound_ssh_listen_port,
                outbound_ssh=outbound_ssh,
            )
            await server.start()
            return server

        try:
            self._server = self._engine.run(_make())
        except BaseException:
            self._engine.stop()
            self._callback_pool.shutdown(wait=False)
            raise
        self._closed = False

    @property
    def inventory(self) -> Inventory:
        return self._server.inventory

    @property
    def listen_port(self) -> int:
        """The SSH listener's bound port (useful with ``listen_port=0``)."""
        return self._server.listen_port

    @property
    def tls_listen_port(self) -> int:
        """The TLS listener's bound port."""
        return self._server.tls_listen_port

    @property
    def tls_strict_listen_port(self) -> int:
        """The strict C4 TLS listener's bound port."""
        return self._server.tls_strict_listen_port

    @property
    def outbound_ssh_listen_port(self) -> int:
        """The Junos outbound-ssh listener's bound port."""
        return self._server.outbound_ssh_listen_port

    @property
    def restconf_listen_port(self) -> int:
        """The RESTCONF listener's bound port."""
        return self._server.restconf_listen_port

    @property
    def aio(self) -> AsyncCallHomeServer:
        """The asyncio server underneath (use only from its loop)."""
        return self._server

    def netconf(
        self,
        device: str,
        timeout: float = 60,
        *,
        rpc_timeout: float = 30,
        device_params: Mapping[str, Any] | None = None,
        manager_params: Mapping[str, Any] | None = None,
        nc_params: Mapping[str, Any] | None = None,
        errors_params: Mapping[str, Any] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> Manager:
        """A standard ncclient ``Manager`` for ``device``: on a new NETCONF
        channel of its SSH call-home connection, or on its next unused TLS
        call-home connection (which the Manager then owns; RFC 7589 carries one
        NETCONF session per TLS connection).

        Waits up to ``timeout`` seconds for the device to call home if it has
        not (deferral); raises :class:`DeviceNotConnectedError` after that, or
        the refusal of the device if it called and was refused.  The server
        exchanges hellos (bounded by ``hello_timeout``; a session held ready
        for the device is used at once) and hands ncclient the device's;
        ``rpc_timeout`` is the Manager's RPC timeout.  Closing the Manager
        closes only its SSH channel (the device stays connected), or the TLS
        connection.
        A message from the device over ``max_message_size`` bytes closes the
        session with :class:`~callhome_transport.errors.MessageTooLargeError`.
        """
        self._check_open()
        capabilities = capabilities_for(device_params, nc_params)
        session = self._engine.run(self._server.take_session(device, timeout, capabilities=capabilities))
        ours, theirs = stream_pair()
        try:
            self._engine.run(session.lend(ours, settle=0.0))  # StreamSession waits out HELLO_SETTLE itself
            return manager_over_socket(
                theirs,
                device=device,
                timeout=rpc_timeout,
                device_params=device_params,
                manager_params=manager_params,
                nc_params=nc_params,
                errors_params=errors_params,
                max_message_size=max_message_size,
                greeted=(session.hello, session.framing, session.hello_sent_at),
            )
        except BaseException as exc:
            self._engine.loop.call_soon_threadsafe(session.close)
            ours.close()
            theirs.close()
            if isinstance(exc, CallHomeError) or not isinstance(exc, Exception):
                raise
            raise TransportError(
                f"NETCONF session with device {device} failed: {exc}", device=device, peer_address=session.peer_address
            ) from exc

    def open_netconf_stream(self, device: str, timeout: float = 60) -> socket.socket:
        """The NETCONF byte stream of a new session on ``device`` (waiting for
        it to call home), as a connected blocking socket: for NETCONF clients
        other than ncclient, or relays.  It starts with the device's hello;
        the server answers the hello you write (so it must offer the base
        version the session uses; see :class:`ClientHelloError`).  Closing
        the socket ends the session."""
        self._check_open()
        sock, _conn = self._engine.run(self._server.open_netconf(device, timeout))
        return sock

    def restconf_adapter(self, *, wait_timeout: float = 60.0, connections_per_device: int = 1) -> CallHomeAdapter:
        """A ``requests`` transport adapter over this server's RESTCONF
        call-home connections: ``session.mount("https://", adapter)``, then
        ``https://<device name>/restconf/...`` URLs (RFC 8071 port 4336).

        A request for a device that has not called waits up to
        ``wait_timeout`` seconds, then raises
        :class:`~callhome_transport.integrations.restconf.DeviceNotConnected` (a
        ``requests.exceptions.ConnectionError``)."""
        self._check_open()

        def opener(device: str, timeout: float) -> socket.socket:
            self._check_open()
            sock, _conn = self._engine.run(self._server.open_netconf(device, timeout))
            return sock

        return CallHomeAdapter(
            self.inventory, opener, wait_timeout=wait_timeout, connections_per_device=connections_per_device
        )

    def wait_for(self, device: str, timeout: float = 60) -> DeviceConnected:
        """Block until ``device`` is connected (or raise
        :class:`DeviceNotConnectedError`); return its connection facts."""
        self._check_open()
        conn = self._engine.run(self._server.wait_for(device, timeout))
        return _event(conn)

    def connected(self) -> list[DeviceConnected]:
        """The devices connected now."""
        self._check_open()

        async def _list() -> list[DeviceConnected]:
            return [_event(conn) for conn in self._server.connected().values()]

        return self._engine.run(_list())

    def disconnect(self, device: str) -> bool:
        """Close ``device``'s call-home connection (it may call again).
        Returns whether it was connected."""
        self._check_open()
        return self._engine.run(self._server.disconnect(device))

    def session_held(self, device: str) -> bool:
        """Whether a greeted NETCONF session is ready for ``device``'s next
        :meth:`netconf` (its ``hold_session`` policy keeps one)."""
        self._check_open()

        async def _held() -> bool:
            return self._server.session_held(device)

        return self._engine.run(_held())

    def rejected(self) -> list[RejectedAttempt]:
        """Recent refused attempts, oldest first (bounded)."""
        self._check_open()

        async def _list() -> list[RejectedAttempt]:
            return list(self._server.rejected)

        return self._engine.run(_list())

    def on_connect(self, callback: Callable[[DeviceConnected], None]) -> None:
        """Call ``callback(event)`` each time a device is identified and
        authenticated.  Callbacks run in a small worker pool, not on the event
        loop, so they may call :meth:`netconf`."""
        self._check_open()
        pool = self._callback_pool

        def _dispatch(event: DeviceConnected) -> None:
            pool.submit(_safe_call, callback, event)

        self._engine.loop.call_soon_threadsafe(self._server.add_connect_callback, _dispatch)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("CallHomeServer is closed")

    def close(self) -> None:
        """Stop listening, close every device connection and the event loop."""
        if self._closed:
            return
        self._closed = True
        try:
            self._engine.run(self._server.close(), timeout=10)
        except (concurrent.futures.TimeoutError, OSError):
            log.warning("call-home server did not close within 10 s")
        finally:
            self._engine.stop()
            self._callback_pool.shutdown(wait=False)

    def __enter__(self) -> CallHomeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


LIBSSH_BANNER = "SSH-2.0-libssh"  # libnetconf2's SSH server (netopeer2 and the products built on it)
IDLE_DROP_WINDOW = 120.0  # seconds: a device closing a call with no session sooner drops idle calls


def _claimed(conn: AnyTLSConnection) -> bool:
    """Whether ``conn``'s one session (NETCONF) or connection (RESTCONF) is taken."""
    if isinstance(conn, DirectTLSConnection) or conn.sessions is None:
        return conn.claimed
    return conn.sessions.claimed


def _log_lend_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s", task.exception())


def _event(conn: DeviceConnection) -> DeviceConnected:
    tls = conn.identified if isinstance(conn, TLSDeviceConnection | StrictTLSConnection | DirectTLSConnection) else None
    return DeviceConnected(
        device=conn.device,
        transport=conn.transport_kind,
        certificate_subject=tls.subject if tls else None,
        certificate_serial=tls.serial if tls else None,
        heartbeat_negotiated=conn.heartbeat_negotiated if isinstance(conn, StrictTLSConnection) else None,
        peer_address=conn.peer_address,
        fingerprint=conn.fingerprint,
        connected_at=conn.connected_at,
        handshake_seconds=conn.handshake_seconds,
    )


def _safe_call(callback: Callable[[DeviceConnected], None], event: DeviceConnected) -> None:
    try:
        callback(event)
    except Exception:
        log.exception("on_connect callback failed for device %s", event.device)
