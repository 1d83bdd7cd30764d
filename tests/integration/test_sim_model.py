"""The simulated device provisioned through the standard model, end to end:
``callhome sim --netconf-listen`` starts a device that does not call anyone;
a manager connects to its management port (NETCONF over SSH, its pinned host
key), writes an ietf-netconf-server call-home payload with edit-config +
commit, and the device calls the gateway (``callhome serve``); deleting the
gateway's netconf-client, over the call-home session itself, makes it hang up."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ncclient import NCClientError, manager
from ncclient.operations import RPCError

from .netconfd_peer import free_port
from .test_gateway import GatewayProcess

pytestmark = pytest.mark.integration

NCS = "urn:ietf:params:xml:ns:yang:ietf-netconf-server"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"


def callhome_config(*clients: tuple[str, int]) -> str:
    entries = "".join(
        f"<netconf-client><name>{name}</name><endpoints><endpoint><name>{name}-1</name><ssh>"
        f"<tcp-client-parameters><remote-address>127.0.0.1</remote-address><remote-port>{port}</remote-port>"
        "</tcp-client-parameters></ssh></endpoint></endpoints>"
        "<connection-type><persistent/></connection-type>"
        "<reconnect-strategy><max-wait>3</max-wait><max-attempts>1</max-attempts></reconnect-strategy>"
        "</netconf-client>"
        for name, port in clients
    )
    return (
        f'<config xmlns="{NC}"><netconf-server xmlns="{NCS}"><call-home>{entries}</call-home></netconf-server></config>'
    )


class SimProcess:
    def __init__(self, workdir: Path) -> None:
        self.inventory = workdir / "sim.yml"
        self.log = workdir / "sim.log"
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "callhome_transport.cli",
                "sim",
                "--devices",
                "1",
                "--prefix",
                "PROV-",
                "--netconf-listen",
                f"127.0.0.1:{self.port}",
                "--inventory-out",
                str(self.inventory),
                "-v",
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.wait_log("accepts NETCONF over SSH")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log_text()):
                return
            assert self.proc.poll() is None, self.log_text()
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in the sim's log:\n{self.log_text()}")

    def device(self) -> dict[str, Any]:
        inventory = yaml.safe_load(self.inventory.read_text())
        (entry,) = inventory["devices"].values()
        return dict(entry)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    process = SimProcess(tmp_path)
    yield process
    process.stop()


def provision_session(sim: SimProcess) -> manager.Manager:
    """The management port, by the device's pinned host key (never an unverified one)."""
    host_key_b64 = sim.device()["ssh"]["host_keys"][0].split()[1]
    return manager.connect(
        host="127.0.0.1",
        port=sim.port,
        username="admin",
        password="admin",
        hostkey_b64=host_key_b64,
        look_for_keys=False,
        allow_agent=False,
        timeout=15,
    )


def test_simulated_device_provisioned_over_netconf_calls_the_gateway_and_hangs_up_on_delete(
    tmp_path: Path, sim: SimProcess
) -> None:
    inventory = yaml.safe_load(sim.inventory.read_text())
    gateway = GatewayProcess(tmp_path, inventory).start()
    try:
        dead = free_port()  # a second manager that is not there: the device keeps trying it
        with provision_session(sim) as m:
            assert any("ietf-netconf-server" in c and "ssh-call-home" in c for c in m.server_capabilities)
            # a mistyped payload is refused at commit with its key path, as a native device does
            m.edit_config(
                target="candidate",
                config=callhome_config(("gateway", gateway.ssh_port)).replace("remote-port", "remote-prt"),
            )
            with pytest.raises(RPCError) as refused:
                m.commit()
            assert refused.value.path.endswith("tcp-client-parameters/remote-prt")
            m.discard_changes()
            m.edit_config(target="candidate", config=callhome_config(("gateway", gateway.ssh_port), ("backup", dead)))
            m.commit()
        assert gateway.cli("wait", "PROV-00001", "--timeout", "15").returncode == 0
        sim.wait_log(r"client=gateway endpoint=gateway-1 called 127\.0\.0\.1:\d+")
        # the manager reads the device's call-home configuration over call home itself ...
        m = gateway.netconf("PROV-00001")
        try:
            running = m.get_config(source="running", filter=("subtree", f'<netconf-server xmlns="{NCS}"/>')).xml
            assert f"<remote-port>{gateway.ssh_port}</remote-port>" in running
            # ... and deletes its own netconf-client: the device answers, then hangs up
            m.edit_config(
                target="candidate",
                config=(
                    f'<config xmlns="{NC}"><netconf-server xmlns="{NCS}"><call-home>'
                    f'<netconf-client xmlns:nc="{NC}" nc:operation="delete"><name>gateway</name></netconf-client>'
                    "</call-home></netconf-server></config>"
                ),
            )
            assert m.commit().ok
        finally:
            with contextlib.suppress(NCClientError):  # the device has hung up: no session to close
                m.close_session()
        sim.wait_log(r"client=gateway hanging up: removed from the configuration")
        deadline = time.monotonic() + 15
        while gateway.get("/devices/PROV-00001")[1]["state"] == "connected":  # type: ignore[index]
            assert time.monotonic() < deadline, "the device did not hang up"
            time.sleep(0.05)
        sim.wait_log(r"client=gateway endpoint=gateway-1 session ended after")
        # the other client is untouched: still trying its (dead) manager
        sim.wait_log(r"client=backup event=exhausted round=2")
        assert "client=backup hanging up" not in sim.log_text()
    finally:
        gateway.stop()
