"""Admission under a connection flood (issue 15 item 10), with the real gateway:
500 silent and 200 slow-loris connections per port from one address, a
separate process; real devices (netconfd behind sshd, stunnel + netconfd)
call home from another address, or from the flood's own address exempted as
a shared NAT address.  Linux routes all of 127.0.0.0/8 on lo."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..pki import DevicePKI
from .flood import Flood
from .netconfd_peer import NetconfdDevice, ReverseRelay
from .stunnel_peer import StunnelDevice, stunnel_available
from .test_gateway import GatewayProcess

pytestmark = pytest.mark.integration

FLOOD_SOURCE = "127.0.0.2"
DEVICE_SOURCE = "127.0.0.3"
REGISTERED_WITHIN = 2.0  # seconds, the goal


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevicePKI:
    return DevicePKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_device(tmp_path: Path, netconfd: NetconfdDevice, pki: DevicePKI) -> Iterator[StunnelDevice]:
    if stunnel_available():
        pytest.skip(stunnel_available())
    cert, key = pki.device_files("SN-0003")
    device = StunnelDevice(tmp_path, netconfd, certfile=cert, keyfile=key, client_ca=pki.manager_ca_pem).start()
    yield device
    device.stop()


def flooded_gateway(tmp_path: Path, netconfd: NetconfdDevice, pki: DevicePKI, **admission: object) -> GatewayProcess:
    """A gateway with the default admission settings (and the default 30 s
    handshake timeouts), for an SSH device R1 and a TLS device SN-0003."""
    issuers = {"issuers": [str(pki.root_a_pem)], "crls": [str(pki.crl_a)], "identifier": "SN-0003"}
    inventory = {"devices": {"R1": netconfd.inventory_entry(), "SN-0003": {"transport": "tls", "tls": issuers}}}
    return GatewayProcess(
        tmp_path,
        inventory,
        tls={"certfile": str(pki.manager_cert), "keyfile": str(pki.manager_key), "handshake_timeout": 30},
        ssh={"handshake_timeout": 30, "keepalive_interval": 5, "keepalive_count_max": 2},
        **({"admission": admission} if admission else {}),
    ).start()


def registration_delay(gw: GatewayProcess, device: str, listener_port: int, device_port: int, source: str) -> float:
    """Seconds from the device dialling (from ``source``) to the gateway
    reporting it connected."""
    started = time.monotonic()
    with ReverseRelay(listener_port=listener_port, device_port=device_port, source_host=source):
        status, record = gw.get(f"/devices/{device}/wait?timeout=15", 30)
        delay = time.monotonic() - started
        assert status == 200, (record, gw.log.read_text()[-3000:])
        assert record["peer_address"].startswith(f"{source}:")  # type: ignore[index]
    return delay


def test_a_flood_from_one_address_keeps_no_device_out(
    tmp_path: Path, netconfd: NetconfdDevice, tls_device: StunnelDevice, pki: DevicePKI
) -> None:
    gw = flooded_gateway(tmp_path, netconfd, pki)
    try:
        with Flood(source=FLOOD_SOURCE, ssh_ports=[gw.ssh_port], tls_ports=[gw.tls_port]):
            ssh_delay = registration_delay(gw, "R1", gw.ssh_port, netconfd.ssh_port, DEVICE_SOURCE)
            tls_delay = registration_delay(gw, "SN-0003", gw.tls_port, tls_device.port, DEVICE_SOURCE)
            print(f"under the flood: SSH device registered in {ssh_delay:.3f} s, TLS device in {tls_delay:.3f} s")
            assert ssh_delay < REGISTERED_WITHIN
            assert tls_delay < REGISTERED_WITHIN
            _, blocked = gw.get("/blocked")
            assert FLOOD_SOURCE in blocked  # type: ignore[operator]
            assert DEVICE_SOURCE not in blocked  # type: ignore[operator]
            log = gw.log.read_text()
            assert "pending handshakes (the cap): dropped" in log
    finally:
        assert gw.stop() == 0


def test_devices_behind_an_exempt_flooded_nat_address_get_in(
    tmp_path: Path, netconfd: NetconfdDevice, tls_device: StunnelDevice, pki: DevicePKI
) -> None:
    gw = flooded_gateway(tmp_path, netconfd, pki, exempt=[f"{FLOOD_SOURCE}/32"])
    try:
        with Flood(source=FLOOD_SOURCE, ssh_ports=[gw.ssh_port], tls_ports=[gw.tls_port]):
            # never blocked, so the flood keeps every listener at its cap: early drop makes room
            ssh_delay = registration_delay(gw, "R1", gw.ssh_port, netconfd.ssh_port, FLOOD_SOURCE)
            tls_delay = registration_delay(gw, "SN-0003", gw.tls_port, tls_device.port, FLOOD_SOURCE)
            print(
                f"from the flood's own exempt address: SSH device in {ssh_delay:.3f} s, TLS device in {tls_delay:.3f} s"
            )
            assert ssh_delay < REGISTERED_WITHIN
            assert tls_delay < REGISTERED_WITHIN
            assert gw.get("/blocked")[1] == {}
            metrics = str(gw.get("/metrics")[1])
            for listener in ("ssh", "tls"):
                assert f'callhome_handshakes_total{{result="dropped",transport="{listener}"}}' in metrics
    finally:
        assert gw.stop() == 0
