"""A gateway cluster on network namespaces (tests/integration/netns.py), with
real engines only: Debian's HAProxy 2.6 (``send-proxy-v2``) as the balancer,
three ``callhome serve`` gateways each beside its own OpenSSH sshd, a
redis-server, a controller running Ansible, and device hosts: 300 simulated
devices (``callhome sim``) and yuma123 netconfd behind sshd calling through a
socat loop.  Every device dials the balancer; which gateway it lands on is
the balancer's choice.

Cases: every device listed once with the gateway holding it (from any
gateway, and from the controller over SSH); real source addresses through
PROXY v2; a spoofed header refused; a playbook from the controller reaching
devices on every gateway (remote ones over SSH stream-local forwarding);
one gateway killed while that playbook runs (its devices re-register
elsewhere within their redial time and the next task reaches them there);
Redis restarted (gateways keep serving, resynchronise)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from callhome_transport.gateway.client import DeviceInfo, GatewayClient

from .cluster_peers import (
    GatewaySSHD,
    HAProxy,
    RedisServer,
    ServeProcess,
    client_key,
    haproxy_available,
    redis_available,
)
from .netconfd_peer import NetconfdDevice, peers_available
from .netns import Host, Lab, netns_available

pytestmark = pytest.mark.integration

SIM_DEVICES = 300
NETCONFD_DEVICE = "NCD-1"
GATEWAYS = ("gw1", "gw2", "gw3")
PORT = 4334
SYS_FILTER = '<system xmlns="urn:ietf:params:xml:ns:yang:ietf-system"/>'
COLLECTIONS = Path(sys.executable).parent.parent / "collections"


def _skip_reason() -> str | None:
    return netns_available() or haproxy_available() or redis_available() or peers_available()


class Cluster:
    """Everything the tests share; built once for the module."""

    def __init__(self, workdir: Path, lab: Lab) -> None:
        self.dir = workdir
        self.lab = lab
        self.gateways: dict[str, ServeProcess] = {}

    # -- building --------------------------------------------------------------------------

    def build(self) -> None:
        lab = self.lab
        self.lb, self.redis_host, self.ctl = lab.host("lb"), lab.host("redis"), lab.host("ctl")
        self.gw_hosts = {name: lab.host(name) for name in GATEWAYS}
        self.dev_sim, self.dev_ncd = lab.host("dev1"), lab.host("dev2")
        self.redis = RedisServer(self.dir, host=self.redis_host.address, port=6379, netns=self.redis_host.netns)
        self.redis_host.adopt(self.redis)
        self.redis.start()
        # the netconfd device (its host keys go into the inventory)
        self.netconfd = NetconfdDevice(self.dir, name="ncd", netns=self.dev_ncd.netns).start()
        self.lab.processes.append(_Stopper(self.netconfd.stop))
        # the simulated fleet writes its inventory, then keeps calling the balancer
        sim_inventory = self.dir / "sim-inventory.yml"
        self.sim = self.dev_sim.spawn(
            [
                *(sys.executable, "-m", "callhome_transport.cli", "sim", "--devices", str(SIM_DEVICES)),
                *("--gateway", f"{self.lb.address}:{PORT}", "--inventory-out", str(sim_inventory)),
                *("--prefix", "SIM-", "--backoff-max", "2"),
            ],
            self.dir / "sim.log",
        )
        _wait(sim_inventory.exists, 30, "the simulator's inventory")
        inventory = yaml.safe_load(sim_inventory.read_text())
        inventory["devices"][NETCONFD_DEVICE] = self.netconfd.inventory_entry()
        self.inventory = self.dir / "devices.yml"
        self.inventory.write_text(yaml.safe_dump(inventory))
        # gateways, each with an sshd for the controller
        self.client_key = client_key(self.dir)
        known_hosts = []
        for name, host in self.gw_hosts.items():
            self.gateways[name] = self._gateway(name, host)
            known_hosts.append(self._sshd(name, host))
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text("\n".join(known_hosts) + "\n")
        self.balancer = HAProxy(
            self.dir,
            bind=("0.0.0.0", PORT),
            backends=[(host.address, PORT) for host in self.gw_hosts.values()],
            netns=self.lb.netns,
            check_interval_ms=500,
        )
        self.lb.adopt(self.balancer)
        self.balancer.start()
        # the netconfd device calls the balancer again whenever its call ends (socat in a loop)
        relay = (
            f"trap 'kill $! 2>/dev/null; exit 0' TERM; while :; do "
            f"socat -T 600 TCP4:{self.lb.address}:{PORT},nodelay TCP4:127.0.0.1:{self.netconfd.ssh_port},nodelay "
            "& wait $!; sleep 0.3; done"
        )
        self.dev_ncd.spawn(["bash", "-c", relay], self.dir / "relay.log")

    def _gateway(self, name: str, host: Host) -> ServeProcess:
        gateway = ServeProcess(
            self.dir / name,
            self.inventory,
            netns=host.netns,
            listen={
                "addresses": [host.address],
                "ssh_port": PORT,
                "proxy_protocol": {"from": [f"{self.lb.address}/32"]},
            },
            ssh={"handshake_timeout": 10, "keepalive_interval": 2, "keepalive_count_max": 2},
            admission={"max_pending_handshakes": 1024},
            cluster={
                "redis": f"redis://{self.redis_host.address}:6379/0",
                "gateway_id": name,
                "host": name,
                "ttl": 20,
                "refresh_interval": 5,
                "timeout": 1,
            },
            deferral_timeout=20,
        )
        host.adopt(gateway)
        gateway.start()
        return gateway

    def _sshd(self, name: str, host: Host) -> str:
        sshd = GatewaySSHD(
            self.dir / f"sshd-{name}",
            address=host.address,
            port=22,
            authorized_key=Path(f"{self.client_key}.pub").read_text(),
            netns=host.netns,
        )
        host.adopt(sshd)
        sshd.start()
        return sshd.known_hosts_line

    # -- using -------------------------------------------------------------------------------

    def client(self, gateway: str = "gw1") -> GatewayClient:
        return GatewayClient(self.gateways[gateway].run_dir, timeout=10)

    def devices(self, gateway: str = "gw1") -> list[DeviceInfo]:
        return self.client(gateway).devices()

    def wait_all_connected(self, timeout: float, *, avoid: str | None = None) -> list[DeviceInfo]:
        deadline = time.monotonic() + timeout
        records: list[DeviceInfo] = []
        while time.monotonic() < deadline:
            records = self.devices("gw1" if avoid != "gw1" else "gw3")
            if all(r.connected and r.gateway not in (None, avoid) for r in records):
                return records
            time.sleep(0.25)
        waiting = [(r.name, r.state, r.gateway) for r in records if not r.connected or r.gateway in (None, avoid)]
        raise AssertionError(f"{len(waiting)} devices not connected in {timeout} s: {waiting[:5]}")

    def inventory_file(self) -> Path:
        path = self.dir / "cluster.callhome.yml"
        entries = {
            name: {
                "ssh_host": host.address,
                "ssh_user": "root",
                "ssh_key": str(self.client_key),
                "known_hosts": str(self.known_hosts),
                "run_dir": str(self.gateways[name].run_dir),
            }
            for name, host in self.gw_hosts.items()
        }
        path.write_text(
            yaml.safe_dump(
                {
                    "plugin": "callhome.network.gateway",
                    "run_dir": str(self.dir / "ctl-has-no-gateway"),
                    "gateways": entries,
                    "connected_only": True,
                }
            )
        )
        return path

    def ansible(self, argv: list[str], *, background: bool = False, timeout: float = 300) -> Any:
        env = {
            **os.environ,
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(self.dir / "ansible-tmp"),
            "ANSIBLE_PERSISTENT_CONTROL_PATH_DIR": str(self.dir / "pc"),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_PERSISTENT_COMMAND_TIMEOUT": "60",
            "ANSIBLE_FORKS": "16",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        command = ["ip", "netns", "exec", self.ctl.netns, *argv]
        if background:
            log = (self.dir / "playbook.log").open("wb")
            return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)


class _Stopper:
    """Something the lab stops that is not a single process (the netconfd device)."""

    def __init__(self, stop: Any) -> None:
        self._stop = stop

    def stop(self, timeout: float = 10) -> None:
        self._stop()


def _plain(value: Any) -> Any:
    """A value of ``ansible-inventory --list`` (strings may come wrapped as untrusted)."""
    return value.get("__ansible_unsafe", value) if isinstance(value, dict) else value


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    if not (COLLECTIONS / "ansible_collections" / "callhome" / "network").exists():
        pytest.skip(f"the collections are not installed in {COLLECTIONS} (make collections)")
    with Lab() as lab:
        built = Cluster(tmp_path_factory.mktemp("cluster"), lab)
        built.build()
        built.wait_all_connected(90)
        yield built


def test_every_device_is_listed_once_with_the_gateway_holding_it(cluster: Cluster) -> None:
    records = cluster.wait_all_connected(30)
    names = [r.name for r in records]
    assert len(names) == len(set(names)) == SIM_DEVICES + 1
    per_gateway = {name: sum(r.gateway == name for r in records) for name in GATEWAYS}
    assert all(count > 0 for count in per_gateway.values()), per_gateway  # the balancer spread them
    assert sum(per_gateway.values()) == SIM_DEVICES + 1
    # every gateway answers for the whole cluster, the same way (once the last writes reached Redis)
    expected = {r.name: r.gateway for r in records}
    for name in ("gw2", "gw3"):
        _wait(lambda name=name: {r.name: r.gateway for r in cluster.devices(name)} == expected, 10, f"{name}'s view")
    # callhome devices (the CLI) shows where each lives
    cli = subprocess.run(
        [sys.executable, "-m", "callhome_transport.cli", "devices", "--run-dir", str(cluster.gateways["gw2"].run_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "GATEWAY" in cli.stdout.splitlines()[0]
    assert sum(line.split()[3] in GATEWAYS for line in cli.stdout.splitlines()[1:]) == SIM_DEVICES + 1
    # the controller reads the same list over SSH (no gateway on its host)
    listed = cluster.ansible(["ansible-inventory", "-i", str(cluster.inventory_file()), "--list"])
    assert listed.returncode == 0, listed.stderr[-3000:]
    hostvars = json.loads(listed.stdout)["_meta"]["hostvars"]
    assert len(hostvars) == SIM_DEVICES + 1
    assert {_plain(v["callhome_gateway"]) for v in hostvars.values()} == set(GATEWAYS)


def test_real_source_addresses_through_proxy_v2(cluster: Cluster) -> None:
    records = {r.name: r for r in cluster.devices()}
    hosts = {name: (r.peer_address or "").rsplit(":", 1)[0] for name, r in records.items()}
    assert hosts[NETCONFD_DEVICE] == cluster.dev_ncd.address
    assert {h for name, h in hosts.items() if name != NETCONFD_DEVICE} == {cluster.dev_sim.address}
    assert cluster.lb.address not in hosts.values()
    holder = records["SIM-00001"].gateway
    assert holder is not None
    assert f"device=SIM-00001 peer={cluster.dev_sim.address}:" in cluster.gateways[holder].output()


def test_a_spoofed_header_from_a_device_address_is_refused(cluster: Cluster) -> None:
    gw1 = cluster.gw_hosts["gw1"]
    script = (
        "import socket; from callhome_transport.transports.proxy import build_v2; "
        f"s = socket.create_connection(('{gw1.address}', {PORT}), 5); "
        f"s.sendall(build_v2(('203.0.113.9', 4242), ('{gw1.address}', {PORT})) + b'SSH-2.0-OpenSSH_9.2\\r\\n'); "
        "s.settimeout(5)\ntry: print(repr(s.recv(100)))\nexcept ConnectionResetError: print('reset')"
    )
    done = cluster.dev_sim.run([sys.executable, "-c", script])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("b''", "reset")  # closed without a byte of ours (no SSH banner sent)
    _, rejected = cluster.gateways["gw1"].get("/rejected")
    spoofs = [r for r in rejected if r["reason"] == "proxy-header"]
    assert spoofs and spoofs[-1]["peer_address"].startswith(f"{cluster.dev_sim.address}:")
    assert "203.0.113.9" not in cluster.gateways["gw1"].output()


PLAY = """
- name: Devices on every gateway, then again after a failover
  hosts: "{{ targets }}"
  gather_facts: false
  tasks:
    - name: Read the running configuration
      ansible.netcommon.netconf_get:
        source: running
        filter: '<system xmlns="urn:ietf:params:xml:ns:yang:ietf-system"/>'
      register: before
    - name: Record where it was read
      ansible.builtin.copy:
        content: "{{ {'gateway': callhome_gateway, 'ok': before.stdout is defined} | to_json }}"
        dest: "{{ out }}/{{ inventory_hostname }}-before.json"
        mode: "0644"
      delegate_to: localhost
    - name: Wait for the test's go-ahead
      ansible.builtin.wait_for:
        path: "{{ go }}"
        timeout: 120
      delegate_to: localhost
    - name: Read it again (the device may now be on another gateway)
      ansible.netcommon.netconf_get:
        source: running
        filter: '<system xmlns="urn:ietf:params:xml:ns:yang:ietf-system"/>'
      register: after
    - name: Record the second read
      ansible.builtin.copy:
        content: "{{ {'ok': after.stdout is defined, 'hostname': after.stdout | default('')} | to_json }}"
        dest: "{{ out }}/{{ inventory_hostname }}-after.json"
        mode: "0644"
      delegate_to: localhost
"""


def test_a_playbook_survives_a_gateway_killed_mid_run(cluster: Cluster) -> None:
    records = cluster.wait_all_connected(30)
    # a few devices held by each gateway, and the netconfd device
    targets = [NETCONFD_DEVICE]
    for name in GATEWAYS:
        targets += [r.name for r in records if r.gateway == name and r.name != NETCONFD_DEVICE][:3]
    victim = "gw2"
    moved = [r.name for r in records if r.gateway == victim]
    out = cluster.dir / "out"
    out.mkdir()
    go = cluster.dir / "go"
    play = cluster.dir / "play.yml"
    play.write_text(PLAY)
    playbook = cluster.ansible(
        [
            *("ansible-playbook", "-i", str(cluster.inventory_file()), str(play)),
            *("-e", f"targets={','.join(targets)}", "-e", f"out={out}", "-e", f"go={go}"),
            *("-e", "ansible_callhome_wait_timeout=40"),
        ],
        background=True,
    )
    try:
        _wait(lambda: all((out / f"{t}-before.json").exists() for t in targets), 180, "the first task on every device")
        before = {t: json.loads((out / f"{t}-before.json").read_text()) for t in targets}
        assert all(b["ok"] for b in before.values())
        assert {b["gateway"] for b in before.values()} == set(GATEWAYS)  # remote gateways reached over SSH
        # kill the gateway process (its host's sshd stays up)
        killed_at = time.monotonic()
        cluster.gateways[victim].kill(signal.SIGKILL)
        after = cluster.wait_all_connected(30, avoid=victim)
        moved_in = time.monotonic() - killed_at
        assert {r.name: r.gateway for r in after if r.name in moved}.keys() == set(moved)
        assert all(r.gateway in ("gw1", "gw3") for r in after)
        names = [r.name for r in after]
        assert len(names) == len(set(names))
        # the devices redial 0.5-1.5 s after a hang-up, backing off to 2 s when a call fails (HAProxy's
        # health check needs about a second to mark the dead gateway down)
        assert moved_in < 20, moved_in
        go.touch()
        assert playbook.wait(240) == 0, (cluster.dir / "playbook.log").read_text()[-5000:]
    finally:
        if playbook.poll() is None:
            os.killpg(playbook.pid, signal.SIGKILL)
            playbook.wait(10)
    second = {t: json.loads((out / f"{t}-after.json").read_text()) for t in targets}
    assert all(s["ok"] for s in second.values()), second
    print(f"\nfailover: {len(moved)} devices of {victim} re-registered elsewhere in {moved_in:.1f} s")


def test_redis_restarted_gateways_keep_serving_and_resynchronise(cluster: Cluster) -> None:
    records = cluster.wait_all_connected(30, avoid="gw2")
    # a simulated device (its datastore has ietf-system; the netconfd device's has not)
    on_gw1 = next(r.name for r in records if r.gateway == "gw1" and r.name != NETCONFD_DEVICE)
    cluster.redis.stop()
    # a local session on a gateway needs no Redis
    with cluster.client("gw1").netconf_manager(on_gw1, timeout=20) as m:
        assert "<hostname>" in m.get_config(source="running", filter=("subtree", SYS_FILTER)).xml
    for name in ("gw1", "gw3"):
        _wait(lambda name=name: "unreachable" in cluster.gateways[name].output(), 20, f"{name} noticing")
    cluster.redis.start()
    for name in ("gw1", "gw3"):
        _wait(lambda name=name: "is back: resynchronised" in cluster.gateways[name].output(), 30, f"{name} resync")
        assert cluster.gateways[name].output().count("unreachable") == 1  # logged once
    again = cluster.wait_all_connected(30, avoid="gw2")
    assert {r.name: r.gateway for r in again} == {r.name: r.gateway for r in records}
