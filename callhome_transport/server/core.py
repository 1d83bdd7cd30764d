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
import concurrent.futures
import functools
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..addresses import NETCONF_CH_SSH_PORT, NETCONF_CH_TLS_PORT, RESTCONF_CH_TLS_PORT, PeerAddress, format_peer
from ..errors import (
    CallHomeError,
    DeviceDisconnectedError,
    DeviceNotConnectedError,
    HelloTimeoutError,
    ServerStateError,
    TransportError,
)
from ..identity.inventory import HoldPolicy, Inventory, Quirk, Transport
from ..identity.tls_trust import TLSTrust
from ..identity.trust import InventoryTrust, Trust
from ..loopwatch import LoopWatch
from ..metrics import Metrics
from ..protocol.hello import DEFAULT_CLIENT_CAPABILITIES, HELLO_SETTLE
from ..protocol.session import WARM_IDLE, DeviceSession, DeviceTraits, SessionPool, greet_local
from ..status import BlockKind, RefusalReason
from ..transports.contract import Acceptor, DeviceConnection
from ..transports.listener import Listener
from ..transports.outbound_ssh import JUNOS_OUTBOUND_SSH_PORT, OutboundSSHAcceptor, OutboundSSHConfig
from ..transports.preauth import PendingConnection, PreauthEnded
from ..transports.proxy import ProxyProtocol, ProxyProtocolConfig
from ..transports.relay import ChannelRelay
from ..transports.ssh import ClientKeys, SSHAcceptor, SSHClientConfig, host_key_algorithms, load_client_keys
from ..transports.tls import TLSAcceptor, TLSClientConfig, TLSListenerState, stream_pair
from ..transports.tls_strict import HeartbeatConfig, StrictTLSAcceptor, strict_client_credentials
from .admission import Admission, AdmissionConfig, FailureKind, Startups
from .refusals import AdmittedTrust, refusal_of
from .registry import DeviceConnected, DeviceDisconnected, Registry, RejectedAttempt

if TYPE_CHECKING:
    import asyncssh

__all__ = ["AsyncCallHomeServer", "PreparedInventory"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedInventory:
    """A new inventory with its trust and TLS contexts, ready to swap in
    (:meth:`AsyncCallHomeServer.prepare_inventory`)."""

    inventory: Inventory
    trust: Trust
    ssh_options: asyncssh.SSHClientConnectionOptions  # offering the pinned keys' host key algorithms
    client_keys: ClientKeys  # every private key of the inventory, decrypted once
    tls_states: list[TLSListenerState]


_DROP_LOG_INTERVAL = 10.0  # seconds between WARNINGs about early drops on one listener

# the penalty of each refusal (admission.FailureKind); None: no charge; GARBAGE for any other
_PENALTY_OF: dict[RefusalReason, FailureKind | None] = {
    RefusalReason.UNKNOWN_DEVICE: FailureKind.UNKNOWN_KEY,
    RefusalReason.CERTIFICATE_REJECTED: FailureKind.UNKNOWN_KEY,
    RefusalReason.REVOKED: FailureKind.UNKNOWN_KEY,
    RefusalReason.HANDSHAKE_TIMEOUT: FailureKind.GRACE_TIMEOUT,
    RefusalReason.BANNER_TIMEOUT: FailureKind.GRACE_TIMEOUT,
    RefusalReason.DROPPED: FailureKind.GRACE_TIMEOUT,
    RefusalReason.TRANSPORT_ERROR: FailureKind.GARBAGE,
    RefusalReason.AUTH_FAILED: FailureKind.AUTH_FAILED,
    RefusalReason.DEVICE_BLOCKED: None,
    # Junos outbound-ssh (outbound_ssh.py); malformed-preamble: GARBAGE, the default
    RefusalReason.PREAMBLE_TIMEOUT: FailureKind.GRACE_TIMEOUT,
    RefusalReason.UNKNOWN_DEVICE_ID: FailureKind.UNKNOWN_KEY,
    RefusalReason.HMAC_MISMATCH: FailureKind.UNKNOWN_KEY,
    RefusalReason.HOST_KEY_MISMATCH: FailureKind.UNKNOWN_KEY,
    RefusalReason.PROXY_HEADER: FailureKind.GARBAGE,  # a device's own bytes carried a PROXY header: spoofing
}


def _make_metrics(server: AsyncCallHomeServer) -> Metrics:
    metrics = Metrics()
    metrics.counter(
        "callhome_handshakes_total", "Call-home handshakes by transport and result (ok or the refusal reason)"
    )
    metrics.counter(
        "callhome_connections_refused_total", "Connections refused before any handshake (admission control)"
    )
    metrics.histogram("callhome_handshake_seconds", "TCP accept to identified and authenticated, seconds")

    def census() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        by_transport, held = server.registry.census()
        return {
            "callhome_connected_devices": {
                (("transport", transport.value),): float(count) for transport, count in by_transport.items()
            },
            "callhome_held_sessions": {(): float(held)},
        }

    metrics.gauges(
        {
            "callhome_connected_devices": "Devices connected now, by transport",
            "callhome_held_sessions": "Devices with a greeted NETCONF session ready for their next caller",
        },
        census,
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
    (:mod:`callhome_transport.protocol.session`).  Under ``hold_session:
    auto``, a device that needs none held has one kept ready for its next
    caller while it was used within ``hold_idle`` seconds (0: never).

    Each listener has one acceptor (:mod:`callhome_transport.server.acceptors`);
    every accepted connection takes the same path (admission, the device's
    first bytes, the handshake, then the :attr:`registry` or a refusal).

    ``watch_loop=True`` runs a :class:`~callhome_transport.loopwatch.LoopWatch`
    while the server runs: event-loop stall and GC pause metrics, and
    ``gc.freeze()`` once a burst of registrations is over, so that full
    collections no longer walk the objects of thousands of held sessions
    (0.6 s pauses with 10,000 idle sessions otherwise).  The freeze is
    process-wide: for a process that is mostly this server, as the gateway is.
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
        hold_idle: float = WARM_IDLE,
        outbound_ssh_listen_port: int | None = JUNOS_OUTBOUND_SSH_PORT,
        outbound_ssh: OutboundSSHConfig | None = None,
        proxy_protocol: ProxyProtocolConfig | None = None,
        reuse_port: bool = False,
        watch_loop: bool = False,
    ) -> None:
        if hello_timeout <= 0:
            raise ValueError(f"hello_timeout must be > 0, not {hello_timeout}")
        if not hold_idle >= 0:  # NaN too
            raise ValueError(f"hold_idle must be a number of seconds >= 0, not {hold_idle}")
        self.inventory = inventory
        self.hello_timeout = hello_timeout
        self.hold_idle = hold_idle
        self._traits: dict[str, DeviceTraits] = {}  # what each device taught us, across its calls
        self._lending: set[asyncio.Task[None]] = set()
        self.proxy_protocol = proxy_protocol
        self._reuse_port = reuse_port
        self.admission = Admission(admission)
        # pending handshakes, per listener (a flood on one port leaves the others alone)
        self.startups: dict[str, Startups[PendingConnection]] = {}
        self._drops: dict[str, tuple[float, int]] = {}  # listener -> (last WARNING, drops since)
        self.registry = Registry(
            is_known=lambda name: name in self.inventory,
            describe_source=lambda: str(self.inventory.source),
            history=rejected_history,
            on_closed=self._closed,
        )
        self.metrics = _make_metrics(self)
        self.loop_watch = LoopWatch(self.metrics) if watch_loop else None
        if self.loop_watch is not None:
            self.registry.on_connected(self.loop_watch.registered)
            self.registry.on_disconnected(self.loop_watch.left)
        self.ssh_config = ssh or SSHClientConfig()
        self._trust = trust or InventoryTrust(inventory)
        self._options = self._ssh_options(inventory, self._trust)
        self._client_keys = _client_keys(inventory)
        self.tls_config = tls
        self.heartbeat = heartbeat or HeartbeatConfig()
        self.outbound_ssh_config = outbound_ssh or OutboundSSHConfig()
        # blocking TLS handshakes of RESTCONF connections (bounded; each one
        # is also bounded by handshake_timeout)
        self._handshakes = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="callhome-tls")
        self._tls_states: list[TLSListenerState] = []
        self._listeners: dict[str, Listener] = {}  # by acceptor label
        self._acceptors: list[Acceptor] = []
        if listen_port is not None:
            self._listen(SSHAcceptor(self), listen_address, listen_port)
        if tls is not None:
            kinds = {device.transport for device in inventory}
            if tls_listen_port is not None and Transport.TLS in kinds:
                state = self._tls_state(TLSTrust(inventory, (Transport.TLS,)), tls)
                self._listen(TLSAcceptor(self, state, Transport.TLS), listen_address, tls_listen_port)
            if restconf_listen_port is not None and Transport.RESTCONF in kinds:
                state = self._tls_state(TLSTrust(inventory, (Transport.RESTCONF,)), tls)
                acceptor = TLSAcceptor(self, state, Transport.RESTCONF, direct=restconf_direct)
                self._listen(acceptor, listen_address, restconf_listen_port)
            if tls_strict_listen_port is not None:
                strict_client_credentials(tls)  # a bad file fails the start, as tls.context() does
                # the strict listener serves NETCONF/TLS and RESTCONF devices alike
                strict_trust = TLSTrust(inventory, (Transport.TLS, Transport.RESTCONF), strict_listener=True)
                state = self._tls_state(strict_trust, None)
                self._listen(StrictTLSAcceptor(self, state), listen_address, tls_strict_listen_port)
        # Junos outbound-ssh (outbound_ssh.py): started when some device has an outbound_ssh section
        if outbound_ssh_listen_port is not None and any(device.outbound_ssh for device in inventory):
            self._listen(OutboundSSHAcceptor(self), listen_address, outbound_ssh_listen_port)
        if not self._listeners:
            raise ValueError("nothing to listen on: give listen_port and/or tls")

    def _tls_state(self, trust: TLSTrust, tls: TLSClientConfig | None) -> TLSListenerState:
        state = TLSListenerState(trust=trust, context=None if tls is None else tls.context(trust.anchors()))
        self._tls_states.append(state)
        return state

    def add_acceptor(self, acceptor: Acceptor, port: int, listen_address: str | Sequence[str] | None = None) -> None:
        """Listen on ``port`` for ``acceptor``'s transport (before :meth:`start`).
        Every transport is added so; one of your own takes the same accept path
        (admission, the handshake, the registry, the refusals)."""
        if acceptor.label in self._listeners:
            raise ValueError(f"a {acceptor.label} listener is already added")
        self._listen(acceptor, listen_address, port)

    def _listen(self, acceptor: Acceptor, listen_address: str | Sequence[str] | None, port: int) -> None:
        self.startups[acceptor.label] = Startups(self.admission.config.max_pending_handshakes)
        self._acceptors.append(acceptor)
        handler = functools.partial(self._accept, acceptor)
        self._listeners[acceptor.label] = Listener(
            handler, listen_address=listen_address, listen_port=port, **self._proxy_for(acceptor.label)
        )

    def _port(self, label: str, missing: str) -> int:
        listener = self._listeners.get(label)
        if listener is None:
            raise ServerStateError(missing)
        return listener.listen_port

    # what the acceptors read (transports.ssh.SSHHost, transports.tls.TLSHost...; replaced on reload)
    @property
    def trust(self) -> Trust:
        """The SSH trust of this inventory, refusing blocked devices before any credential is sent."""
        return AdmittedTrust(self._trust, self.admission)

    def guard(self, trust: Trust) -> Trust:
        return AdmittedTrust(trust, self.admission)

    @property
    def banner_timeout(self) -> float:
        return self.admission.config.banner_timeout

    @property
    def ssh_options(self) -> asyncssh.SSHClientConnectionOptions:
        return self._options

    @property
    def handshake_executor(self) -> concurrent.futures.Executor:
        return self._handshakes

    @property
    def client_keys(self) -> ClientKeys:
        return self._client_keys

    @property
    def listen_port(self) -> int:
        """The SSH listener's bound port."""
        return self._port("ssh", "no SSH listener (listen_port=None)")

    @property
    def outbound_ssh_listen_port(self) -> int:
        """The Junos outbound-ssh listener's bound port."""
        return self._port(
            "outbound-ssh", "no outbound-ssh listener (outbound_ssh_listen_port=None or no outbound_ssh device)"
        )

    @property
    def tls_listen_port(self) -> int:
        """The TLS listener's bound port."""
        return self._port("tls", "no TLS listener (no tls configuration or no TLS device)")

    @property
    def restconf_listen_port(self) -> int:
        """The RESTCONF (TLS) listener's bound port."""
        return self._port("restconf", "no RESTCONF listener (no tls configuration or no RESTCONF device)")

    @property
    def tls_strict_listen_port(self) -> int:
        """The strict C4 TLS listener's bound port."""
        return self._port("tls-strict", "no strict C4 TLS listener (tls_strict_listen_port not set)")

    def listen_ports(self) -> dict[str, int]:
        """The bound port of each listener, by its acceptor's label
        (``ssh``, ``tls``, ``restconf``, ``tls-strict``, ``outbound-ssh``, or yours)."""
        return {label: listener.listen_port for label, listener in self._listeners.items()}

    def serves(self, transport: Transport) -> bool:
        """Whether a listener for ``transport`` devices runs (TLS listeners
        start only for transports the inventory had when the server was made)."""
        return any(transport in acceptor.transports for acceptor in self._acceptors)

    async def start(self) -> None:
        try:
            for listener in self._listeners.values():
                await listener.start()
        except BaseException:
            await self.close()
            raise
        if self.loop_watch is not None:
            self.loop_watch.start()

    async def close(self) -> None:
        """Stop listening and close every device connection."""
        for listener in self._listeners.values():
            await listener.close()
        for task in list(self._lending):
            task.cancel()
        await asyncio.gather(self.registry.close_all(), *self._lending, return_exceptions=True)
        self._handshakes.shutdown(wait=False, cancel_futures=True)
        if self.loop_watch is not None:
            await self.loop_watch.stop()

    async def __aenter__(self) -> AsyncCallHomeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def rejected(self) -> Sequence[RejectedAttempt]:
        """Recent refused attempts, oldest first (bounded by ``rejected_history``)."""
        return self.registry.rejected

    def add_connect_callback(self, callback: Callable[[DeviceConnected], None]) -> None:
        """Call ``callback(event)`` on the event loop each time a device is
        identified and authenticated.  It must not block."""
        self.registry.on_connected(callback)

    def add_reject_callback(self, callback: Callable[[RejectedAttempt], None]) -> None:
        """Call ``callback(attempt)`` on the event loop for every refused
        call-home attempt (``attempt.device`` is set when the device was
        identified before it was refused, e.g. authentication failed).  It
        must not block."""
        self.registry.on_rejected(callback)

    def add_disconnect_callback(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(device, reason)`` on the event loop when a device's
        connection ends (for TLS: an unused one closes).  It must not block."""

        def _forward(event: DeviceDisconnected) -> None:
            callback(event.device, event.reason)

        self.registry.on_disconnected(_forward)

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
            states.append(TLSListenerState(trust=tls_trust, context=context))
        return PreparedInventory(
            inventory=inventory,
            trust=trust,
            ssh_options=ssh_options,
            client_keys=_client_keys(inventory),
            tls_states=states,
        )

    def use_inventory(self, prepared: PreparedInventory) -> None:
        """Swap in what :meth:`prepare_inventory` built, in one step."""
        if len(prepared.tls_states) != len(self._tls_states):
            raise ServerStateError("prepared for another server")
        self.inventory = prepared.inventory
        self.registry.forget_refusals()  # refused with the old keys, certificates or credentials
        self._traits = {name: traits for name, traits in self._traits.items() if name in prepared.inventory}
        self._trust = prepared.trust
        self._options = prepared.ssh_options
        self._client_keys = prepared.client_keys
        for state, new in zip(self._tls_states, prepared.tls_states, strict=True):
            state.trust, state.context = new.trust, new.context
        if "outbound-ssh" not in self._listeners and any(device.outbound_ssh for device in prepared.inventory):
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

    # -- the accept path ----------------------------------------------------------

    def _proxy_for(self, listener: str) -> dict[str, Any]:
        """The per-listener arguments of ``listener``'s :class:`Listener`:
        PROXY protocol (when configured for it) and ``SO_REUSEPORT``."""
        config = self.proxy_protocol
        if config is None or listener not in config.listeners:
            return {"reuse_port": self._reuse_port}

        def refused(peer: PeerAddress, reason: str) -> None:
            self.metrics.inc("callhome_connections_refused_total", transport=listener, reason=reason)

        return {"proxy": ProxyProtocol(config), "on_refused": refused, "reuse_port": self._reuse_port}

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
        self._reject(pending.peer, RefusalReason(reason), transport=transport)

    async def _accept(self, acceptor: Acceptor, sock: socket.socket, peer: PeerAddress) -> None:
        """One accepted connection, whatever its transport."""
        pending = self._admit(sock, peer, acceptor.label, tls=acceptor.tls)
        if pending is None:
            return
        try:
            await self._handshake(acceptor, pending)
        finally:
            pending.finish()
            self.startups[acceptor.label].finished(pending)

    async def _handshake(self, acceptor: Acceptor, pending: PendingConnection) -> None:
        try:
            await acceptor.before_handshake(pending)
        except PreauthEnded as exc:
            self._ended_early(pending, exc.reason, acceptor.kind)
            return
        except CallHomeError as exc:  # its first bytes refused it (a PROXY header it may not send)
            pending.sock.close()
            self._refused(pending.peer, exc, acceptor.kind)
            return
        try:
            conn = await acceptor.handshake(pending)
        except CallHomeError as exc:
            if pending.ended is None:
                self._refused(pending.peer, exc, acceptor.refusal_kind(exc))
            else:
                self._ended_early(pending, pending.ended, acceptor.kind)
            return
        if pending.ended is not None:  # ended just as the handshake finished
            conn.close()
            self._ended_early(pending, pending.ended, acceptor.kind)
            return
        try:
            hold = self._hold(conn)
            await conn.start_sessions(
                hold=hold,
                hello_timeout=self.hello_timeout,
                traits=self.traits(conn.device),
                warm=self._warm(conn, hold),
            )
        except (OSError, CallHomeError) as exc:
            conn.log.warning("cannot start the NETCONF session: %s", exc)
            conn.close()
            return
        self._accepted(conn)
        self.registry.add(conn)
        # the one INFO line of a connection (its handshake's steps are DEBUG): a storm logs
        # thousands, and each line is formatted and written on the event loop
        conn.log.info(
            "transport=%s event=connected identity=%s handshake=%.3fs",
            conn.transport.value,
            self.registry.status(conn.device).identity,
            conn.handshake_seconds,
        )

    def _refused(self, peer: PeerAddress, exc: CallHomeError, transport: str) -> None:
        refusal = refusal_of(exc)
        facts = {"peer": format_peer(peer), "error": exc, "device": refusal.device}
        log.warning(refusal.log_format, {**facts, "key_type": refusal.key_type, "fingerprint": refusal.fingerprint})
        self._reject(
            peer,
            refusal.reason,
            refusal.fingerprint,
            refusal.key_type,
            refusal.device,
            refusal.detail,
            transport=transport,
            error=exc if refusal.ends_wait else None,
            device_id=refusal.device_id,
            certificate_subject=refusal.certificate_subject,
        )

    def _hold(self, conn: DeviceConnection) -> bool:
        """Whether to keep a greeted NETCONF session ready for ``conn``'s device."""
        device = self.inventory.get(conn.device)
        policy = device.hold_session if device is not None else HoldPolicy.AUTO
        if policy is not HoldPolicy.AUTO:
            return policy is HoldPolicy.ALWAYS
        return conn.holds_by_default(self.traits(conn.device))

    def _warm(self, conn: DeviceConnection, hold: bool) -> float:
        """How long a spare session stays ready after ``conn``'s device was
        last used (``hold_session: auto`` where nothing is held): seconds."""
        device = self.inventory.get(conn.device)
        policy = device.hold_session if device is not None else HoldPolicy.AUTO
        return self.hold_idle if policy is HoldPolicy.AUTO and not hold else 0.0

    def session_held(self, device: str) -> bool:
        """Whether a greeted NETCONF session is ready for ``device``'s next caller."""
        return self.registry.session_held(device)

    def hello_settle(self, device: str) -> float | None:
        """The wait between our hello and the first RPC for ``device``:
        :data:`~callhome_transport.protocol.hello.HELLO_SETTLE` when its
        inventory entry names the ``hello-settle`` quirk, else ``None`` (the
        device's hello decides: yuma123 netconfd waits, every other device
        gets its first RPC at once)."""
        entry = self.inventory.get(device)
        return HELLO_SETTLE if entry is not None and Quirk.HELLO_SETTLE in entry.quirks else None

    def traits(self, device: str) -> DeviceTraits:
        """What ``device`` taught the server (one session at a time, drops an
        idle call), kept across its calls."""
        return self._traits.setdefault(device, DeviceTraits())

    def _closed(self, conn: DeviceConnection, reason: str) -> None:
        """A connection ended: drop its held sessions, learn what it taught."""
        if conn.sessions is not None:
            conn.sessions.close()
        conn.ended(self.traits(conn.device))

    def _accepted(self, conn: DeviceConnection) -> None:
        self.admission.succeeded(conn.peer_address[0])
        self.admission.device_succeeded(conn.device)
        kind = conn.transport.value
        self.metrics.inc("callhome_handshakes_total", transport=kind, result="ok")
        self.metrics.observe("callhome_handshake_seconds", conn.handshake_seconds, transport=kind)

    def _reject(
        self,
        peer: PeerAddress,
        reason: RefusalReason,
        fingerprint: str = "",
        key_type: str = "",
        device: str | None = None,
        detail: str = "",
        *,
        transport: str,
        error: CallHomeError | None = None,
        device_id: str | None = None,
        certificate_subject: str | None = None,
    ) -> None:
        """Record a refused attempt.  ``error``: the refusal of an identified
        device (authentication failed, certificate refused): a caller waiting
        for that device gets it instead of "did not call home"."""
        self.metrics.inc("callhome_handshakes_total", transport=transport, result=reason.value)
        attempt = RejectedAttempt(
            peer_address=peer,
            reason=reason,
            fingerprint=fingerprint,
            key_type=key_type,
            device=device,
            at=time.time(),
            detail=detail,
            device_id=device_id,
            transport=transport,
            certificate_subject=certificate_subject,
        )
        self.registry.reject(attempt, error)
        # charged once the registry has the refusal, so a block it starts follows it
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
                self.registry.block(BlockKind.DEVICE, device, self.admission.config.block_seconds)
        elif kind is not None:
            self._charge(peer, kind)

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
            self.registry.block(BlockKind.SOURCE, peer[0], self.admission.config.block_seconds)

    # -- the caller's side --------------------------------------------------------------

    def connected(self) -> dict[str, DeviceConnection]:
        """The devices connected now (for TLS: with an unused session), by name."""
        return self.registry.connected()

    async def wait_for(self, device: str, timeout: float) -> DeviceConnection:
        """The device's live connection, waiting up to ``timeout`` seconds for
        it to call home.  A name that is not in the inventory raises
        :class:`~callhome_transport.errors.UnknownDeviceNameError` (a
        ``KeyError``) at once.

        When the device calls during the wait and is refused (authentication
        failed, certificate revoked or refused, blocked after repeated
        authentication failures), that refusal is raised at once
        (:class:`AuthenticationFailedError`, :class:`RevokedCertificateError`,
        :class:`CertificateRejectedError`, :class:`DeviceBlockedError`, with
        ``refused_at``).  At the end of
        the wait, a refusal since the device last connected is raised in place
        of :class:`DeviceNotConnectedError`."""
        return await self.registry.wait_for(device, timeout)

    async def disconnect(self, device: str) -> bool:
        """Close ``device``'s connection if it has one; wait until it is closed.
        Returns whether there was one."""
        return await self.registry.disconnect(device)

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
            sessions = conn.sessions
            if sessions is None:
                raise TransportError(f"device {device} calls home over RESTCONF: no NETCONF session", device=device)
            try:
                return await sessions.take(remaining, capabilities)
            except HelloTimeoutError:
                raise
            except CallHomeError as exc:
                if not conn.is_closed or loop.time() >= deadline:
                    raise
                last_error = exc  # that connection ended: the device's next one, within the wait

    def claim_held_session(
        self, device: str, *, capabilities: tuple[str, ...] = DEFAULT_CLIENT_CAPABILITIES
    ) -> tuple[DeviceSession, Callable[[], None]] | None:
        """The greeted session held ready for ``device``'s next caller,
        taken from any thread without the loop, with what records its
        lending (run it on the loop before the session's first use, e.g. as
        :meth:`DeviceSession.lend_in_process_soon` does).  ``None`` when no
        session is held ready (then :meth:`take_session`, which also reports
        why)."""
        conn = self.registry.current(device)
        pool = conn.sessions if conn is not None else None
        if not isinstance(pool, SessionPool):
            return None
        session = pool.claim(capabilities)
        return None if session is None else (session, functools.partial(pool.record_claimed, session))

    async def lend_to_local(self, session: DeviceSession, local: socket.socket) -> None:
        """Lend ``session`` to a local NETCONF client on ``local``: replay the
        device's hello, answer the client's (never sent to the device), then
        relay both ways.  Raises :class:`ClientHelloError` (the session and
        ``local`` are closed then)."""
        try:
            rest = await greet_local(local, session, self.hello_timeout)
            await session.lend(local, to_device=rest, settle=self.hello_settle(session.device))
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
        if conn.transport is Transport.RESTCONF:  # kept for callers of old; use open_restconf
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

    async def open_restconf(
        self, device: str, timeout: float, local: socket.socket | None = None
    ) -> tuple[socket.socket, DeviceConnection]:
        """Wait for RESTCONF ``device`` and take its next unused call-home
        connection, an HTTP/1.1 keep-alive stream the caller owns: relayed to
        ``local`` when given, else handed over (a blocking socket).  Raises
        what :meth:`wait_for` raises, and :class:`TransportError` for a
        device that does not call home over RESTCONF."""
        conn = await self.wait_for(device, timeout)
        if conn.transport is not Transport.RESTCONF:
            raise TransportError(f"device {device} calls home over {conn.transport.value}, not RESTCONF", device=device)
        return await conn.open_stream(local), conn

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
        relay = await conn.open_terminal(local, term_type=term_type, cols=cols, rows=rows)
        return conn, relay


def _client_keys(inventory: Inventory) -> ClientKeys:
    return load_client_keys(device.credentials for device in inventory if device.credentials is not None)


def _log_lend_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s", task.exception())
