"""``callhome serve --workers 2``: two processes on one port (SO_REUSEPORT),
members of one registry (a real redis-server on loopback); a storm of
simulated devices is served by both, every device listed once by either
worker's control socket, with the worker that holds it."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from callhome_transport.engine import EventLoopThread
from callhome_transport.gateway.client import GatewayClient
from callhome_transport.sim import SimulatedDevice
from callhome_transport.sim.fleet import Fleet, FleetConfig

from .cluster_peers import RedisServer, ServeProcess
from .netconfd_peer import free_port

pytestmark = pytest.mark.integration

DEVICES = 120


def test_a_storm_is_served_by_both_workers(tmp_path: Path, redis_server: RedisServer) -> None:
    fleet = Fleet(FleetConfig(count=DEVICES, prefix="WK-", backoff_initial=0.2, backoff_max=1.0))
    inventory = tmp_path / "devices.yml"
    inventory.write_text(yaml.safe_dump(fleet.inventory()))
    port = free_port()
    gateway = ServeProcess(
        tmp_path / "gw",
        inventory,
        listen={"addresses": ["127.0.0.1"], "ssh_port": port},
        extra_args=["--workers", "2"],
        cluster={"redis": redis_server.url, "gateway_id": "host1", "ttl": 30, "refresh_interval": 10},
        admission={"max_pending_handshakes": 1024},
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # as systemd's NOTIFY_SOCKET
    notify.bind(str(tmp_path / "notify.sock"))
    gateway.env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    loop = EventLoopThread(name="fleet")
    storm = None
    try:
        gateway.start()
        ready = json.loads(gateway.ready_file.read_text())
        assert len(ready["workers"]) == 2
        notify.settimeout(5)
        first = notify.recv(4096).decode()
        assert "READY=1" in first and f"MAINPID={ready['pid']}" in first  # the supervisor, once all are up
        notify.settimeout(0.5)
        with pytest.raises(TimeoutError):
            notify.recv(4096)  # and nothing from the workers (NotifyAccess=main would refuse them)
        storm = loop.submit(fleet.run("127.0.0.1", port))
        client = GatewayClient(gateway.run_dir, timeout=10)  # run_dir/control.sock -> w0's
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            records = client.devices()
            if sum(r.connected for r in records) == DEVICES:
                break
            time.sleep(0.2)
        assert sum(r.connected for r in records) == DEVICES, [r for r in records if not r.connected][:3]
        names = [r.name for r in records]
        assert len(names) == len(set(names)) == DEVICES  # each listed once
        by_worker: dict[str, int] = {}
        for record in records:
            by_worker[record.gateway] = by_worker.get(record.gateway, 0) + 1
        assert set(by_worker) == {"host1-w0", "host1-w1"}, by_worker  # both processes serve devices
        # the other worker's control socket gives the same cluster-wide answer, once the last
        # registrations have reached Redis (a worker knows its own devices first)
        expected = {r.name: r.gateway for r in records}
        deadline = time.monotonic() + 10
        while (seen := {r.name: r.gateway for r in GatewayClient(gateway.run_dir / "w1").devices()}) != expected:
            assert time.monotonic() < deadline, {n: g for n, g in seen.items() if expected[n] != g}
            time.sleep(0.1)
        # each device's endpoint is on the worker that holds it
        held_by_w1 = next(r.name for r in records if r.gateway == "host1-w1")
        with GatewayClient(gateway.run_dir / "w1").netconf_manager(held_by_w1, timeout=10) as m:
            assert "<hostname>" in m.get_config(source="running").xml
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)
        assert gateway.proc.wait(30) == 0
        assert not (gateway.run_dir / "control.sock").exists()
    finally:
        if storm is not None:
            storm.cancel()
        loop.stop()
        gateway.stop()
        notify.close()
    log = gateway.output()
    assert "2 workers ready" in log
    assert "Traceback" not in log


def test_a_second_sigterm_while_stopping_is_harmless(tmp_path: Path, redis_server: RedisServer) -> None:
    fleet = Fleet(FleetConfig(count=30, prefix="ST-", backoff_initial=0.2, backoff_max=1.0))
    inventory = tmp_path / "devices.yml"
    inventory.write_text(yaml.safe_dump(fleet.inventory()))
    port = free_port()
    gateway = ServeProcess(
        tmp_path / "gw",
        inventory,
        listen={"addresses": ["127.0.0.1"], "ssh_port": port},
        cluster={"redis": redis_server.url, "gateway_id": "st", "ttl": 30, "refresh_interval": 10},
    )
    loop = EventLoopThread(name="fleet")
    storm = None
    try:
        gateway.start()
        storm = loop.submit(fleet.run("127.0.0.1", port))
        client = GatewayClient(gateway.run_dir, timeout=10)
        deadline = time.monotonic() + 30
        while sum(r.connected for r in client.devices()) < 30:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)
        gateway.proc.send_signal(signal.SIGTERM)  # systemd and an impatient operator
        assert gateway.proc.wait(30) == 0
    finally:
        if storm is not None:
            storm.cancel()
        loop.stop()
        gateway.stop()
    assert "Traceback" not in gateway.output(), gateway.output()[-3000:]


def test_a_cluster_wait_ends_with_the_devices_refusal(tmp_path: Path, redis_server: RedisServer) -> None:
    """As without a cluster: a device that calls during the wait and is refused ends it with why."""
    sim = SimulatedDevice("RF-1", password="right")
    inventory = tmp_path / "devices.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "devices": {
                    sim.name: {"ssh": {"host_keys": [sim.host_key_line], "username": "admin", "password": "wrong"}}
                }
            }
        )
    )
    port = free_port()
    gateway = ServeProcess(
        tmp_path / "gw",
        inventory,
        listen={"addresses": ["127.0.0.1"], "ssh_port": port},
        cluster={"redis": redis_server.url, "gateway_id": "rf", "ttl": 30, "refresh_interval": 10},
    )
    loop = EventLoopThread(name="device")
    try:
        gateway.start()
        threading.Timer(0.5, lambda: loop.submit(sim.call_home("127.0.0.1", port))).start()
        status, body = gateway.get(f"/devices/{sim.name}/wait?timeout=20")
    finally:
        loop.stop()
        gateway.stop()
    assert status == 502, body
    assert body["refusal"]["type"] == "AuthenticationFailedError"
