"""``callhome agent`` with real peers: yuma123 netconfd behind OpenSSH sshd
(the device's own server, which has no call home) made to call home by the
agent, to the library's CallHomeServer and to the gateway (``callhome serve``),
which identify it by its pinned host key.  RFC 8071 S1-S2 by the agent,
S3-S7 by sshd + netconfd."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from callhome_transport import (
    CallHomeServer,
    Device,
    DeviceConnected,
    HostKeyPin,
    Inventory,
    SSHClientConfig,
    TLSClientConfig,
    Transport,
)
from callhome_transport import SSHCredentials as Credentials

from ..pki import DevicePKI
from .agent_peer import AgentProcess, Client, callhome_payload
from .netconfd_peer import NACM_GROUP_FILTER, SOCAT, NetconfdDevice, free_port
from .stunnel_peer import StunnelDevice, stunnel_available
from .test_gateway import GatewayProcess

pytestmark = pytest.mark.integration


def inventory(device: NetconfdDevice) -> Inventory:
    return Inventory(
        [
            Device(
                name="SN-0001",
                host_keys=(HostKeyPin.parse(device.host_key_public_line),),
                credentials=Credentials(username=device.username, password=device.password),
            )
        ]
    )


@pytest.fixture
def server(netconfd: NetconfdDevice) -> Iterator[CallHomeServer]:
    # no SSH keepalives from the manager: a periodic session must be able to go idle
    ssh = SSHClientConfig(keepalive_interval=0)
    with CallHomeServer(inventory(netconfd), listen_address="127.0.0.1", listen_port=0, ssh=ssh) as srv:
        yield srv


def groups(m: object) -> str:
    return str(m.get_config(source="running", filter=NACM_GROUP_FILTER).xml)  # type: ignore[attr-defined]


def connects(server: CallHomeServer) -> list[DeviceConnected]:
    events: list[DeviceConnected] = []
    server.on_connect(events.append)
    return events


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")


def keepalive_timer(port: int) -> str:
    """ss's timer column for the agent's connection to the manager's ``port``."""
    out = subprocess.run(
        ["ss", "-tnoH", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return out.stdout


def test_call_home_server_reaches_netconfd_through_the_agent(
    tmp_path: Path, netconfd: NetconfdDevice, server: CallHomeServer
) -> None:
    payload = callhome_payload(Client("nms", [("manager", server.listen_port)], keepalives=(7, 3, 2)))
    with AgentProcess(tmp_path, payload, local_ssh_port=netconfd.ssh_port) as agent:
        with server.netconf("SN-0001", timeout=15) as m:
            assert "<data" in groups(m)
        (event,) = server.connected()
        assert event.fingerprint == netconfd.host_key_fingerprint  # the real server's key, pinned
        # the agent only relays: sshd saw the manager's password from the agent's connection
        assert netconfd.log_has(r"Accepted password for chtest from 127\.0\.0\.1")
        # TCP keepalives as configured (idle-time 7 s): the kernel runs the keepalive timer
        # (while bytes are unacknowledged ss shows the retransmit timer instead: wait for quiet)
        timers: list[str] = []
        wait_until(lambda: timers.append(keepalive_timer(server.listen_port)) or "keepalive" in timers[-1], 5, "ss")
        due = re.search(r"timer:\(keepalive,([\d.]+)(ms|sec),", timers[-1])
        assert due is not None, timers[-1]
        assert float(due.group(1)) <= 7  # idle-time 7 s, not the kernel's 7200 s
        agent.wait_log(r"client=nms endpoint=manager connected to 127\.0\.0\.1:\d+ .*; spliced to 127\.0\.0\.1:")
        assert agent.stop() == 0  # SIGTERM: a clean end
    log = agent.log_text()
    ended = re.findall(r"client=nms endpoint=manager session ended after [\d.]+ s \((.*)\): (\d+) B|KiB", log)
    assert len(re.findall(r"session ended after", log)) == 1  # one INFO line per session
    assert "hung up: the agent is stopping" in log, ended
    assert re.search(
        r"session ended after [\d.]+ s \(hung up: the agent is stopping\): [\d.]+ (B|KiB) to the manager", log
    )
    assert "callhome agent stopped" in log
    assert agent.metric("callhome_agent_sessions_total", client="nms", endpoint="manager") == 1
    assert agent.metric("callhome_agent_bytes_total", client="nms", direction="from-manager") > 1000


def test_tls_endpoint_is_spliced_to_the_local_tls_server(tmp_path: Path, netconfd: NetconfdDevice) -> None:
    """NETCONF over TLS (RFC 7589): stunnel + netconfd is the device's TLS
    server; the manager identifies it by its certificate through the agent."""
    if stunnel_available():
        pytest.skip(stunnel_available())
    pki = DevicePKI(tmp_path / "pki")
    inventory = Inventory.from_dict(
        {
            "devices": {
                "SN-0003": {"transport": "tls", "tls": {"issuers": [str(pki.root_a_pem)], "identifier": "SN-0003"}}
            }
        }
    )
    tls = TLSClientConfig(certfile=pki.manager_cert, keyfile=pki.manager_key, handshake_timeout=5)
    cert, key = pki.device_files("SN-0003")
    with (
        CallHomeServer(inventory, listen_address="127.0.0.1", listen_port=None, tls=tls, tls_listen_port=0) as server,
        StunnelDevice(tmp_path, netconfd, certfile=cert, keyfile=key, client_ca=pki.manager_ca_pem) as device,
    ):
        payload = callhome_payload(Client("nms", [("manager", server.tls_listen_port)], transport="tls"))
        with AgentProcess(tmp_path, payload, local_tls_port=device.port) as agent:
            with server.netconf("SN-0003", timeout=15) as m:
                assert "<data" in groups(m)
            event = server.wait_for("SN-0003", timeout=5)
            assert event.transport is Transport.TLS
            assert event.certificate_subject is not None and "serialNumber=SN-0003" in event.certificate_subject
            # one NETCONF session per TLS connection: the persistent client calls again at once
            with server.netconf("SN-0003", timeout=15) as m:
                assert "<data" in groups(m)
            assert agent.count(r"client=nms endpoint=manager connected to .*; spliced to 127\.0\.0\.1:") >= 2


def test_second_endpoint_is_used_when_the_first_is_dead(
    tmp_path: Path, netconfd: NetconfdDevice, server: CallHomeServer
) -> None:
    dead = free_port()
    payload = callhome_payload(
        Client("nms", [("dead", dead), ("alive", server.listen_port)], reconnect={"max-wait": 2, "max-attempts": 2})
    )
    with AgentProcess(tmp_path, payload, local_ssh_port=netconfd.ssh_port) as agent:
        with server.netconf("SN-0001", timeout=15) as m:
            assert "<data" in groups(m)
        agent.wait_log(r"client=nms endpoint=alive connected to")
        assert agent.wait_metric("callhome_agent_dials_total", 1, endpoint="alive", result="ok") == 1
        assert agent.metric("callhome_agent_dials_total", endpoint="dead", result="error") == 2  # max-attempts
        assert agent.count("event=exhausted") == 0


def test_last_connected_is_remembered_across_restarts_of_the_agent(
    tmp_path: Path, netconfd: NetconfdDevice, server: CallHomeServer
) -> None:
    state = tmp_path / "agent.state"
    client = Client(
        "nms", [("dead", free_port()), ("alive", server.listen_port)], reconnect={"start-with": "last-connected"}
    )
    payload = callhome_payload(client)
    args = ("--state-file", str(state))
    with AgentProcess(tmp_path, payload, local_ssh_port=netconfd.ssh_port, name="first", extra_args=args) as agent:
        agent.wait_log(r"client=nms endpoint=alive connected to")
        assert agent.wait_metric("callhome_agent_dials_total", 3, endpoint="dead", result="error") == 3
    assert json.loads(state.read_text()) == {"last_connected": {"nms": "alive"}}
    with AgentProcess(tmp_path, payload, local_ssh_port=netconfd.ssh_port, name="again", extra_args=args) as agent:
        agent.wait_log(r"client=nms endpoint=alive connected to")
        assert agent.metric("callhome_agent_dials_total", endpoint="dead", result="error") == 0  # alive first


def test_all_endpoints_dead_reports_exhausted_and_keeps_trying(tmp_path: Path, netconfd: NetconfdDevice) -> None:
    first, second = free_port(), free_port()
    payload = callhome_payload(
        Client("nms", [("first", first), ("second", second)], reconnect={"max-wait": 2, "max-attempts": 1})
    )
    with AgentProcess(tmp_path, payload, local_ssh_port=netconfd.ssh_port) as agent:
        log = agent.wait_log(r"client=nms event=exhausted round=\d+", count=3)
        line = re.search(r".*client=nms event=exhausted round=1:.*", log)
        assert line is not None and "WARNING" in line.group(0)
        assert "first (" in line.group(0) and "second (" in line.group(0) and "next round in" in line.group(0)
        assert agent.wait_metric("callhome_agent_rounds_exhausted_total", 3, client="nms") >= 3
        # the manager comes up on the second endpoint's port: the agent is still trying
        ssh = SSHClientConfig(keepalive_interval=0)
        with (
            CallHomeServer(inventory(netconfd), listen_address="127.0.0.1", listen_port=second, ssh=ssh) as late,
            late.netconf("SN-0001", timeout=15) as m,
        ):
            assert "<data" in groups(m)
        assert agent.running()


def test_the_agent_survives_the_local_server_being_down(
    tmp_path: Path, netconfd: NetconfdDevice, server: CallHomeServer
) -> None:
    local = free_port()  # the device's server is not there yet
    payload = callhome_payload(Client("nms", [("manager", server.listen_port)], reconnect={"max-attempts": 1}))
    with AgentProcess(tmp_path, payload, local_ssh_port=local) as agent:
        agent.wait_log(r"local SSH server 127\.0\.0\.1:\d+ unavailable .*hung up on the manager")
        agent.wait_log(r"event=exhausted round=2")
        assert agent.count("local SSH server .* unavailable") == 1  # said once, not per attempt
        assert agent.wait_metric("callhome_agent_local_failures_total", 2, transport="ssh") >= 2
        assert agent.running()
        # the server comes back (sshd reached through a forwarder on the port the agent knows)
        forwarder = subprocess.Popen(
            [SOCAT, f"TCP4-LISTEN:{local},bind=127.0.0.1,reuseaddr,fork", f"TCP4:127.0.0.1:{netconfd.ssh_port}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with server.netconf("SN-0001", timeout=20) as m:
                assert "<data" in groups(m)
            agent.wait_log(r"local SSH server 127\.0\.0\.1:\d+ is back")
        finally:
            forwarder.terminate()
            forwarder.wait(5)


def test_sighup_restarts_changed_clients_and_leaves_the_others(
    tmp_path: Path, netconfd: NetconfdDevice, server: CallHomeServer
) -> None:
    ssh = SSHClientConfig(keepalive_interval=0)
    with (
        CallHomeServer(inventory(netconfd), listen_address="127.0.0.1", listen_port=0, ssh=ssh) as other,
        CallHomeServer(inventory(netconfd), listen_address="127.0.0.1", listen_port=0, ssh=ssh) as moved,
    ):
        steady, changing = connects(server), connects(other)
        before = callhome_payload(
            Client("steady", [("a", server.listen_port)]), Client("changing", [("b", other.listen_port)])
        )
        with AgentProcess(tmp_path, before, local_ssh_port=netconfd.ssh_port) as agent:
            server.wait_for("SN-0001", 15)
            other.wait_for("SN-0001", 15)
            arrived = connects(moved)
            agent.reload(
                callhome_payload(
                    Client("steady", [("a", server.listen_port)]), Client("changing", [("b", moved.listen_port)])
                )
            )
            agent.wait_log(r"reloaded .*: restarted changing; untouched steady")
            wait_until(lambda: arrived, 15, "the changed client calls its new manager")
            agent.wait_log(r"client=changing endpoint=b session ended .*hung up: its configuration changed")
            with server.netconf("SN-0001", timeout=5) as m:  # the untouched session still serves
                assert "<data" in groups(m)
            assert agent.count("client=steady endpoint=a session ended") == 0
            assert len(steady) == 1 and len(changing) == 1  # no new call to either
            # a broken file is refused and the running configuration kept
            agent.reload("<netconf-server xmlns='urn:ietf:params:xml:ns:yang:ietf-netconf-server'><cal-home/>")
            agent.wait_log(r"ERROR .*reload failed, keeping the running configuration")
            assert agent.running()


def test_periodic_connection_closes_when_idle_and_calls_again_at_the_next_period(
    tmp_path: Path, netconfd: NetconfdDevice, server: CallHomeServer
) -> None:
    """period 1 minute (the model's unit), idle-timeout 2 s: called at once
    (no anchor-time), hung up after 2 s without a byte, called again one
    period after the first call and not before."""
    events = connects(server)
    payload = callhome_payload(
        Client("nms", [("manager", server.listen_port)], periodic={"period": 1, "idle-timeout": 2})
    )
    with AgentProcess(tmp_path, payload, local_ssh_port=netconfd.ssh_port) as agent:
        wait_until(lambda: len(events) == 1, 15, "the first periodic call")
        first = events[0].connected_at
        with server.netconf("SN-0001", timeout=5) as m:
            assert "<data" in groups(m)
        agent.wait_log(r"session ended after [\d.]+ s \(hung up: idle for 2 s\)", timeout=15)
        assert len(events) == 1
        wait_until(lambda: len(events) == 2, 75, "the call of the next period")
        assert events[1].connected_at - first == pytest.approx(60, abs=2)
        with server.netconf("SN-0001", timeout=5) as m:
            assert "<data" in groups(m)


def test_gateway_restarted_gets_the_device_back_within_max_wait_and_backoff(
    tmp_path: Path, netconfd: NetconfdDevice
) -> None:
    gateway = GatewayProcess(tmp_path, {"devices": {"R1": netconfd.inventory_entry()}}).start()
    try:
        payload = callhome_payload(Client("gw", [("gateway", gateway.ssh_port)], reconnect={"max-wait": 2}))
        with AgentProcess(tmp_path, payload, local_ssh_port=netconfd.ssh_port) as agent:
            assert gateway.cli("wait", "R1", "--timeout", "15").returncode == 0
            stopped = time.time()
            assert gateway.stop() == 0
            gateway.start()  # the same ports
            listening = time.time()  # start() returns once the control socket exists: listeners are up
            wait_until(lambda: gateway.get("/devices/R1")[1]["state"] == "connected", 15, "R1 back")  # type: ignore[index]
            back = gateway.get("/devices/R1")[1]["connected_since"]  # type: ignore[index]
            outage = listening - stopped
            # max-wait (2 s) + the round delay (5 % of the outage, at least 0.05 s, jitter 1.5x) + a handshake
            assert back - listening < 2 + max(0.05, 0.05 * outage) * 1.5 + 1.0
            with gateway.netconf("R1") as m:
                assert "<data" in groups(m)
            assert agent.count("event=exhausted") >= 1  # the outage was seen
    finally:
        gateway.stop()
