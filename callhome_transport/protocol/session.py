"""NETCONF sessions the call-home server opens, greets and lends.

Some devices drop a call-home connection that carries no NETCONF session:
libnetconf2-based servers (netopeer2 and the products built on it) close an SSH
call-home connection when no ``netconf`` subsystem is requested within about
10 s, and a TLS one when no client ``<hello>`` arrives within 60 s, then call
again, a full handshake each time.  So the server does the hello exchange
itself (RFC 6241 s8.1) and, where the device needs it, *holds* one greeted
session per device ready to lend:

* a :class:`DeviceSession` is one session whose hellos are exchanged; it is
  lent to ncclient (which is told the device's hello) or to a local client,
  to which :func:`greet_local` replays the device's hello and whose own hello
  it answers, refusing a client that cannot use the framing already agreed;
* :class:`SessionPool` keeps the sessions of one SSH connection: the held one,
  a fresh one prepared in the background when the held one is taken, and what
  the device taught us (it refuses a second channel, or accepts one and never
  answers its hello: one session at a time);
* :class:`SingleSession` is the one session of a TLS connection (RFC 7589).

Sessions opened for a caller are greeted the same way, so every session the
server hands out has had its hello exchange checked (``hello_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .._log import ContextAdapter
from ..addresses import PeerAddress
from ..errors import (
    CallHomeError,
    ClientHelloError,
    DeviceDisconnectedError,
    HelloTimeoutError,
    TransportError,
)
from .framing import Framing
from .hello import (
    DEFAULT_CLIENT_CAPABILITIES,
    MAX_HELLO_SIZE,
    Hello,
    HelloError,
    HelloReader,
    encode_hello,
    hello_settle_for,
    negotiate,
    parse_hello,
)

__all__ = [
    "DeviceSession",
    "DeviceStream",
    "DeviceTraits",
    "EarlyData",
    "LocalEnd",
    "LocalSink",
    "SessionPool",
    "SingleSession",
    "WARM_IDLE",
    "exchange_hello",
    "greet_local",
]

log = logging.getLogger(__name__)

# A held session that sends more than this before it is lent is not a NETCONF
# server waiting for an RPC: it is closed.
_IDLE_DATA_LIMIT = 1024 * 1024
_RETRY_MIN = 5.0  # seconds before preparing a held session again after a failure
_RETRY_MAX = 60.0
_REFUSED_RETRY = 0.2  # a one-session device may not have closed the previous channel yet
# The next session is greeted this long after one is lent or returned, not at
# once: opening a channel and exchanging hellos at the moment the caller sends
# its first RPC made that RPC wait for both, on the event loop and on the device
# (benchmarks/bench_first_rpc.py: about 0.5 ms more); and a libnetconf2 device
# that has just closed a session accepts a channel opened at that moment and
# never greets it (its poll loop loses it while freeing the closed session).
_REPLENISH_DELAY = 0.05
# hold_session: auto on a device that needs no held session: after a caller
# takes one, another is greeted and kept ready while the device was used
# within this many seconds (the next caller skips the channel and the hello),
# then closed.
WARM_IDLE = 60.0


@dataclasses.dataclass
class DeviceTraits:
    """What the server learned about one device, kept across its calls."""

    one_at_a_time: bool = False  # refused a second channel, or never answered its hello
    drops_idle: bool = False  # closed a call-home connection that carried no session


class EarlyData:
    """What a device sent on a session before a local side was attached: its
    hello (taken by the hello exchange), then whatever follows, kept for the
    local side (bounded)."""

    def __init__(self, limit: int = MAX_HELLO_SIZE + _IDLE_DATA_LIMIT) -> None:
        self.buffer = bytearray()
        self.ended = False
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None

    def add(self, data: bytes) -> bool:
        """Keep ``data``; ``False`` when the bound is exceeded (close the session)."""
        self.buffer += data
        self._wake()
        return len(self.buffer) <= self._limit

    def end(self) -> None:
        """The device closed (or sent EOF on) the session."""
        self.ended = True
        self._wake()

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read_hello(self) -> bytes:
        """The first message (end-of-message framed), removed from the buffer.
        Raises :class:`HelloError` (too large) or :class:`ConnectionError`
        (the device closed first)."""
        reader = HelloReader()
        offset = 0
        while True:
            message = reader.feed(bytes(self.buffer[offset:]))
            offset = len(self.buffer)
            if message is not None:
                del self.buffer[: offset - len(reader.rest)]
                return message
            if self.ended:
                raise ConnectionError("the device closed the session before its hello")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter


class LocalSink(Protocol):
    """The in-process local side of a session (ncclient's session in
    :meth:`CallHomeServer.netconf`): called on the event loop."""

    def data_from_device(self, data: bytes) -> None: ...

    def device_ended(self) -> None:
        """The device closed the session (or sent EOF)."""
        ...


class LocalEnd(Protocol):
    """What an in-process local side uses to talk back (from any thread)."""

    def attach_soon(self, first: Callable[[], None]) -> None:
        """Start relaying (an end made from another thread): ``first``, then
        the attaching, on the loop, before anything given afterwards."""
        ...

    def give(self, data: bytes) -> None:
        """Send ``data`` to the device; :class:`BrokenPipeError` once ended."""
        ...

    def end(self) -> None:
        """End the session."""
        ...

    def pause(self) -> None:
        """Stop reading from the device until :meth:`resume`."""
        ...

    def resume(self) -> None: ...


class DeviceStream(Protocol):
    """The device side of one NETCONF session (an SSH channel, a TLS
    connection) before and after a local socket is attached to it."""

    early: EarlyData

    @property
    def closed(self) -> asyncio.Future[Any]: ...

    def write_to_device(self, data: bytes) -> None: ...

    async def attach_local(self, sock: socket.socket) -> None:
        """Relay the session to ``sock`` both ways, starting with what
        :attr:`early` still holds."""
        ...

    def attach_in_process(self, sink: LocalSink) -> LocalEnd:
        """Relay the session to ``sink`` in this process (no socket),
        starting with what :attr:`early` still holds; on the loop."""
        ...

    def in_process_end(self, sink: LocalSink, loop: asyncio.AbstractEventLoop) -> LocalEnd:
        """:meth:`attach_in_process` from another thread: the end, attached
        by its :meth:`LocalEnd.attach_soon`."""
        ...

    def close(self) -> None: ...


# Devices of one model send the same capability list: keep one copy of each
# (a large router's list is some hundred KiB; a gateway holds thousands).
_interned: dict[tuple[str, ...], tuple[str, ...]] = {}
_INTERN_MAX = 256


def _intern(capabilities: tuple[str, ...]) -> tuple[str, ...]:
    found = _interned.get(capabilities)
    if found is not None:
        return found
    if len(_interned) < _INTERN_MAX:
        _interned[capabilities] = capabilities
    return capabilities


class DeviceSession:
    """One NETCONF session with a device whose hellos are exchanged,
    waiting to be lent (to ncclient, or to a local client)."""

    def __init__(
        self,
        *,
        device: str,
        stream: DeviceStream,
        hello: Hello,
        framing: Framing,
        client_capabilities: tuple[str, ...],
        hello_sent_at: float,
        peer_address: PeerAddress | None,
    ) -> None:
        self.device = device
        self.stream = stream
        self.hello = hello
        self.framing = framing
        self.client_capabilities = client_capabilities
        self.hello_sent_at = hello_sent_at  # time.monotonic() when our hello left
        self.peer_address = peer_address
        self.greeted_at = time.monotonic()

    @property
    def session_id(self) -> str | None:
        return self.hello.session_id

    @property
    def is_closed(self) -> bool:
        return self.stream.closed.done()

    def replay(self) -> bytes:
        """The device's hello, for a local client (end-of-message framed)."""
        return encode_hello(self.hello.capabilities, self.hello.session_id)

    async def lend(self, local: socket.socket, *, to_device: bytes = b"", settle: float | None = None) -> None:
        """Relay the session to ``local``; ``to_device`` (what the local
        client sent after its hello) goes first.  Nothing reaches the device
        sooner than ``settle`` seconds after our hello; by default
        :data:`HELLO_SETTLE` for a server that needs it (yuma123 netconfd
        drops an RPC it reads with the hello; :func:`needs_hello_settle`),
        none for the others: a session greeted just now waits out the rest, a
        held one is long past it."""
        if settle is None:
            settle = hello_settle_for(self.hello)
        wait = self.hello_sent_at + settle - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if to_device:
            self.stream.write_to_device(to_device)
        await self.stream.attach_local(local)

    def lend_in_process(self, sink: LocalSink) -> LocalEnd:
        """Relay the session to ``sink`` in this process, which must itself
        wait out the hello settle (:class:`~callhome_transport.integrations.netconf.StreamSession`
        does); on the loop."""
        return self.stream.attach_in_process(sink)

    def in_process_end(self, sink: LocalSink) -> LocalEnd:
        """:meth:`lend_in_process` from another thread, in two steps: the end
        for ``sink``, then its :meth:`LocalEnd.attach_soon`."""
        return self.stream.in_process_end(sink, self.stream.closed.get_loop())

    def close(self) -> None:
        self.stream.close()

    def __repr__(self) -> str:
        return f"<DeviceSession device={self.device} session-id={self.session_id} {self.framing.value}>"


async def exchange_hello(
    stream: DeviceStream,
    *,
    device: str,
    timeout: float,
    capabilities: tuple[str, ...] = DEFAULT_CLIENT_CAPABILITIES,
    peer_address: PeerAddress | None = None,
) -> DeviceSession:
    """Send our hello on ``stream`` and read the device's (RFC 6241 s8.1).
    Raises :class:`HelloTimeoutError` (no hello within ``timeout``) or
    :class:`TransportError` (an invalid hello, no common base version, the
    device closed); ``stream`` is closed on failure."""
    stream.write_to_device(encode_hello(capabilities))
    sent_at = time.monotonic()
    try:
        async with asyncio.timeout(timeout):  # no task of its own, unlike wait_for
            message = await stream.early.read_hello()
        hello = parse_hello(message)
    except TimeoutError:
        stream.close()
        raise HelloTimeoutError(device=device, peer_address=peer_address, timeout=timeout) from None
    except (HelloError, ConnectionError) as exc:
        stream.close()
        raise TransportError(
            f"NETCONF hello with device {device} failed: {exc}", device=device, peer_address=peer_address
        ) from exc
    framing = negotiate(capabilities, hello.capabilities)
    if framing is None:
        stream.close()
        bases = ", ".join(sorted(hello.bases)) or "none"
        raise TransportError(
            f"device {device} offers no NETCONF base version we speak (its hello lists {bases})",
            device=device,
            peer_address=peer_address,
        )
    hello = Hello(capabilities=_intern(hello.capabilities), session_id=hello.session_id)
    return DeviceSession(
        device=device,
        stream=stream,
        hello=hello,
        framing=framing,
        client_capabilities=capabilities,
        hello_sent_at=sent_at,
        peer_address=peer_address,
    )


async def greet_local(sock: socket.socket, session: DeviceSession, timeout: float) -> bytes:
    """Replay the device's hello to a local client on ``sock`` and read the
    client's own hello (it is answered here, never sent to the device).
    Returns what the client sent after its hello.

    Raises :class:`ClientHelloError` when the client sends no hello within
    ``timeout``, an invalid one, or one whose base versions cannot use the
    framing the session with the device already uses (RFC 6242 s4.1: e.g.
    the device and the server agreed on base:1.1, the client offers only
    base:1.0)."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    device = session.device
    try:
        await loop.sock_sendall(sock, session.replay())
    except OSError as exc:
        raise ClientHelloError(device=device, reason=f"the local client left before the hello ({exc})") from exc
    reader = HelloReader()
    deadline = loop.time() + timeout
    message = None
    while message is None:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), max(0.0, deadline - loop.time()))
        except TimeoutError:
            reason = f"the local client sent no hello within {timeout:g} s"
            raise ClientHelloError(device=device, reason=reason) from None
        except OSError as exc:
            raise ClientHelloError(device=device, reason=f"the local client left before its hello ({exc})") from exc
        if not data:
            raise ClientHelloError(device=device, reason="the local client closed before its hello")
        try:
            message = reader.feed(data)
        except HelloError as exc:
            raise ClientHelloError(device=device, reason=f"invalid hello from the local client: {exc}") from None
    try:
        client = parse_hello(message)
    except HelloError as exc:
        raise ClientHelloError(device=device, reason=f"invalid hello from the local client: {exc}") from None
    framing = negotiate(client.capabilities, session.hello.capabilities)
    if framing is not session.framing:
        offered = ", ".join(sorted(client.bases)) or "no base version"
        raise ClientHelloError(
            device=device,
            reason=(
                f"the local client offers {offered}, but the session with the device uses "
                f"{session.framing.value} framing (offer urn:ietf:params:netconf:{session.framing.value})"
            ),
        )
    return reader.rest


class SessionPool:
    """The NETCONF sessions of one SSH call-home connection.

    With ``hold``, right after the call the server greets the connection's
    first session, the *anchor*, and keeps it for the connection's life:
    libnetconf2 watches the first session of a call and dials again when it
    ends, so it is never lent (except on a one-session device, where it is
    the only session there is).  A second greeted session is kept *ready* and
    lent to the next caller; another is prepared in the background when it is
    taken.  Without ``hold``, each :meth:`take` opens and greets a session;
    with ``warm`` (seconds) as well, a spare (never an anchor) is then kept
    ready for the next caller while the connection was used within ``warm``
    seconds, and closed once it was not.

    A device that refuses a second channel, or accepts one and never answers
    its hello while another session is open, is learned as
    one-session-at-a-time (``traits``): callers then queue until the open
    session ends.
    """

    def __init__(
        self,
        *,
        device: str,
        open_stream: Callable[[], Awaitable[DeviceStream]],
        is_closed: Callable[[], bool],
        hold: bool,
        traits: DeviceTraits,
        hello_timeout: float,
        peer_address: PeerAddress | None,
        logger: ContextAdapter | logging.Logger = log,
        warm: float = 0.0,
    ) -> None:
        self.device = device
        self.hold = hold
        self.warm = warm
        self.claimed = False  # a pool is never taken whole (NetconfSessions)
        self.traits = traits
        self.hello_timeout = hello_timeout
        self.anchor: DeviceSession | None = None  # the first session, kept (with hold)
        self.spare: DeviceSession | None = None  # ready for the next caller (with hold)
        self.lent = 0  # sessions taken and still open
        self.opened = 0  # sessions ever taken from this connection
        self.last_error: CallHomeError | None = None
        self._open_stream = open_stream
        self._is_closed = is_closed
        self._peer = peer_address
        self._log = logger
        self._prep: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None  # preparing again after a failure waits for it
        self._replenish: asyncio.TimerHandle | None = None  # preparing after a lending waits for it
        self._last_used: float | None = None  # loop time a session was last lent or returned (warm)
        self._cool: asyncio.TimerHandle | None = None  # closes a warm spare unused for `warm` seconds
        self._failures = 0
        self._changed = asyncio.Event()
        self._closed = False
        self._spare_lock = threading.Lock()  # the spare may be claimed from a caller's thread (claim)

    @property
    def ready(self) -> DeviceSession | None:
        """The greeted session the next caller gets at once, if any."""
        if self.spare is not None:
            return self.spare
        return self.anchor if self.traits.one_at_a_time and self.lent == 0 else None

    @property
    def _open_sessions(self) -> int:
        return self.lent + (self.anchor is not None) + (self.spare is not None)

    @property
    def _gone(self) -> bool:
        return self._closed or self._is_closed()

    # -- the sessions held ----------------------------------------------------------

    def start(self) -> None:
        """Greet the anchor and a spare (with ``hold``)."""
        self._ensure()

    @property
    def _warm_now(self) -> bool:
        """Keeping a spare for a device in use (``warm``), not for ``hold``:
        a session is lent, or one was lent or returned within ``warm``."""
        if self.hold or not self.warm:
            return False
        last = self._last_used
        return self.lent > 0 or (last is not None and asyncio.get_running_loop().time() - last < self.warm)

    def _ensure(self) -> None:
        if (
            not (self.hold or self._warm_now)
            or self._gone
            or self._prep is not None
            or self._retry is not None
            or self._replenish is not None
        ):
            return
        if not self.hold:  # warm: a spare only, never the only session of a one-session device
            if self.spare is None and not self.traits.one_at_a_time:
                self._prep = asyncio.get_running_loop().create_task(self._prepare("spare"))
            return
        if self.traits.one_at_a_time:
            if self.anchor is None and self.spare is None and self.lent == 0:
                self._prep = asyncio.get_running_loop().create_task(self._prepare("anchor"))
        elif self.anchor is None:
            self._prep = asyncio.get_running_loop().create_task(self._prepare("anchor"))
        elif self.spare is None:
            self._prep = asyncio.get_running_loop().create_task(self._prepare("spare"))

    async def _prepare(self, role: str) -> None:
        open_before = self._open_sessions
        try:
            session = await self._open(DEFAULT_CLIENT_CAPABILITIES, self.hello_timeout)
        except CallHomeError as exc:
            self._failed(exc, open_before)
        else:
            self._failures = 0
            if not (self.hold or self._warm_now):  # warm, and the device went unused meanwhile
                session.close()
                return
            if role == "anchor":
                self.anchor = session
            else:
                with self._spare_lock:
                    self.spare = session
            session.stream.closed.add_done_callback(lambda _: self._held_closed(session))
            self._log.debug("NETCONF session %s held (%s, %s)", session.session_id, role, session.framing.value)
        finally:
            self._prep = None
            self._notify()
            self._ensure()

    def _failed(self, exc: CallHomeError, open_before: int) -> None:
        self.last_error = exc
        if self._gone:
            return
        if not self.hold:
            # warm: a session greeted ahead of a caller teaches nothing about
            # the device (a session limit, a slow hello): callers open their own
            # sessions on this connection from now on
            self._log.info("cannot keep a NETCONF session ready (%s): sessions opened per caller on this call", exc)
            self.warm = 0.0
            return
        if open_before and not self.traits.one_at_a_time:
            self._learn_one_at_a_time(exc)
            return
        self._failures += 1
        delay = min(_RETRY_MAX, _RETRY_MIN * 2 ** (self._failures - 1))
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        self._log.log(level, "cannot hold a NETCONF session ready: %s; trying again in %g s", exc, delay)
        self._retry = asyncio.get_running_loop().call_later(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self._ensure()

    def _held_closed(self, session: DeviceSession) -> None:
        with self._spare_lock:
            if session is self.anchor:
                self.anchor = None
            elif session is self.spare:
                self.spare = None
            else:
                return  # lent meanwhile
        if self._gone:
            return
        if not self.hold:  # warm: not greeted again until the next caller (the device may close idle sessions)
            self._log.debug("the device closed NETCONF session %s, kept ready", session.session_id)
            self._last_used = None
            self._notify()
            return
        self._log.info("the device closed held NETCONF session %s; greeting another", session.session_id)
        if time.monotonic() - session.greeted_at < _RETRY_MIN:
            closed_at_once = TransportError(f"device {self.device} closed a held session at once", device=self.device)
            self._failed(closed_at_once, 0)
        else:
            self._ensure()
        self._notify()

    # -- lending ----------------------------------------------------------------------

    async def take(self, timeout: float, capabilities: tuple[str, ...] = DEFAULT_CLIENT_CAPABILITIES) -> DeviceSession:
        """A greeted session for one caller: the one held ready, or one
        opened now.

        Raises :class:`HelloTimeoutError` (the device accepted the channel and
        never answered its hello), :class:`TransportError` (the channel was
        refused; or a one-session device stayed busy for ``timeout``),
        :class:`DeviceDisconnectedError`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._gone:
                raise DeviceDisconnectedError(device=self.device, reason="call-home connection closed")
            ready = self._take_ready(capabilities)
            if ready is not None:
                if ready.is_closed:
                    continue
                return self._lend(ready)
            remaining = deadline - loop.time()
            busy = self.traits.one_at_a_time and (self.lent > 0 or self.anchor is not None)
            # (warm: a session greeted ahead of time may never answer; open one's own)
            preparing = self.hold and self._prep is not None and capabilities == DEFAULT_CLIENT_CAPABILITIES
            if busy or preparing:
                # a one-session device: queue until the open session ends;
                # a session being greeted for the next caller: take it
                if remaining <= 0:
                    raise TransportError(
                        f"device {self.device} serves one NETCONF session at a time and stayed busy for {timeout:g} s",
                        device=self.device,
                        peer_address=self._peer,
                    )
                await self._wait_change(remaining)
                continue
            open_before = self._open_sessions
            try:
                session = await self._open(capabilities, max(0.1, min(self.hello_timeout, remaining)))
            except DeviceDisconnectedError:
                raise
            except CallHomeError as exc:
                if self._is_closed():
                    raise DeviceDisconnectedError(device=self.device, reason="call-home connection closed") from exc
                if open_before and not self.traits.one_at_a_time:
                    self._learn_one_at_a_time(exc)
                    continue  # queue until the open session ends (or take the anchor)
                refused = self.traits.one_at_a_time and not isinstance(exc, HelloTimeoutError)
                if refused and deadline - loop.time() > _REFUSED_RETRY:
                    await asyncio.sleep(_REFUSED_RETRY)  # the last channel may still be closing on the device
                    continue
                raise
            return self._lend(session)

    def _take_ready(self, capabilities: tuple[str, ...]) -> DeviceSession | None:
        with self._spare_lock:
            ready = self.ready
            if ready is None or capabilities != ready.client_capabilities:
                return None
            if ready is self.spare:
                self.spare = None
            else:
                self.anchor = None  # a one-session device: the anchor is all there is
            return ready

    def claim(self, capabilities: tuple[str, ...]) -> DeviceSession | None:
        """The spare, if one is ready for ``capabilities``, taken from any
        thread without the event loop; the caller runs :meth:`record_claimed` on the
        loop before the session's first use.  ``None``: use :meth:`take`."""
        with self._spare_lock:
            ready = self.spare
            if ready is None or ready.is_closed or capabilities != ready.client_capabilities or self._gone:
                return None
            self.spare = None
            return ready

    def record_claimed(self, session: DeviceSession) -> None:
        """Record the lending of a :meth:`claim` ed session (on the loop)."""
        self._lend(session)

    def _lend(self, session: DeviceSession) -> DeviceSession:
        self.lent += 1
        self.opened += 1
        session.stream.closed.add_done_callback(lambda _: self._returned())
        self._used()
        self._replenish_soon()  # the next one, in the background
        return session

    def _used(self) -> None:
        """``warm``: a session was lent or returned just now."""
        if self.warm and not self.hold and not self._gone:
            loop = asyncio.get_running_loop()
            self._last_used = loop.time()
            if self._cool is None:
                self._cool = loop.call_later(self.warm, self._cool_down)

    def _cool_down(self) -> None:
        """``warm``: close the spare once no session was lent for that long."""
        self._cool = None
        last = self._last_used
        if last is None or self._gone:
            return
        loop = asyncio.get_running_loop()
        idle = loop.time() - last
        if self.warm and (self.lent > 0 or idle < self.warm):  # in use
            self._cool = loop.call_later(self.warm if self.lent > 0 else self.warm - idle, self._cool_down)
            return
        with self._spare_lock:
            spare, self.spare = self.spare, None
        if spare is not None:
            self._log.debug("closing NETCONF session %s kept ready: unused for %g s", spare.session_id, idle)
            spare.close()

    def _replenish_soon(self) -> None:
        """Greet the next session :data:`_REPLENISH_DELAY` from now."""
        if self._replenish is not None:
            self._replenish.cancel()
            self._replenish = None
        if (self.hold or self._warm_now) and not self._gone:
            self._replenish = asyncio.get_running_loop().call_later(_REPLENISH_DELAY, self._replenish_now)

    def _replenish_now(self) -> None:
        if self._replenish is not None:
            self._replenish.cancel()
            self._replenish = None
        self._ensure()

    def _returned(self) -> None:
        self.lent -= 1
        self._used()
        self._replenish_soon()
        self._notify()

    def _learn_one_at_a_time(self, exc: CallHomeError) -> None:
        """Another session failed while one is open: the device serves one
        session at a time (logged once)."""
        if not self.traits.one_at_a_time:
            self.traits.one_at_a_time = True
            self._log.warning(
                "could not open another NETCONF session while one is open (%s): one session at a time from now on", exc
            )
        if self.anchor is not None:  # anchor and spare cannot both stay open
            with self._spare_lock:
                spare, self.spare = self.spare, None
            if spare is not None:
                spare.close()

    async def _open(self, capabilities: tuple[str, ...], timeout: float) -> DeviceSession:
        stream = await self._open_stream()
        return await exchange_hello(
            stream, device=self.device, timeout=timeout, capabilities=capabilities, peer_address=self._peer
        )

    async def _wait_change(self, timeout: float) -> None:
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def close(self) -> None:
        """The connection is closing: drop the held sessions, stop preparing."""
        self._closed = True
        if self._prep is not None:
            self._prep.cancel()
        for timer in (self._retry, self._replenish, self._cool):
            if timer is not None:
                timer.cancel()
        self._retry = self._replenish = self._cool = None
        with self._spare_lock:
            held_now = (self.anchor, self.spare)
            self.anchor = self.spare = None
        for held in held_now:
            if held is not None:
                held.close()
        self._notify()


class SingleSession:
    """The one NETCONF session of a TLS call-home connection (RFC 7589),
    greeted at once with ``hold`` or when a caller takes it."""

    def __init__(
        self,
        *,
        device: str,
        stream: DeviceStream,
        hold: bool,
        hello_timeout: float,
        peer_address: PeerAddress | None,
        logger: ContextAdapter | logging.Logger = log,
    ) -> None:
        self.device = device
        self.stream = stream
        self.hold = hold
        self.hello_timeout = hello_timeout
        self.claimed = False
        self._peer = peer_address
        self._log = logger
        self._task: asyncio.Task[DeviceSession] | None = None

    def start(self) -> None:
        if self.hold:
            self._task = asyncio.get_running_loop().create_task(self._greet(DEFAULT_CLIENT_CAPABILITIES))
            self._task.add_done_callback(self._greeted)

    async def _greet(self, capabilities: tuple[str, ...]) -> DeviceSession:
        return await exchange_hello(
            self.stream,
            device=self.device,
            timeout=self.hello_timeout,
            capabilities=capabilities,
            peer_address=self._peer,
        )

    def _greeted(self, task: asyncio.Task[DeviceSession]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if not self.claimed:  # a caller waiting for it reports it
                self._log.warning("%s", exc)
        else:
            self._log.debug("NETCONF session %s held ready", task.result().session_id)

    @property
    def ready(self) -> DeviceSession | None:
        """The greeted session, if it is ready and not taken."""
        task = self._task
        if self.claimed or task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return None
        return task.result()

    async def take(self, timeout: float, capabilities: tuple[str, ...] = DEFAULT_CLIENT_CAPABILITIES) -> DeviceSession:
        if self.claimed:
            message = f"the TLS session of device {self.device} is already in use"
            raise TransportError(message, device=self.device, peer_address=self._peer)
        self.claimed = True
        if self._task is None:
            return await self._greet(capabilities)
        try:
            return await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            raise HelloTimeoutError(device=self.device, peer_address=self._peer, timeout=timeout) from None

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.stream.close()
