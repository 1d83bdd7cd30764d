"""The embedded simulated device: a real SSH server with a ``netconf``
subsystem that calls home (RFC 8071 S1-S3, S5, S6).

It opens the TCP connection to the manager, then runs the SSH *server* role
over it (asyncssh's ``connect_reverse``), authenticates the manager's password
or key, and serves NETCONF sessions from a small shared datastore
(:mod:`callhome_transport.sim.datastore`).  The demo and the load tests use it;
it is not a substitute for the real peers the integration tests run.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
from collections.abc import Callable, Sequence

import asyncssh

from ..addresses import NETCONF_CH_SSH_PORT
from ..identity.inventory import fingerprint_of_blob
from .datastore import Datastores, NetconfServerSession

__all__ = ["SimulatedDevice"]

log = logging.getLogger(__name__)


class _Auth(asyncssh.SSHServer):
    def __init__(self, device: SimulatedDevice) -> None:
        self._device = device

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return self._device.password is not None

    def validate_password(self, username: str, password: str) -> bool:
        expected = self._device.password
        ok = (
            expected is not None
            and hmac.compare_digest(username.encode(), self._device.username.encode())
            and hmac.compare_digest(password.encode(), expected.encode())
        )
        self._device.auth_attempts += 1
        return ok

    def public_key_auth_supported(self) -> bool:
        return bool(self._device.authorized_keys)

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        self._device.auth_attempts += 1
        return username == self._device.username and any(
            key.public_data == k.public_data for k in self._device.authorized_keys
        )


class SimulatedDevice:
    """A NETCONF-over-SSH device that calls home.

    ``host_key`` defaults to a fresh Ed25519 key; :attr:`host_key_line` and
    :attr:`fingerprint` are what an operator pins in the inventory.
    """

    def __init__(
        self,
        name: str,
        *,
        username: str = "admin",
        password: str | None = "admin",
        authorized_keys: Sequence[asyncssh.SSHKey] = (),
        host_key: asyncssh.SSHKey | None = None,
    ) -> None:
        self.name = name
        self.username = username
        self.password = password
        self.authorized_keys = list(authorized_keys)
        self.host_key = host_key or asyncssh.generate_private_key("ssh-ed25519")
        self.datastores = Datastores(hostname=name.lower())
        self.auth_attempts = 0
        self.sessions_served = 0
        # called whenever a NETCONF session of a connection opens or receives
        # bytes (idle-timeout of a model-driven call home)
        self.on_activity: Callable[[asyncssh.SSHServerConnection], None] | None = None
        self._replying: dict[asyncssh.SSHServerConnection, int] = {}  # replies being sent, per connection
        self._closing: set[asyncssh.SSHServerConnection] = set()
        self._conn: asyncssh.SSHServerConnection | None = None

    @property
    def host_key_line(self) -> str:
        """The OpenSSH public key line (``ssh-ed25519 AAAA... name``)."""
        key_type, data = self.host_key.export_public_key("openssh").decode().split()[:2]
        return f"{key_type} {data} {self.name}"

    @property
    def fingerprint(self) -> str:
        return fingerprint_of_blob(self.host_key.public_data)

    async def call_home(
        self,
        host: str = "127.0.0.1",
        port: int = NETCONF_CH_SSH_PORT,
        *,
        keepalive_interval: float = 0,
        sock: socket.socket | None = None,
        on_lost: Callable[[Exception | None], None] | None = None,
    ) -> asyncssh.SSHServerConnection:
        """Connect to the manager at ``host``:``port`` (or run over ``sock``,
        already connected to it) and serve it until :meth:`close` or the
        manager hangs up (S1-S3).  Returns once the manager has
        authenticated; ``on_lost`` gets the connection's end (``None``: closed
        cleanly)."""
        auth_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        class _Server(_Auth):
            _conn: asyncssh.SSHServerConnection | None = None

            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                self._conn = conn

            def auth_completed(self) -> None:
                if not auth_done.done():
                    auth_done.set_result(None)

            def connection_lost(self, exc: Exception | None) -> None:
                if not auth_done.done():
                    auth_done.set_exception(ConnectionError(f"manager closed the connection: {exc or 'closed'}"))
                if device._conn is self._conn:
                    device._conn = None  # a closed call is not kept alive (a fleet's heap stays flat)
                if on_lost is not None:
                    on_lost(exc)

        device = self
        try:
            conn = await asyncssh.connect_reverse(
                host if sock is None else "",
                port if sock is None else (),
                sock=sock,
                server_factory=lambda: _Server(device),
                keepalive_interval=keepalive_interval,
                **self._server_options(),
            )
        except BaseException:
            if auth_done.done() and not auth_done.cancelled():
                auth_done.exception()  # already reported by connect_reverse itself
            raise
        self._conn = conn
        await auth_done
        return conn

    async def listen(self, host: str = "127.0.0.1", port: int = 0) -> asyncssh.SSHAcceptor:
        """Also accept NETCONF over SSH the usual way (a management port, RFC
        6242): how a manager provisions the device before it calls home."""
        device = self
        return await asyncssh.listen(host, port, server_factory=lambda: _Auth(device), **self._server_options())

    def _server_options(self) -> dict[str, object]:
        return {
            "server_host_keys": [self.host_key],
            "process_factory": self._serve,
            "encoding": None,
            "config": None,
            "x509_trusted_certs": None,
            "authorized_client_keys": None,
            "gss_host": None,
            "kbdint_auth": False,
            "host_based_auth": False,
            "public_key_auth": bool(self.authorized_keys),
            "password_auth": self.password is not None,
            "allow_scp": False,
            "agent_forwarding": False,
        }

    async def _serve(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        if process.subsystem != "netconf":
            process.stderr.write(b"only the netconf subsystem is available\n")
            process.exit(1)
            return
        self.sessions_served += 1
        connection = process.get_extra_info("connection")
        if self.on_activity is not None:
            self.on_activity(connection)
        session = NetconfServerSession(self.datastores)
        process.stdout.write(session.start())
        try:
            while not session.closed:
                data = await process.stdin.read(65536)
                if not data:
                    break
                if self.on_activity is not None:
                    self.on_activity(connection)
                self._replying[connection] = self._replying.get(connection, 0) + 1
                try:
                    reply = session.receive(data)
                    if reply:
                        process.stdout.write(reply)
                        await process.stdout.drain()
                finally:
                    self._replying[connection] -= 1
                    if not self._replying[connection]:
                        del self._replying[connection]
                        if connection in self._closing:
                            self._closing.discard(connection)
                            connection.close()
        except (asyncssh.Error, ConnectionError, asyncssh.BreakReceived, asyncssh.TerminalSizeChanged) as exc:
            log.debug("device %s: netconf session ended: %s", self.name, exc)
        finally:
            session.abort()
            process.exit(0)

    def hang_up(self, connection: asyncssh.SSHServerConnection) -> None:
        """Close one call-home connection, once the replies being sent on it
        have gone out (a commit that removed this very call home is answered
        first)."""
        if connection in self._replying:
            self._closing.add(connection)
        else:
            connection.close()

    def close(self) -> None:
        """Hang up (the device goes away)."""
        if self._conn is not None:
            self._conn.close()

    async def wait_closed(self) -> None:
        if self._conn is not None:
            await self._conn.wait_closed()
