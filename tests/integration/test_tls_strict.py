"""Strict RFC 8071 C4 mode: the ClientHello advertises the heartbeat extension
with peer_allowed_to_send (RFC 6520); heartbeats flow both ways with a device
that supports them (a tlslite-ng TLS server, third-party code); NETCONF works
against stunnel+netconfd (OpenSSL 3, which does not negotiate heartbeats)."""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from callhome_transport import CallHomeServer, Inventory, TLSClientConfig
from callhome_transport.transports.tls_strict import HeartbeatConfig, strict_available

from ..pki import DevicePKI
from .netconfd_peer import NACM_GROUP_FILTER, NetconfdDevice, ReverseRelay, wait_rejected
from .stunnel_peer import StunnelDevice, stunnel_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not strict_available(), reason="tlslite-ng is not installed"),
]

HEARTBEAT = 15  # RFC 6520 extension type
PEER_ALLOWED_TO_SEND = 1


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevicePKI:
    return DevicePKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def server(pki: DevicePKI) -> Iterator[CallHomeServer]:
    inventory = Inventory.from_dict(
        {
            "devices": {
                "SN-0003": {
                    "transport": "tls",
                    "tls": {"issuers": [str(pki.root_a_pem)], "identifier": "SN-0003", "c4_strict": True},
                },
                "SN-0004": {"transport": "tls", "tls": {"issuers": [str(pki.root_a_pem)], "identifier": "SN-0004"}},
            }
        }
    )
    config = TLSClientConfig(certfile=pki.manager_cert, keyfile=pki.manager_key, handshake_timeout=3)
    with CallHomeServer(
        inventory,
        listen_address="127.0.0.1",
        listen_port=None,
        tls=config,
        tls_listen_port=0,
        tls_strict_listen_port=0,
        heartbeat=HeartbeatConfig(interval=0.2, missed_max=3),
    ) as srv:
        yield srv


def client_hello_extensions(port: int) -> dict[int, bytes]:
    """Call the listener like a device would, read the manager's ClientHello
    and return its extensions by type."""
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.settimeout(5)
        header = b""
        while len(header) < 5:
            header += sock.recv(5 - len(header))
        content_type, _version, length = struct.unpack("!BHH", header)
        assert content_type == 22  # handshake
        body = b""
        while len(body) < length:
            body += sock.recv(length - len(body))
    assert body[0] == 1  # ClientHello
    pos = 4 + 2 + 32
    pos += 1 + body[pos]  # session id
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")  # cipher suites
    pos += 1 + body[pos]  # compression methods
    end = pos + 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 2
    extensions: dict[int, bytes] = {}
    while pos < end:
        ext_type, ext_len = struct.unpack("!HH", body[pos : pos + 4])
        extensions[ext_type] = body[pos + 4 : pos + 4 + ext_len]
        pos += 4 + ext_len
    return extensions


def test_strict_client_hello_advertises_peer_allowed_to_send(server: CallHomeServer) -> None:
    strict = client_hello_extensions(server.tls_strict_listen_port)
    assert strict[HEARTBEAT] == bytes([PEER_ALLOWED_TO_SEND])
    default = client_hello_extensions(server.tls_listen_port)
    assert HEARTBEAT not in default  # Python's ssl (OpenSSL 3) cannot send it


def test_strict_mode_serves_netconf_against_stunnel(
    tmp_path: Path, netconfd: NetconfdDevice, pki: DevicePKI, server: CallHomeServer
) -> None:
    if stunnel_available():
        pytest.skip(stunnel_available())
    cert, key = pki.device_files("SN-0003")
    with (
        StunnelDevice(tmp_path, netconfd, certfile=cert, keyfile=key, client_ca=pki.manager_ca_pem) as device,
        ReverseRelay(listener_port=server.tls_strict_listen_port, device_port=device.port),
    ):
        event = server.wait_for("SN-0003", timeout=15)
        assert event.heartbeat_negotiated is False  # OpenSSL 3 does not do heartbeats
        with server.netconf("SN-0003", timeout=15) as m:
            assert "<data" in m.get_config(source="running", filter=NACM_GROUP_FILTER).xml


def test_c4_strict_device_on_the_default_listener_is_refused(
    tmp_path: Path, netconfd: NetconfdDevice, pki: DevicePKI, server: CallHomeServer
) -> None:
    cert, key = pki.device_files("SN-0003")
    with (
        StunnelDevice(tmp_path, netconfd, certfile=cert, keyfile=key, client_ca=pki.manager_ca_pem) as device,
        ReverseRelay(listener_port=server.tls_listen_port, device_port=device.port) as relay,
    ):
        relay.wait(10)
    [rejected] = wait_rejected(server)
    assert "must call the strict listener" in rejected.detail


DEVICE_HELLO = (
    b'<hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><capabilities>'
    b"<capability>urn:ietf:params:netconf:base:1.0</capability></capabilities>"
    b"<session-id>7</session-id></hello>]]>]]>"
)
CLIENT_HELLO = (
    b'<hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><capabilities>'
    b"<capability>urn:ietf:params:netconf:base:1.0</capability></capabilities></hello>]]>]]>"
)


def test_heartbeats_both_ways_with_a_heartbeat_capable_device(
    pki: DevicePKI, server: CallHomeServer, caplog: pytest.LogCaptureFixture
) -> None:
    from tlslite import HandshakeSettings, TLSConnection, X509CertChain
    from tlslite.utils.keyfactory import parsePEMKey

    cert, key = pki.device_files("SN-0003")
    responses: list[bytes] = []
    result: dict[str, object] = {}

    def device() -> None:  # a tlslite-ng TLS server calling home (RFC 8071 S1-S4)
        sock = socket.create_connection(("127.0.0.1", server.tls_strict_listen_port), 5)
        chain = X509CertChain()
        chain.parsePemList(cert.read_text())
        settings = HandshakeSettings()
        settings.use_heartbeat_extension = True
        settings.heartbeat_response_callback = lambda msg: responses.append(bytes(msg.payload))
        settings.maxVersion = (3, 3)
        tls = TLSConnection(sock)
        tls.handshakeServer(
            certChain=chain, privateKey=parsePEMKey(key.read_text(), private=True), reqCert=True, settings=settings
        )
        result["device_may_send"] = tls.heartbeat_can_send
        tls.write(DEVICE_HELLO)
        tls.send_heartbeat_request(b"ping-from-device", 16)
        read = b""
        while b"manager-data" not in read:  # the server's hello, then what the client sent
            read += bytes(tls.read(max=65536, min=1))  # processes our HeartbeatResponse on the way
        result["read"] = read
        tls.close()

    thread = threading.Thread(target=device, daemon=True)
    with caplog.at_level(logging.DEBUG, logger="callhome_transport.transports.tls_strict"):
        thread.start()
        event = server.wait_for("SN-0003", timeout=10)
        assert event.heartbeat_negotiated is True
        stream = server.open_netconf_stream("SN-0003", timeout=5)
        stream.settimeout(5)
        replayed = b""
        while not replayed.endswith(b"]]>]]>"):
            replayed += stream.recv(65536)
        assert b"<session-id>7</session-id>" in replayed  # the device's hello, replayed by the server
        threading.Event().wait(0.6)  # our own heartbeats (every 0.2 s) go out meanwhile
        stream.sendall(CLIENT_HELLO + b"manager-data")
        thread.join(10)
        stream.close()
    assert result["device_may_send"] is True  # we advertised peer_allowed_to_send
    read = result["read"]
    assert isinstance(read, bytes) and read.endswith(b"]]>]]>manager-data")  # our hello went out, the client's did not
    assert b"<session-id>" not in read
    assert responses == [b"ping-from-device"]  # we answered the device's HeartbeatRequest
    assert "HeartbeatResponse received" in caplog.text  # the device answered ours
    assert os.environ.get("CALLHOME_NO_SUCH") is None


def sn_0003_only(pki: DevicePKI) -> Inventory:
    tls = {"issuers": [str(pki.root_a_pem)], "identifier": "SN-0003"}
    return Inventory.from_dict({"devices": {"SN-0003": {"transport": "tls", "tls": tls}}})


def test_str_paths_work_in_strict_mode_and_no_source_is_blamed(
    tmp_path: Path, netconfd: NetconfdDevice, pki: DevicePKI
) -> None:
    # failed before the fix: AttributeError ('str' has no read_text) in every
    # strict handshake, each recorded as the device's failure toward a block
    if stunnel_available():
        pytest.skip(stunnel_available())
    inventory = sn_0003_only(pki)
    config = TLSClientConfig(certfile=str(pki.manager_cert), keyfile=str(pki.manager_key), handshake_timeout=5)
    assert isinstance(config.certfile, Path) and isinstance(config.keyfile, Path)
    cert, key = pki.device_files("SN-0003")
    with (
        CallHomeServer(
            inventory, listen_address="127.0.0.1", listen_port=None, tls=config, tls_strict_listen_port=0
        ) as server,
        StunnelDevice(tmp_path, netconfd, certfile=cert, keyfile=key, client_ca=pki.manager_ca_pem) as device,
        ReverseRelay(listener_port=server.tls_strict_listen_port, device_port=device.port),
        server.netconf("SN-0003", timeout=15) as m,
    ):
        assert "<data" in m.get_config(source="running", filter=NACM_GROUP_FILTER).xml
        assert server.rejected() == []


def test_unreadable_client_certificate_fails_the_start_not_each_device(tmp_path: Path, pki: DevicePKI) -> None:
    inventory = sn_0003_only(pki)
    missing = tmp_path / "no-such-manager.pem"
    config = TLSClientConfig(certfile=str(missing), keyfile=str(pki.manager_key))
    with pytest.raises(ValueError, match=f"cannot load the client certificate {missing} for strict C4 mode"):
        CallHomeServer(
            inventory,
            listen_address="127.0.0.1",
            listen_port=None,
            tls=config,
            tls_listen_port=None,
            tls_strict_listen_port=0,
        )
