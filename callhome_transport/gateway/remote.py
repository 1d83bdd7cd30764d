"""Reaching a gateway's Unix sockets on another host, over SSH.

In a cluster (docs/scale.md) a device lives on whichever gateway its call
landed on.  A client on another host (the Ansible controller) reaches that
gateway's ``control.sock`` and ``devices/NAME/netconf.sock`` through the
gateway host's own sshd: an SSH ``direct-streamlocal@openssh.com`` channel
(asyncssh ``open_unix_connection``; OpenSSH's ``ssh -L local:/remote.sock``).
The gateway host's sshd must allow it: ``AllowStreamLocalForwarding yes``
(the default) and ``AllowTcpForwarding`` not ``no`` (OpenSSH 9.2 refuses
stream-local channels when TCP forwarding is off).

An opener turns a path on the gateway's host into a connected stream socket:
:class:`LocalOpener` (this host), :class:`SSHOpener` (another host; one SSH
connection per gateway host, shared by every socket opened through it, on a
background event loop).  The host key of the gateway host is checked
against ``known_hosts`` (OpenSSH's file by default); nothing is sent to a
host whose key is not known.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from dataclasses import dataclass
from typing import Protocol, cast

__all__ = ["LocalOpener", "SSHGateway", "SSHOpener", "StreamOpener"]


class StreamOpener(Protocol):
    """Opens a Unix stream socket path on a gateway's host."""

    def open(self, path: str, timeout: float) -> socket.socket:
        """A connected, blocking socket (with ``timeout`` set).  Raises
        ``FileNotFoundError``/``ConnectionRefusedError`` when nothing listens
        at ``path``, another ``OSError`` when the host cannot be reached."""

    def describe(self, path: str) -> str:
        """``path`` as a user should read it in a message."""


class LocalOpener:
    """Unix sockets on this host."""

    def open(self, path: str, timeout: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        return sock

    def describe(self, path: str) -> str:
        return path


@dataclass(frozen=True, kw_only=True)
class SSHGateway:
    """How to reach a gateway host over SSH (the Ansible inventory's
    ``gateways`` entries).  ``known_hosts`` ``None``: OpenSSH's
    ``~/.ssh/known_hosts``."""

    host: str
    port: int = 22
    username: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None
    connect_timeout: float = 10.0
    run_dir: str = "/run/callhome"  # where that host's gateway keeps control.sock

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host: the gateway host's address or name")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535, not {self.port}")


class SSHOpener:
    """Unix sockets on another host, through its sshd (stream-local channels)."""

    def __init__(self, gateway: SSHGateway) -> None:
        self.gateway = gateway
        self._engine: object | None = None
        self._conn: object | None = None
        self._lock: asyncio.Lock | None = None
        self._forwarded = False  # a stream-local channel has been opened on this host

    def describe(self, path: str) -> str:
        return f"{self.gateway.host}:{path}"

    def open(self, path: str, timeout: float) -> socket.socket:
        from ..engine import EventLoopThread

        if self._engine is None:
            self._engine = EventLoopThread(name=f"callhome-ssh-{self.gateway.host}")
        assert isinstance(self._engine, EventLoopThread)
        try:
            sock = self._engine.run(self._open(path, timeout), timeout + 1)
        except TimeoutError as exc:
            raise TimeoutError(f"no stream to {self.describe(path)} within {timeout:g} s") from exc
        sock.settimeout(timeout)
        return sock

    async def _connection(self) -> object:
        import asyncssh

        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            conn = self._conn
            if isinstance(conn, asyncssh.SSHClientConnection) and not conn.is_closed():
                return conn
            g = self.gateway
            # without known_hosts, asyncssh reads OpenSSH's ~/.ssh/known_hosts
            options: dict[str, object] = {} if g.known_hosts is None else {"known_hosts": g.known_hosts}
            try:
                self._conn = await asyncio.wait_for(
                    asyncssh.connect(
                        g.host,
                        g.port,
                        username=g.username,
                        client_keys=[g.key_file] if g.key_file else (),
                        config=None,
                        agent_path=None if g.key_file else (),
                        password=None,
                        kbdint_auth=False,
                        **options,
                    ),
                    g.connect_timeout,
                )
            except TimeoutError as exc:
                raise ConnectionError(
                    f"SSH to gateway host {g.host}:{g.port}: no answer in {g.connect_timeout:g} s"
                ) from exc
            except (OSError, asyncssh.Error) as exc:
                raise ConnectionError(f"SSH to gateway host {g.host}:{g.port}: {_reason(exc)}") from exc
            return self._conn

    async def _open(self, path: str, timeout: float) -> socket.socket:
        import asyncssh

        from ..transports.relay import ChannelRelay, attached_pair

        conn = await asyncio.wait_for(self._connection(), timeout)
        assert isinstance(conn, asyncssh.SSHClientConnection)
        try:
            _chan, session = await asyncio.wait_for(
                conn.create_unix_connection(ChannelRelay, path),  # type: ignore[arg-type]
                timeout,
            )
            relay = cast(ChannelRelay, session)
        except asyncssh.ChannelOpenError as exc:
            # OpenSSH answers the same "open failed" whether the socket is absent or stream-local
            # forwarding is denied (AllowTcpForwarding no): once a channel worked, it is the socket
            reason = exc.reason or "open failed"
            if not self._forwarded:
                reason += (
                    " (no socket there, or the gateway host's sshd refuses Unix socket forwarding: it needs "
                    "AllowStreamLocalForwarding yes and AllowTcpForwarding not 'no')"
                )
            raise FileNotFoundError(errno.ENOENT, f"{self.describe(path)}: {reason}") from exc
        except asyncssh.Error as exc:
            raise ConnectionError(f"SSH to gateway host {self.gateway.host}: {_reason(exc)}") from exc
        self._forwarded = True
        return await attached_pair(relay.attach_local)

    def close(self) -> None:
        from ..engine import EventLoopThread

        engine, self._engine = self._engine, None
        if isinstance(engine, EventLoopThread):
            conn = self._conn

            async def _close() -> None:
                close = getattr(conn, "close", None)
                if close is not None:
                    close()

            try:
                engine.run(_close(), 5)
            finally:
                engine.stop()
        self._conn = None


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "HostKeyNotVerifiable" in type(exc).__name__ or "not trusted" in text.lower():
        return f"host key not verified ({text}): add the gateway host to known_hosts"
    return text
