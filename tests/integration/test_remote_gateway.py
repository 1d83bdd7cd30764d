"""Reaching a gateway's Unix sockets on another host through its OpenSSH sshd
(stream-local channels), with a real sshd on loopback and a real gateway:
the control API and a device's NETCONF endpoint over SSH, and the typed
errors an operator needs (socket absent, sshd refusing stream-local
forwarding with ``AllowTcpForwarding no``, an unknown host key)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from callhome_transport.engine import EventLoopThread
from callhome_transport.errors import GatewayUnavailableError, UnknownGatewayDeviceError
from callhome_transport.gateway.client import GatewayClient
from callhome_transport.gateway.remote import SSHGateway, SSHOpener
from callhome_transport.sim import SimulatedDevice

from .cluster_peers import GatewaySSHD, ServeProcess, client_key
from .netconfd_peer import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("remote")
    key = client_key(workdir)
    sim = SimulatedDevice("RM-1", password="pw")
    inventory = workdir / "devices.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "devices": {
                    sim.name: {"ssh": {"host_keys": [sim.host_key_line], "username": "admin", "password": "pw"}}
                },
            }
        )
    )
    port = free_port()
    gateway = ServeProcess(workdir / "gw", inventory, listen={"addresses": ["127.0.0.1"], "ssh_port": port})
    sshds = {
        allow: GatewaySSHD(
            workdir / f"sshd-{allow}",
            address="127.0.0.1",
            port=free_port(),
            authorized_key=Path(f"{key}.pub").read_text(),
            allow_tcp_forwarding=allow,
        )
        for allow in ("yes", "no")
    }
    loop = EventLoopThread(name="device")
    try:
        gateway.start()
        for sshd in sshds.values():
            sshd.start()
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text("".join(s.known_hosts_line + "\n" for s in sshds.values()))
        loop.run(sim.call_home("127.0.0.1", port), 20)
        yield {"gateway": gateway, "sshds": sshds, "key": key, "known_hosts": known_hosts, "dir": workdir}
    finally:
        loop.stop()
        gateway.stop()
        for sshd in sshds.values():
            sshd.stop()


def target(remote: dict[str, Any], allow: str = "yes", **overrides: Any) -> SSHGateway:
    sshd = remote["sshds"][allow]
    settings = {
        "host": "127.0.0.1",
        "port": sshd.port,
        "username": "root",
        "key_file": str(remote["key"]),
        "known_hosts": str(remote["known_hosts"]),
        "run_dir": str(remote["gateway"].run_dir),
        **overrides,
    }
    return SSHGateway(**settings)


def test_control_api_and_netconf_over_ssh(remote: dict[str, Any]) -> None:
    ssh = target(remote)
    opener = SSHOpener(ssh)
    try:
        client = GatewayClient(ssh.run_dir, opener=opener, timeout=10)
        info = client.wait("RM-1", 10)
        assert info.connected
        with client.netconf_manager("RM-1", timeout=10) as m:
            assert "<hostname>" in m.get_config(source="running").xml
        # a second session reuses the one SSH connection
        with client.netconf_manager("RM-1", timeout=10) as m:
            assert m.connected
        assert remote["sshds"]["yes"].output().count("Accepted publickey") == 1
    finally:
        opener.close()


def test_an_absent_socket_is_an_unknown_device(remote: dict[str, Any]) -> None:
    opener = SSHOpener(target(remote))
    try:
        client = GatewayClient(remote["gateway"].run_dir, opener=opener, timeout=10)
        client.devices()  # a channel worked: forwarding is allowed, so what follows is the socket
        with pytest.raises(UnknownGatewayDeviceError) as info:
            client.connect_endpoint("NOT-THERE", "netconf")
        assert info.value.device == "NOT-THERE"
        assert "127.0.0.1:" in str(info.value)  # where it looked: that host's run directory
    finally:
        opener.close()


def test_sshd_without_tcp_forwarding_refuses_and_says_which_settings(remote: dict[str, Any]) -> None:
    opener = SSHOpener(target(remote, allow="no"))
    try:
        client = GatewayClient(remote["gateway"].run_dir, opener=opener, timeout=10)
        with pytest.raises(GatewayUnavailableError) as info:
            client.devices()
        assert "AllowStreamLocalForwarding yes" in str(info.value)
        assert "AllowTcpForwarding" in str(info.value)
    finally:
        opener.close()


def test_an_unknown_host_key_is_refused_before_authenticating(remote: dict[str, Any]) -> None:
    empty = remote["dir"] / "empty_known_hosts"
    empty.write_text("")
    opener = SSHOpener(target(remote, known_hosts=str(empty)))
    try:
        with pytest.raises(GatewayUnavailableError, match="host key not verified"):
            GatewayClient(remote["gateway"].run_dir, opener=opener, timeout=10).devices()
    finally:
        opener.close()
