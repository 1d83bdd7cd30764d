"""NETCONF over TLS call home (RFC 8071 port 4335 style, RFC 7589) against real
peers: stunnel4 (mutual TLS) in front of yuma123 netconfd, calling home through
a socat reverse relay.  The PKI is generated per run."""

from __future__ import annotations

import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import callhome_transport
from callhome_transport import (
    CallHomeServer,
    CertificateRejectedError,
    DeviceNotConnectedError,
    Inventory,
    TLSClientConfig,
    Transport,
)

from ..pki import DevicePKI
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
from .stunnel_peer import StunnelDevice, stunnel_available

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevicePKI:
    return DevicePKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_inventory(pki: DevicePKI) -> Inventory:
    a = {"issuers": [str(pki.root_a_pem)], "crls": [str(pki.crl_a)]}
    return Inventory.from_dict(
        {
            "devices": {
                # manufacturer A devices, identified by subject serialNumber
                **{
                    sn: {"transport": "tls", "tls": {**a, "identifier": sn}}
                    for sn in ("SN-0003", "SN-0004", "SN-0005", "SN-0006")
                },
                # a manufacturer B device: B's root is trusted, but only for it
                "SN-B1": {"transport": "tls", "tls": {"issuers": [str(pki.root_b_pem)], "identifier": "SN-B1"}},
            }
        }
    )


@pytest.fixture
def server(pki: DevicePKI, tls_inventory: Inventory) -> Iterator[CallHomeServer]:
    if stunnel_available():
        pytest.skip(stunnel_available())
    config = TLSClientConfig(certfile=pki.manager_cert, keyfile=pki.manager_key, handshake_timeout=5)
    with CallHomeServer(
        tls_inventory, listen_address="127.0.0.1", listen_port=None, tls=config, tls_listen_port=0
    ) as srv:
        yield srv


def stunnel(tmp_path: Path, netconfd: NetconfdDevice, pki: DevicePKI, serial: str, **kwargs: object) -> StunnelDevice:
    if serial == "impostor":
        cert, key = pki.impostor_files()
    else:
        cert, key = pki.device_files(serial, with_chain=bool(kwargs.pop("with_chain", True)))
    return StunnelDevice(
        tmp_path, netconfd, certfile=cert, keyfile=key, client_ca=pki.manager_ca_pem, name=serial, **kwargs
    )  # type: ignore[arg-type]


def groups(m: object) -> list[str]:
    xml = m.get_config(source="running", filter=NACM_GROUP_FILTER).xml  # type: ignore[attr-defined]
    return [part.split("</name>")[0] for part in xml.split("<name>")[1:]]


def raw_hello_size(device: StunnelDevice, pki: DevicePKI) -> int:
    """The device's hello in bytes, read over a direct TLS connection."""
    ctx = ssl.create_default_context(cafile=str(pki.root_a_pem))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(pki.manager_cert), str(pki.manager_key))
    with socket.create_connection(("127.0.0.1", device.port), 10) as raw, ctx.wrap_socket(raw) as tls:
        data = b""
        while b"]]>]]>" not in data:
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
    return len(data)


def test_valid_device_by_name_edit_commit_and_large_hello(
    tmp_path: Path, netconfd: NetconfdDevice, pki: DevicePKI, server: CallHomeServer
) -> None:
    with stunnel(tmp_path, netconfd, pki, "SN-0003") as device:
        # netconfd's hello is over 4 KiB: stock ncclient's TLSSession stalls on it
        assert raw_hello_size(device, pki) > 4096
        with (
            ReverseRelay(listener_port=server.tls_listen_port, device_port=device.port),
            server.netconf("SN-0003", timeout=15) as m,
        ):
            assert ":candidate" in " ".join(m.server_capabilities)
            m.edit_config(target="candidate", config=nacm_group_config("tls-ops", "carol"))
            m.commit()
        # one NETCONF session per TLS connection (RFC 7589): the device calls again
        with ReverseRelay(listener_port=server.tls_listen_port, device_port=device.port):
            event = server.wait_for("SN-0003", timeout=15)
            assert event.transport is Transport.TLS
            assert event.certificate_subject is not None and "serialNumber=SN-0003" in event.certificate_subject
            with server.netconf("SN-0003", timeout=15) as m:
                assert "tls-ops" in groups(m)


@pytest.mark.parametrize(
    ("serial", "kwargs", "reason", "match"),
    [
        ("SN-9999", {}, "certificate-rejected", "no device in the inventory expects"),
        ("impostor", {}, "certificate-rejected", "does not lead to an issuer configured for device SN-0003"),
        ("SN-0006", {}, "certificate-rejected", "certificate has expired"),
        ("SN-0005", {}, "revoked", "revoked on"),
        ("SN-0004", {"with_chain": False}, "certificate-rejected", "unable to get local issuer certificate"),
    ],
    ids=["wrong-serial-right-ca", "other-manufacturer", "expired", "revoked", "no-intermediates"],
)
def test_rejected_devices(
    tmp_path: Path,
    netconfd: NetconfdDevice,
    pki: DevicePKI,
    server: CallHomeServer,
    caplog: pytest.LogCaptureFixture,
    serial: str,
    kwargs: dict[str, object],
    reason: str,
    match: str,
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="callhome_transport"),
        stunnel(tmp_path, netconfd, pki, serial, **kwargs) as device,
        ReverseRelay(listener_port=server.tls_listen_port, device_port=device.port) as relay,
    ):
        relay.wait(10)
    [rejected] = wait_rejected(server)
    assert rejected.reason == reason
    assert match in rejected.detail
    assert match in caplog.text
    assert str(rejected.peer_address[0]) == "127.0.0.1"
    assert rejected.transport == "tls"  # the listener, as the device-rejected event says it
    if serial in ("SN-9999", "impostor", "SN-0005"):  # seen after the handshake: the log names the certificate
        assert "subject 'serialNumber=" in caplog.text and "issuer 'CN=" in caplog.text
        # and so does the refusal the registry records (the device-rejected event's certificate_subject)
        assert rejected.certificate_subject is not None and "serialNumber=" in rejected.certificate_subject
    assert not server.connected()
    # a wait for SN-0003 ends with "not connected", or with the refusal of a
    # call that claimed to be SN-0003 (the other manufacturer's certificate)
    with pytest.raises(CertificateRejectedError if serial == "impostor" else DeviceNotConnectedError):
        server.netconf("SN-0003", timeout=0.2)
    log = device.log.read_text()
    if serial in ("SN-9999", "impostor", "SN-0005"):
        # the TLS session was up, so the device started its NETCONF side; we
        # closed it without sending one byte (no hello, nothing else)
        assert re.search(r"closed: \d+ byte\(s\) sent to TLS, 0 byte\(s\) sent to socket", log), log[-800:]
    else:
        # refused inside the handshake: the device never got to NETCONF
        assert "Local mode child started" not in log


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6(tmp_path: Path, netconfd: NetconfdDevice, pki: DevicePKI, tls_inventory: Inventory) -> None:
    config = TLSClientConfig(certfile=pki.manager_cert, keyfile=pki.manager_key)
    with (
        CallHomeServer(tls_inventory, listen_address="::1", listen_port=None, tls=config, tls_listen_port=0) as server,
        stunnel(tmp_path, netconfd, pki, "SN-0004", listen_host="::1") as device,
        ReverseRelay(
            listener_host="::1", listener_port=server.tls_listen_port, device_host="::1", device_port=device.port
        ),
        server.netconf("SN-0004", timeout=15) as m,
    ):
        assert isinstance(groups(m), list)
        assert "accepted connection from ::1" in device.log.read_text()


def test_call_home_tls_single_device_helper(tmp_path: Path, netconfd: NetconfdDevice, pki: DevicePKI) -> None:
    port = free_port()
    with stunnel(tmp_path, netconfd, pki, "SN-0004") as device:
        relay = ReverseRelay(listener_port=port, device_port=device.port)
        threading.Timer(0.2, relay.start).start()
        try:
            with callhome_transport.call_home_tls(
                host="127.0.0.1",
                port=port,
                certfile=pki.manager_cert,
                keyfile=pki.manager_key,
                issuers=[pki.root_a_pem],
                identifier="SN-0004",
                crls=[pki.crl_a],
                timeout=15,
            ) as m:
                assert isinstance(groups(m), list)
        finally:
            time.sleep(0.2)
            relay.stop()


def test_call_home_tls_refuses_the_wrong_identifier(tmp_path: Path, netconfd: NetconfdDevice, pki: DevicePKI) -> None:
    port = free_port()
    with stunnel(tmp_path, netconfd, pki, "SN-0004") as device:
        relay = ReverseRelay(listener_port=port, device_port=device.port)
        threading.Timer(0.2, relay.start).start()
        try:
            with pytest.raises(CertificateRejectedError) as info:
                callhome_transport.call_home_tls(
                    host="127.0.0.1",
                    port=port,
                    certfile=pki.manager_cert,
                    keyfile=pki.manager_key,
                    issuers=[pki.root_a_pem],
                    identifier="SN-0003",
                    accept_timeout=2,
                )
            assert "SN-0004" in info.value.subject
        finally:
            relay.stop()


def test_mixed_issuers_each_device_validated_against_its_own(
    tmp_path: Path, netconfd: NetconfdDevice, pki: DevicePKI
) -> None:
    # SN-0003 trusts manufacturer A's device CA (an intermediate), SN-0004 the
    # root above it.  Failed before the fix: the handshake stopped at the
    # intermediate and SN-0004 was refused ("the chain does not lead to an
    # issuer configured for device SN-0004").
    if stunnel_available():
        pytest.skip(stunnel_available())
    inventory = Inventory.from_dict(
        {
            "devices": {
                "SN-0003": {"transport": "tls", "tls": {"issuers": [str(pki.inter_a_pem)], "identifier": "SN-0003"}},
                "SN-0004": {
                    "transport": "tls",
                    "tls": {"issuers": [str(pki.root_a_pem)], "identifier": "SN-0004", "crls": [str(pki.crl_a)]},
                },
            }
        }
    )
    config = TLSClientConfig(certfile=pki.manager_cert, keyfile=pki.manager_key, handshake_timeout=5)
    with CallHomeServer(inventory, listen_address="127.0.0.1", listen_port=None, tls=config, tls_listen_port=0) as srv:
        for serial in ("SN-0004", "SN-0003"):
            with (
                stunnel(tmp_path, netconfd, pki, serial) as device,
                ReverseRelay(listener_port=srv.tls_listen_port, device_port=device.port),
                srv.netconf(serial, timeout=15) as m,
            ):
                assert isinstance(groups(m), list)
        assert srv.rejected() == []


@pytest.mark.parametrize(
    ("serial", "awaited", "error", "match"),
    [
        ("SN-0005", "SN-0005", callhome_transport.RevokedCertificateError, "revoked on"),
        ("impostor", "SN-0003", CertificateRejectedError, "does not lead to an issuer configured for device SN-0003"),
    ],
    ids=["revoked", "identifier-of-another-issuer"],
)
def test_refusal_of_the_awaited_device_ends_the_wait(
    tmp_path: Path,
    netconfd: NetconfdDevice,
    pki: DevicePKI,
    server: CallHomeServer,
    serial: str,
    awaited: str,
    error: type[CertificateRejectedError],
    match: str,
) -> None:
    """netconf() waiting for a device whose call is refused raises that
    refusal, with its reason and time, not "did not call home within 60 s"."""
    waiter = InThread(server.netconf, awaited, timeout=60)
    started = time.monotonic()
    with (
        stunnel(tmp_path, netconfd, pki, serial) as device,
        ReverseRelay(listener_port=server.tls_listen_port, device_port=device.port),
    ):
        raised = waiter.outcome(30)
    assert time.monotonic() - started < 30
    assert type(raised) is error, raised
    assert raised.device == awaited
    assert match in raised.reason
    assert raised.refused_at >= time.time() - 60
    [rejected] = server.rejected()
    assert rejected.at == raised.refused_at and rejected.fingerprint == raised.fingerprint
