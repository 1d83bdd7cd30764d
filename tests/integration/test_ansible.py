"""The Ansible collection end to end: ``ansible-playbook`` with the standard
ansible.netcommon modules against the gateway (``callhome serve``, started
here), with real devices calling home through socat: netconfd behind sshd
(SSH), stunnel + netconfd (TLS) and stunnel + the RESTCONF backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from ..pki import DevicePKI
from .netconfd_peer import NACM, NetconfdDevice, ReverseRelay
from .restconf_backend import Backend
from .stunnel_peer import StunnelDevice, stunnel_available
from .test_gateway import GatewayProcess

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MONITORING = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
NTP = json.dumps({"ietf-ntp:ntp": {"port": 123}})


class KeepCalling:
    """A device configured with a persistent call-home connection: whenever its
    connection ends it calls again (ietf-netconf-server ``persistent``)."""

    def __init__(self, *, listener_port: int, device_port: int) -> None:
        self.listener_port = listener_port
        self.device_port = device_port
        self._stop = threading.Event()
        self._relay: ReverseRelay | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._relay = ReverseRelay(listener_port=self.listener_port, device_port=self.device_port).start()
            while not self._stop.is_set() and not self._relay.exited():
                time.sleep(0.05)
            self._relay.stop()
            self._stop.wait(0.2)

    def start(self) -> KeepCalling:
        self._thread.start()
        return self

    def drop(self) -> None:
        """End the current call (the device calls again at once)."""
        if self._relay is not None:
            self._relay.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._relay is not None:
            self._relay.stop()


@pytest.fixture(scope="module")
def collections_path() -> Path:
    """ansible.netcommon/utils beside callhome.network, installed offline by the
    same script a user runs (idempotent; the PyPI wheel is cached)."""
    dest = Path(sys.prefix) / "collections"
    subprocess.run(
        [str(REPO / "scripts" / "install-ansible-collections.sh"), sys.executable, str(dest)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return dest


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevicePKI:
    return DevicePKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, netconfd: NetconfdDevice, pki: DevicePKI
) -> Iterator[dict[str, Any]]:
    """A gateway with: R1 (SSH, netconfd), T1 (TLS), RC1 (RESTCONF), LATE (an SSH
    device that calls only when a test says), GHOST (never calls)."""
    if stunnel_available():
        pytest.skip(stunnel_available())
    tmp = tmp_path_factory.mktemp("ansible-fleet")
    late = NetconfdDevice(tmp / "late", name="late").start()
    tls_cert, tls_key = pki.device_files("SN-0003")
    rc_cert, rc_key = pki.device_files("SN-0004")
    backend = Backend("rc1").start()
    tls_device = StunnelDevice(
        tmp, netconfd, certfile=tls_cert, keyfile=tls_key, client_ca=pki.manager_ca_pem, name="tls"
    ).start()
    rc_device = StunnelDevice(
        tmp,
        None,
        certfile=rc_cert,
        keyfile=rc_key,
        client_ca=pki.manager_ca_pem,
        name="rc",
        backend_port=backend.port,
    ).start()
    ghost_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    issuers = {"issuers": [str(pki.root_a_pem)], "crls": [str(pki.crl_a)]}

    inventory = {
        "devices": {
            "R1": netconfd.inventory_entry(),
            "LATE": late.inventory_entry(),
            "GHOST": {"ssh": {"host_keys": [ghost_key], "username": "nobody", "password": "never-used"}},
            "T1": {"transport": "tls", "tls": {**issuers, "identifier": "SN-0003"}},
            "RC1": {"transport": "restconf", "tls": {**issuers, "identifier": "SN-0004"}},
        }
    }
    gateway = GatewayProcess(
        tmp,
        inventory,
        tls={"certfile": str(pki.manager_cert), "keyfile": str(pki.manager_key)},
        admission={"max_pending_handshakes": 1000, "failures_before_block": 1000},
    ).start()
    callers = [
        KeepCalling(listener_port=gateway.ssh_port, device_port=netconfd.ssh_port).start(),
        KeepCalling(listener_port=gateway.tls_port, device_port=tls_device.port).start(),
        KeepCalling(listener_port=gateway.restconf_port, device_port=rc_device.port).start(),
    ]
    for name in ("R1", "T1", "RC1"):
        status, _ = gateway.get(f"/devices/{name}/wait?timeout=30", 40)
        assert status == 200, gateway.log.read_text()[-3000:]
    yield {"gateway": gateway, "netconfd": netconfd, "late": late, "backend": backend, "dir": tmp, "callers": callers}
    for caller in callers:
        caller.stop()
    assert gateway.stop() == 0, gateway.log.read_text()[-3000:]
    for stoppable in (tls_device, rc_device, backend, late):
        stoppable.stop()


class Playbook:
    """Runs ``ansible-playbook`` on an inventory of call-home devices; tasks
    write their registered results to ``out/<host>-<name>.json``."""

    def __init__(self, workdir: Path, collections: Path, run_dir: Path) -> None:
        self.dir = workdir
        self.out = workdir / "out"
        self.out.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "ANSIBLE_COLLECTIONS_PATH": str(collections),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"),
            "ANSIBLE_PERSISTENT_CONTROL_PATH_DIR": str(workdir / "pc"),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_CONFIG": str(workdir / "ansible.cfg"),
            "CALLHOME_RUN_DIR": str(run_dir),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        (workdir / "ansible.cfg").write_text("[defaults]\nhost_key_checking = False\n")
        self.run_dir = run_dir

    def inventory(self, hosts: dict[str, str], **group_vars: Any) -> Path:
        """``hosts``: inventory host -> ansible_connection."""
        lines = ["[devices]"]
        lines += [f"{host} ansible_connection={connection}" for host, connection in hosts.items()]
        lines += ["[devices:vars]", f"ansible_callhome_run_dir={self.run_dir}", "ansible_network_os=default"]
        lines += [f"{k}={v}" for k, v in group_vars.items()]
        path = self.dir / "hosts.ini"
        path.write_text("\n".join(lines) + "\n")
        return path

    def run(self, play: str, inventory: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        path = self.dir / "play.yml"
        path.write_text(play)
        return subprocess.run(
            ["ansible-playbook", "-i", str(inventory), str(path), "-e", f"out={self.out}", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def result(self, host: str, name: str) -> Any:
        return json.loads((self.out / f"{host}-{name}.json").read_text())


def save(name: str, expr: str | None = None) -> str:
    """A task that writes the registered ``name`` (or ``expr``) to out/<host>-<name>.json."""
    return f"""
    - name: Save {name}
      ansible.builtin.copy:
        content: "{{{{ {expr or name} | to_json }}}}"
        dest: "{{{{ out }}}}/{{{{ inventory_hostname }}}}-{name}.json"
        mode: "0600"
      check_mode: false
      delegate_to: localhost
      vars:
        ansible_connection: local
"""


def play(tasks: str, hosts: str = "devices") -> str:
    return f"""
- name: Call-home devices
  hosts: {hosts}
  gather_facts: false
  tasks:
{tasks}
"""


@pytest.fixture
def book(tmp_path: Path, collections_path: Path, fleet: dict[str, Any]) -> Playbook:
    return Playbook(tmp_path, collections_path, fleet["gateway"].run_dir)


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_netconf_get_on_ssh_and_tls_devices_with_two_forks(book: Playbook) -> None:
    inv = book.inventory({"R1": "callhome.network.netconf", "T1": "callhome.network.netconf"})
    tasks = f"""
    - name: Get config with an XML filter, raw XML
      ansible.netcommon.netconf_get:
        source: running
        filter: <nacm xmlns="{NACM}"/>
      register: state
{save("state")}
    - name: Get the NACM subtree
      ansible.netcommon.netconf_get:
        source: running
        filter: <nacm xmlns="{NACM}"/>
        display: native
      register: nacm
{save("nacm")}
"""
    proc = book.run(play(tasks), inv, "-f", "2")
    assert_ok(proc)
    for host in ("R1", "T1"):
        assert book.result(host, "nacm")["output"]["data"]["nacm"]["@xmlns"] == NACM
        assert f'<nacm xmlns="{NACM}"' in book.result(host, "state")["stdout"]


def test_netconf_config_validate_commit_then_idempotent(book: Playbook) -> None:
    inv = book.inventory({"R1": "callhome.network.netconf"})
    tasks = f"""
    - name: Add a NACM group (candidate, validate, commit)
      ansible.netcommon.netconf_config:
        target: candidate
        validate: true
        commit: true
        lock: always
        content: |
          <config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
            <nacm xmlns="{NACM}"><groups><group><name>ansible-ops</name>
              <user-name>erin</user-name></group></groups></nacm>
          </config>
      register: edit
{save("edit")}
    - name: Read it back
      ansible.netcommon.netconf_get:
        source: running
        filter: <nacm xmlns="{NACM}"><groups/></nacm>
      register: after
{save("after")}
"""
    first = book.run(play(tasks), inv)
    assert_ok(first)
    assert book.result("R1", "edit")["changed"] is True
    assert "ansible-ops" in book.result("R1", "after")["stdout"]
    second = book.run(play(tasks), inv)
    assert_ok(second)
    assert book.result("R1", "edit")["changed"] is False
    # check mode: a change is reported, nothing is committed (discard_changes)
    check_tasks = f"""
    - name: Would add a group
      ansible.netcommon.netconf_config:
        target: candidate
        commit: true
        content: |
          <config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
            <nacm xmlns="{NACM}"><groups><group><name>check-only</name>
              <user-name>frank</user-name></group></groups></nacm>
          </config>
      register: dry
{save("dry")}
    - name: Read running
      ansible.netcommon.netconf_get:
        source: running
        filter: <nacm xmlns="{NACM}"><groups/></nacm>
      register: after
{save("after")}
"""
    dry = book.run(play(check_tasks), inv, "--check")
    assert_ok(dry)
    assert book.result("R1", "dry")["changed"] is True
    assert "check-only" not in book.result("R1", "after")["stdout"]


def test_netconf_config_confirmed_commit_and_backup(book: Playbook) -> None:
    inv = book.inventory({"R1": "callhome.network.netconf"})
    tasks = f"""
    - name: Confirmed commit (rolled back unless confirmed within 60 s), with a backup first
      ansible.netcommon.netconf_config:
        target: candidate
        confirm: 60
        commit: true
        backup: true
        backup_options:
          dir_path: "{{{{ out }}}}"
          filename: "{{{{ inventory_hostname }}}}-backup.xml"
        content: |
          <config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
            <nacm xmlns="{NACM}"><groups><group><name>confirmed-ops</name>
              <user-name>gina</user-name></group></groups></nacm>
          </config>
      register: confirmed
{save("confirmed")}
    - name: Confirm it
      ansible.netcommon.netconf_config:
        confirm_commit: true
      register: confirm
{save("confirm")}
    - name: Read running
      ansible.netcommon.netconf_get:
        source: running
        filter: <nacm xmlns="{NACM}"><groups/></nacm>
      register: after
{save("after")}
"""
    proc = book.run(play(tasks), inv)
    assert_ok(proc)
    assert book.result("R1", "confirmed")["changed"] is True
    assert "confirmed-ops" in book.result("R1", "after")["stdout"]
    backup = (book.out / "R1-backup.xml").read_text()
    assert f'<nacm xmlns="{NACM}"' in backup and "confirmed-ops" not in backup


def test_session_lost_mid_play_reconnects(book: Playbook, fleet: dict[str, Any]) -> None:
    """The device calls again between two tasks (its old session is gone): the
    persistent connection opens a new NETCONF session instead of failing."""
    inv = book.inventory({"R1": "callhome.network.netconf"})
    dropped = book.dir / "dropped"
    tasks = f"""
    - name: First get
      ansible.netcommon.netconf_get:
        source: running
        filter: <nacm xmlns="{NACM}"/>
      register: first
{save("first")}
    - name: Wait until the device has called again
      ansible.builtin.wait_for:
        path: "{dropped}"
        timeout: 30
      delegate_to: localhost
      vars:
        ansible_connection: local
    - name: Second get, on a new session
      ansible.netcommon.netconf_get:
        source: running
        filter: <nacm xmlns="{NACM}"/>
      register: second
{save("second")}
"""
    gw: GatewayProcess = fleet["gateway"]
    r1_caller: KeepCalling = fleet["callers"][0]

    def drop_when_first_done() -> None:
        deadline = time.monotonic() + 60
        while not (book.out / "R1-first.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        before = gw.get("/devices/R1")[1]["reconnects"]  # type: ignore[index]
        r1_caller.drop()
        while time.monotonic() < deadline:
            record = gw.get("/devices/R1")[1]
            if record["state"] == "connected" and record["reconnects"] > before:  # type: ignore[index]
                break
            time.sleep(0.05)
        dropped.write_text("ok")

    dropper = threading.Thread(target=drop_when_first_done)
    dropper.start()
    try:
        proc = book.run(play(tasks), inv)
    finally:
        dropper.join(70)
    assert_ok(proc)
    assert f'<nacm xmlns="{NACM}"' in book.result("R1", "second")["stdout"]


def test_netconf_rpc(book: Playbook) -> None:
    inv = book.inventory({"R1": "callhome.network.netconf"})
    tasks = f"""
    - name: A get RPC with a subtree filter
      ansible.netcommon.netconf_rpc:
        rpc: get
        content: |
          <filter type="subtree"><netconf-state xmlns="{MONITORING}"><capabilities/></netconf-state></filter>
        display: xml
      register: rpc
{save("rpc", "rpc.output")}
"""
    proc = book.run(play(tasks), inv)
    assert_ok(proc)
    # netcommon's netconf_rpc returns stdout as bytes; display: xml gives text in output
    assert "urn:ietf:params:netconf:base:1.1" in book.result("R1", "rpc")


def test_restconf_get_and_config_create_repeat_delete(book: Playbook, fleet: dict[str, Any]) -> None:
    inv = book.inventory({"RC1": "callhome.network.restconf"})
    tasks = f"""
    - name: Read the system container
      ansible.netcommon.restconf_get:
        path: /data/ietf-system:system
      register: system
{save("system")}
    - name: Create the NTP container
      ansible.netcommon.restconf_config:
        path: /data/ietf-ntp:ntp
        method: put
        content: '{NTP}'
      register: create
{save("create")}
    - name: Same again
      ansible.netcommon.restconf_config:
        path: /data/ietf-ntp:ntp
        method: put
        content: '{NTP}'
      register: repeat
{save("repeat")}
    - name: Delete it
      ansible.netcommon.restconf_config:
        path: /data/ietf-ntp:ntp
        method: delete
      register: delete
{save("delete")}
    - name: Delete again (absent)
      ansible.netcommon.restconf_config:
        path: /data/ietf-ntp:ntp
        method: delete
      register: delete_again
{save("delete_again")}
"""
    proc = book.run(play(tasks), inv)
    assert_ok(proc)
    assert book.result("RC1", "system")["response"]["ietf-system:system"]["hostname"] == "rc1"
    assert book.result("RC1", "create")["changed"] is True
    assert book.result("RC1", "repeat")["changed"] is False
    assert book.result("RC1", "delete")["changed"] is True
    assert book.result("RC1", "delete_again")["changed"] is False
    methods = [m for m, path, _ in fleet["backend"].requests if path.endswith("ietf-ntp:ntp")]
    assert methods.count("PUT") == 1 and methods.count("DELETE") == 1


def plain(value: Any) -> Any:
    return value.get("__ansible_unsafe", value) if isinstance(value, dict) else value


def test_inventory_plugin_lists_the_registry(book: Playbook, fleet: dict[str, Any]) -> None:
    config = book.dir / "fleet.callhome.yml"
    config.write_text(
        f"plugin: callhome.network.gateway\nrun_dir: {fleet['gateway'].run_dir}\n"
        "keyed_groups:\n  - key: callhome_transport\n    prefix: by\n"
    )
    proc = subprocess.run(
        ["ansible-inventory", "-i", str(config), "--list"],
        env=book.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    hostvars = data["_meta"]["hostvars"]
    assert set(hostvars) == {"R1", "LATE", "GHOST", "T1", "RC1"}
    # ansible-core marks inventory-source strings unsafe (never templated): a
    # device-supplied identity must not be evaluated as Jinja
    hostvars = {h: {k: plain(v) for k, v in hv.items()} for h, hv in hostvars.items()}
    assert hostvars["R1"]["ansible_connection"] == "callhome.network.netconf"
    assert hostvars["RC1"]["ansible_connection"] == "callhome.network.restconf"
    assert hostvars["R1"]["callhome_identity"] == fleet["netconfd"].host_key_fingerprint
    assert "serialNumber=SN-0003" in hostvars["T1"]["callhome_identity"]
    assert hostvars["GHOST"]["callhome_state"] == "never-connected"
    assert set(data["callhome_connected"]["hosts"]) >= {"R1", "T1", "RC1"}
    assert "GHOST" in data["callhome_never_connected"]["hosts"]
    assert set(data["callhome_ssh"]["hosts"]) == {"R1", "LATE", "GHOST"}
    assert data["by_restconf"]["hosts"] == ["RC1"]


def test_wait_for_device_that_calls_after_the_task_started(book: Playbook, fleet: dict[str, Any]) -> None:
    gw: GatewayProcess = fleet["gateway"]
    late: NetconfdDevice = fleet["late"]
    inv = book.inventory({"LATE": "callhome.network.netconf"})
    tasks = f"""
    - name: About to wait
      ansible.builtin.copy:
        content: ""
        dest: "{{{{ out }}}}/about-to-wait"
        mode: "0600"
      delegate_to: localhost
      vars:
        ansible_connection: local
    - name: Wait for the device
      callhome.network.wait_for_device:
        name: "{{{{ inventory_hostname }}}}"
        timeout: 60
      delegate_to: localhost
      vars:
        ansible_connection: local
      register: waited
{save("waited")}
    - name: Then use it
      ansible.netcommon.netconf_get:
        source: running
        filter: <nacm xmlns="{NACM}"/>
      register: got
{save("got")}
    - name: Registry facts
      callhome.network.device_info:
        name: "{{{{ inventory_hostname }}}}"
      delegate_to: localhost
      vars:
        ansible_connection: local
      register: info
{save("info")}
"""
    relay = ReverseRelay(listener_port=gw.ssh_port, device_port=late.ssh_port)
    done = threading.Event()

    def call_when_waiting() -> None:
        # the device calls 3 s after the task before the wait has run (a timer
        # from the playbook's start raced ansible-playbook's own start-up on a
        # loaded machine: the device had called before the wait began)
        while not (book.out / "about-to-wait").exists():
            if done.wait(0.05):
                return
        if not done.wait(3.0):
            relay.start()

    caller = threading.Thread(target=call_when_waiting, daemon=True)
    caller.start()
    try:
        proc = book.run(play(tasks), inv)
    finally:
        done.set()
        caller.join(10)
        relay.stop()
    assert_ok(proc)
    waited = book.result("LATE", "waited")
    assert waited["device"]["state"] == "connected"
    assert waited["elapsed"] >= 1.0  # it blocked until the device called
    assert f'<nacm xmlns="{NACM}"' in book.result("LATE", "got")["stdout"]
    info = book.result("LATE", "info")
    assert info["device"]["identity"] == late.host_key_fingerprint
    assert info["changed"] is False


def test_device_that_never_calls_and_unknown_device_fail_clearly(book: Playbook) -> None:
    inv = book.inventory(
        {"GHOST": "callhome.network.netconf", "NOSUCH": "callhome.network.netconf"},
        ansible_callhome_wait_timeout=2,
    )
    tasks = """
    - name: Get from a device
      ansible.netcommon.netconf_get:
        filter: <nacm xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-acm"/>
"""
    started = time.monotonic()
    proc = book.run(play(tasks), inv, "-f", "2")
    assert time.monotonic() - started < 60
    assert proc.returncode != 0
    out = proc.stdout
    assert "device GHOST did not call home within 2 s" in out
    assert "device NOSUCH is not in the inventory of the call-home gateway" in out
    waited = book.run(
        play(
            """
    - name: Wait briefly
      callhome.network.wait_for_device:
        name: GHOST
        timeout: 1.5
      delegate_to: localhost
      vars:
        ansible_connection: local
""",
            hosts="GHOST",
        ),
        inv,
    )
    assert waited.returncode != 0
    assert "device GHOST did not call home within 1.5s" in waited.stdout
    assert "state never-connected" in waited.stdout


def test_wait_timeout_must_fit_in_the_command_timeout(book: Playbook) -> None:
    inv = book.inventory({"R1": "callhome.network.netconf"}, ansible_callhome_wait_timeout=40)
    proc = book.run(
        play("""
    - name: Get
      ansible.netcommon.netconf_get:
        filter: <nacm xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-acm"/>
"""),
        inv,
    )
    assert proc.returncode != 0
    assert "wait_timeout (40s) must be at least 5s shorter than persistent_command_timeout (30s)" in proc.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-t", "connection", "callhome.network.netconf"], "wait_timeout"),
        (["-t", "connection", "callhome.network.restconf"], "root_path"),
        (["-t", "inventory", "callhome.network.gateway"], "connected_only"),
        (["callhome.network.device_info"], "connected_only"),
        (["callhome.network.wait_for_device"], "timeout"),
    ],
)
def test_ansible_doc_renders(collections_path: Path, args: list[str], expected: str) -> None:
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections_path), "ANSIBLE_NOCOLOR": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(["ansible-doc", *args], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout
    assert "callhome" in proc.stdout


def test_shipped_examples_run_against_real_devices(book: Playbook, fleet: dict[str, Any]) -> None:
    """examples/ as a user runs them: the inventory plugin's groups, the
    example playbooks, unchanged but for the gateway's run_dir."""
    config = book.dir / "fleet.callhome.yml"
    shipped = (REPO / "examples" / "inventory" / "fleet.callhome.yml").read_text()
    config.write_text(shipped.replace("run_dir: /run/callhome", f"run_dir: {fleet['gateway'].run_dir}"))
    for playbook in ("netconf.yml", "restconf.yml"):
        proc = subprocess.run(
            ["ansible-playbook", "-i", str(config), str(REPO / "examples" / playbook), "--limit", "R1,RC1"],
            env=book.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert_ok(proc)
        assert "R1 " in proc.stdout if playbook == "netconf.yml" else "RC1 " in proc.stdout
    report = subprocess.run(
        [
            "ansible-playbook",
            str(REPO / "examples" / "fleet-report.yml"),
            "-e",
            f"callhome_run_dir={fleet['gateway'].run_dir}",
        ],
        env=book.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert_ok(report)
    assert "GHOST" in report.stdout  # never called: listed as not connected


def test_module_defaults_action_group_sets_run_dir(book: Playbook) -> None:
    """meta/runtime.yml's action group: one module_defaults entry gives every module
    of the collection the gateway's run_dir (the environment points elsewhere)."""
    text = f"""
- name: Registry facts with the run_dir set once
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/callhome.network.gateway:
      run_dir: "{book.run_dir}"
  environment:
    CALLHOME_RUN_DIR: /nonexistent/callhome
  tasks:
    - name: Wait for R1
      callhome.network.wait_for_device:
        name: R1
        timeout: 30
    - name: All devices
      callhome.network.device_info:
      register: info
{save("info")}
"""
    inv = book.inventory({"R1": "callhome.network.netconf"})
    assert_ok(book.run(text, inv))
    names = {d["name"] for d in book.result("localhost", "info")["devices"]}
    assert {"R1", "T1", "RC1"} <= names
