"""PROXY protocol v2 with a real balancer: Debian's HAProxy 2.6 (``mode tcp``,
``send-proxy-v2``, health checks on) in front of two real gateway processes,
simulated devices calling it from distinct loopback addresses.

The gateways see HAProxy's address (127.0.0.2) on every connection; they
must record, log and block by each device's own address instead, refuse a
connection from HAProxy that carries no header, and refuse a header sent by
anyone else (a device spoofing its address)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from callhome_transport.engine import EventLoopThread
from callhome_transport.sim import SimulatedDevice
from callhome_transport.sim.tls_device import SimPKI, SimulatedTLSDevice
from callhome_transport.transports.proxy import build_v2

from .cluster_peers import HAProxy, ServeProcess, haproxy_available
from .netconfd_peer import free_port

pytestmark = pytest.mark.integration

BALANCER = "127.0.0.2"  # HAProxy's source address towards the gateways


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    reason = haproxy_available()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("proxy")
    sims = [SimulatedDevice(f"PX-{i:03d}", password="pw") for i in range(1, 7)]
    stranger = SimulatedDevice("PX-UNKNOWN", password="pw")  # not in the inventory
    inventory = workdir / "devices.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "defaults": {"ssh": {"username": "admin", "password": "pw"}},
                "devices": {s.name: {"ssh": {"host_keys": [s.host_key_line]}} for s in sims},
            }
        )
    )
    gateways = []
    try:
        for index in (1, 2):
            gateway = ServeProcess(
                workdir / f"gw{index}",
                inventory,
                listen={
                    "addresses": ["127.0.0.1"],
                    "ssh_port": free_port(),
                    "proxy_protocol": {"from": [f"{BALANCER}/32"], "listeners": ["ssh"]},
                },
                admission={"failures_before_block": 2, "block_seconds": 60},
            )
            gateways.append(gateway)
            gateway.start()
        ports = [yaml.safe_load(g.config_path.read_text())["listen"]["ssh_port"] for g in gateways]
        balancer = HAProxy(
            workdir,
            bind=("127.0.0.1", free_port()),
            backends=[("127.0.0.1", port) for port in ports],
            source=BALANCER,
            check_interval_ms=200,
        )
        balancer.start()
        loop = EventLoopThread(name="devices")
        yield {
            "gateways": gateways,
            "ports": ports,
            "balancer": balancer,
            "sims": sims,
            "stranger": stranger,
            "loop": loop,
        }
        loop.stop()
    finally:
        for gateway in gateways:
            gateway.stop()
        if "balancer" in locals():
            balancer.stop()


async def _call_from(sim: SimulatedDevice, source: str, port: int, first: bytes = b"") -> tuple[str, int]:
    """``sim`` calls ``127.0.0.1:port`` from address ``source`` (after sending
    ``first``); returns its own address once the manager authenticated."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    await loop.sock_connect(sock, ("127.0.0.1", port))
    address = sock.getsockname()
    if first:
        await loop.sock_sendall(sock, first)
    await asyncio.wait_for(sim.call_home(sock=sock), 20)
    return address[0], address[1]


def _where(gateways: list[ServeProcess], name: str, timeout: float = 10) -> tuple[ServeProcess, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for gateway in gateways:
            record = gateway.device(name)
            if record["state"] == "connected":
                return gateway, record
        time.sleep(0.05)
    raise AssertionError(f"{name} is connected to no gateway")


def test_devices_through_haproxy_are_recorded_with_their_own_addresses(cluster: dict[str, Any]) -> None:
    gateways, balancer, loop = cluster["gateways"], cluster["balancer"], cluster["loop"]
    addresses = {}
    for index, sim in enumerate(cluster["sims"][:4], start=10):
        addresses[sim.name] = loop.run(_call_from(sim, f"127.0.0.{index}", balancer.bind[1]))
    served_by = set()
    for name, (host, port) in addresses.items():
        gateway, record = _where(gateways, name)
        served_by.add(gateway.dir.name)
        assert record["peer_address"] == f"{host}:{port}"  # the device's, not HAProxy's 127.0.0.2
        assert f"device={name} peer={host}:{port}" in gateway.output()
    assert served_by == {"gw1", "gw2"}  # round robin: both gateways serve devices
    for gateway in gateways:
        # HAProxy's health checks (a PROXY v2 LOCAL header every 200 ms) are closed quietly
        assert "refused" not in gateway.output()
        assert "WARNING" not in gateway.output(), gateway.output()


def test_a_spoofed_header_from_a_device_address_is_refused(cluster: dict[str, Any]) -> None:
    gateway, port, loop = cluster["gateways"][0], cluster["ports"][0], cluster["loop"]
    sim = cluster["sims"][4]
    spoof = build_v2(("203.0.113.9", 4242), ("127.0.0.1", port))
    with pytest.raises(Exception, match=r"closed|lost|reset"):  # asyncssh's or the socket's
        loop.run(_call_from(sim, "127.0.0.20", port, first=spoof))
    deadline = time.monotonic() + 10
    rejected: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not rejected:
        _, body = gateway.get("/rejected")
        rejected = [r for r in body if r["reason"] == "proxy-header"]
        time.sleep(0.05)
    assert rejected and rejected[0]["peer_address"].startswith("127.0.0.20:")  # the real source, not 203.0.113.9
    assert (
        "peer=127.0.0.20:" in gateway.output() and "PROXY protocol header from a source not allowed" in gateway.output()
    )
    assert gateway.device(sim.name)["state"] != "connected"
    assert "203.0.113.9" not in gateway.output()


def test_a_balancer_connection_without_a_header_is_refused(cluster: dict[str, Any]) -> None:
    gateway, port, loop = cluster["gateways"][1], cluster["ports"][1], cluster["loop"]
    sim = cluster["sims"][5]
    with pytest.raises(Exception, match=r"closed|lost|reset"):
        loop.run(_call_from(sim, BALANCER, port))  # as if HAProxy had no send-proxy-v2
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "refused: PROXY protocol" not in gateway.output():
        time.sleep(0.05)
    assert f"peer={BALANCER}:" in gateway.output()
    assert "refused: PROXY protocol: no PROXY protocol header" in gateway.output()
    _, metrics = gateway.get("/metrics")
    assert 'callhome_connections_refused_total{reason="proxy-header",transport="ssh"} 1' in metrics


def test_admission_blocks_the_device_address_not_the_balancer(cluster: dict[str, Any]) -> None:
    gateways, balancer, loop = cluster["gateways"], cluster["balancer"], cluster["loop"]
    stranger = cluster["stranger"]  # an unknown host key: every attempt fails and is charged
    for _ in range(4):  # 2 per gateway blocks it on both (round robin)
        with pytest.raises(Exception):  # noqa: B017 - refused by the gateway
            loop.run(_call_from(stranger, "127.0.0.30", balancer.bind[1]))
    blocked: dict[str, float] = {}
    for gateway in gateways:
        _, body = gateway.get("/blocked")
        blocked.update(body)
    assert "127.0.0.30" in blocked
    assert BALANCER not in blocked
    # the balancer's other devices still get in
    sim = cluster["sims"][3]
    loop.run(_reconnect(sim, balancer.bind[1]))
    _where(gateways, sim.name)


async def _reconnect(sim: SimulatedDevice, port: int) -> None:
    sim.close()
    await sim.wait_closed()
    await _call_from(sim, "127.0.0.31", port)


def test_a_tls_device_through_haproxy(tmp_path: Path) -> None:
    """NETCONF over TLS: the device sends nothing before our ClientHello, so
    the header HAProxy sends first is all the listener reads."""
    pki = SimPKI(tmp_path / "pki")
    sim = SimulatedTLSDevice("PX-TLS", pki)
    inventory = tmp_path / "devices.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "devices": {
                    sim.name: {"transport": "tls", "tls": {"issuers": [str(pki.ca_file)], "identifier": sim.name}}
                },
            }
        )
    )
    tls_port = free_port()
    gateway = ServeProcess(
        tmp_path / "gw",
        inventory,
        listen={
            "addresses": ["127.0.0.1"],
            "ssh_port": None,
            "tls_port": tls_port,
            "proxy_protocol": {"from": [f"{BALANCER}/32"], "listeners": ["tls"]},
        },
        tls={"certfile": str(pki.manager_cert), "keyfile": str(pki.manager_key)},
    )
    balancer = HAProxy(tmp_path, bind=("127.0.0.1", free_port()), backends=[("127.0.0.1", tls_port)], source=BALANCER)
    loop = EventLoopThread(name="tls-device")
    try:
        gateway.start()
        balancer.start()
        loop.submit(sim.call_home("127.0.0.1", balancer.bind[1]))
        status, record = gateway.get(f"/devices/{sim.name}/wait?timeout=20")
        assert status == 200, gateway.output()[-2000:]
        assert record["peer_address"].startswith("127.0.0.1:")  # the device's address, not HAProxy's
        assert "WARNING" not in gateway.output()
    finally:
        loop.stop()
        balancer.stop()
        gateway.stop()
