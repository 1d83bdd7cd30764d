"""The reversed-TCP listener (RFC 8071 C1, C2).

It binds IPv4 and IPv6, accepts connections from devices, records the peer
address and hands over the connected socket.  It knows nothing of SSH, TLS or
NETCONF.  An error on one connection never stops it; it runs until closed.
Behind an L4 balancer it learns the device's address from the balancer's
PROXY protocol header (:mod:`callhome_transport.transports.proxy`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..addresses import NETCONF_CH_SSH_PORT, PeerAddress, format_peer
from ..descriptors import DescriptorGuard, process_guard
from ..errors import ListenerError, ProxyProtocolError

if TYPE_CHECKING:
    from .proxy import ProxyProtocol

__all__ = ["Listener"]

AcceptHandler = Callable[[socket.socket, PeerAddress], Awaitable[None]]
RefusedCallback = Callable[[PeerAddress, str], None]

log = logging.getLogger(__name__)

# Pause after accept() fails for lack of resources (EMFILE...), so that a
# descriptor storm does not turn into a busy loop.
_ACCEPT_BACKOFF = 0.1
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(frozen=True, kw_only=True)
class BoundAddress:
    """One socket the listener bound."""

    listen_address: str
    listen_port: int
    family: socket.AddressFamily


class Listener:
    """Accepts TCP connections on one port, on one or more addresses.

    ``listen_address`` is a host or a list of hosts; ``None`` (the default)
    binds every interface, IPv4 and IPv6.  ``listen_port`` 0 picks a free port,
    the same one on every address.  ``SO_REUSEADDR`` is set, so a restart does
    not fail with EADDRINUSE while old connections sit in TIME_WAIT.

    ``handler(sock, peer_address)`` runs as its own task for every accepted
    connection; whatever it raises is logged and forgotten.

    With ``proxy``, a connection from a trusted balancer gets the device's
    address from its PROXY header (consumed before ``handler`` runs); one
    without a valid header is closed, logged and reported to
    ``on_refused(peer_address, reason)``.  ``reuse_port`` sets
    ``SO_REUSEPORT`` (``callhome serve --workers``: one port, N processes).  A connection
    accepted near the open-file limit is closed at once (``fd_guard``, by
    default the process's :func:`~callhome_transport.descriptors.process_guard`).
    """

    def __init__(
        self,
        handler: AcceptHandler,
        *,
        listen_address: str | Sequence[str] | None = None,
        listen_port: int = NETCONF_CH_SSH_PORT,
        backlog: int = 1024,
        proxy: ProxyProtocol | None = None,
        on_refused: RefusedCallback | None = None,
        reuse_port: bool = False,
        fd_guard: DescriptorGuard | None = None,
    ) -> None:
        if not 0 <= listen_port <= 65535:
            raise ValueError(f"listen_port must be 0..65535, not {listen_port}")
        self._handler = handler
        if listen_address is None or isinstance(listen_address, str):
            self._hosts: list[str | None] = [listen_address]
        else:
            self._hosts = list(listen_address)
        self._requested_port = listen_port
        self._backlog = backlog
        self._proxy = proxy
        self._on_refused = on_refused
        self._reuse_port = reuse_port
        self._fd_guard = fd_guard if fd_guard is not None else process_guard()
        self._sockets: list[socket.socket] = []
        self._accept_tasks: list[asyncio.Task[None]] = []
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self.addresses: list[BoundAddress] = []

    @property
    def listen_port(self) -> int:
        """The port actually bound (useful with ``listen_port=0``)."""
        return self.addresses[0].listen_port if self.addresses else self._requested_port

    async def start(self) -> None:
        """Bind and start accepting.  Raises :class:`ListenerError`."""
        port = self._requested_port
        for host in self._hosts:
            for family, address in await self._resolve(host, port):
                sock = self._bind(family, address, port)
                if port == 0:
                    port = sock.getsockname()[1]
                self._sockets.append(sock)
                bound = sock.getsockname()
                self.addresses.append(BoundAddress(listen_address=bound[0], listen_port=bound[1], family=family))
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            self._accept_tasks.append(loop.create_task(self._accept_loop(sock)))
        for bound in self.addresses:
            log.info("listening on %s", format_peer((bound.listen_address, bound.listen_port)))

    async def _resolve(self, host: str | None, port: int) -> list[tuple[socket.AddressFamily, str]]:
        loop = asyncio.get_running_loop()
        try:  # through the loop: a name to resolve never blocks it
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            self._close_sockets()
            raise ListenerError(host or "*", port, f"cannot resolve address: {exc.strerror}") from exc
        seen: list[tuple[socket.AddressFamily, str]] = []
        for family, _, _, _, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            entry = (family, str(sockaddr[0]))
            if entry not in seen:
                seen.append(entry)
        return seen

    def _bind(self, family: socket.AddressFamily, address: str, port: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._reuse_port:  # several processes on one port, the kernel spreading connections
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                # keep "::" to IPv6 so that "0.0.0.0" can bind the same port
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, port))
            sock.listen(self._backlog)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            self._close_sockets()
            raise ListenerError(address, port, exc.strerror or str(exc)) from exc
        return sock

    async def _accept_loop(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, raw_peer = await loop.sock_accept(lsock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRNOS:
                    log.warning("accept failed (%s); pausing %.1f s", exc.strerror, _ACCEPT_BACKOFF)
                    await asyncio.sleep(_ACCEPT_BACKOFF)
                else:
                    log.warning("accept failed: %s", exc)
                continue
            if not self._fd_guard.admit(conn.fileno()):
                conn.close()  # before any work: what the handshake opens next would fail inside asyncssh
                continue
            peer: PeerAddress = (str(raw_peer[0]), int(raw_peer[1]))
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if log.isEnabledFor(logging.DEBUG):  # a storm accepts thousands: no formatting for nothing
                log.debug("accepted TCP connection from %s", format_peer(peer))
            task = loop.create_task(self._run_handler(conn, peer))
            self._conn_tasks.add(task)
            task.add_done_callback(self._conn_tasks.discard)

    async def _run_handler(self, conn: socket.socket, peer: PeerAddress) -> None:
        try:
            if self._proxy is not None:
                device_peer = await self._through_proxy(conn, peer)
                if device_peer is None:
                    conn.close()
                    return
                peer = device_peer
            await self._handler(conn, peer)
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception:  # one connection's failure never stops the listener
            log.exception("connection handler for %s failed", format_peer(peer))
            conn.close()

    async def _through_proxy(self, conn: socket.socket, peer: PeerAddress) -> PeerAddress | None:
        """The device's address behind a trusted balancer (``peer`` itself
        from anyone else), or ``None``: refused, or the balancer's own
        health check."""
        assert self._proxy is not None
        try:
            return await self._proxy.resolve(conn, peer)
        except ProxyProtocolError as exc:
            log.warning("peer=%s refused: PROXY protocol: %s", format_peer(peer), exc.reason)
            if self._on_refused is not None:
                self._on_refused(peer, "proxy-header")
            return None

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    async def close(self) -> None:
        """Stop accepting and cancel the per-connection handlers still running."""
        for task in self._accept_tasks:
            task.cancel()
        await asyncio.gather(*self._accept_tasks, return_exceptions=True)
        self._accept_tasks.clear()
        self._close_sockets()
        pending = list(self._conn_tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
