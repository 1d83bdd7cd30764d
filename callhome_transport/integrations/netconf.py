"""Hand-off to ncclient: a standard ``ncclient.manager.Manager`` over a
NETCONF byte stream we relay.

ncclient's :class:`~ncclient.transport.session.Session` needs a byte stream
and a few transport methods.  Two kinds of stream:

- a connected socket (:func:`manager_over_socket`): ncclient's session thread
  reads it;
- the relay's in-process end (:meth:`CallHomeServer.netconf`,
  :class:`PreparedManager`): what the device sends is framed and dispatched by
  the event loop itself, with no socket, no second relay hop and no thread
  per session (one thread wake fewer per reply, no thread start per
  session); a message over :data:`INLINE_LIMIT` bytes is dispatched on a
  thread of its own instead, in order, so the loop never decodes a large
  reply.  What the caller sends is handed to the loop.

Stock ncclient queues every request and sends it from its session thread only
when that thread wakes, at most every 100 ms (``TICK``), so every RPC costs
about 100 ms even on loopback.  :class:`StreamSession` writes a request
straight to the socket from the calling thread instead, under a lock; the
session thread only reads.  The Manager is the stock class.

What the device sends is framed by our sans-I/O
:class:`~callhome_transport.protocol.framing.FrameDecoder` instead of ncclient's
parser, which holds a whole message however large it grows (a 2 GiB reply
took a caller to 4.3 GB, benchmarks/bench_memory.py) and lets a
byte that is not UTF-8 escape as a bare ``UnicodeDecodeError``.  A message
over ``max_message_size`` (default 256 MiB) is refused while it arrives, a
malformed one likewise: the session closes, and the pending RPC (and any
later one) raises :class:`~callhome_transport.errors.MessageTooLargeError` or
:class:`~callhome_transport.errors.MalformedMessageError` naming the device.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any

from ncclient import manager as nc_manager
from ncclient.capabilities import Capabilities
from ncclient.operations.rpc import RaiseMode
from ncclient.transport.errors import SessionCloseError
from ncclient.transport.errors import TransportError as NcTransportError
from ncclient.transport.session import MSG_DELIM, NetconfBase, NotificationHandler, Session

from ..errors import MalformedMessageError, MessageTooLargeError, TransportError
from ..protocol.framing import DEFAULT_MAX_MESSAGE_SIZE, FrameDecoder, Framing, FramingError, MessageSizeExceeded
from ..protocol.hello import HELLO_SETTLE, Hello, hello_settle_for
from ..protocol.session import DeviceSession, LocalEnd

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "HELLO_SETTLE",
    "INLINE_LIMIT",
    "PreparedManager",
    "StreamSession",
    "capabilities_for",
    "manager_over_socket",
]

log = logging.getLogger(__name__)

_READ_SIZE = 65536

# In-process sessions: a message larger than this is framed and dispatched off
# the event loop (decoding and parsing 1 MiB takes about 1-2 ms).
INLINE_LIMIT = 256 * 1024
_OFFLOAD_HIGH = 4 << 20  # bytes queued for the off-loop dispatch before the device is paused
_OFFLOAD_LOW = 1 << 20

_BASE_11 = "urn:ietf:params:netconf:base:1.1"


class _MessageReader:
    """ncclient's parser seam (``parse(data)``) over :class:`FrameDecoder`:
    complete messages, decoded as UTF-8, go to the session's dispatch; the
    framing switches to chunked after the hello exchange when both sides
    offer base:1.1 (RFC 6242 s4.1)."""

    def __init__(self, session: StreamSession, max_message_size: int) -> None:
        self._session = session
        self._decoder = FrameDecoder(Framing.END_OF_MESSAGE, max_message_size=max_message_size)
        self._hello_seen = False

    def parse(self, data: bytes) -> None:
        device = self._session.device
        try:
            messages = self._decoder.feed(data, limit=1)
            while messages:
                self._deliver(messages.pop())  # the only reference: freed once dispatched
                messages = self._decoder.feed(b"", limit=1)
        except MessageSizeExceeded as exc:
            raise self._session.fail(MessageTooLargeError(device=device, limit=exc.limit)) from None
        except FramingError as exc:
            raise self._session.fail(MalformedMessageError(device=device, reason=f"framing: {exc}")) from None

    def adopted(self, framing: Framing) -> None:
        """The hellos were exchanged before this session existed (by the
        call-home server): what arrives now is in ``framing``."""
        self._hello_seen = True
        if framing is not self._decoder.framing:
            self._decoder.switch(framing)

    def release(self) -> None:
        """Drop a partly received message (the session closed)."""
        self._decoder.clear()

    @property
    def pending(self) -> int:
        """Bytes of a message not yet complete."""
        return self._decoder.pending

    def _deliver(self, message: bytes) -> None:
        try:
            text = message.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            bad = message[exc.start : exc.start + 1].hex().upper()
            reason = f"byte 0x{bad} at offset {exc.start} of a {len(message)}-byte message is not UTF-8"
            raise self._session.fail(MalformedMessageError(device=self._session.device, reason=reason)) from None
        del message
        if text:
            self._session._dispatch_message(text)
        if not self._hello_seen:
            self._hello_seen = True  # the device's hello: its capabilities are known now
            session = self._session
            if session._server_capabilities is not None and all(
                _BASE_11 in caps for caps in (session._server_capabilities, session._client_capabilities)
            ):
                self._decoder.switch(Framing.CHUNKED)


@functools.lru_cache(maxsize=64)
def _capabilities(uris: tuple[str, ...]) -> Capabilities:
    """ncclient's parsed form of a capability list, once per list (devices of
    one model send the same; parsing a large one costs a tenth of a
    millisecond per session).  Read-only, as ncclient uses it."""
    return Capabilities(list(uris))


class _Offload:
    """Frames and dispatches what the device sends on a thread, while a large
    message is arriving, for an in-process session; in order: once anything
    is queued here, what follows is too, until the thread has caught up and
    the loop takes over again.  The device is paused while more than
    ``_OFFLOAD_HIGH`` bytes wait."""

    _END = b""  # the device ended the session

    def __init__(self, session: StreamSession, end: LocalEnd) -> None:
        self._session = session
        self._end = end
        self._ready = threading.Condition(threading.Lock())
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._busy = False
        self._paused = False

    def take(self, data: bytes, *, start: bool) -> bool:
        """Queue ``data`` (``_END``: the device ended) if the thread is busy,
        or if ``start``; ``False``: not taken (the loop handles it)."""
        with self._ready:
            if not self._busy and not start:
                return False
            begin = not self._busy
            self._busy = True
            self._queue.append(data)
            self._queued += len(data)
            pause = self._queued > _OFFLOAD_HIGH and not self._paused
            self._paused = self._paused or pause
            self._ready.notify()
        if pause:
            self._end.pause()
        if begin:
            name = f"callhome-netconf-{self._session.device}-reader"
            threading.Thread(target=self._run, name=name, daemon=True).start()
        return True

    def _run(self) -> None:
        while True:
            with self._ready:
                if not self._queue:
                    self._busy = False  # caught up: the loop takes over
                    return
                data = self._queue.popleft()
                self._queued -= len(data)
                resume = self._paused and self._queued <= _OFFLOAD_LOW
                if resume:
                    self._paused = False
            if resume:
                self._end.resume()
            if data is self._END:
                self._session._device_ended()
            else:
                self._session._feed(data)


class StreamSession(Session):  # type: ignore[misc]  # ncclient is untyped
    """An ncclient session over a connected stream socket.

    ``device`` names the device in logs and errors; ``on_close`` runs once when
    the session closes (used to release the SSH connection of a single-device
    :func:`~callhome_transport.call_home`).  ``max_message_size`` bounds one
    message from the device, in bytes.  ``hello_settle`` is how long after our
    hello the first RPC may leave (seconds); ``None``: :data:`HELLO_SETTLE`
    for a server whose hello shows it needs it (yuma123 netconfd), at once for
    the others.
    """

    def __init__(
        self,
        device_handler: Any,
        *,
        device: str,
        on_close: Callable[[], None] | None = None,
        hello_settle: float | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        capabilities = _capabilities(tuple(device_handler.get_capabilities()))
        Session.__init__(self, capabilities)
        self.name = f"callhome-netconf-{device}"
        self.device = device
        self._device_handler = device_handler
        self._socket: socket.socket | None = None
        self._end: LocalEnd | None = None  # in-process sessions
        self._offload: _Offload | None = None
        self._buffer = BytesIO()
        self._message_list: list[Any] = []
        self._closing = threading.Event()
        self._send_lock = threading.Lock()
        self._on_close = on_close
        self._hello_settle = hello_settle
        self._hello_sent_at: float | None = None
        self._first_rpc_sent = False
        self._failure: TransportError | None = None  # why the device's side ended the session
        self.parser = _MessageReader(self, max_message_size)

    # -- set-up ------------------------------------------------------------------

    def connect(self, sock: socket.socket, timeout: float = 60) -> None:
        """Adopt ``sock`` and run the hello exchange (RFC 6241 s8.1)."""
        sock.setblocking(True)
        self._socket = sock
        self._connected = True
        try:
            self._post_connect(timeout)
        except Exception:
            self.close()
            raise

    def adopt(self, sock: socket.socket, hello: Hello, framing: Framing, hello_sent_at: float) -> None:
        """Adopt ``sock``, a session whose hellos were already exchanged
        (by the call-home server, ``hello_sent_at`` being ``time.monotonic()``
        when ours left): take the device's session-id, capabilities and the
        agreed framing as ncclient's ``_post_connect`` would have set them."""
        sock.setblocking(True)
        self._socket = sock
        self._adopted(hello, framing, hello_sent_at)
        self.start()

    def adopt_in_process(self, session: DeviceSession) -> None:
        """Adopt the greeted ``session`` through the relay's in-process end:
        what the device sends is dispatched on the event loop (this runs
        there), no reader thread."""
        self._adopted(session.hello, session.framing, session.hello_sent_at)
        self._end = session.lend_in_process(self)

    def adopt_claimed(self, session: DeviceSession, first: Callable[[], None]) -> None:
        """:meth:`adopt_in_process` from the caller's thread, for a held
        session claimed without the loop: ``first``, then the relay's start,
        run there before our first message."""
        self._adopted(session.hello, session.framing, session.hello_sent_at)
        self._end = end = session.in_process_end(self)  # set before the loop can end the session
        end.attach_soon(first)

    def _adopted(self, hello: Hello, framing: Framing, hello_sent_at: float) -> None:
        self._connected = True
        self._id = hello.session_id
        self._server_capabilities = _capabilities(hello.capabilities)
        self._base = NetconfBase.BASE_11 if framing is Framing.CHUNKED else NetconfBase.BASE_10
        self._hello_sent_at = hello_sent_at
        self.parser.adopted(framing)
        self.add_listener(NotificationHandler(self._notification_q))
        self.logger.info("adopted: session-id=%s, %s framing", self._id, framing.value)

    # -- what the device sends, in-process (LocalSink: on the event loop) ------------

    def data_from_device(self, data: bytes) -> None:
        offload = self._offload
        if offload is not None and offload.take(data, start=False):
            return  # a large message is being handled off the loop: keep the order
        if self.parser.pending + len(data) > INLINE_LIMIT and self._end is not None:
            if offload is None:
                offload = self._offload = _Offload(self, self._end)
            offload.take(data, start=True)
            return
        self._feed(data)

    def device_ended(self) -> None:
        if self._offload is None or not self._offload.take(_Offload._END, start=False):
            self._device_ended()

    def _feed(self, data: bytes) -> None:
        if self._closing.is_set():
            return
        try:
            self.parser.parse(data)
        except Exception as exc:
            self._reader_ended(exc)

    def _device_ended(self) -> None:
        if not self._closing.is_set():
            self._reader_ended(SessionCloseError(self._buffer.getvalue()))

    def _reader_ended(self, exc: Exception) -> None:
        """What the device sent cannot be read any more: pending RPCs get
        ``exc``, the session closes."""
        self.logger.debug("reading ended: %r", exc)
        self._dispatch_error(exc)
        self.close()

    # -- ncclient's transport seam ---------------------------------------------------

    def _transport_read(self) -> bytes:
        assert self._socket is not None
        try:
            return self._socket.recv(_READ_SIZE)
        except OSError:
            return b""

    def send(self, message: str) -> None:
        """Frame and write ``message`` now (no 100 ms tick).

        Before the hello exchange picks base:1.1, messages use end-of-message
        framing, as the hello itself must (RFC 6242 s4.1).
        """
        if self._failure is not None:
            raise copy.copy(self._failure)
        if not self.connected or (self._socket is None and self._end is None):
            raise NcTransportError(f"Not connected to NETCONF server (device {self.device})")
        if self._hello_sent_at is None:
            self._hello_sent_at = time.monotonic()  # the first message is our hello
        elif not self._first_rpc_sent:
            self._first_rpc_sent = True
            settle = self._hello_settle
            if settle is None:  # the device's hello is known by now
                settle = hello_settle_for(Hello(capabilities=tuple(self._server_capabilities or ())))
            wait = settle - (time.monotonic() - self._hello_sent_at)
            if wait > 0:
                time.sleep(wait)
        data = message.encode()
        if self._base == NetconfBase.BASE_11:
            data = b"\n#%d\n%s\n##\n" % (len(data), data)
        else:
            data = data + MSG_DELIM
        self.logger.debug("sending %d bytes", len(data))
        try:
            with self._send_lock:
                if self._end is not None:
                    self._end.give(data)
                else:
                    assert self._socket is not None
                    self._socket.sendall(data)
        except OSError as exc:
            raise SessionCloseError(self._buffer.getvalue(), data) from exc

    def fail(self, error: TransportError) -> TransportError:
        """Record why the device's messages cannot be read any more, log it
        once and close the session; the caller raises ``error`` in the session
        thread, which hands it to the pending RPCs."""
        if self._failure is None:
            self._failure = error
            log.warning("%s", error)
        self.close()
        return error

    def _dispatch_message(self, raw: str) -> None:
        self.logger.debug("received message (%d characters)", len(raw))
        Session._dispatch_message(self, raw)

    def run(self) -> None:
        """The reader loop: ncclient's, without its selector and its send
        queue (requests leave from :meth:`send`); a blocking read wakes with
        ``b""`` when :meth:`close` shuts the stream down.  The stream is closed
        when the loop ends."""
        try:
            while True:
                data = self._transport_read()
                if data:
                    self.parser.parse(data)
                elif self._closing.is_set():
                    break  # we closed the session
                else:
                    raise SessionCloseError(self._buffer.getvalue())  # the device did
        except Exception as exc:
            self._reader_ended(exc)
        finally:
            self._close_socket()

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()  # idempotent

    def close(self) -> None:
        """End the session: shut the stream down, so that the reader thread's
        blocking read wakes with the end and the thread exits (it closes the
        stream then).  Closing the descriptor under that read instead could
        leave the thread blocked for ever."""
        self._closing.set()
        if self._end is not None:
            self._end.end()
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
            if not self.is_alive() or threading.current_thread() is self:
                self._close_socket()  # no reader (not started, or ended), or the reader itself
        self._connected = False
        # drop whatever part of a message was buffered: neither a Manager kept
        # after close nor the error's traceback may keep it alive
        self.parser.release()
        callback, self._on_close = self._on_close, None
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("on_close callback for device %s failed", self.device)

    @property
    def host(self) -> str:
        return self.device


def _device_handler(
    device_params: Mapping[str, Any] | None,
    nc_params: Mapping[str, Any] | None,
    errors_params: Mapping[str, Any] | None,
) -> Any:
    ignore_errors = dict(errors_params or {}).get("ignore_errors", [])
    device_handler = nc_manager.make_device_handler(dict(device_params or {}), ignore_errors)
    device_handler.add_additional_netconf_params(dict(nc_params or {}))
    return device_handler


def capabilities_for(
    device_params: Mapping[str, Any] | None = None, nc_params: Mapping[str, Any] | None = None
) -> tuple[str, ...]:
    """The capabilities ncclient's hello lists for these parameters (what a
    session greeted for such a caller must say)."""
    return tuple(_device_handler(device_params, nc_params, None).get_capabilities())


def manager_over_socket(
    sock: socket.socket,
    *,
    device: str,
    timeout: float = 30,
    hello_timeout: float = 60,
    device_params: Mapping[str, Any] | None = None,
    manager_params: Mapping[str, Any] | None = None,
    nc_params: Mapping[str, Any] | None = None,
    errors_params: Mapping[str, Any] | None = None,
    on_close: Callable[[], None] | None = None,
    hello_settle: float | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    greeted: tuple[Hello, Framing, float] | None = None,
) -> nc_manager.Manager:
    """Build a standard ncclient ``Manager`` over ``sock``: a NETCONF byte
    stream with no hello exchanged yet (ncclient does it, bounded by
    ``hello_timeout``), or, with ``greeted`` = ``(device hello, framing,
    time.monotonic() when our hello left)``, one whose hellos the call-home
    server already exchanged.

    ``device_params``, ``manager_params``, ``nc_params`` and ``errors_params``
    mean what they mean for ``ncclient.manager.connect_ssh``; ``timeout`` is the
    Manager's RPC timeout unless ``manager_params`` sets one.  ``hello_settle``
    as for :class:`StreamSession`.
    ``max_message_size`` bounds one message from the device (bytes): a larger
    one closes the session with :class:`~callhome_transport.errors.MessageTooLargeError`.
    """
    prepared = PreparedManager(
        device=device,
        timeout=timeout,
        device_params=device_params,
        manager_params=manager_params,
        nc_params=nc_params,
        errors_params=errors_params,
        on_close=on_close,
        hello_settle=hello_settle,
        max_message_size=max_message_size,
    )
    if greeted is None:
        prepared.session.connect(sock, timeout=hello_timeout)
    else:
        prepared.session.adopt(sock, *greeted)
    return prepared.manager()


class PreparedManager:
    """An ncclient ``Manager`` in two steps, for a session the call-home
    server lends in-process: :attr:`session` is built in the caller's thread,
    :meth:`StreamSession.adopt_in_process` runs on the event loop when the
    greeted session is taken, :meth:`manager` wraps it.  The arguments are
    :func:`manager_over_socket`'s."""

    def __init__(
        self,
        *,
        device: str,
        timeout: float = 30,
        device_params: Mapping[str, Any] | None = None,
        manager_params: Mapping[str, Any] | None = None,
        nc_params: Mapping[str, Any] | None = None,
        errors_params: Mapping[str, Any] | None = None,
        on_close: Callable[[], None] | None = None,
        hello_settle: float | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._handler = _device_handler(device_params, nc_params, errors_params)
        raise_mode = dict(errors_params or {}).get("raise_mode", RaiseMode.ALL)
        self._params: dict[str, Any] = {"timeout": timeout, **dict(manager_params or {}), "raise_mode": raise_mode}
        self.session = StreamSession(
            self._handler,
            device=device,
            on_close=on_close,
            hello_settle=hello_settle,
            max_message_size=max_message_size,
        )

    @property
    def capabilities(self) -> tuple[str, ...]:
        """What our hello must list for this Manager (the greeted session's)."""
        return tuple(self._handler.get_capabilities())

    def manager(self) -> nc_manager.Manager:
        return nc_manager.Manager(self.session, self._handler, **self._params)
