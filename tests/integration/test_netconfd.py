"""NETCONF over SSH call home against real third-party peers on loopback:
Debian's yuma123 netconfd behind a private OpenSSH sshd, calling home through a
socat reverse relay (RFC 8071 S1: the device opens the TCP connection)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from ncclient.transport.errors import TransportError as NcTransportError

import callhome_transport
from callhome_transport import (
    CallHomeServer,
    Device,
    HostKeyPin,
    Inventory,
    SSHClientConfig,
    SSHCredentials,
)

from .netconfd_peer import (
    NACM_GROUP_FILTER,
    InThread,
    NetconfdDevice,
    ReverseRelay,
    free_port,
    has_ipv6_loopback,
    nacm_group_config,
    wait_rejected,
)

pytestmark = pytest.mark.integration


def inventory(*devices: tuple[str, NetconfdDevice], password: str | None = None) -> Inventory:
    return Inventory(
        [
            Device(
                name=name,
                host_keys=(HostKeyPin.parse(dev.host_key_public_line),),
                credentials=SSHCredentials(username=dev.username, password=password or dev.password),
            )
            for name, dev in devices
        ]
    )


@pytest.fixture
def server(netconfd: NetconfdDevice) -> Iterator[CallHomeServer]:
    with CallHomeServer(inventory(("SN-0001", netconfd)), listen_address="127.0.0.1", listen_port=0) as srv:
        yield srv


def groups(m: object) -> list[str]:
    xml = m.get_config(source="running", filter=NACM_GROUP_FILTER).xml  # type: ignore[attr-defined]
    return [part.split("</name>")[0] for part in xml.split("<name>")[1:]]


def test_get_config_and_edit_commit_seen_by_later_get_config(netconfd: NetconfdDevice, server: CallHomeServer) -> None:
    with ReverseRelay(listener_port=server.listen_port, device_port=netconfd.ssh_port):
        with server.netconf("SN-0001", timeout=15) as m:
            assert ":candidate" in " ".join(m.server_capabilities)
            before = groups(m)
            assert "callhome-ops" not in before
            m.edit_config(target="candidate", config=nacm_group_config("callhome-ops", "alice"))
            # no <validate> before <commit> here: netconfd 2.13 then commits nothing
            # (a yuma123 quirk seen with stock ncclient too, not a call-home matter)
            m.commit()
        # a later session (a new channel on the same call-home connection) sees it
        with server.netconf("SN-0001", timeout=5) as m:
            assert "callhome-ops" in groups(m)
    assert netconfd.log_has(r"Accepted password for chtest from 127\.0\.0\.1")


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_call_home(make_netconfd: Callable[..., NetconfdDevice]) -> None:
    device = make_netconfd(listen_host="::1")
    with (
        CallHomeServer(inventory(("SN-V6", device)), listen_address="::1", listen_port=0) as server,
        ReverseRelay(
            listener_host="::1", listener_port=server.listen_port, device_host="::1", device_port=device.ssh_port
        ),
        server.netconf("SN-V6", timeout=15) as m,
    ):
        assert groups(m) == []
        [event] = server.connected()
        assert event.peer_address[0] == "::1"
    assert device.log_has(r"Accepted password for chtest from ::1")


def test_two_devices_with_different_keys_on_one_port(make_netconfd: Callable[..., NetconfdDevice]) -> None:
    a = make_netconfd(key_type="ed25519")
    # b has only its ECDSA key: we offer the union of the pinned types
    # (ed25519 first), so a b that also had an ed25519 key would present that
    # one (docs/inventory.md: pin every host key of a device)
    b = make_netconfd(key_type="ecdsa", host_key_types=("ecdsa",))
    with (
        CallHomeServer(inventory(("SN-A", a), ("SN-B", b)), listen_address="127.0.0.1", listen_port=0) as server,
        ReverseRelay(listener_port=server.listen_port, device_port=a.ssh_port),
        ReverseRelay(listener_port=server.listen_port, device_port=b.ssh_port),
    ):
        with server.netconf("SN-B", timeout=15) as mb:
            mb.edit_config(target="candidate", config=nacm_group_config("only-on-b", "bob"))
            mb.commit()
        with server.netconf("SN-A", timeout=15) as ma, server.netconf("SN-B", timeout=15) as mb:
            assert "only-on-b" not in groups(ma)
            assert "only-on-b" in groups(mb)
        by_name = {e.device: e.fingerprint for e in server.connected()}
    assert by_name == {"SN-A": a.host_key_fingerprint, "SN-B": b.host_key_fingerprint}


def test_unknown_host_key_zero_auth_attempts(
    make_netconfd: Callable[..., NetconfdDevice], netconfd: NetconfdDevice, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = make_netconfd()
    with (
        caplog.at_level(logging.WARNING, logger="callhome_transport"),
        CallHomeServer(inventory(("SN-0001", netconfd)), listen_address="127.0.0.1", listen_port=0) as server,
    ):
        with ReverseRelay(listener_port=server.listen_port, device_port=stranger.ssh_port) as relay:
            relay.wait(10)  # we hang up; socat ends
        [rejected] = wait_rejected(server)
        assert rejected.reason == "unknown-device"
        assert rejected.fingerprint == stranger.host_key_fingerprint
    # sshd saw the key exchange end and not a single user-authentication request
    assert stranger.auth_attempts() == 0
    assert stranger.log_has(r"Connection (closed|reset) by 127\.0\.0\.1|Received disconnect from 127\.0\.0\.1")
    assert stranger.host_key_fingerprint in caplog.text
    assert "rejected unknown device" in caplog.text


def test_wrong_password_is_reported_as_auth_failed(netconfd: NetconfdDevice) -> None:
    inv = inventory(("SN-0001", netconfd), password="definitely-wrong")
    before = netconfd.auth_attempts()
    with CallHomeServer(inv, listen_address="127.0.0.1", listen_port=0) as server:
        with ReverseRelay(listener_port=server.listen_port, device_port=netconfd.ssh_port) as relay:
            relay.wait(10)
        [rejected] = wait_rejected(server)
        assert rejected.reason == "auth-failed"
        assert rejected.device == "SN-0001"
        # the entry says which key identified the device and what failed
        assert rejected.fingerprint == netconfd.host_key_fingerprint
        assert rejected.key_type == "ssh-ed25519"
        assert "authentication as 'chtest' failed on device SN-0001" in rejected.detail
        # a wait that ends with no connection reports the refusal, not "did not call home"
        with pytest.raises(callhome_transport.AuthenticationFailedError) as info:
            server.netconf("SN-0001", timeout=0.2)
        assert info.value.refused_at == rejected.at
    assert netconfd.auth_attempts() > before
    assert netconfd.log_has(r"Failed password for chtest from 127\.0\.0\.1")


def test_refusal_during_the_wait_is_raised_at_once(netconfd: NetconfdDevice) -> None:
    """netconf() waiting for a device that calls and is refused (wrong
    password) raises that refusal when it happens, not a timeout later."""
    inv = inventory(("SN-0001", netconfd), password="definitely-wrong")
    with CallHomeServer(inv, listen_address="127.0.0.1", listen_port=0) as server:
        waiter = InThread(server.netconf, "SN-0001", timeout=60)
        started = time.monotonic()
        with ReverseRelay(listener_port=server.listen_port, device_port=netconfd.ssh_port):
            error = waiter.outcome(30)
        assert time.monotonic() - started < 30
        assert isinstance(error, callhome_transport.AuthenticationFailedError), error
        assert error.device == "SN-0001"
        assert error.fingerprint == netconfd.host_key_fingerprint
        assert error.refused_at >= time.time() - 60
        assert "was refused" in str(error) and "did not call home" not in str(error)


def test_dead_device_detected_within_keepalive_window(
    netconfd: NetconfdDevice, caplog: pytest.LogCaptureFixture
) -> None:
    interval, count = 0.5, 2
    config = SSHClientConfig(keepalive_interval=interval, keepalive_count_max=count)
    window = interval * (count + 1)
    with (
        caplog.at_level(logging.INFO, logger="callhome_transport"),
        CallHomeServer(inventory(("SN-0001", netconfd)), listen_address="127.0.0.1", listen_port=0, ssh=config) as srv,
        ReverseRelay(listener_port=srv.listen_port, device_port=netconfd.ssh_port) as relay,
    ):
        m = srv.netconf("SN-0001", timeout=15)
        assert groups(m) is not None
        time.sleep(interval * 3)  # idle but alive: keepalives are answered
        assert [e.device for e in srv.connected()] == ["SN-0001"]
        relay.freeze()  # the device goes silent; TCP stays open
        frozen_at = time.monotonic()
        while srv.connected() and time.monotonic() - frozen_at < window + 5:
            time.sleep(0.05)
        detected = time.monotonic() - frozen_at
        assert not srv.connected()
        assert detected <= window + 1.0, detected
        # a caller still holding the Manager gets a clear error, not a hang
        with pytest.raises((NcTransportError, callhome_transport.CallHomeError)):
            m.get_config(source="running")
        m.close_session() if m.connected else None
    assert "not responding to keepalive" in caplog.text


def test_listener_survives_hostile_connections_and_serves_a_real_device(netconfd: NetconfdDevice) -> None:
    config = SSHClientConfig(handshake_timeout=1.0)
    with CallHomeServer(
        inventory(("SN-0001", netconfd)), listen_address="127.0.0.1", listen_port=0, ssh=config
    ) as server:
        port = server.listen_port
        garbage = socket.create_connection(("127.0.0.1", port))
        garbage.sendall(bytes(range(256)) * 64)
        silent = socket.create_connection(("127.0.0.1", port))
        half_open = socket.create_connection(("127.0.0.1", port))
        half_open.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        half_open.shutdown(socket.SHUT_WR)
        reset = socket.create_connection(("127.0.0.1", port))
        reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        reset.close()  # RST
        with (
            ReverseRelay(listener_port=port, device_port=netconfd.ssh_port),
            server.netconf("SN-0001", timeout=15) as m,
        ):
            assert isinstance(groups(m), list)
        wait_rejected(server, 4)
        reasons = sorted(r.reason for r in server.rejected())
        assert "handshake-timeout" in reasons
        assert len(reasons) == 4
        for s in (garbage, silent, half_open):
            s.close()


def test_call_home_drop_in_against_netconfd(netconfd: NetconfdDevice) -> None:
    port = free_port()
    hostkey_b64 = netconfd.host_key_public_line.split()[1]
    relay = ReverseRelay(listener_port=port, device_port=netconfd.ssh_port)
    threading.Timer(0.2, relay.start).start()
    try:
        with callhome_transport.call_home(
            host="127.0.0.1",
            port=port,
            username=netconfd.username,
            password=netconfd.password,
            hostkey_b64=hostkey_b64,
            timeout=15,
        ) as m:
            assert isinstance(groups(m), list)
            assert m.session_id is not None
    finally:
        time.sleep(0.3)
        relay.stop()


def test_first_rpc_survives_netconfd_reading_it_with_our_hello(netconfd: NetconfdDevice) -> None:
    """yuma123 netconfd drops an RPC read in the same buffer as the client's
    hello (reproduced below on a raw channel); our session waits HELLO_SETTLE
    after its hello before the first RPC, so a slow device read cannot merge them."""
    import asyncio

    import asyncssh

    hello = (
        b'<hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><capabilities>'
        b"<capability>urn:ietf:params:netconf:base:1.1</capability></capabilities></hello>]]>]]>"
    )
    rpc = (
        b'<rpc xmlns="urn:ietf:params:xml:ns:netconf:base:1.0" message-id="1">'
        b"<get-config><source><running/></source></get-config></rpc>"
    )
    chunk = b"\n#%d\n%s\n##\n" % (len(rpc), rpc)

    async def merged() -> bool:
        async with asyncssh.connect(
            "127.0.0.1",
            netconfd.ssh_port,
            username=netconfd.username,
            password=netconfd.password,
            known_hosts=None,
            client_keys=None,
            agent_path=None,
            config=None,
        ) as conn:
            writer, reader, _ = await conn.open_session(subsystem="netconf", encoding=None)
            data = b""
            while b"]]>]]>" not in data:
                data += await reader.read(65536)
            writer.write(hello + chunk)  # hello and RPC in one write
            try:
                return b"rpc-reply" in await asyncio.wait_for(reader.read(65536), 2)
            except TimeoutError:
                return False

    assert asyncio.run(merged()) is False  # the device bug is real
    with (
        CallHomeServer(inventory(("SN-0001", netconfd)), listen_address="127.0.0.1", listen_port=0) as server,
        ReverseRelay(listener_port=server.listen_port, device_port=netconfd.ssh_port),
    ):
        for _ in range(5):
            with server.netconf("SN-0001", timeout=15, rpc_timeout=5) as m:
                assert isinstance(groups(m), list)
