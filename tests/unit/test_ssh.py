"""Guards for the SSH room's one reliance on asyncssh internals, and its config."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import socket
from pathlib import Path

import asyncssh
import pytest

from callhome_transport.errors import TransportError
from callhome_transport.identity.inventory import SSHCredentials
from callhome_transport.identity.trust import AcceptAnyKey
from callhome_transport.transports.ssh import (
    KEEPALIVE_SLOT,
    OPENSSH_HOST_KEY_ALGORITHMS,
    SSHClientConfig,
    SSHDeviceConnection,
    _bind_username,
    host_key_algorithms,
    ssh_handshake,
)


def test_asyncssh_reads_the_username_from_the_attribute_we_set() -> None:
    # _bind_username sets SSHClientConnection._username after identification
    # (RFC 8071 C7).  If asyncssh stops using that attribute when it builds the
    # userauth request, the integration tests would fail on authentication;
    # this catches it earlier and says why.
    source = inspect.getsource(asyncssh.connection.SSHConnection)
    assert "String(self._username)" in source
    assert "self._username = options.username" in inspect.getsource(asyncssh.connection.SSHClientConnection.__init__)

    class Holder:
        _username = "before"

    holder = Holder()
    _bind_username(holder, "admin")  # type: ignore[arg-type]
    assert holder._username == "admin"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"handshake_timeout": 0}, "handshake_timeout"),
        ({"keepalive_interval": -1}, "keepalive_interval"),
        ({"keepalive_count_max": 0}, "keepalive_count_max"),
        ({"keepalive_jitter": 1.5}, "keepalive_jitter"),
        ({"keepalive_jitter": -0.1}, "keepalive_jitter"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SSHClientConfig(**kwargs)  # type: ignore[arg-type]


def test_options_read_nothing_from_the_user_environment() -> None:
    options = SSHClientConfig(keepalive_interval=5, keepalive_count_max=2).options()
    assert options.client_keys is None  # no ~/.ssh/id_* keys
    assert options.agent_path is None  # no ssh-agent
    assert options.password is None  # password only from the identified device's credentials
    assert options.keepalive_interval == 5
    assert options.keepalive_count_max == 2


def test_offer_is_the_union_of_pinned_types_in_openssh_order() -> None:
    assert host_key_algorithms(["ssh-rsa", "ssh-ed25519"]) == ("ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")
    assert host_key_algorithms(["ecdsa-sha2-nistp384"]) == ("ecdsa-sha2-nistp384",)
    assert host_key_algorithms(["ssh-ed25519", "ssh-ed25519"]) == ("ssh-ed25519",)


def test_unknown_type_or_no_pin_offers_openssh_order_first() -> None:
    # a SHA256: pin (type "") or no pin at all: any key may be the pinned one
    for key_types in ([""], [], ["ssh-ed25519", ""]):
        offer = host_key_algorithms(key_types)
        assert offer[: len(OPENSSH_HOST_KEY_ALGORITHMS)] == OPENSSH_HOST_KEY_ALGORITHMS
        assert offer[-1] == "ssh-rsa"


def test_types_asyncssh_cannot_verify_are_not_offered() -> None:
    assert host_key_algorithms(["ssh-unheard-of"]) == host_key_algorithms([])
    assert host_key_algorithms(["ssh-unheard-of", "ssh-ed25519"]) == ("ssh-ed25519",)


def test_options_carry_the_offer_and_default_to_openssh_order() -> None:
    assert SSHClientConfig().options(["ssh-ed25519"]).server_host_key_algs == ["ssh-ed25519"]
    default = SSHClientConfig().options().server_host_key_algs
    assert default[0] == "ssh-ed25519"
    assert "rsa-sha2-256" in default


@pytest.mark.filterwarnings("ignore:Warning. bcrypt.kdf.. called with only:UserWarning")
def test_private_keys_are_decrypted_once_at_load_not_per_handshake(tmp_path: Path) -> None:
    # failed before: every handshake read (and, with a passphrase, decrypted) the key file on the event loop
    import logging

    import asyncssh

    from callhome_transport._log import ContextAdapter
    from callhome_transport.identity.inventory import SSHCredentials
    from callhome_transport.identity.trust import Identity
    from callhome_transport.transports.ssh import _DeviceClient, load_client_keys

    path = tmp_path / "id_ed25519"
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(path, passphrase="s3cret", rounds=1)  # a fast KDF: the test times nothing
    creds = SSHCredentials(username="admin", private_key=path, private_key_passphrase="s3cret")
    missing = SSHCredentials(username="admin", private_key=tmp_path / "absent")
    keys = load_client_keys([creds, creds, missing])
    assert list(keys) == [(path, "s3cret")]
    path.unlink()  # a handshake now must not need the file
    client = _DeviceClient(
        trust=None,  # type: ignore[arg-type]
        peer=("192.0.2.7", 1),
        logger=ContextAdapter(logging.getLogger("test")),
        client_keys=keys,
    )
    client.identity = Identity(device="R1", credentials=creds, fingerprint="SHA256:x")
    offered = client.public_key_auth_requested()
    assert offered is keys[(path, "s3cret")]
    assert offered.public_data == key.public_data


def test_a_connection_keeps_the_factory_and_waiter_it_was_made_with() -> None:
    # _connect_prepared shares one options object between connections and sets
    # its protocol_factory, waiter, host and port just before making each
    # connection: that is only right while asyncssh reads them in the
    # connection's __init__ alone (and in connect(), which we no longer call).
    init = inspect.getsource(asyncssh.connection.SSHConnection.__init__)
    assert "self._protocol_factory = options.protocol_factory" in init
    assert "self._waiter = options.waiter if wait else None" in init
    client_init = inspect.getsource(asyncssh.connection.SSHClientConnection.__init__)
    assert "self._host = options.host" in client_init
    assert "self._port = options.port" in client_init
    source = inspect.getsource(asyncssh.connection)
    assert source.count("options.waiter") == 4  # _connect: set, cancel, await; __init__: read
    assert source.count("options.protocol_factory") == 1


class _PasswordServer(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return (username, password) == ("admin", "secret")


def test_handshakes_read_nothing_per_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    # asyncssh.connect() rebuilt the options on every connection in a worker
    # thread, calling getpass.getuser(): with the open-file limit reached that
    # failed as "Unknown local username" (issue 16).  Options prepared once are
    # reused: three handshakes on one options object, with the user-name
    # look-up failing, all authenticate, each with its own client.  (Failed
    # before _connect_prepared: asyncssh.connect raised KeyError.)
    import getpass

    config = SSHClientConfig(handshake_timeout=10)
    options = config.options()

    def no_user() -> str:
        raise KeyError("getpwuid(): uid not found")

    monkeypatch.setattr(getpass, "getuser", no_user)

    async def handshake(n: int) -> str:
        conn = await handshake_with_server(config, options, f"D{n}")
        conn.close()
        return conn.device

    async def main() -> list[str]:
        return list(await asyncio.gather(*(handshake(n) for n in range(3))))

    assert asyncio.run(main()) == ["D0", "D1", "D2"]


_HOST_KEY = asyncssh.generate_private_key("ssh-ed25519")


async def handshake_with_server(
    config: SSHClientConfig,
    options: asyncssh.SSHClientConnectionOptions | None,
    device: str,
    *,
    keep: list[asyncssh.SSHServerConnection] | None = None,
    **server: object,
) -> SSHDeviceConnection:
    """Our handshake against an asyncssh server over loopback TCP (``server``:
    its options, e.g. the algorithms it accepts).  The server's side is closed
    once we are authenticated, unless ``keep`` takes it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:  # a TCP peer, as the listener accepts
        device_sock = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    acceptor = asyncio.ensure_future(
        asyncssh.run_server(sock=device_sock, server_host_keys=[_HOST_KEY], server_factory=_PasswordServer, **server)
    )
    trust = AcceptAnyKey(device, SSHCredentials(username="admin", password="secret"))
    try:
        conn = await ssh_handshake(ours, ("127.0.0.1", 40000), trust, config, options)
    finally:
        with contextlib.suppress(Exception):
            server_conn = await acceptor
            if keep is None:
                server_conn.close()
            else:
                keep.append(server_conn)
    return conn


def test_first_keepalives_of_a_burst_are_spread_over_the_interval() -> None:
    # asyncssh arms a connection's keepalive timer exactly keepalive_interval
    # after authentication; in a storm thousands authenticate in one event-loop
    # iteration, so their keepalives fell due together, every interval (issue 16:
    # 600-1,400 keepalives in each of four back-to-back iterations of 60-80 ms
    # with 10,000 sessions).  20 connections made together: their first
    # keepalives spread over the interval, on KEEPALIVE_SLOT boundaries (those
    # due together run in one iteration: spread one by one, they doubled the
    # idle CPU of the manager and of the devices).  Failed before
    # _spread_keepalive: all 20 due within a second of 60 s.
    async def due(config: SSHClientConfig, count: int) -> tuple[float, list[float]]:
        servers: list[asyncssh.SSHServerConnection] = []
        conns = await asyncio.gather(
            *(handshake_with_server(config, None, f"D{n}", keep=servers) for n in range(count))
        )
        now = asyncio.get_running_loop().time()
        try:
            return now, [conn.conn._keepalive_timer.when() for conn in conns]  # type: ignore[attr-defined]
        finally:
            for conn in conns:
                conn.close()
            for server in servers:
                server.close()

    now, spread = asyncio.run(due(SSHClientConfig(keepalive_interval=60), 20))
    assert all(0 < when - now <= 60 for when in spread)
    assert max(spread) - min(spread) > 20  # 20 uniform draws within 20 s of each other: p < 1e-7
    assert all(abs(when / KEEPALIVE_SLOT - round(when / KEEPALIVE_SLOT)) < 1e-6 for when in spread)
    _, fixed = asyncio.run(due(SSHClientConfig(keepalive_interval=60, keepalive_jitter=0), 20))
    assert max(fixed) - min(fixed) < 5  # asyncssh's own timer


def test_a_spread_keepalive_is_sent_answered_and_then_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    # _spread_keepalive replaces the timer asyncssh armed (_keepalive_timer,
    # armed with _keepalive_timer_callback): the early keepalive must really go
    # out and be answered, and asyncssh must then keep the full interval.
    monkeypatch.setattr(random, "random", lambda: 0.99)  # the first keepalive 0.6 s into a 60 s interval

    async def main() -> tuple[float, float, int]:
        servers: list[asyncssh.SSHServerConnection] = []
        conn = await handshake_with_server(SSHClientConfig(keepalive_interval=60), None, "D1", keep=servers)
        loop = asyncio.get_running_loop()
        try:
            first = conn.conn._keepalive_timer.when() - loop.time()  # type: ignore[attr-defined]
            deadline = loop.time() + 10
            # sending re-arms the timer a whole interval later and counts the
            # keepalive unanswered until its reply arrives (which re-arms it again)
            while conn.conn._keepalive_timer.when() - loop.time() < 30:  # type: ignore[attr-defined]
                assert loop.time() < deadline, "no keepalive sent"
                await asyncio.sleep(0.02)
            while conn.conn._keepalive_count:  # type: ignore[attr-defined]
                assert loop.time() < deadline, "no keepalive reply"
                await asyncio.sleep(0.02)
            return first, conn.conn._keepalive_timer.when() - loop.time(), conn.conn._keepalive_count  # type: ignore[attr-defined]
        finally:
            conn.close()
            servers[0].close()

    first, then, unanswered = asyncio.run(main())
    assert first <= 0.6
    assert 55 < then <= 60
    assert unanswered == 0


def test_options_are_built_once_per_configuration_and_offer() -> None:
    config = SSHClientConfig(keepalive_interval=7)
    assert config.options() is SSHClientConfig(keepalive_interval=7).options()
    assert config.options(["ssh-ed25519"]) is config.options(("ssh-ed25519",))
    assert config.options(["ssh-ed25519"]) is not config.options()


def test_algorithm_lists_are_checked_and_offered_in_order() -> None:
    with pytest.raises(ValueError, match=r"kex_algs: no-such-kex not supported"):
        SSHClientConfig(kex_algs=("curve25519-sha256", "no-such-kex"))
    with pytest.raises(ValueError, match="list of algorithm names"):
        SSHClientConfig(encryption_algs="aes128-ctr")  # type: ignore[arg-type]
    config = SSHClientConfig(
        kex_algs=("curve25519-sha256",),
        encryption_algs=("aes128-gcm@openssh.com", "aes256-ctr"),
        mac_algs=("hmac-sha2-256-etm@openssh.com",),
        server_host_key_algs=("ecdsa-sha2-nistp256",),
    )
    options = config.options(["ssh-ed25519"])
    assert options.kex_algs == [b"curve25519-sha256"]
    assert options.encryption_algs == [b"aes128-gcm@openssh.com", b"aes256-ctr"]
    assert options.mac_algs == [b"hmac-sha2-256-etm@openssh.com"]
    assert options.server_host_key_algs == ["ecdsa-sha2-nistp256"]  # the config's offer wins
    defaults = SSHClientConfig().options()
    offered = [alg for alg in defaults.kex_algs if not alg.startswith(b"gss-")]  # no GSS here (gss_host=None)
    assert offered[0] == b"mlkem768x25519-sha256"  # post-quantum stays the default


def test_a_handshake_uses_the_configured_algorithms() -> None:
    classic = SSHClientConfig(kex_algs=("curve25519-sha256",), encryption_algs=("aes128-gcm@openssh.com",))

    async def negotiated() -> str:
        conn = await handshake_with_server(classic, None, "D1")
        conn.close()
        return str(conn.conn.get_extra_info("send_cipher"))

    assert asyncio.run(negotiated()) == "aes128-gcm@openssh.com"

    async def no_common_kex() -> None:
        post_quantum = SSHClientConfig(kex_algs=("mlkem768x25519-sha256",), handshake_timeout=5)
        await handshake_with_server(post_quantum, None, "D2", kex_algs=["curve25519-sha256"])

    with pytest.raises(TransportError, match="key exchange"):
        asyncio.run(no_common_kex())
