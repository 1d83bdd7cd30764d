"""The SSH client role over a device-initiated socket (RFC 8071 C3, C5, C7, C8).

:func:`ssh_handshake` runs asyncssh's client over a socket the listener
accepted.  The order is RFC 8071 s5's:

1. key exchange; the device presents its host key;
2. ``validate_host_public_key`` asks the :class:`~callhome_transport.identity.trust.Trust`
   which device owns that key; an unknown key ends the connection here, before
   any authentication request is sent (C5);
3. only then are that device's username and password or key chosen (C7);
4. authentication; the caller then opens ``netconf`` subsystem channels (C8).

Keepalives are SSH global requests that need a reply (asyncssh sends
``keepalive@openssh.com``; a server that does not know the name must still
answer with ``SSH_MSG_REQUEST_FAILURE``, RFC 4254 s4), so a silent peer is
detected after ``keepalive_interval * (keepalive_count_max + 1)`` seconds at most.
The first keepalive of a connection comes after a random share of the interval
(``keepalive_jitter``, :func:`_spread_keepalive`): devices that authenticated
in the same burst would otherwise all get theirs in the same event-loop
iteration, every interval (issue 16).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import asyncssh
from asyncssh.public_key import get_public_key_algs

from .._log import ContextAdapter
from ..addresses import PeerAddress, format_peer
from ..errors import (
    AuthenticationFailedError,
    CallHomeError,
    HandshakeTimeoutError,
    ProxyProtocolError,
    TransportError,
    UnknownDeviceError,
)
from ..identity.inventory import SSHCredentials, Transport, fingerprint_of_blob
from ..identity.trust import Identity, PresentedKey, Trust
from ..protocol.session import DeviceTraits, SessionPool
from .contract import ConnectionBase, DeviceConnection, Handshake, next_conn_id
from .preauth import PendingConnection
from .proxy import starts_with_proxy_header
from .relay import ChannelRelay, open_channel_relay, open_subsystem_relay

__all__ = [
    "ClientKeys",
    "SSHAcceptor",
    "SSHClientConfig",
    "SSHDeviceConnection",
    "SSHHost",
    "host_key_algorithms",
    "load_client_keys",
    "ssh_handshake",
]

log = logging.getLogger(__name__)

# Sent as the SSH user name only if a connection were ever to authenticate
# before identification, which the hook order makes impossible.
_UNIDENTIFIED_USER = "callhome-unidentified"

LIBSSH_BANNER = "SSH-2.0-libssh"  # libnetconf2's SSH server (netopeer2 and the products built on it)
KEEPALIVE_SLOT = 0.1  # seconds: spread first keepalives fall due on these boundaries, a batch per iteration
IDLE_DROP_WINDOW = 120.0  # seconds: a device closing a call with no session sooner drops idle calls

# OpenSSH's default client HostKeyAlgorithms without the certificate forms
# (ssh_config(5), OpenSSH 8.8 to 9.x): a device presents the key of the first
# algorithm in our list that it has (RFC 4253 s7.1).
OPENSSH_HOST_KEY_ALGORITHMS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
# then what asyncssh's default offered besides (ssh-rsa: SHA-1 signatures, for old devices)
_COMPAT_HOST_KEY_ALGORITHMS = ("ssh-ed448", "ssh-rsa")
_ANY_KEY_ALGORITHMS = OPENSSH_HOST_KEY_ALGORITHMS + _COMPAT_HOST_KEY_ALGORITHMS
_ALGORITHM_RANK = {name: rank for rank, name in enumerate((*_ANY_KEY_ALGORITHMS, "ssh-dss"))}
# the signature algorithms a host key of each type can sign the key exchange with
# (RFC 8332 s3 for RSA; the others sign with the key type's own name)
_ALGORITHMS_OF_KEY_TYPE = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


def host_key_algorithms(key_types: Iterable[str]) -> tuple[str, ...]:
    """The server host key algorithms to offer so that a device with several
    host keys presents one we pinned (RFC 4253 s7.1: the server uses the first
    algorithm of the client's list that it supports).

    ``key_types`` are the types of the pinned keys (``ssh-ed25519``,
    ``ssh-rsa``, ...; :attr:`HostKeyPin.key_type`), ``""`` for a pin whose
    type is unknown (a ``SHA256:`` fingerprint).  A call-home connection is
    identified *by* its host key, so the offer is made before we know which
    device is calling: it is the union over every pin, in OpenSSH's order.  An
    unknown type adds every algorithm in OpenSSH's order (then ``ssh-ed448``,
    ``ssh-rsa``); so does an empty ``key_types``.  Types asyncssh cannot verify
    are left out (such a pin can never match).
    """
    supported = {name.decode("ascii") for name in get_public_key_algs()}
    offered: set[str] = set()
    for key_type in key_types:
        offered.update(_ALGORITHMS_OF_KEY_TYPE.get(key_type, (key_type,)) if key_type else _ANY_KEY_ALGORITHMS)
    offered &= supported & _ALGORITHM_RANK.keys()
    if not offered:
        offered = set(_ANY_KEY_ALGORITHMS) & supported
    return tuple(sorted(offered, key=_ALGORITHM_RANK.__getitem__))


def _supported(kind: str) -> frozenset[str]:
    """The algorithm names asyncssh supports here (with the installed crypto
    libraries), by kind."""
    from asyncssh.encryption import get_encryption_algs
    from asyncssh.kex import get_kex_algs
    from asyncssh.mac import get_mac_algs

    get = {
        "kex_algs": get_kex_algs,
        "encryption_algs": get_encryption_algs,
        "mac_algs": get_mac_algs,
        "server_host_key_algs": get_public_key_algs,
    }[kind]
    return frozenset(name.decode("ascii") for name in get())


@dataclass(frozen=True, kw_only=True)
class SSHClientConfig:
    """Options for the SSH client role.

    ``handshake_timeout`` bounds TCP accept to authenticated (RFC 8071 s5 DoS
    guard, like OpenSSH's LoginGraceTime).  ``keepalive_interval`` 0 disables
    keepalives.  ``keepalive_jitter`` (0 to 1) spreads the first keepalive of
    each connection: it comes after ``keepalive_interval * (1 - keepalive_jitter
    * u)`` seconds, ``u`` uniform in [0, 1) (rounded down to a 0.1 s
    boundary, :data:`KEEPALIVE_SLOT`), instead of after exactly
    ``keepalive_interval``, so a burst of connections made together does not
    send (and the manager does not encrypt) its keepalives in the same instant
    every interval; later keepalives keep that phase (asyncssh re-arms the
    timer from each reply).  It only ever brings a keepalive earlier, so the
    dead-peer bound stays ``keepalive_interval * (keepalive_count_max + 1)``.
    0 gives asyncssh's fixed timer.

    ``kex_algs``, ``encryption_algs`` and ``mac_algs`` are what we offer, in
    order of preference (asyncssh's names; empty: asyncssh's defaults, which
    put the post-quantum hybrid ``mlkem768x25519-sha256`` and
    ``chacha20-poly1305@openssh.com`` first).  ``server_host_key_algs``
    replaces the offer derived from the pinned keys (:func:`host_key_algorithms`).
    A call-home device is identified by the host key it presents *during*
    key exchange, so these apply to every device of a listener: the device
    is not known yet when they are offered (RFC 8071 s5).  docs/gateway.md
    ("SSH algorithms") has their cost.
    """

    handshake_timeout: float = 30.0
    keepalive_interval: float = 30.0
    keepalive_count_max: int = 3
    keepalive_jitter: float = 1.0
    kex_algs: tuple[str, ...] = ()
    encryption_algs: tuple[str, ...] = ()
    mac_algs: tuple[str, ...] = ()
    server_host_key_algs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.handshake_timeout <= 0:
            raise ValueError(f"handshake_timeout must be > 0, not {self.handshake_timeout}")
        if self.keepalive_interval < 0:
            raise ValueError(f"keepalive_interval must be >= 0, not {self.keepalive_interval}")
        if self.keepalive_count_max < 1:
            raise ValueError(f"keepalive_count_max must be >= 1, not {self.keepalive_count_max}")
        if not 0 <= self.keepalive_jitter <= 1:
            raise ValueError(f"keepalive_jitter must be between 0 and 1, not {self.keepalive_jitter}")
        for kind in ("kex_algs", "encryption_algs", "mac_algs", "server_host_key_algs"):
            names = getattr(self, kind)
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{kind} must be a list of algorithm names, not {names!r}")
            unknown = [n for n in names if n not in _supported(kind)]
            if unknown:
                raise ValueError(f"{kind}: {', '.join(unknown)} not supported here (asyncssh {asyncssh.__version__})")

    def options(self, server_host_key_algs: Sequence[str] | None = None) -> asyncssh.SSHClientConnectionOptions:
        """asyncssh options that read nothing from the user's environment: no
        ~/.ssh/config, no default keys, no agent, no known_hosts file.  An empty
        (not ``None``) known-hosts tuple makes asyncssh call our
        ``validate_host_public_key`` for every key.

        ``server_host_key_algs`` is the offer of :func:`host_key_algorithms`
        (the default: every algorithm in OpenSSH's order); asyncssh's own
        default would put ``rsa-sha2-256`` first and so make a device with an
        RSA key present that one even where its ed25519 key is pinned.  The
        config's own ``server_host_key_algs``, when set, wins.

        Built once per configuration and offer, then shared by every
        handshake (:func:`ssh_handshake`)."""
        offer = self.server_host_key_algs or tuple(server_host_key_algs or host_key_algorithms(()))
        return _prepared_options(self, offer)


@functools.lru_cache(maxsize=256)
def _prepared_options(config: SSHClientConfig, offer: tuple[str, ...]) -> asyncssh.SSHClientConnectionOptions:
    algorithms: dict[str, Any] = {
        kind: list(names)
        for kind, names in (
            ("kex_algs", config.kex_algs),
            ("encryption_algs", config.encryption_algs),
            ("mac_algs", config.mac_algs),
        )
        if names
    }
    return asyncssh.SSHClientConnectionOptions(
        config=None,
        known_hosts=([], [], []),
        x509_trusted_certs=None,
        username=_UNIDENTIFIED_USER,
        password=None,
        client_keys=None,
        agent_path=None,
        gss_host=None,
        host_based_auth=False,
        server_host_key_algs=list(offer),
        preferred_auth="publickey,keyboard-interactive,password",
        keepalive_interval=config.keepalive_interval,
        keepalive_count_max=config.keepalive_count_max,
        login_timeout=0,  # ssh_handshake bounds accept -> authenticated itself (handshake_timeout)
        **algorithms,
    )


def _bind_username(conn: asyncssh.SSHClientConnection, username: str) -> None:
    """Set the user name of a connection whose device we just identified.

    asyncssh fixes the user name when a connection is created, but call home
    only knows it after the host key names the device (RFC 8071 C7).  asyncssh
    reads ``_username`` when authentication starts, after key exchange, so
    setting it from ``validate_host_public_key`` is early enough.  This is the
    one private attribute we touch; ``tests/unit/test_ssh.py`` guards it.
    """
    if not hasattr(conn, "_username"):  # pragma: no cover - guarded by a unit test
        raise RuntimeError("this asyncssh version does not keep the user name in _username")
    conn._username = username


def _spread_keepalive(conn: asyncssh.SSHClientConnection, config: SSHClientConfig) -> None:
    """Re-arm an authenticated connection's first keepalive at a random share
    of the interval (:class:`SSHClientConfig` ``keepalive_jitter``).

    asyncssh arms the keepalive timer when authentication completes, exactly
    ``keepalive_interval`` later, and after that from each reply.  In a storm,
    thousands of connections authenticate in the same event-loop iteration, so
    their keepalives fell due together, every interval: with 10,000 sessions,
    600-1,400 global requests encrypted and sent in each of four back-to-back
    iterations of 60-80 ms, and control requests to the gateway waited up to
    0.32 s (issue 16).  asyncssh has no public way to set the first delay
    alone (``set_keepalive`` changes the interval for good), so this replaces
    the timer it armed: ``_keepalive_timer`` and the callback asyncssh arms it
    with; ``tests/unit/test_ssh.py`` guards both.

    The new due time is rounded down to a :data:`KEEPALIVE_SLOT` boundary:
    keepalives due on the same boundary run in one iteration (about 33 per
    0.1 s slot with 10,000 sessions and 30 s keepalives, 2-3 ms of work).
    Spread one by one instead, each keepalive cost iterations of its own and
    the idle CPU of the manager and of the devices roughly doubled
    (``bench_storm.py --devices 2000 --keepalive 5 --idle 30``).
    """
    if not config.keepalive_interval or not config.keepalive_jitter:
        return
    timer: asyncio.TimerHandle | None = getattr(conn, "_keepalive_timer", None)
    fire: Callable[[], None] | None = getattr(conn, "_keepalive_timer_callback", None)
    if timer is None or fire is None:  # closed already, or an asyncssh without them (the unit test says which)
        return
    timer.cancel()
    loop = asyncio.get_running_loop()
    due = loop.time() + config.keepalive_interval * (1.0 - config.keepalive_jitter * random.random())
    conn._keepalive_timer = loop.call_at(math.floor(due / KEEPALIVE_SLOT) * KEEPALIVE_SLOT, fire)


ClientKeys = Mapping[tuple[Path, str | None], asyncssh.SSHKey]


def load_client_keys(credentials: Iterable[SSHCredentials]) -> dict[tuple[Path, str | None], asyncssh.SSHKey]:
    """Every private key of ``credentials`` read and decrypted once, by (file,
    passphrase): a passphrase-protected key costs about 1.4 s to decrypt,
    which belongs to inventory load (a worker thread on reload), never to a
    handshake on the event loop.  A key that cannot be read is left out: the
    handshake that needs it reads it again and reports why it cannot."""
    keys: dict[tuple[Path, str | None], asyncssh.SSHKey] = {}
    for creds in credentials:
        if creds.private_key is None:
            continue
        ref = (creds.private_key, creds.private_key_passphrase)
        if ref not in keys:
            try:
                keys[ref] = asyncssh.read_private_key(*ref)
            except (OSError, asyncssh.KeyImportError) as exc:
                log.debug("private key %s not loaded: %s", creds.private_key, exc)
    return keys


class _DeviceClient(asyncssh.SSHClient):
    """asyncssh hooks, in RFC 8071 order."""

    def __init__(
        self, trust: Trust, peer: PeerAddress, logger: ContextAdapter, client_keys: ClientKeys | None = None
    ) -> None:
        self._client_keys = client_keys or {}
        self._trust = trust
        self._peer = peer
        self._log = logger
        self._conn: asyncssh.SSHClientConnection | None = None
        self.presented: PresentedKey | None = None
        self.identity: Identity | None = None
        self.lost_reason: str | None = None
        self.lost_abnormally = False
        self.on_lost: Callable[[str], None] | None = None
        self._password_sent = False
        self._key_sent = False
        self._kbdint_sent = False

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_reason = str(exc) if exc else "closed"
        self.lost_abnormally = exc is not None
        if self.on_lost is not None:
            self.on_lost(self.lost_reason)

    # 1-3: validate, identify, choose credentials
    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        presented = PresentedKey(
            key_type=key.get_algorithm(),
            fingerprint=fingerprint_of_blob(key.public_data),
            peer_address=self._peer,
        )
        self.presented = presented
        identity = self._trust.identify(presented)
        if identity is None:
            return False
        self.identity = identity
        assert self._conn is not None
        _bind_username(self._conn, identity.credentials.username)
        self._log.bind(device=identity.device)
        self._log.debug("identified by host key %s %s", presented.key_type, presented.fingerprint)
        return True

    # 4: authenticate with that device's credentials, each method once
    @property
    def _credentials(self) -> SSHCredentials | None:
        return None if self.identity is None else self.identity.credentials

    def public_key_auth_requested(self) -> asyncssh.SSHKey | None:
        creds = self._credentials
        if creds is None or creds.private_key is None or self._key_sent:
            return None
        self._key_sent = True
        loaded = self._client_keys.get((creds.private_key, creds.private_key_passphrase))
        if loaded is not None:
            return loaded
        try:
            return asyncssh.read_private_key(creds.private_key, creds.private_key_passphrase)
        except (OSError, asyncssh.KeyImportError) as exc:
            self._log.error("cannot load private key %s: %s", creds.private_key, exc)
            return None

    def password_auth_requested(self) -> str | None:
        creds = self._credentials
        if creds is None or creds.password is None or self._password_sent:
            return None
        self._password_sent = True
        return creds.password

    def kbdint_auth_requested(self) -> str | None:
        creds = self._credentials
        if creds is None or creds.password is None or self._kbdint_sent:
            return None
        return ""

    def kbdint_challenge_received(self, name: str, instructions: str, lang: str, prompts: Any) -> list[str] | None:
        creds = self._credentials
        if creds is None or creds.password is None:
            return None
        if not prompts:
            return []
        if self._kbdint_sent:
            return None
        self._kbdint_sent = True
        return [creds.password if not echo else "" for _prompt, echo in prompts]


class SSHDeviceConnection(ConnectionBase):
    """An authenticated call-home SSH connection to one identified device.

    Each :meth:`open_netconf` opens a new SSH channel running the ``netconf``
    subsystem (RFC 6242 s3) on this connection; a new call of the device
    replaces it (not pooled).
    """

    transport = Transport.SSH
    pooled = False

    def __init__(
        self, handshake: Handshake, *, conn: asyncssh.SSHClientConnection, client: _DeviceClient, username: str
    ) -> None:
        super().__init__(handshake)
        self.conn = conn
        self._client = client
        self.username = username
        self.server_version = str(conn.get_extra_info("server_version") or "")  # the device's SSH banner
        self.sessions: SessionPool | None = None  # the NETCONF sessions the server greets and lends
        self.closed_by_us = False
        client.on_lost = self._lost
        if client.lost_reason is not None:
            self._lost(client.lost_reason)

    def _lost(self, reason: str) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)
            # a dead peer (missed keepalives, reset) is worth a WARNING; a close is not
            level = logging.WARNING if self._client.lost_abnormally else logging.INFO
            self.log.log(level, "connection closed: %s", reason)

    async def start_sessions(
        self, *, hold: bool, hello_timeout: float, traits: DeviceTraits, warm: float = 0.0
    ) -> None:
        self.sessions = SessionPool(
            device=self.device,
            open_stream=self.open_channel,
            is_closed=lambda: self.is_closed,
            hold=hold,
            traits=traits,
            hello_timeout=hello_timeout,
            peer_address=self.peer_address,
            logger=self.log,
            warm=warm,
        )
        self.sessions.start()

    def holds_by_default(self, traits: DeviceTraits) -> bool:
        if self.server_version.startswith(LIBSSH_BANNER):
            return True  # libnetconf2 (netopeer2...) drops a call with no session within ~10 s
        return traits.drops_idle

    def ended(self, traits: DeviceTraits) -> None:
        """A device that closed its call soon, with no session ever opened and
        none held, drops idle calls: hold one from its next call on."""
        sessions = self.sessions
        if sessions is None:
            return
        lived = time.time() - self.connected_at
        idle_drop = not self.closed_by_us and not sessions.hold and sessions.opened == 0
        if idle_drop and lived < IDLE_DROP_WINDOW and not traits.drops_idle:
            traits.drops_idle = True
            self.log.info(
                "the device closed its call after %.1f s with no NETCONF session open: "
                "holding one ready from its next call on (hold_session: auto)",
                lived,
            )

    async def open_netconf(self, local: socket.socket | None = None) -> tuple[socket.socket, ChannelRelay]:
        """Open a ``netconf`` subsystem channel, relayed to ``local`` or to a
        new socketpair (whose caller end is returned)."""
        try:
            return await open_subsystem_relay(self.conn, "netconf", local)
        except (asyncssh.Error, OSError) as exc:
            raise self._unavailable(f"cannot open a netconf channel on device {self.device}: {exc}") from exc

    async def open_stream(self, local: socket.socket | None = None) -> socket.socket:
        """A new ``netconf`` channel's stream (:meth:`open_netconf`)."""
        sock, _relay = await self.open_netconf(local)
        return sock

    async def open_channel(self) -> ChannelRelay:
        """Open a ``netconf`` subsystem channel with no local side yet (the
        server greets it, then lends it)."""
        try:
            return await open_channel_relay(self.conn, "netconf")
        except (asyncssh.Error, OSError) as exc:
            raise self._unavailable(f"cannot open a netconf channel on device {self.device}: {exc}") from exc

    async def open_terminal(
        self, local: socket.socket, *, term_type: str = "xterm", cols: int = 80, rows: int = 24
    ) -> ChannelRelay:
        """Open an interactive shell with a PTY on the device (remote terminal
        access over call-home SSH, call-home draft) relayed to ``local``."""
        try:
            _, session = await self.conn.create_session(
                ChannelRelay, term_type=term_type, term_size=(cols, rows), encoding=None
            )
        except (asyncssh.Error, OSError) as exc:
            raise self._unavailable(f"cannot open a terminal on device {self.device}: {exc}") from exc
        relay = cast(ChannelRelay, session)
        await relay.attach_local(local)
        return relay

    def close(self) -> None:
        self.closed_by_us = True
        if self.sessions is not None:
            self.sessions.close()
        self.conn.close()


async def _connect_prepared(
    sock: socket.socket, peer: PeerAddress, options: asyncssh.SSHClientConnectionOptions, client: _DeviceClient
) -> asyncssh.SSHClientConnection:
    """What ``asyncssh.connect(sock=..., options=...)`` does for an accepted
    socket, without rebuilding ``options`` for every connection.

    ``asyncssh.connect()`` makes a new options object from the one it is given
    on each call, in a worker thread (``getpass.getuser()``, ``~/.ssh`` look-ups,
    an executor hop): 27-33 % of the manager's CPU in a 10,000-device storm
    (issue 16).  A connection takes the two per-connection values it needs
    from the options when it is created, its client factory and the future it
    resolves once authenticated (asyncssh 2.x reads both in
    ``SSHConnection.__init__`` and never again; ``tests/unit/test_ssh.py``
    guards that), so one options object, prepared when the inventory is
    loaded, serves every connection: both are set just before the connection
    object is made, with no ``await`` in between.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    options.waiter = waiter
    options.protocol_factory = lambda: client
    options.host, options.port = peer[0], peer[1]  # else asyncssh asks the socket, which a reset one cannot say
    conn = asyncssh.SSHClientConnection(loop, options, wait="auth")
    made = established = False
    try:
        await loop.create_connection(lambda: conn, sock=sock)
        made = True
        conn.set_extra_info(host=peer[0], port=peer[1])
        await waiter
        established = True
        return conn
    finally:
        if not established:
            conn.abort()
            if made:  # a connection never made never closes
                await conn.wait_closed()


async def ssh_handshake(
    sock: socket.socket,
    peer: PeerAddress,
    trust: Trust,
    config: SSHClientConfig,
    options: asyncssh.SSHClientConnectionOptions | None = None,
    client_keys: ClientKeys | None = None,
    *,
    timeout: float | None = None,
) -> SSHDeviceConnection:
    """Run the SSH client role over ``sock`` until the device is identified
    and authenticated, within ``timeout`` seconds (default
    ``config.handshake_timeout``; an acceptor passes what is left of it once
    the device's first line arrived).

    Raises :class:`UnknownDeviceError` (no authentication attempted),
    :class:`AuthenticationFailedError`, :class:`HandshakeTimeoutError` or
    :class:`TransportError`.  ``sock`` is closed on failure.
    """
    accepted_at = time.monotonic()
    conn_id = next_conn_id()
    logger = ContextAdapter(log, peer=format_peer(peer), conn=conn_id)
    client = _DeviceClient(trust, peer, logger, client_keys)
    bound = config.handshake_timeout if timeout is None else timeout
    try:
        # asyncio.timeout, not wait_for: no task of its own per handshake (Python 3.11)
        async with asyncio.timeout(bound):
            conn = await _connect_prepared(sock, peer, options or config.options(), client)
    except TimeoutError as exc:
        sock.close()
        device = client.identity.device if client.identity else None
        raise HandshakeTimeoutError(peer_address=peer, timeout=bound, device=device) from exc
    except asyncssh.HostKeyNotVerifiable as exc:
        sock.close()
        presented = client.presented
        raise UnknownDeviceError(
            peer_address=peer,
            fingerprint=presented.fingerprint if presented else "",
            key_type=presented.key_type if presented else "",
        ) from exc
    except asyncssh.PermissionDenied as exc:
        sock.close()
        assert client.identity is not None
        raise AuthenticationFailedError(
            device=client.identity.device,
            peer_address=peer,
            username=client.identity.credentials.username,
            reason=exc.reason,
            fingerprint=client.identity.fingerprint,
            key_type=client.presented.key_type if client.presented else "",
        ) from exc
    except CallHomeError:
        sock.close()
        raise
    except (asyncssh.Error, OSError, ValueError) as exc:
        sock.close()
        device = client.identity.device if client.identity else None
        raise TransportError(
            f"SSH handshake with {format_peer(peer)} failed: {exc}", device=device, peer_address=peer
        ) from exc
    _spread_keepalive(conn, config)
    assert client.identity is not None
    logger.debug("authenticated as %s", client.identity.credentials.username)
    identity = client.identity
    handshake = Handshake.of(identity, peer, logger, accepted_at, conn_id)
    return SSHDeviceConnection(handshake, conn=conn, client=client, username=identity.credentials.username)


class SSHHost(Protocol):
    """What :class:`SSHAcceptor` reads from the server (replaced on reload)."""

    ssh_config: SSHClientConfig

    @property
    def banner_timeout(self) -> float: ...

    @property
    def trust(self) -> Trust:
        """The inventory's trust, refusing blocked devices before any credential is sent."""
        ...

    @property
    def ssh_options(self) -> asyncssh.SSHClientConnectionOptions: ...

    @property
    def client_keys(self) -> ClientKeys: ...


class SSHAcceptor:
    """RFC 8071 NETCONF over SSH (port 4334)."""

    label = kind = "ssh"
    tls = False
    transports: tuple[Transport, ...] = (Transport.SSH,)

    def __init__(self, host: SSHHost) -> None:
        self.host = host

    def _first_line_bounds(self) -> list[tuple[float, str]]:
        bounds = [(self.host.ssh_config.handshake_timeout, "handshake-timeout")]
        if self.host.banner_timeout:
            bounds.append((self.host.banner_timeout, "banner-timeout"))
        return bounds

    async def before_handshake(self, pending: PendingConnection) -> None:
        # the first line (the SSH banner, or a preamble's first line) within the
        # shortest bound; the handshake timeout covers it too
        first_line, reason = min(self._first_line_bounds(), key=lambda bound: bound[0])
        first = await pending.ssh_banner(first_line, reason)
        if starts_with_proxy_header(first):
            # a PROXY header from the device itself (a trusted balancer's was consumed by the
            # listener): never honoured; asyncssh would skip it as a line before the banner
            raise ProxyProtocolError(reason="a header from a source not allowed to send one", peer_address=pending.peer)

    def _time_left(self, pending: PendingConnection) -> float:
        """handshake_timeout bounds accept -> authenticated, the wait for the first line included."""
        return max(0.1, self.host.ssh_config.handshake_timeout - (time.monotonic() - pending.accepted_at))

    async def handshake(self, pending: PendingConnection) -> DeviceConnection:
        host = self.host
        return await ssh_handshake(
            pending.sock,
            pending.peer,
            host.trust,
            host.ssh_config,
            host.ssh_options,
            host.client_keys,
            timeout=self._time_left(pending),
        )

    def refusal_kind(self, exc: CallHomeError) -> str:
        return self.kind
