"""The TLS client role over a device-initiated socket (RFC 8071 C3-C7, s5;
NETCONF over TLS is RFC 7589, port 4335).

Order, as RFC 8071 s5 asks:

1. TLS handshake with Python's ``ssl`` (TLS 1.2 or 1.3), ``CERT_REQUIRED``
   against the union of the trust anchors the inventory configures (never the
   system store).  OpenSSL validates the path the device sends, intermediates
   included (S5), and the validity dates *before* it sends our client
   certificate: a device with an unknown issuer, an expired certificate or a
   missing intermediate never receives it.
2. Identify: the verified chain's end-entity certificate carries an
   identifier (subject serialNumber, CN, SAN DNS or URI) that one device of
   the inventory expects (C6), or is that device's pinned certificate.
3. Bind identity to issuer: the chain must run through one of *that* device's
   configured issuers, so a device of another manufacturer (or another device
   of the same one) cannot pose as it.
4. Revocation: every certificate of the chain that a configured CRL covers is
   checked (C5); a revoked one closes the connection at once.  A CRL past its
   nextUpdate rejects (or, by policy, warns).
5. Only then does anything else flow: the NETCONF hello (C8), and later any
   HTTP credential for RESTCONF (C7).

What ``ssl`` allows about C7: the client certificate is sent inside the
handshake, after the device's chain was path-validated (step 1) but before
steps 2-4 can run, because Python exposes no verification callback.  A
certificate is public and proves possession only within this handshake, so
no secret reaches an unverified device; every other credential waits for
step 4.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import datetime
import hashlib
import itertools
import logging
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

from .._log import ContextAdapter
from ..addresses import PeerAddress, format_peer
from ..errors import CertificateRejectedError, HandshakeTimeoutError, RevokedCertificateError, TransportError
from ..identity.inventory import Device, IdentifierField, Inventory, StaleCRLPolicy, Transport
from ..protocol.session import SingleSession, TransportStream

__all__ = [
    "DirectTLSConnection",
    "TLSClientConfig",
    "TLSDeviceConnection",
    "TLSIdentified",
    "TLSTrust",
    "tls_handshake",
    "tls_handshake_direct",
]

log = logging.getLogger(__name__)
_conn_ids = itertools.count(1)


@dataclass(frozen=True, kw_only=True)
class TLSClientConfig:
    """The manager's side of TLS call home.

    ``certfile``/``keyfile``: the client certificate presented to devices
    (RFC 7589 mutual authentication); a ``str`` or any path-like is taken as
    a :class:`~pathlib.Path`.  ``handshake_timeout`` bounds accept to
    identified.  TCP keepalive (``tcp_keepalive_idle``/``_interval``/``_count``)
    detects dead devices, since TLS heartbeats are rarely available.
    """

    certfile: Path
    keyfile: Path | None = None
    handshake_timeout: float = 30.0
    tcp_keepalive_idle: int = 30
    tcp_keepalive_interval: int = 10
    tcp_keepalive_count: int = 3
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2

    def __post_init__(self) -> None:
        # the default and the strict C4 path read the same files: both take str paths
        object.__setattr__(self, "certfile", Path(self.certfile))
        if self.keyfile is not None:
            object.__setattr__(self, "keyfile", Path(self.keyfile))
        if self.handshake_timeout <= 0:
            raise ValueError(f"handshake_timeout must be > 0, not {self.handshake_timeout}")
        for name in ("tcp_keepalive_idle", "tcp_keepalive_interval", "tcp_keepalive_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.minimum_version < ssl.TLSVersion.TLSv1_2:
            raise ValueError("minimum_version must be TLS 1.2 or newer (RFC 7589)")

    def context(self, anchors: Iterable[x509.Certificate]) -> ssl.SSLContext:
        """A client context trusting only ``anchors``, presenting our certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = self.minimum_version
        ctx.check_hostname = False  # devices are identified by C6 identifiers, not host names
        ctx.verify_mode = ssl.CERT_REQUIRED
        # a configured intermediate or pinned end-entity certificate may be an anchor
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        pem = "".join(cert.public_bytes(serialization.Encoding.PEM).decode() for cert in anchors)
        if pem:
            ctx.load_verify_locations(cadata=pem)
        try:
            ctx.load_cert_chain(str(self.certfile), str(self.keyfile) if self.keyfile else None)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load the client certificate {self.certfile}: {exc}") from exc
        return ctx

    def apply_tcp_keepalive(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, self.tcp_keepalive_idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, self.tcp_keepalive_interval)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, self.tcp_keepalive_count)


def cert_fingerprint(cert: x509.Certificate) -> str:
    """``SHA256:`` + unpadded base64 of the DER certificate's SHA-256."""
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


_NAMES = {NameOID.SERIAL_NUMBER: "serialNumber"}


def _describe(cert: x509.Certificate) -> dict[str, str]:
    return {
        "subject": cert.subject.rfc4514_string(_NAMES),
        "issuer": cert.issuer.rfc4514_string(_NAMES),
        "serial": format(cert.serial_number, "X"),
        "fingerprint": cert_fingerprint(cert),
    }


def identifiers(cert: x509.Certificate, field: IdentifierField) -> list[str]:
    """The values ``cert`` carries in ``field``."""
    if field is IdentifierField.SERIAL_NUMBER:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)]
    if field is IdentifierField.COMMON_NAME:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    kind: type[x509.DNSName] | type[x509.UniformResourceIdentifier] = (
        x509.DNSName if field is IdentifierField.DNS else x509.UniformResourceIdentifier
    )
    return [str(v) for v in san.get_values_for_type(kind)]


def verify_path(
    leaf: x509.Certificate,
    intermediates: Iterable[x509.Certificate],
    anchors: Iterable[x509.Certificate],
    now: datetime.datetime,
) -> list[x509.Certificate]:
    """RFC 5280 path validation of ``leaf`` up to one of ``anchors`` (roots
    or intermediates alike), with ``cryptography``'s verifier: CA certificates
    under the Web PKI rules, the end-entity certificate under none (device
    certificates carry whatever EKU their manufacturer chose).  Returns the
    chain, end-entity first; raises ``VerificationError``."""
    verifier = (
        PolicyBuilder()
        .store(Store(list(anchors)))
        .time(now)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all())
        .build_client_verifier()
    )
    return list(verifier.verify(leaf, list(intermediates)).chain)


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return crl.is_signature_valid(key)
    return False


@dataclass(frozen=True, kw_only=True)
class TLSIdentified:
    """A TLS device identified from its verified chain."""

    device: str
    subject: str
    issuer: str
    serial: str
    fingerprint: str


class TLSTrust:
    """Certificate identity for TLS devices, from an :class:`Inventory`.

    :meth:`anchors` feeds the handshake's trust store; :meth:`identify` runs
    steps 2-4 of the module docstring on the chain OpenSSL verified.
    """

    def __init__(
        self, inventory: Inventory, transports: Iterable[Transport] = (Transport.TLS,), *, strict_listener: bool = False
    ) -> None:
        self.inventory = inventory
        self.strict_listener = strict_listener
        self.transports = tuple(transports)
        wanted = set(transports)
        self.devices = [d for d in inventory if d.transport in wanted and d.tls is not None]

    def anchors(self) -> list[x509.Certificate]:
        seen: dict[bytes, x509.Certificate] = {}
        for device in self.devices:
            assert device.tls is not None
            for cert in (*device.tls.issuers, *device.tls.pinned_certificates):
                seen.setdefault(cert.public_bytes(serialization.Encoding.DER), cert)
        return list(seen.values())

    def _find_device(self, leaf: x509.Certificate) -> Device | None:
        der = leaf.public_bytes(serialization.Encoding.DER)
        for device in self.devices:
            assert device.tls is not None
            if any(p.public_bytes(serialization.Encoding.DER) == der for p in device.tls.pinned_certificates):
                return device
        for field in self.inventory.tls_identifier_fields():
            for value in identifiers(leaf, field):
                found = self.inventory.device_for_tls_identifier(field, value)
                if found is not None and found in self.devices:
                    return found
        return None

    def identify(
        self, chain: list[x509.Certificate], peer: PeerAddress, now: datetime.datetime | None = None
    ) -> TLSIdentified:
        """Identify the device from ``chain`` (end-entity first, anchor last),
        or raise :class:`CertificateRejectedError` / :class:`RevokedCertificateError`."""
        if not chain:
            raise CertificateRejectedError(peer_address=peer, reason="no certificate presented")
        leaf = chain[0]
        facts = _describe(leaf)
        device = self._find_device(leaf)
        if device is None:
            raise CertificateRejectedError(
                peer_address=peer, reason="no device in the inventory expects this certificate's identifier", **facts
            )
        tls = device.tls
        assert tls is not None
        now = now or datetime.datetime.now(datetime.UTC)
        pinned = any(leaf == p for p in tls.pinned_certificates)
        if not pinned and not any(cert == issuer for cert in chain for issuer in tls.issuers):
            chain = self._chain_to_own_issuer(device, chain, peer, now, facts)
        self._check_revocation(device, chain, peer, now, facts)
        if tls.c4_strict and not self.strict_listener:
            raise CertificateRejectedError(
                peer_address=peer,
                reason=f"device {device.name} is configured for strict C4 (heartbeat) mode: "
                "it must call the strict listener",
                device=device.name,
                **facts,
            )
        return TLSIdentified(device=device.name, **facts)

    def _chain_to_own_issuer(
        self,
        device: Device,
        chain: list[x509.Certificate],
        peer: PeerAddress,
        now: datetime.datetime,
        facts: dict[str, str],
    ) -> list[x509.Certificate]:
        """The handshake validated against every device's issuers and stops at
        the first it trusts: with device A configured with an intermediate and
        device B with the root above it, B's chain ends at A's intermediate.
        Validate it again against *this* device's issuers alone, the chain's
        certificates serving as intermediates; return the longer chain."""
        tls = device.tls
        assert tls is not None
        if tls.issuers:
            with contextlib.suppress(VerificationError):
                return verify_path(chain[0], chain[1:], tls.issuers, now)
        raise CertificateRejectedError(
            peer_address=peer,
            reason=f"the chain does not lead to an issuer configured for device {device.name}",
            device=device.name,
            **facts,
        )

    def _check_revocation(
        self,
        device: Device,
        chain: list[x509.Certificate],
        peer: PeerAddress,
        now: datetime.datetime,
        facts: dict[str, str],
    ) -> None:
        tls = device.tls
        assert tls is not None
        for cert, issuer in itertools.pairwise(chain):
            for crl in tls.crls:
                if crl.issuer != cert.issuer or not _signed_by(crl, issuer):
                    continue
                next_update = crl.next_update_utc
                if next_update is not None and next_update < now:
                    message = (
                        f"CRL of {crl.issuer.rfc4514_string(_NAMES)} is stale (nextUpdate {next_update.isoformat()})"
                    )
                    if tls.stale_crl is StaleCRLPolicy.REJECT:
                        raise CertificateRejectedError(
                            peer_address=peer, reason=message + "; policy: reject", device=device.name, **facts
                        )
                    log.warning("device=%s peer=%s %s; policy: warn, using it", device.name, format_peer(peer), message)
                revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
                if revoked is not None:
                    raise RevokedCertificateError(
                        peer_address=peer,
                        reason=(
                            f"certificate serial {cert.serial_number:X} ({cert.subject.rfc4514_string(_NAMES)}) "
                            f"revoked on {revoked.revocation_date_utc.isoformat()}"
                        ),
                        device=device.name,
                        **facts,
                    )


class TLSDeviceConnection:
    """A verified, identified call-home TLS connection.

    NETCONF over TLS carries one NETCONF session per connection (RFC 7589):
    :meth:`open_stream` hands the stream over once; the device calls again
    for the next session.
    """

    transport_kind = Transport.TLS

    def __init__(
        self,
        *,
        stream: TransportStream,
        identified: TLSIdentified,
        peer_address: PeerAddress,
        conn_id: int,
        logger: ContextAdapter,
        accepted_at: float,
        tls_version: str,
    ) -> None:
        self.stream = stream
        self.device = identified.device
        self.identified = identified
        self.fingerprint = identified.fingerprint
        self.peer_address = peer_address
        self.conn_id = conn_id
        self.log = logger
        self.connected_at = time.time()
        self.accepted_at = accepted_at
        self.handshake_seconds = time.monotonic() - accepted_at
        self.tls_version = tls_version
        self.claimed = False
        self.sessions: SingleSession | None = None  # NETCONF: its one session, greeted by the server
        stream.closed.add_done_callback(self._lost)

    def _lost(self, fut: asyncio.Future[str]) -> None:
        if not self.claimed:
            self.log.info("connection closed before use: %s", fut.result())

    @property
    def is_closed(self) -> bool:
        return self.stream.closed.done()

    @property
    def close_reason(self) -> str | None:
        return self.stream.closed.result() if self.stream.closed.done() else None

    async def wait_closed(self) -> str:
        return await asyncio.shield(self.stream.closed)

    async def open_stream(self, local: socket.socket | None = None) -> socket.socket:
        """Relay the device's stream to ``local`` (a connected stream socket)
        and return it, or, without ``local``, to one end of a new socketpair
        and return the other (blocking) end.  Only once per connection."""
        if self.claimed:
            raise TransportError(
                f"the TLS session of device {self.device} is already in use",
                device=self.device,
                peer_address=self.peer_address,
            )
        if self.is_closed:
            raise TransportError(
                f"device {self.device} closed its TLS connection: {self.close_reason}",
                device=self.device,
                peer_address=self.peer_address,
            )
        self.claimed = True
        if local is not None:
            await self.stream.attach_local(local)
            return local
        ours, theirs = stream_pair()
        try:
            await self.stream.attach_local(ours)
        except BaseException:
            ours.close()
            theirs.close()
            raise
        theirs.setblocking(True)
        return theirs

    def close(self) -> None:
        if self.sessions is not None:
            self.sessions.close()
        self.stream.close()

    def __repr__(self) -> str:
        return f"<TLSDeviceConnection device={self.device} peer={format_peer(self.peer_address)} conn={self.conn_id}>"


_PAIR_BUFFER = 1 << 20  # fewer thread hand-offs for bulk transfers (measured: benchmarks/bench_restconf.py)


def stream_pair() -> tuple[socket.socket, socket.socket]:
    """A socketpair for handing a device stream to a caller thread, with
    buffers large enough that bulk transfers cross threads in big pieces."""
    ours, theirs = socket.socketpair()
    for sock in (ours, theirs):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _PAIR_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _PAIR_BUFFER)
    return ours, theirs


def _verified_chain(ssl_object: Any) -> list[x509.Certificate]:
    """The chain OpenSSL verified, end-entity first.  Public as
    ``SSLObject.get_verified_chain()`` from Python 3.13; the same method sits
    on the private ``_sslobj`` in 3.10-3.12."""
    getter = getattr(ssl_object, "get_verified_chain", None) or ssl_object._sslobj.get_verified_chain
    return [x509.load_der_x509_certificate(c.public_bytes(2)) for c in getter()]  # 2 = _ssl.ENCODING_DER


def _handshake_refusal(exc: ssl.SSLCertVerificationError) -> str:
    """Why we refused a chain inside the handshake. OpenSSL hands over no
    certificate it failed to verify, so say which side refused and what the
    usual cause is instead."""
    return (
        f"refused by the manager during the TLS handshake: {exc.verify_message} "
        "(the chain does not verify against the issuers configured for TLS devices)"
    )


async def tls_handshake(
    sock: socket.socket,
    peer: PeerAddress,
    trust: TLSTrust,
    config: TLSClientConfig,
    context: ssl.SSLContext,
) -> TLSDeviceConnection:
    """Run the TLS client role over ``sock`` and identify the device.

    Raises :class:`CertificateRejectedError` (or :class:`RevokedCertificateError`),
    :class:`HandshakeTimeoutError` or :class:`TransportError`; ``sock`` is
    closed on failure.
    """
    accepted_at = time.monotonic()
    conn_id = next(_conn_ids)
    logger = ContextAdapter(log, peer=format_peer(peer), conn=f"tls-{conn_id}")
    config.apply_tcp_keepalive(sock)
    loop = asyncio.get_running_loop()
    try:
        transport, stream = await asyncio.wait_for(
            loop.create_connection(
                TransportStream,
                sock=sock,
                ssl=context,
                server_hostname="",
                ssl_handshake_timeout=config.handshake_timeout,
            ),
            config.handshake_timeout,
        )
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise CertificateRejectedError(peer_address=peer, reason=_handshake_refusal(exc)) from exc
    except TimeoutError as exc:
        sock.close()
        raise HandshakeTimeoutError(peer_address=peer, timeout=config.handshake_timeout) from exc
    except (ssl.SSLError, OSError, ConnectionError) as exc:
        sock.close()
        raise TransportError(f"TLS handshake with {format_peer(peer)} failed: {exc}", peer_address=peer) from exc
    ssl_object = transport.get_extra_info("ssl_object")
    try:
        identified = trust.identify(_verified_chain(ssl_object), peer)
    except CertificateRejectedError:
        transport.abort()  # at once: no NETCONF byte is read or written
        raise
    logger.bind(device=identified.device)
    version = str(ssl_object.version())
    logger.info(
        "identified by certificate %s (issuer %s, serial %s) over %s",
        identified.subject,
        identified.issuer,
        identified.serial,
        version,
    )
    return TLSDeviceConnection(
        stream=stream,
        identified=identified,
        peer_address=peer,
        conn_id=conn_id,
        logger=logger,
        accepted_at=accepted_at,
        tls_version=version,
    )


class DirectTLSConnection:
    """A verified, identified call-home TLS connection handed to its user as
    the ``ssl.SSLSocket`` itself, with no relay (used for RESTCONF, where an
    HTTP client in the caller's thread does all the I/O: measured in
    benchmarks/bench_restconf.py against the relayed path).

    While idle, the event loop watches the socket: an EOF or close_notify
    marks it closed; post-handshake messages (TLS 1.3 session tickets) are
    absorbed; unsolicited application data (a RESTCONF server must not send
    any) closes it.
    """

    transport_kind = Transport.RESTCONF

    def __init__(
        self,
        *,
        tls: ssl.SSLSocket,
        identified: TLSIdentified,
        peer_address: PeerAddress,
        conn_id: int,
        logger: ContextAdapter,
        accepted_at: float,
    ) -> None:
        self._tls = tls
        self.device = identified.device
        self.identified = identified
        self.fingerprint = identified.fingerprint
        self.peer_address = peer_address
        self.conn_id = conn_id
        self.log = logger
        self.connected_at = time.time()
        self.accepted_at = accepted_at
        self.handshake_seconds = time.monotonic() - accepted_at
        self.tls_version = str(tls.version())
        self.claimed = False
        self._loop = asyncio.get_running_loop()
        self._closed: asyncio.Future[str] = self._loop.create_future()
        self._fd = tls.fileno()
        self._loop.add_reader(self._fd, self._idle_readable)

    def _idle_readable(self) -> None:
        self._tls.settimeout(0)
        try:
            data = self._tls.recv(1)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return  # a post-handshake message, consumed; still alive
        except (OSError, ssl.SSLError) as exc:
            self._end(f"closed: {exc}")
            return
        finally:
            if self._tls.fileno() != -1:
                self._tls.settimeout(None)
        if data:
            self.log.warning("device sent data while idle; closing the connection")
            self._end("unsolicited data from the device")
        else:
            self._end("closed by device")

    def _end(self, reason: str) -> None:
        self._loop.remove_reader(self._fd)
        with contextlib.suppress(OSError):
            self._tls.close()
        if not self._closed.done():
            self._closed.set_result(reason)
            self.log.info("connection closed before use: %s", reason)

    @property
    def is_closed(self) -> bool:
        return self._closed.done()

    @property
    def close_reason(self) -> str | None:
        return self._closed.result() if self._closed.done() else None

    async def wait_closed(self) -> str:
        return await asyncio.shield(self._closed)

    async def open_stream(self, local: socket.socket | None = None) -> socket.socket:
        """Hand the TLS socket over (blocking mode); the caller owns and closes it.
        No relay exists on this path, so ``local`` is not supported."""
        if local is not None:
            raise TransportError("a direct RESTCONF connection cannot be relayed to a local socket", device=self.device)
        if self.claimed or self.is_closed:
            raise TransportError(
                f"the TLS session of device {self.device} is not available",
                device=self.device,
                peer_address=self.peer_address,
            )
        self.claimed = True
        self._loop.remove_reader(self._fd)
        self._tls.settimeout(None)
        if not self._closed.done():
            self._closed.set_result("handed over")  # no longer ours to watch
        return self._tls

    def close(self) -> None:
        if not self.claimed:
            self._end("closed")

    def __repr__(self) -> str:
        return f"<DirectTLSConnection device={self.device} peer={format_peer(self.peer_address)} conn={self.conn_id}>"


def _blocking_handshake(sock: socket.socket, context: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
    sock.setblocking(True)
    sock.settimeout(timeout)
    tls = context.wrap_socket(sock, server_side=False, do_handshake_on_connect=False)
    try:
        tls.do_handshake()
    except BaseException:
        tls.close()
        raise
    tls.settimeout(None)
    return tls


async def tls_handshake_direct(
    sock: socket.socket,
    peer: PeerAddress,
    trust: TLSTrust,
    config: TLSClientConfig,
    context: ssl.SSLContext,
    executor: concurrent.futures.Executor | None = None,
) -> DirectTLSConnection:
    """Like :func:`tls_handshake`, but the handshake runs on a blocking
    ``SSLSocket`` in ``executor`` and the result is handed over without a
    relay (:class:`DirectTLSConnection`).  Same checks, same errors."""
    accepted_at = time.monotonic()
    conn_id = next(_conn_ids)
    logger = ContextAdapter(log, peer=format_peer(peer), conn=f"tls-{conn_id}")
    config.apply_tcp_keepalive(sock)
    loop = asyncio.get_running_loop()
    try:
        tls = await asyncio.wait_for(
            loop.run_in_executor(executor, _blocking_handshake, sock, context, config.handshake_timeout),
            config.handshake_timeout + 1,
        )
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise CertificateRejectedError(peer_address=peer, reason=_handshake_refusal(exc)) from exc
    except TimeoutError as exc:
        sock.close()
        raise HandshakeTimeoutError(peer_address=peer, timeout=config.handshake_timeout) from exc
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise TransportError(f"TLS handshake with {format_peer(peer)} failed: {exc}", peer_address=peer) from exc
    try:
        identified = trust.identify(_verified_chain(tls), peer)
    except CertificateRejectedError:
        tls.close()  # at once: no HTTP byte is read or written
        raise
    logger.bind(device=identified.device)
    logger.info(
        "identified by certificate %s (issuer %s, serial %s) over %s",
        identified.subject,
        identified.issuer,
        identified.serial,
        tls.version(),
    )
    return DirectTLSConnection(
        tls=tls, identified=identified, peer_address=peer, conn_id=conn_id, logger=logger, accepted_at=accepted_at
    )
