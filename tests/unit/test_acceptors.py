"""The acceptors on fake pending connections, and refusals read from error
types: no socket."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from callhome_transport.errors import (
    AuthenticationFailedError,
    CertificateRejectedError,
    DeviceBlockedError,
    HandshakeTimeoutError,
    PreambleHMACError,
    ProxyProtocolError,
    RevokedCertificateError,
    TransportError,
    UnknownDeviceError,
)
from callhome_transport.identity.inventory import Transport
from callhome_transport.server.refusals import refusal_of
from callhome_transport.status import RefusalReason
from callhome_transport.transports.outbound_ssh import OutboundSSHAcceptor, OutboundSSHConfig
from callhome_transport.transports.proxy import build_v1, build_v2
from callhome_transport.transports.ssh import SSHAcceptor, SSHClientConfig
from callhome_transport.transports.tls import TLSAcceptor, TLSClientConfig
from callhome_transport.transports.tls_strict import StrictTLSAcceptor

PEER = ("192.0.2.7", 50000)


@dataclass
class FakeHost:
    banner_timeout: float
    ssh_config: SSHClientConfig = field(default_factory=lambda: SSHClientConfig(handshake_timeout=30))
    tls_config: Any = None
    outbound_ssh_config: OutboundSSHConfig = field(default_factory=lambda: OutboundSSHConfig(preamble_timeout=5))


class FakePending:
    def __init__(self, first: bytes = b"SSH-2.0-OpenSSH_9.2\r\n") -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.first = first
        self.peer = PEER

    async def ssh_banner(self, timeout: float, reason: str) -> bytes:
        self.calls.append(("ssh_banner", (timeout, reason)))
        return self.first

    def watch_first_bytes(self, timeout: float) -> None:
        self.calls.append(("watch_first_bytes", (timeout,)))


def host(banner_timeout: float) -> FakeHost:
    return FakeHost(banner_timeout=banner_timeout)


def first_wait(acceptor: Any) -> list[tuple[str, tuple[Any, ...]]]:
    pending = FakePending()
    asyncio.run(acceptor.before_handshake(pending))
    return pending.calls


def test_ssh_waits_for_the_banner_within_the_shortest_bound() -> None:
    assert first_wait(SSHAcceptor(host(10))) == [("ssh_banner", (10, "banner-timeout"))]
    assert first_wait(SSHAcceptor(host(0))) == [("ssh_banner", (30, "handshake-timeout"))]
    assert first_wait(OutboundSSHAcceptor(host(10))) == [("ssh_banner", (5, "preamble-timeout"))]


@pytest.mark.parametrize("acceptor", [SSHAcceptor, OutboundSSHAcceptor])
@pytest.mark.parametrize("header", [build_v1(("203.0.113.9", 4242), PEER), build_v2(("203.0.113.9", 4242), PEER)])
def test_a_proxy_header_in_a_devices_own_first_bytes_is_refused(acceptor: Any, header: bytes) -> None:
    """Only a trusted balancer's header is read (by the listener, before
    the acceptor): one the device sends itself is spoofing, refused before
    the SSH client or the preamble parser sees it."""
    pending = FakePending(header + b"SSH-2.0-OpenSSH_9.2\r\n")
    with pytest.raises(ProxyProtocolError) as refused:
        asyncio.run(acceptor(host(10)).before_handshake(pending))
    assert refused.value.peer_address == PEER
    refusal = refusal_of(refused.value)
    assert (refusal.reason, refusal.device, refusal.ends_wait) == (RefusalReason.PROXY_HEADER, None, False)


def test_tls_watches_the_first_bytes_only_when_the_banner_bound_is_shorter(tmp_path: Any) -> None:
    tls = TLSClientConfig(certfile=tmp_path / "c.pem", handshake_timeout=20)
    short, long = host(10), host(60)
    short.tls_config = long.tls_config = tls
    state: Any = None
    assert first_wait(TLSAcceptor(short, state, Transport.TLS)) == [("watch_first_bytes", (10,))]
    assert first_wait(TLSAcceptor(long, state, Transport.RESTCONF)) == []


def test_labels_and_served_transports() -> None:
    h: Any = host(10)
    assert (SSHAcceptor(h).label, SSHAcceptor(h).transports) == ("ssh", (Transport.SSH,))
    assert (OutboundSSHAcceptor(h).label, OutboundSSHAcceptor(h).transports) == ("outbound-ssh", ())
    restconf = TLSAcceptor(h, None, Transport.RESTCONF)  # type: ignore[arg-type]
    assert (restconf.label, restconf.kind, restconf.transports) == ("restconf", "restconf", (Transport.RESTCONF,))
    strict = StrictTLSAcceptor(h, None)  # type: ignore[arg-type]
    assert (strict.label, strict.kind, strict.transports) == ("tls-strict", "tls", (Transport.TLS, Transport.RESTCONF))
    hmac = PreambleHMACError(peer_address=PEER, device_id="mx1", device="MX1", detail="wrong HMAC")
    assert OutboundSSHAcceptor(h).refusal_kind(hmac) == "outbound-ssh"
    assert OutboundSSHAcceptor(h).refusal_kind(HandshakeTimeoutError(peer_address=PEER, timeout=1)) == "ssh"


@pytest.mark.parametrize(
    ("error", "reason", "ends_wait"),
    [
        (
            UnknownDeviceError(peer_address=PEER, fingerprint="SHA256:u", key_type="ssh-ed25519"),
            "unknown-device",
            False,
        ),
        (
            AuthenticationFailedError(
                device="R1", peer_address=PEER, username="u", reason="denied", fingerprint="f", key_type="k"
            ),
            "auth-failed",
            True,
        ),
        (
            DeviceBlockedError(device="R1", peer_address=PEER, seconds=60, fingerprint="f", key_type="k"),
            "device-blocked",
            True,
        ),
        (CertificateRejectedError(peer_address=PEER, reason="no issuer"), "certificate-rejected", True),
        (RevokedCertificateError(peer_address=PEER, reason="revoked"), "revoked", True),
        (HandshakeTimeoutError(peer_address=PEER, timeout=3), "handshake-timeout", False),
        (TransportError("reset", peer_address=PEER), "transport-error", False),
        (PreambleHMACError(peer_address=PEER, device_id="mx1", device="MX1", detail="wrong"), "hmac-mismatch", True),
    ],
)
def test_refusals_are_read_from_the_error_type(error: Any, reason: str, ends_wait: bool) -> None:
    refusal = refusal_of(error)
    assert refusal.reason is RefusalReason(reason)
    assert refusal.ends_wait is ends_wait


def test_refusal_data() -> None:
    unknown = refusal_of(UnknownDeviceError(peer_address=PEER, fingerprint="SHA256:u", key_type="ssh-ed25519"))
    assert (unknown.fingerprint, unknown.key_type, unknown.device, unknown.detail) == (
        "SHA256:u",
        "ssh-ed25519",
        None,
        "",
    )
    assert refusal_of(CertificateRejectedError(peer_address=PEER, reason="x")).key_type == "x509"
    revoked = refusal_of(RevokedCertificateError(peer_address=PEER, reason="revoked", subject="CN=R1", serial="7"))
    assert revoked.certificate_subject == "CN=R1"  # the device-rejected event says whose certificate it was
    assert unknown.certificate_subject is None
    hmac = refusal_of(PreambleHMACError(peer_address=PEER, device_id="mx1", device="MX1", detail="wrong"))
    assert (hmac.device, hmac.device_id, hmac.detail) == ("MX1", "mx1", "DEVICE-ID mx1: wrong")
