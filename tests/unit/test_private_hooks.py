"""Guards for the private attributes of other libraries that we use (listed in
docs/design.md): each test exercises the hook the way our code does, in
memory, and fails loudly when a new version of the library changes it."""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from callhome_transport.transports.ssh import _bind_username
from callhome_transport.transports.tls import _verified_chain
from tests.pki import DevicePKI


def test_asyncssh_authenticates_with_the_user_name_set_after_identification() -> None:
    """``_bind_username`` sets ``SSHClientConnection._username`` from
    ``validate_host_public_key`` (the device is known only then); asyncssh
    must use it for the authentication that follows."""
    seen: list[str] = []

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            seen.append(username)
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            return (username, password) == ("admin", "secret")

    class Client(asyncssh.SSHClient):
        def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
            self.conn = conn

        def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
            _bind_username(self.conn, "admin")
            return True

        def password_auth_requested(self) -> str:
            return "secret"

    async def main() -> None:
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        ours, theirs = socket.socketpair()
        loop = asyncio.get_running_loop()
        server_done: asyncio.Future[None] = loop.create_future()

        async def serve() -> None:
            conn = await asyncssh.run_server(theirs, server_factory=Server, server_host_keys=[host_key])
            await conn.wait_closed()
            server_done.set_result(None)

        server = loop.create_task(serve())
        options = asyncssh.SSHClientConnectionOptions(
            username="callhome-unidentified", known_hosts=([], [], []), config=None, agent_path=None, client_keys=None
        )
        conn = await asyncio.wait_for(
            asyncssh.connect(sock=ours, host="device", options=options, client_factory=Client), 10
        )
        conn.close()
        await conn.wait_closed()
        await asyncio.wait_for(server_done, 10)
        await server

    asyncio.run(main())
    assert seen == ["admin"]


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="Python 3.13 has the public SSLObject.get_verified_chain")
def test_ssl_keeps_get_verified_chain_on_the_private_sslobj(tmp_path: Path) -> None:
    """Before Python 3.13 the verified chain is only on ``SSLObject._sslobj``;
    ``_verified_chain`` must read it, end-entity first."""
    pki = DevicePKI(tmp_path)
    cert, key = pki.device_files("SN-0003")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.load_verify_locations(pki.root_a_pem)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    ours = client.wrap_bio(c_in, c_out)
    theirs = server.wrap_bio(s_in, s_out, server_side=True)
    assert not hasattr(ours, "get_verified_chain")  # else this guard is moot: the public method is used
    done = {id(ours): False, id(theirs): False}
    for _ in range(20):
        for side in (ours, theirs):
            if not done[id(side)]:
                try:
                    side.do_handshake()
                    done[id(side)] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    chain = _verified_chain(ours)
    assert chain[0] == pki.devices["SN-0003"].cert
    assert chain[-1] == pki.root_a.cert


def test_tlslite_sends_every_record_through_send_msg_through_socket() -> None:
    """``_LockedTLSConnection`` makes record writes atomic by wrapping
    tlslite-ng's ``_sendMsgThroughSocket``; every record must go through it."""
    tls_strict = pytest.importorskip("callhome_transport.transports.tls_strict")
    if not tls_strict.strict_available():
        pytest.skip("tlslite-ng is not installed")
    from tlslite.messages import Alert  # type: ignore[import-untyped]

    calls: list[Any] = []

    class Counting(tls_strict._tlslite().LockedTLSConnection):  # type: ignore[misc, name-defined]
        def _sendMsgThroughSocket(self, msg: Any) -> Any:
            calls.append(msg)
            yield from super()._sendMsgThroughSocket(msg)

    ours, theirs = socket.socketpair()
    conn = Counting(ours)
    for _ in conn._sendMsg(Alert().create(0, 1)):  # close_notify, warning: one record
        pass
    assert calls, "tlslite-ng no longer sends records through _sendMsgThroughSocket"
    assert theirs.recv(64)[:1] == b"\x15"  # an alert record reached the socket
    ours.close()
    theirs.close()
