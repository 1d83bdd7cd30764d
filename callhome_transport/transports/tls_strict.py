"""Strict RFC 8071 C4 mode: a TLS client that advertises the heartbeat
extension with ``peer_allowed_to_send`` (RFC 6520) and answers the device's
HeartbeatRequests.

OpenSSL removed heartbeats, so Python's ``ssl`` cannot send the extension at
all.  This mode uses tlslite-ng (pure Python, ships heartbeat support, sends
the extension by default; optional extra ``callhome-transport[strict-tls]``).
The default ``ssl`` path does not advertise it; docs/conformance.md says why
that default is acceptable (TCP keepalive covers what heartbeats are for).

Differences from the ``ssl`` path, by design of tlslite-ng:

* tlslite-ng does no X.509 path validation and has no verification hook, so
  the device's chain is validated right after the handshake, with
  ``cryptography``'s RFC 5280 verifier against the same per-device issuers,
  then identified, issuer-bound and revocation-checked exactly as on the
  ``ssl`` path.  Our client certificate (public) is sent before that; no
  other byte is.
* Each connection runs its TLS on two threads (device -> local, local ->
  device) plus a heartbeat timer when the device accepts heartbeats.  Record
  writes from those threads are serialised by a lock.
* The handshake is pure Python (see benchmarks/bench_tls.py for its cost
  against ``ssl``), and TLS 1.2 only: tlslite-ng 0.8.2's TLS 1.3 client with a
  client certificate fails against OpenSSL 3.0 servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import os
import socket
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.x509.verification import VerificationError

from .._log import ContextAdapter
from ..addresses import PeerAddress, format_peer
from ..errors import CertificateRejectedError, HandshakeTimeoutError, TransportError
from ..identity.inventory import Transport
from ..identity.tls_trust import TLSIdentified, TLSTrust, describe_certificate, verify_path
from ..protocol.session import DeviceTraits, SingleSession
from .contract import ConnectionBase, DeviceConnection, Handshake
from .preauth import PendingConnection
from .relay import TransportStream
from .tls import TLSAcceptor, TLSClientConfig, TLSHost, TLSListenerState, identify_chain, shut_down

__all__ = [
    "HeartbeatConfig",
    "StrictTLSAcceptor",
    "StrictTLSConnection",
    "StrictTLSHost",
    "strict_available",
    "strict_client_credentials",
    "strict_tls_handshake",
]

log = logging.getLogger(__name__)


@functools.cache
def _tlslite() -> Any:
    """tlslite-ng, imported on first use (a server with no strict listener,
    and the gateway, never load it); ``None`` when it is not installed."""
    try:
        import tlslite  # type: ignore[import-untyped]
        from tlslite.utils.keyfactory import parsePEMKey  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - exercised only without the extra
        return None

    class LockedTLSConnection(tlslite.TLSConnection):  # type: ignore[misc]
        """tlslite-ng connection whose record writes are atomic across threads
        (the reader thread answers HeartbeatRequests while the writer thread
        sends NETCONF data): it wraps the private ``_sendMsgThroughSocket``
        (guarded by tests/unit/test_private_hooks.py)."""

        def __init__(self, sock: socket.socket) -> None:
            super().__init__(sock)
            self._record_lock = threading.RLock()

        def _sendMsgThroughSocket(self, msg: Any) -> Iterator[Any]:
            with self._record_lock:
                yield from super()._sendMsgThroughSocket(msg)

    return types.SimpleNamespace(
        HandshakeSettings=tlslite.HandshakeSettings,
        X509CertChain=tlslite.X509CertChain,
        parsePEMKey=parsePEMKey,
        LockedTLSConnection=LockedTLSConnection,
    )


def strict_available() -> bool:
    """Whether tlslite-ng is installed (``pip install callhome-transport[strict-tls]``)."""
    return _tlslite() is not None


@dataclass(frozen=True, kw_only=True)
class HeartbeatConfig:
    """HeartbeatRequests we send when the device allows them (RFC 6520)."""

    interval: float = 30.0
    missed_max: int = 3


def _verify_chain(presented: list[x509.Certificate], trust: TLSTrust, peer: PeerAddress) -> list[x509.Certificate]:
    """RFC 5280 path validation of the device's chain against the configured
    anchors; returns the verified chain, end-entity first."""
    if not presented:
        raise CertificateRejectedError(peer_address=peer, reason="no certificate presented")
    anchors = trust.anchors()
    if not anchors:
        raise CertificateRejectedError(
            peer_address=peer, reason="no trust anchors configured", **describe_certificate(presented[0])
        )
    try:
        return verify_path(presented[0], presented[1:], anchors, datetime.datetime.now(datetime.UTC))
    except VerificationError as exc:
        raise CertificateRejectedError(
            peer_address=peer, reason=f"path validation: {exc}", **describe_certificate(presented[0])
        ) from exc


class StrictTLSConnection(ConnectionBase):
    """A verified, identified call-home connection over tlslite-ng (pooled:
    one NETCONF session per connection, as over ``ssl``)."""

    transport = Transport.TLS

    def __init__(
        self,
        handshake: Handshake,
        *,
        tls: Any,
        raw: socket.socket,
        identified: TLSIdentified,
        heartbeat: HeartbeatConfig,
    ) -> None:
        super().__init__(handshake)
        self._tls = tls
        self._raw = raw
        self.identified = identified
        self.heartbeat_negotiated = bool(tls.heartbeat_supported and tls.heartbeat_can_send)
        self.heartbeat = heartbeat
        self.heartbeats_answered = 0
        self.sessions: SingleSession | None = None  # its one NETCONF session, greeted by the server
        self._closed = threading.Event()  # set in the pump threads; self.closed follows on the loop
        self._close_reason: str | None = None
        self._loop = asyncio.get_running_loop()
        tls.heartbeat_response_callback = self._on_heartbeat_response

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    def facts(self) -> dict[str, Any]:
        return {**self.identified.facts(), "heartbeat_negotiated": self.heartbeat_negotiated}

    async def start_sessions(
        self, *, hold: bool, hello_timeout: float, traits: DeviceTraits, warm: float = 0.0
    ) -> None:
        """tlslite-ng pumps the session to a socket in its own threads: the
        session reads the other end of that socket."""
        try:
            theirs = await self.open_stream()
            _, stream = await asyncio.get_running_loop().connect_accepted_socket(TransportStream, theirs)
        except OSError as exc:
            raise self._unavailable(str(exc)) from exc
        self.claimed = False  # its NETCONF session is still free
        self._one_session(stream, hold, hello_timeout)

    def _on_heartbeat_response(self, _message: Any) -> None:
        self.heartbeats_answered += 1
        self.log.debug("HeartbeatResponse received (%d so far)", self.heartbeats_answered)

    def _finish(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self._close_reason = reason
        self._closed.set()
        with contextlib.suppress(OSError):
            self._raw.close()
        self.log.info("connection closed: %s", reason)

        def _resolve() -> None:
            if not self.closed.done():
                self.closed.set_result(reason)

        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_resolve)

    async def open_stream(self, local: socket.socket | None = None) -> socket.socket:
        """Relay the stream to ``local`` (returned), or to a new socketpair
        whose caller end is returned."""
        if self.claimed or self.is_closed:
            raise self._unavailable(f"the TLS session of device {self.device} is not available")
        self.claimed = True
        if local is not None:
            local.setblocking(True)
            ours, theirs = local, local
        else:
            ours, theirs = socket.socketpair()
        threading.Thread(target=self._pump_from_device, args=(ours,), daemon=True, name=f"c4-rx-{self.device}").start()
        threading.Thread(target=self._pump_to_device, args=(ours,), daemon=True, name=f"c4-tx-{self.device}").start()
        if self.heartbeat_negotiated and self.heartbeat.interval > 0:
            threading.Thread(target=self._heartbeats, daemon=True, name=f"c4-hb-{self.device}").start()
        return theirs

    def _pump_from_device(self, local: socket.socket) -> None:
        reason = "closed by device"
        try:
            while not self._closed.is_set():
                data = self._tls.read(max=65536, min=1)
                if not data:
                    break
                local.sendall(bytes(data))
        except Exception as exc:  # any tlslite or socket error ends the session
            reason = f"read failed: {exc!r}"
        finally:
            with contextlib.suppress(OSError):
                local.shutdown(socket.SHUT_WR)
            self._finish(reason)

    def _pump_to_device(self, local: socket.socket) -> None:
        reason = "closed by local side"
        try:
            while not self._closed.is_set():
                data = local.recv(65536)
                if not data:
                    break
                self._tls.write(data)
        except Exception as exc:
            reason = f"write failed: {exc!r}"
        finally:
            with contextlib.suppress(Exception):
                self._tls.close()
            local.close()
            self._finish(reason)

    def _heartbeats(self) -> None:
        missed = 0
        while not self._closed.wait(self.heartbeat.interval):
            before = self.heartbeats_answered
            try:
                self._tls.send_heartbeat_request(os.urandom(16), 16)
            except Exception as exc:
                self._finish(f"heartbeat failed: {exc!r}")
                return
            if self._closed.wait(self.heartbeat.interval):
                return
            missed = 0 if self.heartbeats_answered > before else missed + 1
            if missed >= self.heartbeat.missed_max:
                self.log.warning("no HeartbeatResponse for %d requests: closing", missed)
                self._finish("device not answering heartbeats")
                return

    def close(self) -> None:
        if self.sessions is not None:
            self.sessions.close()
        self._finish("closed")


def _ignore(_message: Any) -> None:
    return None


def strict_client_credentials(config: TLSClientConfig) -> tuple[Any, Any]:
    """Our certificate chain and private key as tlslite-ng takes them.

    Raises :class:`ValueError` naming the file when they cannot be loaded, or
    when tlslite-ng is missing: the server calls this when it starts, as the
    ``ssl`` path builds its context then, so a local fault is reported once
    and never counted against a calling device."""
    lite = _tlslite()
    if lite is None:
        raise ValueError("strict C4 mode needs tlslite-ng (pip install callhome-transport[strict-tls])")
    try:
        chain = lite.X509CertChain()
        chain.parsePemList(config.certfile.read_text())
        key = lite.parsePEMKey((config.keyfile or config.certfile).read_text(), private=True)
    except Exception as exc:  # OSError, or tlslite-ng's parse errors (SyntaxError...)
        raise ValueError(f"cannot load the client certificate {config.certfile} for strict C4 mode: {exc}") from exc
    return chain, key


def _handshake_blocking(sock: socket.socket, config: TLSClientConfig) -> tuple[Any, list[x509.Certificate]]:
    sock.setblocking(True)
    sock.settimeout(config.handshake_timeout)
    chain, key = strict_client_credentials(config)
    lite = _tlslite()
    settings = lite.HandshakeSettings()
    settings.use_heartbeat_extension = True  # RFC 8071 C4: peer_allowed_to_send
    # tlslite-ng lets us send requests only if a response callback is set at
    # handshake time; StrictTLSConnection installs the real one afterwards
    settings.heartbeat_response_callback = _ignore
    # TLS 1.2 only: tlslite-ng 0.8.2's TLS 1.3 client with a client
    # certificate fails against OpenSSL 3.0 servers ("unexpected message")
    settings.minVersion = (3, 3)
    settings.maxVersion = (3, 3)
    conn = lite.LockedTLSConnection(sock)
    conn.handshakeClientCert(chain, key, settings=settings)
    sock.settimeout(None)
    presented = [x509.load_der_x509_certificate(bytes(c.writeBytes())) for c in conn.session.serverCertChain.x509List]
    return conn, presented


async def strict_tls_handshake(
    sock: socket.socket,
    peer: PeerAddress,
    trust: TLSTrust,
    config: TLSClientConfig,
    heartbeat: HeartbeatConfig | None = None,
) -> StrictTLSConnection:
    """The C4-strict twin of :func:`~callhome_transport.transports.tls.tls_handshake`."""
    if not strict_available():
        sock.close()
        raise TransportError("strict C4 mode needs tlslite-ng (pip install callhome-transport[strict-tls])")
    accepted_at = time.monotonic()
    logger = ContextAdapter(log, peer=format_peer(peer), conn="tls-c4")
    config.apply_tcp_keepalive(sock)
    loop = asyncio.get_running_loop()
    try:
        tls, presented = await asyncio.wait_for(
            loop.run_in_executor(None, _handshake_blocking, sock, config), config.handshake_timeout + 1
        )
    except TimeoutError as exc:
        shut_down(sock)  # the handshake in the worker thread ends at once
        sock.close()
        raise HandshakeTimeoutError(peer_address=peer, timeout=config.handshake_timeout) from exc
    except Exception as exc:  # tlslite raises its own exception family
        sock.close()
        raise TransportError(
            f"TLS (strict C4) handshake with {format_peer(peer)} failed: {exc!r}", peer_address=peer
        ) from exc
    try:
        chain = _verify_chain(presented, trust, peer)
    except CertificateRejectedError:
        sock.close()
        raise
    heartbeat_negotiated = bool(tls.heartbeat_supported and tls.heartbeat_can_send)
    over = f"tlslite-ng, heartbeat {'negotiated' if heartbeat_negotiated else 'not accepted by the device'}"
    identified, handshake = identify_chain(trust, chain, peer, logger, accepted_at, None, over, on_refused=sock.close)
    return StrictTLSConnection(
        handshake, tls=tls, raw=sock, identified=identified, heartbeat=heartbeat or HeartbeatConfig()
    )


class StrictTLSHost(TLSHost, Protocol):
    """What :class:`StrictTLSAcceptor` reads from the server beside :class:`TLSHost`."""

    heartbeat: HeartbeatConfig


class StrictTLSAcceptor(TLSAcceptor):
    """RFC 8071 C4 strict TLS (heartbeats) through tlslite-ng, for NETCONF/TLS and RESTCONF devices."""

    def __init__(self, host: StrictTLSHost, state: TLSListenerState) -> None:
        super().__init__(host, state, Transport.TLS)
        self.host: StrictTLSHost = host
        self.label = "tls-strict"
        self.transports = (Transport.TLS, Transport.RESTCONF)

    async def handshake(self, pending: PendingConnection) -> DeviceConnection:
        return await strict_tls_handshake(
            pending.sock, pending.peer, self.state.trust, self._config(), self.host.heartbeat
        )
