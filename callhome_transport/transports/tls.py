"""The TLS client role over a device-initiated socket (RFC 8071 C3-C7, s5;
NETCONF over TLS is RFC 7589, port 4335).

Order, as RFC 8071 s5 asks:

1. TLS handshake with Python's ``ssl`` (TLS 1.2 or 1.3), ``CERT_REQUIRED``
   against the union of the trust anchors the inventory configures (never the
   system store).  OpenSSL validates the path the device sends, intermediates
   included (S5), and the validity dates *before* it sends our client
   certificate: a device with an unknown issuer, an expired certificate or a
   missing intermediate never receives it.
2. Identify, bind identity to issuer, check revocation: on the chain OpenSSL
   verified, by :class:`~callhome_transport.identity.tls_trust.TLSTrust`
   (identity has its own room, with no I/O).
3. Only then does anything else flow: the NETCONF hello (C8), and later any
   HTTP credential for RESTCONF (C7).

What ``ssl`` allows about C7: the client certificate is sent inside the
handshake, after the device's chain was path-validated (step 1) but before
step 2 can run, because Python exposes no verification callback.  A
certificate is public and proves possession only within this handshake, so
no secret reaches an unverified device; every other credential waits for
step 2.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .._log import ContextAdapter
from ..addresses import PeerAddress, format_peer
from ..errors import CallHomeError, CertificateRejectedError, HandshakeTimeoutError, TransportError
from ..identity.inventory import Transport
from ..identity.tls_trust import TLSIdentified, TLSTrust
from ..protocol.session import DeviceTraits, SingleSession
from ..status import HANDED_OVER
from .contract import ConnectionBase, DeviceConnection, Handshake, next_conn_id
from .preauth import PendingConnection
from .relay import TransportStream, attached_pair

__all__ = [
    "DirectTLSConnection",
    "TLSAcceptor",
    "TLSClientConfig",
    "TLSDeviceConnection",
    "TLSHost",
    "TLSListenerState",
    "tls_handshake",
    "tls_handshake_direct",
]

log = logging.getLogger(__name__)


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


class TLSDeviceConnection(ConnectionBase):
    """A verified, identified call-home TLS connection.

    NETCONF over TLS carries one NETCONF session per connection (RFC 7589):
    :meth:`open_stream` hands the stream over once; the device calls again
    for the next session (pooled).  ``transport`` is the device's:
    ``Transport.RESTCONF`` for a RESTCONF device relayed over this class.
    """

    transport = Transport.TLS

    def __init__(
        self,
        handshake: Handshake,
        *,
        stream: TransportStream,
        identified: TLSIdentified,
        tls_version: str,
        transport: Transport = Transport.TLS,
    ) -> None:
        super().__init__(handshake, closed=stream.closed, transport=transport)
        self.stream = stream
        self.identified = identified
        self.tls_version = tls_version
        self.sessions: SingleSession | None = None  # NETCONF: its one session, greeted by the server
        stream.closed.add_done_callback(self._lost)

    def _lost(self, fut: asyncio.Future[str]) -> None:
        if not self.claimed:
            self.log.info("connection closed before use: %s", fut.result())

    async def start_sessions(
        self, *, hold: bool, hello_timeout: float, traits: DeviceTraits, warm: float = 0.0
    ) -> None:
        if self.transport is Transport.RESTCONF:
            return  # HTTP, relayed whole
        self._one_session(self.stream, hold, hello_timeout)

    def facts(self) -> dict[str, Any]:
        return self.identified.facts()

    async def open_stream(self, local: socket.socket | None = None) -> socket.socket:
        """Relay the device's stream to ``local`` (a connected stream socket)
        and return it, or, without ``local``, to one end of a new socketpair
        and return the other (blocking) end.  Only once per connection."""
        if self.claimed:
            raise self._unavailable(f"the TLS session of device {self.device} is already in use")
        if self.is_closed:
            raise self._unavailable(f"device {self.device} closed its TLS connection: {self.close_reason}")
        self.claimed = True
        if local is not None:
            await self.stream.attach_local(local)
            return local
        return await attached_pair(self.stream.attach_local, stream_pair)

    def close(self) -> None:
        if self.sessions is not None:
            self.sessions.close()
        self.stream.close()


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
    kind: Transport = Transport.TLS,
) -> TLSDeviceConnection:
    """Run the TLS client role over ``sock`` and identify the device
    (``kind``: the devices this listener serves, NETCONF/TLS or RESTCONF).

    Raises :class:`CertificateRejectedError` (or :class:`RevokedCertificateError`),
    :class:`HandshakeTimeoutError` or :class:`TransportError`; ``sock`` is
    closed on failure.
    """
    accepted_at = time.monotonic()
    conn_id = next_conn_id()
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
    version = str(ssl_object.version())
    # at once on a refusal: no NETCONF byte is read or written
    identified, handshake = identify_chain(
        trust, _verified_chain(ssl_object), peer, logger, accepted_at, conn_id, version, on_refused=transport.abort
    )
    return TLSDeviceConnection(handshake, stream=stream, identified=identified, tls_version=version, transport=kind)


class DirectTLSConnection(ConnectionBase):
    """A verified, identified call-home TLS connection handed to its user as
    the ``ssl.SSLSocket`` itself, with no relay (used for RESTCONF, where an
    HTTP client in the caller's thread does all the I/O: measured in
    benchmarks/bench_restconf.py against the relayed path).

    While idle, the event loop watches the socket: an EOF or close_notify
    marks it closed; post-handshake messages (TLS 1.3 session tickets) are
    absorbed; unsolicited application data (a RESTCONF server must not send
    any) closes it.
    """

    transport = Transport.RESTCONF

    def __init__(self, handshake: Handshake, *, tls: ssl.SSLSocket, identified: TLSIdentified) -> None:
        super().__init__(handshake)
        self._tls = tls
        self.identified = identified
        self.tls_version = str(tls.version())
        self._loop = asyncio.get_running_loop()
        self._closed = self.closed
        self._fd = tls.fileno()
        self._loop.add_reader(self._fd, self._idle_readable)

    def facts(self) -> dict[str, Any]:
        return self.identified.facts()

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

    async def open_stream(self, local: socket.socket | None = None) -> socket.socket:
        """Hand the TLS socket over (blocking mode); the caller owns and closes it.
        No relay exists on this path, so ``local`` is not supported."""
        if local is not None:
            raise TransportError("a direct RESTCONF connection cannot be relayed to a local socket", device=self.device)
        if self.claimed or self.is_closed:
            raise self._unavailable(f"the TLS session of device {self.device} is not available")
        self.claimed = True
        self._loop.remove_reader(self._fd)
        self._tls.settimeout(None)
        if not self._closed.done():
            self._closed.set_result(HANDED_OVER)  # no longer ours to watch
        return self._tls

    def close(self) -> None:
        if not self.claimed:
            self._end("closed")


def shut_down(sock: socket.socket) -> None:
    """End a connection now, waking any thread blocked on it (closing the
    descriptor would not)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


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
    conn_id = next_conn_id()
    logger = ContextAdapter(log, peer=format_peer(peer), conn=f"tls-{conn_id}")
    config.apply_tcp_keepalive(sock)
    loop = asyncio.get_running_loop()
    # the handshake runs on a duplicate of sock, which the SSLSocket takes
    # over: sock itself stays ours, so shutting it down (a timeout here, an
    # early drop by admission) ends a handshake still running in the worker at
    # once (tlslite-ng and a device trickling bytes would keep it there)
    work = sock.dup()
    try:
        tls = await asyncio.wait_for(
            loop.run_in_executor(executor, _blocking_handshake, work, context, config.handshake_timeout),
            config.handshake_timeout + 1,
        )
    except ssl.SSLCertVerificationError as exc:
        raise CertificateRejectedError(peer_address=peer, reason=_handshake_refusal(exc)) from exc
    except TimeoutError as exc:
        shut_down(sock)
        raise HandshakeTimeoutError(peer_address=peer, timeout=config.handshake_timeout) from exc
    except (ssl.SSLError, OSError) as exc:
        raise TransportError(f"TLS handshake with {format_peer(peer)} failed: {exc}", peer_address=peer) from exc
    finally:
        sock.close()  # the TLS socket, if any, has its own descriptor
        work.close()  # detached by the SSLSocket when the handshake got that far
    # at once on a refusal: no HTTP byte is read or written
    identified, handshake = identify_chain(
        trust, _verified_chain(tls), peer, logger, accepted_at, conn_id, str(tls.version()), on_refused=tls.close
    )
    return DirectTLSConnection(handshake, tls=tls, identified=identified)


def identify_chain(
    trust: TLSTrust,
    chain: list[x509.Certificate],
    peer: PeerAddress,
    logger: ContextAdapter,
    accepted_at: float,
    conn_id: int | str | None,
    over: str,
    *,
    on_refused: Callable[[], object],
) -> tuple[TLSIdentified, Handshake]:
    """Identify the device from its verified ``chain`` (``on_refused`` ends
    the connection before :class:`CertificateRejectedError` is raised) and log it."""
    try:
        identified = trust.identify(chain, peer)
    except CertificateRejectedError:
        on_refused()
        raise
    logger.bind(device=identified.device)
    logger.info(
        "identified by certificate %s (issuer %s, serial %s) over %s",
        identified.subject,
        identified.issuer,
        identified.serial,
        over,
    )
    handshake = Handshake.of(identified, peer, logger, accepted_at, conn_id)
    return identified, handshake


@dataclass
class TLSListenerState:
    """What a TLS listener checks devices against (replaced on reload)."""

    trust: TLSTrust
    context: ssl.SSLContext | None  # None: strict C4 listener (tlslite-ng)


class TLSHost(Protocol):
    """What :class:`TLSAcceptor` reads from the server."""

    tls_config: TLSClientConfig | None

    @property
    def banner_timeout(self) -> float: ...

    @property
    def handshake_executor(self) -> concurrent.futures.Executor: ...


class TLSAcceptor:
    """NETCONF over TLS (4335) or RESTCONF (4336) through ``ssl``; ``direct``
    hands a RESTCONF connection over whole (:class:`DirectTLSConnection`)."""

    tls = True

    def __init__(self, host: TLSHost, state: TLSListenerState, transport: Transport, *, direct: bool = False) -> None:
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
        banner = self.host.banner_timeout
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
