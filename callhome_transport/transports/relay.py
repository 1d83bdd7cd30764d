"""The one relay between a device's stream and a local stream socket: an SSH
channel (:class:`ChannelRelay`) or an asyncio transport such as a TLS
connection (:class:`TransportStream`), each with the same local side.

This is the seam that hands a NETCONF session to ncclient (the local side is an
:class:`InProcessEnd`: no socket) and to the gateway's per-device Unix sockets.  What
the device sends before a local side is attached (its hello) is kept
(:class:`~callhome_transport.protocol.session.EarlyData`).  Both directions are
plain callbacks on the event loop, with flow control: when one side cannot
take more, the other side stops reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

import asyncssh

from ..protocol.session import EarlyData, LocalSink

__all__ = [
    "ChannelRelay",
    "InProcessEnd",
    "TransportStream",
    "attached_pair",
    "open_channel_relay",
    "open_subsystem_relay",
]

log = logging.getLogger(__name__)


class _DeviceSide(Protocol):
    """What the local side of a relay drives."""

    def local_attached(self, transport: asyncio.Transport) -> None: ...

    def from_local(self, data: bytes) -> None: ...

    def local_eof(self) -> None: ...

    def local_closed(self) -> None: ...

    def pause_device(self) -> None: ...

    def resume_device(self) -> None: ...


class _LocalSide(asyncio.Protocol):
    """The local socket of a relay: its bytes go to the device, its flow
    control pauses the device side."""

    def __init__(self, device: _DeviceSide) -> None:
        self._device = device

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._device.local_attached(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self._device.from_local(data)

    def eof_received(self) -> bool:
        self._device.local_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._device.local_closed()

    def pause_writing(self) -> None:
        self._device.pause_device()

    def resume_writing(self) -> None:
        self._device.resume_device()


async def _attach(device: _DeviceSide, sock: socket.socket) -> None:
    await asyncio.get_running_loop().connect_accepted_socket(lambda: _LocalSide(device), sock)


class InProcessEnd(asyncio.Transport):
    """A relay's local side inside this process, instead of one end of a
    socketpair: what the device sends goes to a
    :class:`~callhome_transport.protocol.session.LocalSink` on the event loop
    (ncclient's session for :meth:`CallHomeServer.netconf`), with no socket,
    no second relay hop and no reader thread; what the session sends, from
    any thread, is handed to the loop (``call_soon_threadsafe``).  The sink
    applies flow control with :meth:`pause` / :meth:`resume`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, device: _DeviceSide, sink: LocalSink) -> None:
        super().__init__()
        self._loop = loop
        self._device = device
        self._sink = sink
        self._device_done = False  # the device side ended (EOF or closed)
        self._session_done = False  # the session ended this end

    # -- the loop side (what the relay drives) -----------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._session_done:
            self._sink.data_from_device(bytes(data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._device_ended()

    def close(self) -> None:
        """The device side closed (or the relay closes this end)."""
        self._device_ended()

    def is_closing(self) -> bool:
        return self._device_done or self._session_done

    def pause_reading(self) -> None:
        """The device cannot take more: the session's writes wait in the
        device side's own buffer (a session sends one request at a time)."""

    def resume_reading(self) -> None:
        """See :meth:`pause_reading`."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def _device_ended(self) -> None:
        if not self._device_done:
            self._device_done = True
            if not self._session_done:
                self._sink.device_ended()

    # -- the session's side (any thread) ---------------------------------------------------

    def attach_soon(self, first: Callable[[], None]) -> None:
        """Attach this end (made by ``in_process_end``, from another thread)
        without waiting for the loop: ``first``, then the attaching, run there
        in one callback, before anything given to this end afterwards
        (``call_soon_threadsafe`` keeps the order).  Raises
        :class:`BrokenPipeError` when the loop has stopped."""
        self._call(_in_order, first, functools.partial(self._device.local_attached, self))

    def give(self, data: bytes) -> None:
        """Hand ``data`` to the device side; :class:`BrokenPipeError` once
        either side has ended."""
        if self.is_closing():
            raise BrokenPipeError("the NETCONF session has ended")
        self._call(self._device.from_local, data)

    def end(self) -> None:
        """The session ends: the device side closes; nothing more reaches the sink."""
        if self._session_done:
            return
        self._session_done = True
        with contextlib.suppress(BrokenPipeError):  # the server has stopped: everything is closed
            self._call(self._device.local_closed)

    def pause(self) -> None:
        """Stop reading from the device until :meth:`resume`."""
        with contextlib.suppress(BrokenPipeError):
            self._call(self._device.pause_device)

    def resume(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._call(self._device.resume_device)

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError as exc:  # the loop is closed: the server has stopped
            raise BrokenPipeError(f"the call-home server has stopped ({exc})") from None


def _in_order(first: Callable[[], None], then: Callable[[], None]) -> None:
    try:
        first()
    finally:
        then()


class _DeviceToLocal:
    """The device-to-local half every relay shares: what the device sends
    before a local side is attached is kept (bounded), then written through;
    when the local side cannot take more, the device side stops reading."""

    local: asyncio.Transport | None
    early: EarlyData

    def _from_device(self, data: bytes, what: str) -> bool:
        """``False``: the device sent too much before it was used (close it)."""
        if self.local is None:
            if not self.early.add(data):
                log.warning("closing a %s whose device sent %d bytes before it was used", what, len(self.early.buffer))
                return False
        elif not self.local.is_closing():
            self.local.write(data)
        return True

    def _device_gone(self) -> None:
        self.early.end()
        if self.local is not None:
            self.local.close()

    def _attach_early(self, local: asyncio.Transport) -> None:
        self.local = local
        early = self.early.take()
        if early:
            local.write(early)

    def attach_in_process(self, sink: LocalSink) -> InProcessEnd:
        """Start relaying to ``sink``, in this process (see
        :class:`InProcessEnd`); run on the loop."""
        end = InProcessEnd(asyncio.get_running_loop(), cast(_DeviceSide, self), sink)
        cast(_DeviceSide, self).local_attached(end)
        return end

    def in_process_end(self, sink: LocalSink, loop: asyncio.AbstractEventLoop) -> InProcessEnd:
        """An end for ``sink``, from another thread (``loop`` is the
        relay's), not attached yet: :meth:`InProcessEnd.attach_soon`."""
        return InProcessEnd(loop, cast(_DeviceSide, self), sink)

    def pause_writing(self) -> None:
        if self.local is not None:
            self.local.pause_reading()

    def resume_writing(self) -> None:
        if self.local is not None:
            self.local.resume_reading()


class ChannelRelay(_DeviceToLocal, asyncssh.SSHClientSession[bytes]):
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
        if not self._from_device(data, "channel") and self.channel is not None:
            self.channel.close()

    def eof_received(self) -> bool:
        if self.local is None:
            self._early_eof = True
            self.early.end()
        elif self.local.can_write_eof():
            self.local.write_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._device_gone()
        if not self.closed.done():
            self.closed.set_result(exc)

    # -- local side -----------------------------------------------------------------

    def local_attached(self, transport: asyncio.Transport) -> None:
        self._attach_early(transport)
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

    def from_local(self, data: bytes) -> None:
        self.bytes_to_device += len(data)
        if self.channel is not None:
            self.channel.write(data)

    def local_eof(self) -> None:
        if self.channel is not None:
            self.channel.write_eof()

    def local_closed(self) -> None:
        if self.channel is not None:
            self.channel.close()

    def pause_device(self) -> None:
        self._local_full = True
        if self.channel is not None and not self._flushing:
            self.channel.pause_reading()

    def resume_device(self) -> None:
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
        await _attach(self, sock)


class TransportStream(_DeviceToLocal, asyncio.Protocol):
    """A :class:`DeviceStream` over an asyncio transport (a TLS connection, or
    a socket another thread pumps): buffers what arrives until a local socket
    is attached, then relays both ways with flow control."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.local: asyncio.Transport | None = None
        self.early = EarlyData()
        self._eof = False
        self._closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @property
    def closed(self) -> asyncio.Future[str]:
        return self._closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._from_device(data, "session"):
            self.close()

    def eof_received(self) -> bool:
        self._eof = True
        self.early.end()
        if self.local is not None:
            self.local.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._device_gone()
        if not self._closed.done():
            self._closed.set_result(str(exc) if exc else "closed")

    def write_to_device(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- local side (_LocalSide) ------------------------------------------------------

    from_local = write_to_device

    def local_eof(self) -> None:
        return None  # the local transport then closes: local_closed

    def local_closed(self) -> None:
        self.close()

    def pause_device(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_device(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def local_attached(self, local: asyncio.Transport) -> None:
        self._attach_early(local)
        if self._eof or self._closed.done():
            local.close()

    async def attach_local(self, sock: socket.socket) -> None:
        await _attach(self, sock)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_channel_relay(conn: asyncssh.SSHClientConnection, subsystem: str = "netconf") -> ChannelRelay:
    """Open a channel running ``subsystem`` on ``conn``, with no local side
    yet: what the device sends is kept (:attr:`ChannelRelay.early`) until
    :meth:`ChannelRelay.attach_local`."""
    _, session = await conn.create_session(ChannelRelay, subsystem=subsystem, encoding=None)
    return cast(ChannelRelay, session)


async def attached_pair(
    attach: Callable[[socket.socket], Awaitable[None]],
    pair: Callable[[], tuple[socket.socket, socket.socket]] = socket.socketpair,
) -> socket.socket:
    """A new socket pair: one end given to ``attach`` (a relay's local side),
    the other returned, blocking, for a caller; both closed if ``attach`` fails."""
    ours, theirs = pair()
    try:
        await attach(ours)
    except BaseException:
        ours.close()
        theirs.close()
        raise
    theirs.setblocking(True)
    return theirs


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
