"""The unauthenticated start of a call-home connection: whether the device
has sent its first bytes yet, and ending a connection early (RFC 8071 s5:
the listener is the attack surface; see :mod:`callhome_transport.server.admission`).

In call home the device is the SSH or TLS *server*:

- an SSH device sends its identification string (``SSH-2.0-...``, RFC 4253
  s4.2) as soon as the TCP connection is up, without waiting for ours.
  :meth:`PendingConnection.ssh_banner` waits for that whole line *before*
  the SSH client starts (so a silent peer never gets our banner), by peeking at
  the socket (nothing is consumed: asyncssh then reads it as usual), with
  ``SO_RCVLOWAT`` so that a slow-loris sending a byte at a time wakes us only
  when there is more than we have already seen;
- a TLS device answers our ClientHello with its ServerHello.  The handshake
  reads the socket itself, so the first bytes are counted by the kernel
  (Linux ``TCP_INFO`` ``tcpi_bytes_received``): enough for the smallest
  ServerHello record means the device answered.  Where that counter is not
  available, a TLS connection counts as not answered until its handshake ends.

Ending a connection early shuts its socket down, which makes any handshake
in progress on it (asyncio, or a blocking one in a worker thread) fail at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import time

from ..addresses import PeerAddress

__all__ = ["PendingConnection", "PreauthEnded", "ssh_banner_complete"]

SSH_VERSION_MAX = 255  # RFC 4253 s4.2: the identification string, CR LF included
SSH_BANNER_PEEK = 4096
TLS_FIRST_BYTES = 47  # the smallest ServerHello record: 5 (record) + 4 (handshake) + 2 + 32 + 1 + 2 + 1
_TCPI_BYTES_RECEIVED = 128  # offset of tcpi_bytes_received in Linux struct tcp_info (since 4.1)
_TCP_INFO_SIZE = 136


class PreauthEnded(Exception):
    """The connection ended before its device sent its first bytes: ``reason``
    is ``banner-timeout`` (or ``handshake-timeout``), ``dropped`` (room made
    for a newer one) or ``closed-early`` (the peer closed without a byte)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def ssh_banner_complete(data: bytes) -> bool:
    """Whether ``data`` (the start of what a device sent) is enough for the SSH
    client to judge: a whole line (the identification string ``SSH-...``, or a
    line a server may send before it, RFC 4253 s4.2), or more bytes than an
    identification string may have (255) without one."""
    return b"\n" in data or len(data) >= SSH_VERSION_MAX


def bytes_received(sock: socket.socket) -> int | None:
    """Bytes the kernel has received on ``sock`` (read or not), or ``None`` if unknown."""
    if not sys.platform.startswith("linux") or sock.fileno() == -1:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    if len(info) < _TCPI_BYTES_RECEIVED + 8:
        return None
    return int(struct.unpack_from("=Q", info, _TCPI_BYTES_RECEIVED)[0])


class PendingConnection:
    """One accepted connection until its handshake ends."""

    def __init__(self, sock: socket.socket, peer: PeerAddress, *, tls: bool) -> None:
        self.sock = sock
        self.peer = peer
        self.tls = tls
        self.accepted_at = time.monotonic()
        self.ended: str | None = None  # why we ended it early, if we did
        self._first_bytes = False
        # bytes the kernel received before the handshake started: a balancer's PROXY header,
        # read by the listener (a TLS device itself sends nothing before our ClientHello)
        self._received_before = (bytes_received(sock) or 0) if tls else 0
        self._waiter: asyncio.Future[bool] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def has_sent_first_bytes(self) -> bool:
        if not self._first_bytes and self.tls:
            received = bytes_received(self.sock)
            self._first_bytes = received is not None and received - self._received_before >= TLS_FIRST_BYTES
        return self._first_bytes

    def end(self, reason: str) -> None:
        """End the connection now (``banner-timeout``, ``dropped``)."""
        if self.ended is not None:
            return
        self.ended = reason
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(PreauthEnded(reason))
        with contextlib.suppress(OSError):  # already closed, or handed to a TLS object
            self.sock.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        """The handshake ended (either way): nothing more to watch."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def watch_first_bytes(self, timeout: float) -> None:
        """TLS: end the connection if the device has not answered within ``timeout`` s."""
        if timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(timeout, self._first_bytes_due)

    def _first_bytes_due(self) -> None:
        self._timer = None
        if not self.has_sent_first_bytes() and bytes_received(self.sock) is not None:
            self.end("banner-timeout")

    async def ssh_banner(self, timeout: float, reason: str = "banner-timeout") -> bytes:
        """Return once the device's SSH identification line (or a whole line
        before it, :func:`ssh_banner_complete`) has arrived, or it closed after
        sending something (the SSH client then judges what it got), with the
        bytes seen (still unread).  Raises
        :class:`PreauthEnded`: ``reason`` after ``timeout`` seconds (0: no
        limit), ``closed-early`` if the peer closed without a byte, or the
        reason given to :meth:`end`."""
        loop = asyncio.get_running_loop()
        fd = self.sock.fileno()
        deadline = loop.time() + timeout if timeout > 0 else None
        lowat = True  # SO_RCVLOWAT works here
        lowat_raised = False  # set above 1: put back before the SSH client reads
        woken_with: int | None = None  # bytes seen when the socket last reported readable
        try:
            while True:
                if self.ended is not None:
                    raise PreauthEnded(self.ended)
                try:
                    data = self.sock.recv(SSH_BANNER_PEEK, socket.MSG_PEEK)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError:
                    return b""  # reset: the SSH client reports it
                if data == b"":
                    raise PreauthEnded("closed-early")  # the peer left without a byte
                if data is not None and (
                    ssh_banner_complete(data) or (lowat and woken_with == len(data))  # readable, nothing new: EOF
                ):
                    self._first_bytes = True
                    return data
                if data and lowat:
                    try:  # wake only when more than what we have seen has arrived (or at the end)
                        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, len(data) + 1)
                        lowat_raised = True
                    except OSError:
                        lowat = False
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise PreauthEnded(reason)
                # without SO_RCVLOWAT a partial banner keeps the socket readable: poll instead
                wait = remaining if lowat or not data else min(0.05, remaining or 0.05)
                if await self._readable(loop, fd, wait):
                    woken_with = len(data) if data else 0
                elif deadline is not None and loop.time() >= deadline:
                    raise PreauthEnded(reason)
        finally:
            if lowat_raised:
                with contextlib.suppress(OSError):
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)

    async def _readable(self, loop: asyncio.AbstractEventLoop, fd: int, wait: float | None) -> bool:
        """Whether ``fd`` became readable within ``wait`` seconds (None: no
        limit); raises :class:`PreauthEnded` if :meth:`end` is called
        meanwhile.  One future and one timer (a storm accepts thousands)."""
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        loop.add_reader(fd, _wake, waiter, True)
        timer = None if wait is None else loop.call_later(wait, _wake, waiter, False)
        try:
            return await waiter
        finally:
            loop.remove_reader(fd)
            if timer is not None:
                timer.cancel()
            self._waiter = None


def _wake(waiter: asyncio.Future[bool], readable: bool) -> None:
    if not waiter.done():
        waiter.set_result(readable)
