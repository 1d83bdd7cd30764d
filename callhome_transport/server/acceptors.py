"""One acceptor per transport, one interface: what to wait for before the
handshake (the SSH banner, a Junos preamble line, a TLS device's first
bytes) and the handshake itself, which returns a
:class:`~callhome_transport.transports.contract.DeviceConnection` or raises
a refusal (a :class:`~callhome_transport.errors.CallHomeError`).

The server runs the same accept path for every acceptor (admission, the
wait, the handshake, the refusal or the registration); :func:`refusal_of`
reads a refusal's reason and data from the error's type, never from its text.
Adding a transport adds an acceptor here and its listener in
:class:`~callhome_transport.server.core.AsyncCallHomeServer`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import (
    AuthenticationFailedError,
    CallHomeError,
    CertificateRejectedError,
    DeviceBlockedError,
    HandshakeTimeoutError,
    OutboundSSHRefusedError,
    RevokedCertificateError,
    UnknownDeviceError,
)
from ..identity.inventory import Inventory, Transport
from ..identity.tls_trust import TLSTrust
from ..identity.trust import Identity, PresentedKey, Trust
from ..status import RefusalReason
from ..transports.contract import DeviceConnection
from ..transports.outbound_ssh import OutboundSSHConfig, outbound_ssh_handshake
from ..transports.ssh import ClientKeys, SSHClientConfig, ssh_handshake
from ..transports.tls import TLSClientConfig, tls_handshake, tls_handshake_direct
from .admission import Admission
from .preauth import PendingConnection

if TYPE_CHECKING:
    import asyncssh

    from ..transports.tls_strict import HeartbeatConfig

__all__ = [
    "Acceptor",
    "AdmittedTrust",
    "OutboundSSHAcceptor",
    "Refusal",
    "SSHAcceptor",
    "StrictTLSAcceptor",
    "TLSAcceptor",
    "TLSListenerState",
    "refusal_of",
]


class _Host(Protocol):
    """What the acceptors read from the server (replaced on reload)."""

    inventory: Inventory
    admission: Admission
    ssh_config: SSHClientConfig
    tls_config: TLSClientConfig | None
    heartbeat: HeartbeatConfig
    outbound_ssh_config: OutboundSSHConfig

    @property
    def trust(self) -> Trust: ...

    @property
    def ssh_options(self) -> asyncssh.SSHClientConnectionOptions: ...

    @property
    def handshake_executor(self) -> concurrent.futures.Executor: ...

    @property
    def client_keys(self) -> ClientKeys: ...


@dataclass
class TLSListenerState:
    """What a TLS listener checks devices against (replaced on reload)."""

    trust: TLSTrust
    context: ssl.SSLContext | None  # None: strict C4 listener (tlslite-ng)


class Acceptor(Protocol):
    """The transport-specific half of accepting a call."""

    label: str  # the listener: admission slots, refused-connection metrics
    kind: str  # handshake metrics and refusals
    tls: bool  # the device's first bytes are counted by the kernel (TLS) rather than peeked
    transports: tuple[Transport, ...]  # the devices it serves

    async def before_handshake(self, pending: PendingConnection) -> None:
        """Wait for (or start watching) the device's first bytes; raises
        :class:`~callhome_transport.server.preauth.PreauthEnded`."""
        ...

    async def handshake(self, pending: PendingConnection) -> DeviceConnection: ...

    def refusal_kind(self, exc: CallHomeError) -> str:
        """The metrics label of a refusal (``kind``, unless the refusal is another transport's)."""
        ...


class AdmittedTrust:
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


class SSHAcceptor:
    """RFC 8071 NETCONF over SSH (port 4334)."""

    label = kind = "ssh"
    tls = False
    transports: tuple[Transport, ...] = (Transport.SSH,)

    def __init__(self, host: _Host) -> None:
        self.host = host

    def _first_line_bounds(self) -> list[tuple[float, str]]:
        bounds = [(self.host.ssh_config.handshake_timeout, "handshake-timeout")]
        if self.host.admission.config.banner_timeout:
            bounds.append((self.host.admission.config.banner_timeout, "banner-timeout"))
        return bounds

    async def before_handshake(self, pending: PendingConnection) -> None:
        # the first line (the SSH banner, or a preamble's first line) within the
        # shortest bound; the handshake timeout covers it too
        first_line, reason = min(self._first_line_bounds(), key=lambda bound: bound[0])
        await pending.ssh_banner(first_line, reason)

    def _config(self, pending: PendingConnection) -> SSHClientConfig:
        """handshake_timeout bounds accept -> authenticated, the wait for the first line included."""
        config = self.host.ssh_config
        left = max(0.1, config.handshake_timeout - (time.monotonic() - pending.accepted_at))
        return dataclasses.replace(config, handshake_timeout=left)

    async def handshake(self, pending: PendingConnection) -> DeviceConnection:
        trust = AdmittedTrust(self.host.trust, self.host.admission)
        config, options, keys = self._config(pending), self.host.ssh_options, self.host.client_keys
        return await ssh_handshake(pending.sock, pending.peer, trust, config, options, keys)

    def refusal_kind(self, exc: CallHomeError) -> str:
        return self.kind


class OutboundSSHAcceptor(SSHAcceptor):
    """Junos outbound-ssh (port 7804): its preamble, then SSH."""

    label = kind = "outbound-ssh"
    transports: tuple[Transport, ...] = ()  # Junos devices are SSH devices; this listener runs beside theirs

    def _first_line_bounds(self) -> list[tuple[float, str]]:
        return [*super()._first_line_bounds(), (self.host.outbound_ssh_config.preamble_timeout, "preamble-timeout")]

    async def handshake(self, pending: PendingConnection) -> DeviceConnection:
        admission = self.host.admission
        return await outbound_ssh_handshake(
            pending.sock,
            pending.peer,
            self.host.inventory,
            self._config(pending),
            self.host.outbound_ssh_config,
            accepted_at=pending.accepted_at,
            guard=lambda trust: AdmittedTrust(trust, admission),
            client_keys=self.host.client_keys,
        )

    def refusal_kind(self, exc: CallHomeError) -> str:
        # a refusal of the preamble is this listener's; one of the SSH handshake after it, SSH's
        return self.kind if isinstance(exc, OutboundSSHRefusedError) else "ssh"


class TLSAcceptor:
    """NETCONF over TLS (4335) or RESTCONF (4336) through ``ssl``; ``direct``
    hands a RESTCONF connection over whole (:class:`DirectTLSConnection`)."""

    tls = True

    def __init__(self, host: _Host, state: TLSListenerState, transport: Transport, *, direct: bool = False) -> None:
        self.host = host
        self.state = state
        self.transport = transport
        self.direct = direct
        self.label = self.kind = transport.value
        self.transports: tuple[Transport, ...] = (transport,)

    def _config(self) -> TLSClientConfig:
        assert self.host.tls_config is not None
        return self.host.tls_config

    async def before_handshake(self, pending: PendingConnection) -> None:
        banner = self.host.admission.config.banner_timeout
        if banner < self._config().handshake_timeout:
            pending.watch_first_bytes(banner)

    async def handshake(self, pending: PendingConnection) -> DeviceConnection:
        context = self.state.context
        assert context is not None
        if self.direct:
            return await tls_handshake_direct(
                pending.sock, pending.peer, self.state.trust, self._config(), context, self.host.handshake_executor
            )
        return await tls_handshake(
            pending.sock, pending.peer, self.state.trust, self._config(), context, self.transport
        )

    def refusal_kind(self, exc: CallHomeError) -> str:
        return self.kind


class StrictTLSAcceptor(TLSAcceptor):
    """RFC 8071 C4 strict TLS (heartbeats) through tlslite-ng, for NETCONF/TLS and RESTCONF devices."""

    def __init__(self, host: _Host, state: TLSListenerState) -> None:
        super().__init__(host, state, Transport.TLS)
        self.label = "tls-strict"
        self.transports = (Transport.TLS, Transport.RESTCONF)

    async def handshake(self, pending: PendingConnection) -> DeviceConnection:
        from ..transports.tls_strict import strict_tls_handshake  # tlslite-ng, only where a strict listener runs

        return await strict_tls_handshake(
            pending.sock, pending.peer, self.state.trust, self._config(), self.host.heartbeat
        )


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """What a refused attempt records, read from its error."""

    reason: RefusalReason
    fingerprint: str = ""
    key_type: str = ""
    device: str | None = None
    detail: str = ""
    device_id: str | None = None
    ends_wait: bool = False  # a caller waiting for the device gets the error
    log_format: str = "peer=%(peer)s %(error)s"


_UNKNOWN_DEVICE_LOG = (
    "peer=%(peer)s rejected unknown device: host key %(key_type)s %(fingerprint)s is not in the inventory; "
    "pin it under devices.<name>.ssh.host_keys to accept it"
)


def refusal_of(exc: CallHomeError) -> Refusal:
    """The refusal an error stands for (its reason from its type)."""
    fingerprint = str(getattr(exc, "fingerprint", "") or "")
    key_type = str(getattr(exc, "key_type", "") or "")
    device = getattr(exc, "device", None)
    if isinstance(exc, OutboundSSHRefusedError):
        detail = f"DEVICE-ID {exc.device_id}: {exc.detail}" if exc.device_id is not None else exc.detail
        return Refusal(
            reason=RefusalReason(exc.reason),
            fingerprint=fingerprint,
            device=device,
            detail=detail,
            device_id=exc.device_id,
            ends_wait=True,
        )
    if isinstance(exc, UnknownDeviceError):
        return Refusal(
            reason=RefusalReason.UNKNOWN_DEVICE,
            fingerprint=fingerprint,
            key_type=key_type,
            log_format=_UNKNOWN_DEVICE_LOG,
        )
    if isinstance(exc, DeviceBlockedError | AuthenticationFailedError):
        reason = RefusalReason.DEVICE_BLOCKED if isinstance(exc, DeviceBlockedError) else RefusalReason.AUTH_FAILED
        return Refusal(
            reason=reason,
            fingerprint=fingerprint,
            key_type=key_type,
            device=device,
            detail=str(exc),
            ends_wait=True,
            log_format="device=%(device)s peer=%(peer)s %(error)s",
        )
    if isinstance(exc, CertificateRejectedError):
        reason = (
            RefusalReason.REVOKED if isinstance(exc, RevokedCertificateError) else RefusalReason.CERTIFICATE_REJECTED
        )
        return Refusal(
            reason=reason, fingerprint=fingerprint, key_type="x509", device=device, detail=str(exc), ends_wait=True
        )
    if isinstance(exc, HandshakeTimeoutError):
        return Refusal(reason=RefusalReason.HANDSHAKE_TIMEOUT, device=device, detail=str(exc))
    return Refusal(reason=RefusalReason.TRANSPORT_ERROR, device=device, detail=str(exc))
