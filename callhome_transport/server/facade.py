"""The synchronous call-home server: :class:`CallHomeServer` runs
:class:`~callhome_transport.server.core.AsyncCallHomeServer` on a background
event loop and hands out standard ncclient Managers.  It takes the async
server's arguments as they are (:func:`~callhome_transport.engine.takes_arguments_of`),
so the two cannot drift apart."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ncclient.manager import Manager

from ..engine import EventLoopThread, takes_arguments_of
from ..errors import CallHomeError, ServerStateError, TransportError
from ..identity.inventory import Inventory
from ..integrations.netconf import DEFAULT_MAX_MESSAGE_SIZE, PreparedManager
from ..protocol.session import DeviceSession
from .core import AsyncCallHomeServer
from .registry import DeviceConnected, RejectedAttempt

if TYPE_CHECKING:
    from ..integrations.restconf import CallHomeAdapter

__all__ = ["CallHomeServer"]

T = TypeVar("T")

log = logging.getLogger(__name__)


class CallHomeServer:
    """Synchronous call-home server: :class:`AsyncCallHomeServer` on a
    background event loop, handing out standard ncclient Managers.

    ``listen_port`` defaults to 4334 (RFC 8071 s6; ``None`` disables SSH);
    with ``tls`` a TLS listener runs on ``tls_listen_port`` (4335), and a
    strict C4 one (heartbeat extension advertised, tlslite-ng) on
    ``tls_strict_listen_port`` if given; Junos outbound-ssh devices (inventory
    ``outbound_ssh``) on ``outbound_ssh_listen_port`` (7804).
    ``listen_address`` defaults to every interface, IPv4 and IPv6.  Use as a
    context manager, or call :meth:`close`.
    """

    @takes_arguments_of(AsyncCallHomeServer)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._engine = EventLoopThread()
        self._callback_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="callhome-cb")

        async def _make() -> AsyncCallHomeServer:
            server = AsyncCallHomeServer(*args, **kwargs)
            await server.start()
            return server

        try:
            self._server = self._engine.run(_make())
        except BaseException:
            self._engine.stop()
            self._callback_pool.shutdown(wait=False)
            raise
        self._closed = False

    @property
    def inventory(self) -> Inventory:
        return self._server.inventory

    @property
    def listen_port(self) -> int:
        """The SSH listener's bound port (useful with ``listen_port=0``)."""
        return self._server.listen_port

    @property
    def tls_listen_port(self) -> int:
        """The TLS listener's bound port."""
        return self._server.tls_listen_port

    @property
    def tls_strict_listen_port(self) -> int:
        """The strict C4 TLS listener's bound port."""
        return self._server.tls_strict_listen_port

    @property
    def outbound_ssh_listen_port(self) -> int:
        """The Junos outbound-ssh listener's bound port."""
        return self._server.outbound_ssh_listen_port

    @property
    def restconf_listen_port(self) -> int:
        """The RESTCONF listener's bound port."""
        return self._server.restconf_listen_port

    @property
    def aio(self) -> AsyncCallHomeServer:
        """The asyncio server underneath (use only from its loop: :meth:`run`)."""
        return self._server

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the server's event loop (where :attr:`aio` may be
        used) and return its result; ``timeout`` bounds the wait (then the
        coroutine is cancelled and :class:`TimeoutError` raised)."""
        self._check_open()
        return self._engine.run(coro, timeout)

    def netconf(
        self,
        device: str,
        timeout: float = 60,
        *,
        rpc_timeout: float = 30,
        device_params: Mapping[str, Any] | None = None,
        manager_params: Mapping[str, Any] | None = None,
        nc_params: Mapping[str, Any] | None = None,
        errors_params: Mapping[str, Any] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> Manager:
        """A standard ncclient ``Manager`` for ``device``: on a new NETCONF
        channel of its SSH call-home connection, or on its next unused TLS
        call-home connection (which the Manager then owns; RFC 7589 carries one
        NETCONF session per TLS connection).

        Waits up to ``timeout`` seconds for the device to call home if it has
        not (deferral); raises :class:`DeviceNotConnectedError` after that, or
        the refusal of the device if it called and was refused.  The server
        exchanges hellos (bounded by ``hello_timeout``; a session held ready
        for the device is used at once) and hands ncclient the device's;
        ``rpc_timeout`` is the Manager's RPC timeout.  Closing the Manager
        closes only its SSH channel (the device stays connected), or the TLS
        connection.
        A message from the device over ``max_message_size`` bytes closes the
        session with :class:`~callhome_transport.errors.MessageTooLargeError`.
        """
        self._check_open()
        prepared = PreparedManager(
            device=device,
            timeout=rpc_timeout,
            device_params=device_params,
            manager_params=manager_params,
            nc_params=nc_params,
            errors_params=errors_params,
            hello_settle=self._server.hello_settle(device),
            max_message_size=max_message_size,
        )

        async def _take() -> DeviceSession:  # one hop to the loop and back
            session = await self._server.take_session(device, timeout, capabilities=prepared.capabilities)
            try:
                prepared.session.adopt_in_process(session)
            except BaseException:
                session.close()
                raise
            return session

        claimed = self._server.claim_held_session(device, capabilities=prepared.capabilities)
        if claimed is None:
            session = self._engine.run(_take())
        else:  # held ready: no hop (the loop records it and starts the relay before our first message)
            session, lent = claimed
            try:
                prepared.session.adopt_claimed(session, lent)
            except BaseException as exc:
                with contextlib.suppress(RuntimeError):  # the loop is closed: everything is
                    self._engine.loop.call_soon_threadsafe(session.close)
                if isinstance(exc, BrokenPipeError):  # the server stopped meanwhile
                    message = f"NETCONF session with device {device} failed: {exc}"
                    raise TransportError(message, device=device) from exc
                raise
        try:
            return prepared.manager()
        except BaseException as exc:
            prepared.session.close()
            if isinstance(exc, CallHomeError) or not isinstance(exc, Exception):
                raise
            raise TransportError(
                f"NETCONF session with device {device} failed: {exc}", device=device, peer_address=session.peer_address
            ) from exc

    def open_netconf_stream(self, device: str, timeout: float = 60) -> socket.socket:
        """The NETCONF byte stream of a new session on ``device`` (waiting for
        it to call home), as a connected blocking socket: for NETCONF clients
        other than ncclient, or relays.  It starts with the device's hello;
        the server answers the hello you write (so it must offer the base
        version the session uses; see :class:`ClientHelloError`).  Closing
        the socket ends the session."""
        self._check_open()
        sock, _conn = self._engine.run(self._server.open_netconf(device, timeout))
        return sock

    def restconf_adapter(self, *, wait_timeout: float = 60.0, connections_per_device: int = 1) -> CallHomeAdapter:
        """A ``requests`` transport adapter over this server's RESTCONF
        call-home connections: ``session.mount("https://", adapter)``, then
        ``https://<device name>/restconf/...`` URLs (RFC 8071 port 4336).

        A request for a device that has not called waits up to
        ``wait_timeout`` seconds, then raises
        :class:`~callhome_transport.integrations.restconf.DeviceNotConnected` (a
        ``requests.exceptions.ConnectionError``)."""
        self._check_open()
        from ..integrations.restconf import CallHomeAdapter  # requests, loaded for RESTCONF callers only

        def opener(device: str, timeout: float) -> socket.socket:
            self._check_open()
            sock, _conn = self._engine.run(self._server.open_restconf(device, timeout))
            return sock

        return CallHomeAdapter(
            self.inventory, opener, wait_timeout=wait_timeout, connections_per_device=connections_per_device
        )

    def wait_for(self, device: str, timeout: float = 60) -> DeviceConnected:
        """Block until ``device`` is connected (or raise
        :class:`DeviceNotConnectedError`); return its connection facts."""
        self._check_open()
        conn = self._engine.run(self._server.wait_for(device, timeout))
        return DeviceConnected.of(conn)

    def connected(self) -> list[DeviceConnected]:
        """The devices connected now."""
        self._check_open()

        async def _list() -> list[DeviceConnected]:
            return [DeviceConnected.of(conn) for conn in self._server.connected().values()]

        return self._engine.run(_list())

    def disconnect(self, device: str) -> bool:
        """Close ``device``'s call-home connection (it may call again).
        Returns whether it was connected."""
        self._check_open()
        return self._engine.run(self._server.disconnect(device))

    def session_held(self, device: str) -> bool:
        """Whether a greeted NETCONF session is ready for ``device``'s next
        :meth:`netconf` (its ``hold_session`` policy keeps one)."""
        self._check_open()

        async def _held() -> bool:
            return self._server.session_held(device)

        return self._engine.run(_held())

    def rejected(self) -> list[RejectedAttempt]:
        """Recent refused attempts, oldest first (bounded)."""
        self._check_open()

        async def _list() -> list[RejectedAttempt]:
            return list(self._server.rejected)

        return self._engine.run(_list())

    def on_connect(self, callback: Callable[[DeviceConnected], None]) -> None:
        """Call ``callback(event)`` each time a device is identified and
        authenticated.  Callbacks run in a small worker pool, not on the event
        loop, so they may call :meth:`netconf`."""
        self._check_open()
        pool = self._callback_pool

        def _dispatch(event: DeviceConnected) -> None:
            pool.submit(_safe_call, callback, event)

        self._engine.loop.call_soon_threadsafe(self._server.add_connect_callback, _dispatch)

    def _check_open(self) -> None:
        if self._closed:
            raise ServerStateError("CallHomeServer is closed")

    def close(self) -> None:
        """Stop listening, close every device connection and the event loop."""
        if self._closed:
            return
        self._closed = True
        try:
            self._engine.run(self._server.close(), timeout=10)
        except (concurrent.futures.TimeoutError, OSError):
            log.warning("call-home server did not close within 10 s")
        finally:
            self._engine.stop()
            self._callback_pool.shutdown(wait=False)

    def __enter__(self) -> CallHomeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _safe_call(callback: Callable[[DeviceConnected], None], event: DeviceConnected) -> None:
    try:
        callback(event)
    except Exception:
        log.exception("on_connect callback failed for device %s", event.device)
