"""The gateway as a real subprocess (``callhome serve``), with real devices
calling home through socat: netconfd behind sshd (SSH), stunnel + netconfd
(TLS), stunnel + the RESTCONF backend; local clients on the Unix sockets."""

from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ncclient import manager
from ncclient.transport.errors import TransportError as NcTransportError

from callhome_transport.errors import AuthenticationFailedError
from callhome_transport.gateway.client import GatewayClient
from callhome_transport.gateway.client import UnixHTTPConnection as _UnixHTTPConnection

from ..pki import DevicePKI
from .netconfd_peer import (
    NACM_GROUP_FILTER,
    InThread,
    NetconfdDevice,
    ReverseRelay,
    free_port,
    nacm_group_config,
    wait_until,
)
from .restconf_backend import Backend
from .stunnel_peer import StunnelDevice, stunnel_available

pytestmark = pytest.mark.integration


class GatewayProcess:
    def __init__(self, workdir: Path, inventory: dict[str, object], **config: object) -> None:
        self.dir = workdir
        # a short run directory: socket paths must fit AF_UNIX (107 bytes), and
        # pytest's tmp paths (longer under pytest-xdist) leave little room
        self.run_dir = Path(tempfile.mkdtemp(prefix="chgw-"))
        atexit.register(shutil.rmtree, self.run_dir, True)
        self.inventory_path = workdir / "devices.yml"
        self.inventory_path.write_text(yaml.safe_dump(inventory))
        self.ssh_port, self.tls_port, self.restconf_port = free_port(), free_port(), free_port()
        self.config_path = workdir / "gateway.yml"
        cfg: dict[str, object] = {
            "inventory": str(self.inventory_path),
            "run_dir": str(self.run_dir),
            "deferral_timeout": 15,
            "listen": {
                "addresses": ["127.0.0.1"],
                "ssh_port": self.ssh_port,
                "tls_port": self.tls_port,
                "restconf_port": self.restconf_port,
            },
            "ssh": {"handshake_timeout": 3, "keepalive_interval": 2, "keepalive_count_max": 2},
            **config,
        }
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.log = workdir / "gateway.log"
        self.ready_file = workdir / "ready.json"
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "callhome_transport.cli", "serve"),
                *("--config", str(self.config_path), "--ready-file", str(self.ready_file)),
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        return self.proc

    def start(self) -> GatewayProcess:
        proc = self.launch()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"gateway exited {proc.returncode}:\n{self.log.read_text()}")
            if self.ready_file.exists():  # written once every listener and endpoint is up
                return self
            time.sleep(0.05)
        raise RuntimeError(f"gateway not ready:\n{self.log.read_text()}")

    def get(self, path: str, timeout: float = 30) -> tuple[int, object]:
        conn = _UnixHTTPConnection(str(self.run_dir / "control.sock"), timeout)
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode()
        conn.close()
        return response.status, (json.loads(body) if body.lstrip().startswith(("{", "[")) else body)

    def cli_command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "callhome_transport.cli", *args, "--run-dir", str(self.run_dir)]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cli_command(*args), capture_output=True, text=True, timeout=60, check=False)

    def netconf(self, device: str, timeout: float = 30) -> manager.Manager:
        return manager.connect_uds(path=str(self.run_dir / "devices" / device / "netconf.sock"), timeout=timeout)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevicePKI:
    return DevicePKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def world(tmp_path: Path, netconfd: NetconfdDevice, pki: DevicePKI) -> Iterator[dict[str, object]]:
    """An SSH device (the shared netconfd), a TLS device and a RESTCONF device, and a gateway for them."""
    if stunnel_available():
        pytest.skip(stunnel_available())
    tls_cert, tls_key = pki.device_files("SN-0003")
    rc_cert, rc_key = pki.device_files("SN-0004")
    backend = Backend("sn-0004", basic_auth=("rc-admin", "rc-pw-4"), big_size=8 * 1024 * 1024).start()
    tls_device = StunnelDevice(
        tmp_path, netconfd, certfile=tls_cert, keyfile=tls_key, client_ca=pki.manager_ca_pem, name="tls"
    ).start()
    rc_device = StunnelDevice(
        tmp_path,
        None,
        certfile=rc_cert,
        keyfile=rc_key,
        client_ca=pki.manager_ca_pem,
        name="rc",
        backend_port=backend.port,
    ).start()
    a = {"issuers": [str(pki.root_a_pem)], "crls": [str(pki.crl_a)]}
    inventory = {
        "devices": {
            "R1": netconfd.inventory_entry(),
            "SN-0003": {"transport": "tls", "tls": {**a, "identifier": "SN-0003"}},
            "SN-0004": {
                "transport": "restconf",
                "tls": {**a, "identifier": "SN-0004"},
                "restconf": {"basic_auth": {"username": "rc-admin", "password": "rc-pw-4"}},
            },
        }
    }
    gateway = GatewayProcess(
        tmp_path,
        inventory,
        tls={"certfile": str(pki.manager_cert), "keyfile": str(pki.manager_key)},
        admission={"max_pending_handshakes": 1000, "failures_before_block": 1000},
    ).start()
    yield {"gateway": gateway, "netconfd": netconfd, "tls": tls_device, "rc": rc_device, "backend": backend}
    assert gateway.stop() == 0, gateway.log.read_text()[-3000:]
    tls_device.stop()
    rc_device.stop()
    backend.stop()


def groups(m: manager.Manager) -> list[str]:
    xml = m.get_config(source="running", filter=NACM_GROUP_FILTER).xml
    return [part.split("</name>")[0] for part in xml.split("<name>")[1:]]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callhome_transport.cli", *args], capture_output=True, text=True, timeout=30, check=False
    )


def serve_once(config_path: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("serve", "--config", str(config_path))


def test_ncclient_through_netconf_sock_with_deferral_and_two_sessions(world: dict[str, object]) -> None:
    gw: GatewayProcess = world["gateway"]  # type: ignore[assignment]
    netconfd: NetconfdDevice = world["netconfd"]  # type: ignore[assignment]
    relay = ReverseRelay(listener_port=gw.ssh_port, device_port=netconfd.ssh_port)
    threading.Timer(1.0, relay.start).start()  # the device calls after the client asked
    try:
        started = time.monotonic()
        with gw.netconf("R1") as m1:
            assert time.monotonic() - started >= 0.9
            m1.edit_config(target="candidate", config=nacm_group_config("gw-ops", "dave"))
            m1.commit()
            with gw.netconf("R1") as m2:  # a second local session at once: a second SSH channel
                assert "gw-ops" in groups(m2)
                assert m2.session_id != m1.session_id
        status, record = gw.get("/devices/R1")
        assert status == 200
        assert record["state"] == "connected"  # type: ignore[index]
        assert record["identity"] == netconfd.host_key_fingerprint  # type: ignore[index]
        cli = gw.cli("devices")
        assert cli.returncode == 0
        assert "R1" in cli.stdout and "connected" in cli.stdout
        metrics = gw.get("/metrics")[1]
        assert 'callhome_handshakes_total{result="ok",transport="ssh"} 1' in str(metrics)
        assert 'callhome_local_sessions_total{endpoint="netconf"} 2' in str(metrics)
    finally:
        relay.stop()


def test_tls_device_through_netconf_sock(world: dict[str, object]) -> None:
    gw: GatewayProcess = world["gateway"]  # type: ignore[assignment]
    tls: StunnelDevice = world["tls"]  # type: ignore[assignment]
    with ReverseRelay(listener_port=gw.tls_port, device_port=tls.port), gw.netconf("SN-0003") as m:
        assert isinstance(groups(m), list)
    status, record = gw.get("/devices/SN-0003")
    assert status == 200
    assert "serialNumber=SN-0003" in record["identity"]  # type: ignore[index]
    assert 'callhome_handshakes_total{result="ok",transport="tls"} 1' in str(gw.get("/metrics")[1])
    # the TLS session was used up (one NETCONF session per TLS connection): waiting times out (exit 2)
    waited = gw.cli("wait", "SN-0003", "--timeout", "0.5")
    assert waited.returncode == 2
    assert "did not call home within 0.5 s" in waited.stderr


def test_requests_through_restconf_sock(world: dict[str, object]) -> None:
    gw: GatewayProcess = world["gateway"]  # type: ignore[assignment]
    rc: StunnelDevice = world["rc"]  # type: ignore[assignment]
    path = str(gw.run_dir / "devices" / "SN-0004" / "restconf.sock")
    with ReverseRelay(listener_port=gw.restconf_port, device_port=rc.port):
        conn = _UnixHTTPConnection(path, 30)
        for _ in range(2):  # keep-alive on the local socket and toward the device
            conn.request("GET", "/restconf/data/ietf-system:system", headers={"Accept": "application/yang-data+json"})
            response = conn.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["ietf-system:system"]["hostname"] == "sn-0004"
        conn.request("GET", "/restconf/data/nope:missing", headers={"Accept": "application/yang-data+json"})
        response = conn.getresponse()
        assert response.status == 404
        assert json.loads(response.read())["ietf-restconf:errors"]["error"][0]["error-tag"] == "invalid-value"
        # the gateway sends the device's own credentials (identified device only),
        # replacing whatever a local client put there
        conn.request("GET", "/restconf/data/ietf-system:system", headers={"Authorization": "Basic bWFsbG9yeTp4"})
        response = conn.getresponse()
        assert response.status == 200
        response.read()
        conn.close()
        backend: Backend = world["backend"]  # type: ignore[assignment]
        expected = "Basic " + base64.b64encode(b"rc-admin:rc-pw-4").decode()
        assert backend.requests and all(auth == expected for _, _, auth in backend.requests)

        # a local client that hangs up mid-body does not wedge the device's relay
        quitter = _UnixHTTPConnection(path, 30)
        quitter.request("GET", "/restconf/data/example-big:blob")
        assert quitter.getresponse().status == 200
        quitter.sock.close()  # type: ignore[union-attr]
        quitter.close()
        again = _UnixHTTPConnection(path, 20)
        again.request("GET", "/restconf/data/ietf-system:system", headers={"Accept": "application/yang-data+json"})
        response = again.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["ietf-system:system"]["hostname"] == "sn-0004"
        again.close()
        metrics = str(gw.get("/metrics")[1])
        assert 'callhome_handshakes_total{result="ok",transport="restconf"} 1' in metrics
        assert "transport=restconf event=connected" in gw.log.read_text()
        # Expect: 100-continue (curl, for large bodies) is answered by the gateway, not relayed
        conn = _UnixHTTPConnection(path, 20)
        body = json.dumps({"ietf-system:system": {"location": "rack-100"}})
        conn.request(
            "PATCH",
            "/restconf/data/ietf-system:system",
            body=body,
            headers={"Content-Type": "application/yang-data+json", "Expect": "100-continue"},
        )
        response = conn.getresponse()
        assert response.status in (200, 204), response.read()
        response.read()
        conn.request("GET", "/restconf/data/ietf-system:system", headers={"Accept": "application/yang-data+json"})
        response = conn.getresponse()
        assert json.loads(response.read())["ietf-system:system"]["location"] == "rack-100"
        conn.close()
        # the relay holds the device's connection: it still counts as connected
        waited = gw.cli("wait", "SN-0004", "--timeout", "2")
        assert waited.returncode == 0, waited.stderr


def restconf_gateway(tmp_path: Path, pki: DevicePKI, deferral_timeout: float) -> GatewayProcess:
    """A gateway for one RESTCONF device, SN-0004, that has not called."""
    inventory = {
        "devices": {
            "SN-0004": {"transport": "restconf", "tls": {"issuers": [str(pki.root_a_pem)], "identifier": "SN-0004"}}
        }
    }
    return GatewayProcess(
        tmp_path,
        inventory,
        deferral_timeout=deferral_timeout,
        tls={"certfile": str(pki.manager_cert), "keyfile": str(pki.manager_key)},
    ).start()


def test_restconf_sock_device_not_connected_is_a_clear_504(tmp_path: Path, pki: DevicePKI) -> None:
    gw = restconf_gateway(tmp_path, pki, deferral_timeout=0.5)
    try:
        conn = _UnixHTTPConnection(str(gw.run_dir / "devices" / "SN-0004" / "restconf.sock"), 10)
        conn.request("GET", "/restconf/data/ietf-system:system")
        response = conn.getresponse()
        assert response.status == 504
        error = json.loads(response.read())["ietf-restconf:errors"]["error"][0]
        assert "SN-0004 did not call home within 0.5 s" in error["error-message"]
        assert response.reason == "Gateway Timeout"
    finally:
        assert gw.stop() == 0


def test_restconf_client_can_shorten_the_deferral(tmp_path: Path, pki: DevicePKI) -> None:
    gw = restconf_gateway(tmp_path, pki, deferral_timeout=60)
    try:
        conn = _UnixHTTPConnection(str(gw.run_dir / "devices" / "SN-0004" / "restconf.sock"), 30)
        started = time.monotonic()
        conn.request("GET", "/restconf/data/ietf-system:system", headers={"Callhome-Wait": "0.4"})
        response = conn.getresponse()
        assert response.status == 504
        assert time.monotonic() - started < 5
        assert "within 0.4 s" in json.loads(response.read())["ietf-restconf:errors"]["error"][0]["error-message"]
        # a request queued behind another one waiting for the device: its own wait still holds
        first = _UnixHTTPConnection(str(gw.run_dir / "devices" / "SN-0004" / "restconf.sock"), 30)
        first.request("GET", "/restconf/data/ietf-system:system", headers={"Callhome-Wait": "4"})
        time.sleep(0.3)
        started = time.monotonic()
        conn.request("GET", "/restconf/data/ietf-system:system", headers={"Callhome-Wait": "0.5"})
        response = conn.getresponse()
        assert response.status == 504
        assert time.monotonic() - started < 2
        response.read()
        assert first.getresponse().status == 504
        first.close()
    finally:
        assert gw.stop() == 0


def test_sighup_reload_and_sigterm(tmp_path: Path, netconfd: NetconfdDevice) -> None:
    r1 = netconfd.inventory_entry()
    gw = GatewayProcess(tmp_path, {"devices": {"R1": r1}}).start()
    try:
        assert (gw.run_dir / "devices" / "R1" / "netconf.sock").exists()
        gw.inventory_path.write_text(yaml.safe_dump({"devices": {"R2": r1 | {}}}))
        assert gw.proc is not None
        os.kill(gw.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while (gw.run_dir / "devices" / "R1").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (gw.run_dir / "devices" / "R1").exists()
        assert (gw.run_dir / "devices" / "R2" / "netconf.sock").exists()
        names = [r["name"] for r in gw.get("/devices")[1]]  # type: ignore[union-attr,index]
        assert names == ["R2"]
        # a broken inventory on reload keeps the current one
        gw.inventory_path.write_text("devices: [broken\n")
        os.kill(gw.proc.pid, signal.SIGHUP)
        wait_until(lambda: "reload failed, keeping the current inventory" in gw.log.read_text())
        assert [r["name"] for r in gw.get("/devices")[1]] == ["R2"]  # type: ignore[union-attr,index]
        assert "reload failed, keeping the current inventory" in gw.log.read_text()
    finally:
        assert gw.stop() == 0
    assert not (gw.run_dir / "control.sock").exists()


def test_silent_connections_do_not_keep_a_real_device_out(tmp_path: Path, netconfd: NetconfdDevice) -> None:
    r1 = netconfd.inventory_entry()
    gw = GatewayProcess(
        tmp_path, {"devices": {"R1": r1}}, admission={"max_pending_handshakes": 1000, "failures_before_block": 0}
    ).start()
    silent: list[socket.socket] = []
    try:
        for _ in range(500):
            silent.append(socket.create_connection(("127.0.0.1", gw.ssh_port)))
        with ReverseRelay(listener_port=gw.ssh_port, device_port=netconfd.ssh_port), gw.netconf("R1") as m:
            assert isinstance(groups(m), list)
    finally:
        for s in silent:
            s.close()
        assert gw.stop() == 0


def test_source_blocked_after_failures(tmp_path: Path, netconfd: NetconfdDevice) -> None:
    r1 = netconfd.inventory_entry()
    gw = GatewayProcess(
        tmp_path, {"devices": {"R1": r1}}, admission={"failures_before_block": 4, "block_seconds": 60}
    ).start()
    try:
        for _ in range(2):  # protocol garbage weighs 2 by default
            with socket.create_connection(("127.0.0.1", gw.ssh_port)) as bad:
                bad.sendall(b"garbage\r\n")
                bad.shutdown(socket.SHUT_WR)
                bad.settimeout(5)
                while bad.recv(4096):
                    pass
        wait_until(lambda: "127.0.0.1" in gw.get("/blocked")[1])  # type: ignore[operator]
        _, blocked = gw.get("/blocked")
        assert "127.0.0.1" in blocked  # type: ignore[operator]
        rejected = gw.cli("rejected")
        assert rejected.returncode == 0 and "transport-error" in rejected.stdout
        assert "blocking source 127.0.0.1" in gw.log.read_text()
    finally:
        assert gw.stop() == 0


@pytest.mark.parametrize(
    ("config", "key", "expected"),
    [
        ({"inventory": "missing.yml"}, "inventory", "an existing file"),
        ({"listen": {"ssh_port": 70000}}, "listen.ssh_port", "a port number"),
        ({"socket_mode": "rwx"}, "socket_mode", "an octal mode"),
        ({"colour": "blue"}, "colour", "one of the keys"),
        ({"hello_timeout": 0}, "hello_timeout", "a number of seconds > 0"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, config: dict[str, object], key: str, expected: str) -> None:
    (tmp_path / "devices.yml").write_text("devices: {}\n")
    path = tmp_path / "gateway.yml"
    path.write_text(yaml.safe_dump({"inventory": "devices.yml", "run_dir": str(tmp_path / "run"), **config}))
    result = serve_once(path)
    assert result.returncode == 1
    assert f"{path}: {key}: expected {expected}" in result.stderr
    assert "Traceback" not in result.stderr


def test_device_killed_and_back(tmp_path: Path, netconfd: NetconfdDevice) -> None:
    r1 = netconfd.inventory_entry()
    gw = GatewayProcess(tmp_path, {"devices": {"R1": r1}}).start()
    try:
        relay = ReverseRelay(listener_port=gw.ssh_port, device_port=netconfd.ssh_port).start()
        m = gw.netconf("R1")
        assert isinstance(groups(m), list)
        relay.stop()  # the device's path dies (TCP closed)
        deadline = time.monotonic() + 10
        while gw.get("/devices/R1")[1]["state"] != "disconnected" and time.monotonic() < deadline:  # type: ignore[index]
            time.sleep(0.1)
        record = gw.get("/devices/R1")[1]
        assert record["state"] == "disconnected", record  # type: ignore[index]
        with pytest.raises(NcTransportError):  # the held session ended with the device
            m.get_config(source="running")
        # the device calls again: a new local session works, and the reconnect is counted
        with ReverseRelay(listener_port=gw.ssh_port, device_port=netconfd.ssh_port), gw.netconf("R1") as m2:
            assert isinstance(groups(m2), list)
            record = gw.get("/devices/R1")[1]
            assert record["state"] == "connected"  # type: ignore[index]
            assert record["reconnects"] == 1  # type: ignore[index]
    finally:
        assert gw.stop() == 0


def test_device_refusing_a_second_channel_serves_one_session_at_a_time(tmp_path: Path) -> None:
    with NetconfdDevice(tmp_path, name="single", max_sessions=1) as device:
        r1 = device.inventory_entry()
        gw = GatewayProcess(tmp_path, {"devices": {"R1": r1}}).start()
        try:
            with ReverseRelay(listener_port=gw.ssh_port, device_port=device.ssh_port):
                first = gw.netconf("R1")
                released_at: list[float] = []

                def release() -> None:
                    time.sleep(1.0)
                    released_at.append(time.monotonic())
                    first.close_session()

                threading.Thread(target=release, daemon=True).start()
                with gw.netconf("R1") as second:  # waits for the first session to end
                    assert released_at, "the second session opened while the first was still open"
                    assert isinstance(groups(second), list)
                    # two more queue behind it at once: both are served, one after the other
                    results: list[object] = []

                    def queued() -> None:
                        try:
                            with gw.netconf("R1") as m:
                                results.append(groups(m))
                        except Exception as exc:  # the assertion below reports it
                            results.append(exc)

                    waiters = [threading.Thread(target=queued) for _ in range(2)]
                    for waiter in waiters:
                        waiter.start()
                    time.sleep(0.5)
                for waiter in waiters:
                    waiter.join(30)
                assert len(results) == 2 and all(isinstance(r, list) for r in results), results
            assert gw.log.read_text().count("one session at a time from now on") == 1
        finally:
            assert gw.stop() == 0


def test_tls_devices_without_a_manager_certificate_fail_at_start(tmp_path: Path, pki: DevicePKI) -> None:
    tls = {"issuers": [str(pki.root_a_pem)], "identifier": "SN-0004"}
    (tmp_path / "devices.yml").write_text(
        yaml.safe_dump({"devices": {"SN-0004": {"transport": "restconf", "tls": tls}}})
    )
    path = tmp_path / "gateway.yml"
    path.write_text(yaml.safe_dump({"inventory": "devices.yml", "run_dir": str(tmp_path / "run")}))
    result = subprocess.run(
        [sys.executable, "-m", "callhome_transport.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert str(path) in result.stderr and "tls.certfile and tls.keyfile" in result.stderr
    assert "devices SN-0004 call home over TLS" in result.stderr


def test_identified_device_with_wrong_credentials_is_auth_failed(tmp_path: Path, netconfd: NetconfdDevice) -> None:
    r1 = netconfd.inventory_entry(password="not-the-password")
    gw = GatewayProcess(tmp_path, {"devices": {"R1": r1}}, admission={"failures_before_block": 1000}).start()
    try:
        # waiting for the device (control API, local NETCONF client) while it
        # calls and is refused: both learn why at once, not after the deferral
        waiter = InThread(GatewayClient(gw.run_dir).wait, "R1", timeout=60)
        local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        local.settimeout(30)
        local.connect(str(gw.run_dir / "devices" / "R1" / "netconf.sock"))
        started = time.monotonic()
        with ReverseRelay(listener_port=gw.ssh_port, device_port=netconfd.ssh_port):
            error = waiter.outcome(30)
            assert local.recv(4096) == b""  # closed, well before the 15 s deferral
            local.close()
        assert time.monotonic() - started < 10
        assert isinstance(error, AuthenticationFailedError), error
        assert error.device == "R1" and error.fingerprint == netconfd.host_key_fingerprint
        assert error.refused_at > 0
        assert "event=local-session-failed reason=authentication as 'chtest' failed on device R1" in gw.log.read_text()
        [rejected] = gw.get("/rejected")[1]  # type: ignore[misc]
        assert rejected["fingerprint"] == netconfd.host_key_fingerprint
        assert "authentication as 'chtest' failed" in rejected["detail"]
        with ReverseRelay(listener_port=gw.ssh_port, device_port=netconfd.ssh_port):
            deadline = time.monotonic() + 20
            record: dict[str, object] = {}
            while time.monotonic() < deadline:
                record = gw.get("/devices/R1")[1]  # type: ignore[assignment]
                if record["state"] == "auth-failed":
                    break
                time.sleep(0.1)
            assert record["state"] == "auth-failed", record
            assert "auth-failed" in str(record["last_reason"])
            waited = gw.cli("wait", "R1", "--timeout", "0.5")
            assert waited.returncode == 1  # an error to act on, not a timeout
            assert "authentication as 'chtest' failed on device R1" in waited.stderr
    finally:
        assert gw.stop() == 0


def test_remote_terminal_over_call_home_ssh(tmp_path: Path, netconfd: NetconfdDevice) -> None:
    """The call-home draft's remote terminal access: a shell with a PTY on the
    device's call-home SSH connection, through terminal.sock (opt in)."""
    r1 = netconfd.inventory_entry()
    gw = GatewayProcess(tmp_path, {"devices": {"R1": r1}}, terminal=True).start()
    try:
        path = gw.run_dir / "devices" / "R1" / "terminal.sock"
        assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
        with (
            ReverseRelay(listener_port=gw.ssh_port, device_port=netconfd.ssh_port),
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as term,
        ):
            term.settimeout(20)
            term.connect(str(path))
            term.sendall(b"\0CALLHOME-")  # a preamble split across writes
            time.sleep(0.1)
            term.sendall(b"TERM vt100 100 30\n")
            term.sendall(b"stty size; echo call-home-$((40+2)); exit\n")
            out = b""
            while chunk := term.recv(4096):
                out += chunk
            # the CLI, with piped input (no tty): runs the commands, ends when the shell does
            cli = subprocess.run(
                [sys.executable, "-m", "callhome_transport.cli", "terminal", "R1", "--run-dir", str(gw.run_dir)],
                input="echo cli-$((1+1))\nexit\n",
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert cli.returncode == 0, cli.stderr
            assert "cli-2" in cli.stdout
        assert b"call-home-42" in out
        assert b"30 100" in out  # the PTY got the client's size
        log = gw.log.read_text()
        assert "event=terminal-opened term=vt100" in log
        assert "call-home-42" not in log  # terminal content is never logged
    finally:
        assert gw.stop() == 0


def test_no_terminal_endpoint_unless_enabled(tmp_path: Path, netconfd: NetconfdDevice) -> None:
    r1 = {"ssh": {"host_keys": [netconfd.host_key_public_line], "username": "u", "password": "p"}}
    gw = GatewayProcess(tmp_path, {"devices": {"R1": r1}}).start()
    try:
        assert (gw.run_dir / "devices" / "R1" / "netconf.sock").exists()
        assert not (gw.run_dir / "devices" / "R1" / "terminal.sock").exists()
    finally:
        assert gw.stop() == 0


def test_a_name_too_long_for_its_socket_is_refused_at_start(tmp_path: Path, netconfd: NetconfdDevice) -> None:
    name = "N" * 128
    gw = GatewayProcess(tmp_path, {"devices": {name: netconfd.inventory_entry()}})
    result = serve_once(gw.config_path)
    socket_path = gw.run_dir / "devices" / name / "netconf.sock"
    assert result.returncode == 1, result.stderr
    assert f"devices.{name}: expected a name short enough for its socket path" in result.stderr
    assert f"is {len(str(socket_path))} bytes" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (gw.run_dir / "control.sock").exists()


def test_a_failed_start_leaves_no_control_sock(tmp_path: Path, netconfd: NetconfdDevice) -> None:
    gw = GatewayProcess(tmp_path, {"devices": {"R1": netconfd.inventory_entry()}})
    (gw.run_dir / "devices").mkdir(parents=True)
    (gw.run_dir / "devices" / "R1").write_text("a file where the device's directory goes\n")
    result = serve_once(gw.config_path)
    assert result.returncode == 1, result.stderr
    assert f"cannot open the local endpoint {gw.run_dir / 'devices' / 'R1'}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (gw.run_dir / "control.sock").exists()


@pytest.mark.parametrize("which", ["inventory", "config"])
def test_files_that_are_not_utf8_stop_the_gateway_with_a_clear_error(
    tmp_path: Path, netconfd: NetconfdDevice, which: str
) -> None:
    gw = GatewayProcess(tmp_path, {"devices": {"R1": netconfd.inventory_entry()}})
    path = gw.inventory_path if which == "inventory" else gw.config_path
    path.write_bytes(path.read_bytes() + b"# caf\xe9\n")
    result = serve_once(gw.config_path)
    assert result.returncode == 1, result.stderr
    assert f"{path}: expected a UTF-8 text file" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_device_listed_twice_stops_the_gateway(tmp_path: Path, netconfd: NetconfdDevice) -> None:
    gw = GatewayProcess(tmp_path, {"devices": {"R1": netconfd.inventory_entry()}})
    text = gw.inventory_path.read_text()
    entry = text.split("devices:\n", 1)[1]
    gw.inventory_path.write_text(text + entry)
    result = serve_once(gw.config_path)
    assert result.returncode == 1, result.stderr
    assert f"{gw.inventory_path}: devices.R1: expected each key once" in result.stderr


def fake_ssh_devices(names: list[str]) -> dict[str, object]:
    """SSH devices that never call (a pinned fingerprint of no real key): for
    tests of the gateway's own state."""
    return {
        name: {"ssh": {"host_keys": ["SHA256:" + f"{name:A<43}"[:43]], "username": "u", "password": "p"}}
        for name in names
    }


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a new file renamed over it)."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def wait_log(gw: GatewayProcess, text: str, count: int = 1, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while gw.log.read_text().count(text) < count:
        assert time.monotonic() < deadline, f"no {count} x {text!r} in the log:\n{gw.log.read_text()[-3000:]}"
        time.sleep(0.05)


def sockets_of(gw: GatewayProcess) -> set[str]:
    devices = gw.run_dir / "devices"
    return {p.parent.name for p in devices.glob("*/netconf.sock")} if devices.exists() else set()


def test_reload_refuses_an_inventory_that_would_remove_every_device(tmp_path: Path, netconfd: NetconfdDevice) -> None:
    gw = GatewayProcess(tmp_path, {"devices": {"R1": netconfd.inventory_entry(), **fake_ssh_devices(["R2"])}})
    gw.start()
    assert gw.proc is not None
    try:
        with ReverseRelay(listener_port=gw.ssh_port, device_port=netconfd.ssh_port):
            assert gw.cli("wait", "R1", "--timeout", "20").returncode == 0
            for n, text in enumerate(["", "devices:\n", "version: 1\n"], start=1):
                gw.inventory_path.write_text(text)  # an editor caught mid-write, a truncated file
                os.kill(gw.proc.pid, signal.SIGHUP)
                wait_log(gw, "ERROR callhome_transport.gateway.service: reload failed, keeping", n)
            assert "removed" not in gw.log.read_text()
            assert sockets_of(gw) == {"R1", "R2"}
            _, record = gw.get("/devices/R1")
            assert record["state"] == "connected"  # type: ignore[index]
            # no device on purpose: said explicitly
            gw.inventory_path.write_text("devices: {}\n")
            os.kill(gw.proc.pid, signal.SIGHUP)
            wait_log(gw, "inventory reloaded: 0 devices (0 added, 2 removed)")
            assert sockets_of(gw) == set()
            assert gw.get("/devices")[1] == []
    finally:
        assert gw.stop() == 0


def test_a_sighup_storm_alternating_two_inventories_ends_consistent(tmp_path: Path) -> None:
    first = fake_ssh_devices([f"A{i}" for i in range(8)])
    second = fake_ssh_devices([f"A{i}" for i in range(0, 8, 2)] + [f"B{i}" for i in range(4)])
    gw = GatewayProcess(tmp_path, {"devices": first}).start()
    assert gw.proc is not None
    try:
        for n in range(50):
            replace_file(gw.inventory_path, yaml.safe_dump({"devices": second if n % 2 == 0 else first}))
            os.kill(gw.proc.pid, signal.SIGHUP)
        # the last file written holds `first`; whatever order the reloads ran in,
        # the last one read it
        wait_log(gw, "inventory reloaded")
        deadline = time.monotonic() + 20
        while sockets_of(gw) != set(first) or {r["name"] for r in gw.get("/devices")[1]} != set(first):  # type: ignore[union-attr,index]
            assert time.monotonic() < deadline, (sockets_of(gw), gw.log.read_text()[-3000:])
            time.sleep(0.1)
        for name in first:  # every socket answers (a stale file would refuse)
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(gw.run_dir / "devices" / name / "netconf.sock"))
        # a socket file removed behind the gateway's back is put back by the next reload
        (gw.run_dir / "devices" / "A3" / "netconf.sock").unlink()
        os.kill(gw.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not (gw.run_dir / "devices" / "A3" / "netconf.sock").exists():
            assert time.monotonic() < deadline, gw.log.read_text()[-2000:]
            time.sleep(0.05)
    finally:
        assert gw.stop() == 0


def test_a_reload_that_cannot_bind_an_endpoint_changes_nothing(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, {"devices": fake_ssh_devices(["A1", "A2"])}).start()
    assert gw.proc is not None
    try:
        (gw.run_dir / "devices" / "B1").write_text("a file where the device's directory goes\n")
        replace_file(gw.inventory_path, yaml.safe_dump({"devices": fake_ssh_devices(["A1", "B0", "B1"])}))
        os.kill(gw.proc.pid, signal.SIGHUP)
        wait_log(gw, "reload failed, keeping the current inventory: cannot open the local endpoint")
        assert sockets_of(gw) == {"A1", "A2"}
        assert {r["name"] for r in gw.get("/devices")[1]} == {"A1", "A2"}  # type: ignore[union-attr,index]
        assert not (gw.run_dir / "devices" / "B0").exists()
        assert not list(gw.run_dir.glob(".new*"))  # no staged socket left
    finally:
        assert gw.stop() == 0


def test_cli_commands_wait_for_a_gateway_that_is_starting(tmp_path: Path, netconfd: NetconfdDevice) -> None:
    gw = GatewayProcess(tmp_path, {"devices": {"R1": netconfd.inventory_entry()}})
    # started before the gateway, as after "callhome serve &"
    waiting = subprocess.Popen(
        gw.cli_command("wait", "R1", "--timeout", "30"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    listing = subprocess.Popen(
        gw.cli_command("devices", "--json", "--timeout", "30"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        gw.start()
        with ReverseRelay(listener_port=gw.ssh_port, device_port=netconfd.ssh_port):
            out, err = waiting.communicate(timeout=40)
            assert waiting.returncode == 0, err
            assert "R1 connected from 127.0.0.1:" in out
        out, err = listing.communicate(timeout=40)
        assert listing.returncode == 0, err
        assert [d["name"] for d in json.loads(out)] == ["R1"]
    finally:
        for proc in (waiting, listing):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert gw.stop() == 0


def test_cli_without_a_gateway_fails_after_its_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_cli("devices", "--run-dir", str(tmp_path), "--timeout", "0.5")
    assert result.returncode == 1
    assert f"no call-home gateway at {tmp_path / 'control.sock'}" in result.stderr
    assert time.monotonic() - started >= 0.5


@pytest.mark.parametrize("namespace", ["path", "abstract"])
def test_serve_reports_readiness_to_systemd_and_in_a_ready_file(tmp_path: Path, namespace: str) -> None:
    gw = GatewayProcess(tmp_path, {"devices": fake_ssh_devices(["R1", "R2"])})
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if namespace == "path":
        notify.bind(str(tmp_path / "notify.sock"))
        address = str(tmp_path / "notify.sock")
    else:
        notify.bind(f"\0callhome-test-{os.getpid()}-{tmp_path.name}")
        address = f"@callhome-test-{os.getpid()}-{tmp_path.name}"
    notify.settimeout(20)
    try:
        proc = gw.launch(env={**os.environ, "NOTIFY_SOCKET": address})
        message = notify.recv(4096).decode()
        assert "READY=1" in message.splitlines()
        assert f"MAINPID={proc.pid}" in message.splitlines()
        assert "STATUS=2 devices; listening ssh " in message
        # at READY=1 everything is up: ready file, control.sock, endpoints, listener
        ready = json.loads(gw.ready_file.read_text())
        assert ready["pid"] == proc.pid
        assert ready["listening"]["ssh"] == gw.ssh_port
        assert (gw.run_dir / "control.sock").exists()
        assert sockets_of(gw) == {"R1", "R2"}
        socket.create_connection(("127.0.0.1", gw.ssh_port), timeout=5).close()
        assert gw.get("/devices")[0] == 200
        os.kill(proc.pid, signal.SIGTERM)
        assert "STOPPING=1" in notify.recv(4096).decode()
        assert proc.wait(15) == 0
        assert not gw.ready_file.exists()
    finally:
        notify.close()
        gw.stop()


def wait_rejected_reasons(gw: GatewayProcess, count: int, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        reasons = [r["reason"] for r in gw.get("/rejected")[1]]  # type: ignore[union-attr,index]
        if len(reasons) >= count:
            return reasons
        assert time.monotonic() < deadline, (reasons, gw.log.read_text()[-2000:])
        time.sleep(0.05)


def test_authentication_failures_block_the_device_not_its_shared_address(
    tmp_path: Path, netconfd: NetconfdDevice, make_netconfd: Any
) -> None:
    other: NetconfdDevice = make_netconfd()
    inventory = {
        "devices": {"R1": netconfd.inventory_entry(password="not-the-password"), "R2": other.inventory_entry()}
    }
    gw = GatewayProcess(tmp_path, inventory, admission={"failures_before_block": 2, "block_seconds": 60}).start()
    try:
        for n in (1, 2):
            with ReverseRelay(listener_port=gw.ssh_port, device_port=netconfd.ssh_port):
                assert wait_rejected_reasons(gw, n)[-1] == "auth-failed"
        tried = netconfd.auth_attempts()
        with ReverseRelay(listener_port=gw.ssh_port, device_port=netconfd.ssh_port):
            assert wait_rejected_reasons(gw, 3)[-1] == "device-blocked"
        assert netconfd.auth_attempts() == tried  # refused after identification, before any credential
        assert "blocking device R1 for 60 s after repeated authentication failures" in gw.log.read_text()
        assert gw.get("/blocked")[1] == {}  # the shared address is not blocked...
        with ReverseRelay(listener_port=gw.ssh_port, device_port=other.ssh_port):  # ...its other devices get in
            assert gw.cli("wait", "R2", "--timeout", "20").returncode == 0
        assert "callhome_blocked_devices 1" in str(gw.get("/metrics")[1])
    finally:
        assert gw.stop() == 0
