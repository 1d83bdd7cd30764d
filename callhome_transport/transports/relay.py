"""Byte relay between an SSH channel and a local stream socket.

This is the seam that hands a NETCONF session to ncclient (the local end is one
half of a ``socketpair``) and, later, to the gateway's per-device Unix sockets.
Both directions are plain callbacks on the event loop, with flow control: when
one side cannot take more, the other side stops reading.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import cast

import asyncssh

from ..protocol.session import EarlyData

__all__ = ["ChannelRelay", "open_channel_relay", "open_subsystem_relay"]

log = logging.getLogger(__name__)


class _LocalSide(asyncio.Protocol):
    def __init__(self, relay: ChannelRelay) -> None:
        self._relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._relay.local_attached(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self._relay.to_channel(data)

    def eof_received(self) -> bool:
        self._relay.local_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.local_closed()

    def pause_writing(self) -> None:
        self._relay.pause_channel()

    def resume_writing(self) -> None:
        self._relay.resume_channel()


class ChannelRelay(asyncssh.SSHClientSession[bytes]):
    """Relays one SSH channel (e.g. the ``netconf`` subsystem) to a local
    stream socket, both ways, until either side closes."""

    def __init__(self) -> None:
        self.channel: asyncssh.SSHClientChannel[bytes] | None = None
        self.local: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.bytes_to_device = 0
        self.bytes_from_device = 0
        # what the device sent before the local side was attached (its hello)
        self.early = EarlyData()
        self._early_eof = False
        self._local_full = False  # the local socket asked us to stop (its buffer is over its high-water mark)
        self._flushing = False

    # -- channel side (asyncssh callbacks) ---------------------------------------

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self.channel = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype is not None:  # stderr of a subsystem: not part of NETCONF
            log.debug("ignoring %d bytes of extended data from device", len(data))
            return
        self.bytes_from_device += len(data)
        if self.local is None:
            if not self.early.add(data) and self.channel is not None:
                log.warning("closing a channel whose device sent %d bytes before it was used", len(self.early.buffer))
                self.channel.close()
        elif not self.local.is_closing():
            self.local.write(data)

    def eof_received(self) -> bool:
        if self.local is None:
            self._early_eof = True
            self.early.end()
        elif self.local.can_write_eof():
            self.local.write_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.early.end()
        if self.local is not None:
            self.local.close()
        if not self.closed.done():
            self.closed.set_result(exc)

    def pause_writing(self) -> None:
        if self.local is not None:
            self.local.pause_reading()

    def resume_writing(self) -> None:
        if self.local is not None:
            self.local.resume_reading()

    # -- local side -----------------------------------------------------------------

    def local_attached(self, transport: asyncio.Transport) -> None:
        self.local = transport
        early = self.early.take()
        if early:
            transport.write(early)
        if self._early_eof and transport.can_write_eof():
            transport.write_eof()
        if self.closed.done():
            transport.close()

    def write_to_device(self, data: bytes) -> None:
        """Write to the channel before (or instead of) a local side: the
        server's own hello."""
        if self.channel is not None and not self.closed.done():
            self.channel.write(data)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()

    def to_channel(self, data: bytes) -> None:
        self.bytes_to_device += len(data)
        if self.channel is not None:
            self.channel.write(data)

    def local_eof(self) -> None:
        if self.channel is not None:
            self.channel.write_eof()

    def local_closed(self) -> None:
        if self.channel is not None:
            self.channel.close()

    def pause_channel(self) -> None:
        self._local_full = True
        if self.channel is not None and not self._flushing:
            self.channel.pause_reading()

    def resume_channel(self) -> None:
        """The local socket drained: take *everything* asyncssh buffered for
        this channel while it was paused, then pause again if the local
        socket is full.

        asyncssh re-opens the channel's whole window (RFC 4254 s5.2) as soon
        as it delivers the first buffered packet, while the rest is still
        buffered; pausing again after that packet would let the device send
        another full window per pause/resume cycle on top of what is already
        buffered (a 2 GiB reply to a slow local reader grew the gateway by
        about 2 GB, benchmarks/bench_memory.py).  Delivering the whole buffer at once keeps what asyncssh holds
        plus what the device may still send within one window; the local
        transport takes at most that window over its high-water mark."""
        self._local_full = False
        if self.channel is None:
            return
        self._flushing = True
        try:
            self.channel.resume_reading()
        finally:
            self._flushing = False
        if self._local_full:
            self.channel.pause_reading()

    async def attach_local(self, sock: socket.socket) -> None:
        """Start relaying to ``sock`` (a connected stream socket)."""
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: _LocalSide(self), sock)


async def open_channel_relay(conn: asyncssh.SSHClientConnection, subsystem: str = "netconf") -> ChannelRelay:
    """Open a channel running ``subsystem`` on ``conn``, with no local side
    yet: what the device sends is kept (:attr:`ChannelRelay.early`) until
    :meth:`ChannelRelay.attach_local`."""
    _, session = await conn.create_session(ChannelRelay, subsystem=subsystem, encoding=None)
    return cast(ChannelRelay, session)


async def open_subsystem_relay(
    conn: asyncssh.SSHClientConnection, subsystem: str = "netconf", local: socket.socket | None = None
) -> tuple[socket.socket, ChannelRelay]:
    """Open a channel running ``subsystem`` on ``conn`` and relay it to one end
    of a new ``socketpair``; return the other (blocking) end and the relay.

    Closing the returned socket closes the channel, and the channel closing
    closes the socket.  With ``local`` (a connected stream socket, e.g. a
    gateway client), the channel is relayed to it instead and it is returned.
    """
    if local is not None:
        _, session = await conn.create_session(ChannelRelay, subsystem=subsystem, encoding=None)
        relay = cast(ChannelRelay, session)
        await relay.attach_local(local)
        return local, relay
    ours, theirs = socket.socketpair()
    try:
        _, session = await conn.create_session(ChannelRelay, subsystem=subsystem, encoding=None)
        relay = cast(ChannelRelay, session)
        await relay.attach_local(ours)
    except BaseException:
        ours.close()
        theirs.close()
        raise
    theirs.setblocking(True)
    return theirs, relay
