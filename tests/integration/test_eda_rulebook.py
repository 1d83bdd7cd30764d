"""Zero-touch onboarding for real: ``ansible-rulebook`` (PyPI, the test extra;
Java 17) runs examples/rulebooks/zero-touch-onboarding.yml with the source
plugin ``callhome.network.gateway_events`` found from ANSIBLE_COLLECTIONS_PATH,
against a ``callhome serve`` subprocess; simulated devices call home; the
rulebook runs examples/onboard.yml on each device's first call through
``callhome.network.netconf``, and the baseline is read back from the device
over NETCONF afterwards.  A reconnect does not onboard again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from ncclient import manager

from callhome_transport.engine import EventLoopThread
from callhome_transport.sim import SimulatedDevice

from .test_ansible import collections_path  # noqa: F401 - a fixture
from .test_gateway import GatewayProcess

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SYSTEM = '<system xmlns="urn:ietf:params:xml:ns:yang:ietf-system"/>'


def java_17() -> str | None:
    """The reason Java 17 is not there, after trying to install Debian's JRE; None if it is."""

    def version() -> str | None:
        java = shutil.which("java")
        if java is None:
            return None
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
        return out.stderr + out.stdout

    found = version()
    if found is None or 'version "17' not in found:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            return "ansible-rulebook needs Java 17 (apt-get install openjdk-17-jre-headless; not root here)"

        def apt(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["flock", "/tmp/apt.lock", "apt-get", *args],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )

        install = apt("install", "-y", "-qq", "--no-install-recommends", "openjdk-17-jre-headless")
        if install.returncode != 0:  # a stale package list: update it once
            apt("update", "-qq")
            install = apt("install", "-y", "-qq", "--no-install-recommends", "openjdk-17-jre-headless")
        found = version()
        if found is None or 'version "17' not in found:
            return f"ansible-rulebook needs Java 17; installing openjdk-17-jre-headless failed: {install.stderr[-500:]}"
    return None


@pytest.fixture(scope="module")
def rulebook_ready() -> Path:
    rulebook = Path(sys.executable).parent / "ansible-rulebook"
    if not rulebook.exists():
        pytest.skip("ansible-rulebook is not installed in this environment (the test extra has it)")
    reason = java_17()
    if reason:
        print(f"skipped: {reason}")
        pytest.skip(reason)
    return rulebook


class Rulebook:
    """``ansible-rulebook`` as a subprocess of its own process group, run from examples/."""

    def __init__(self, binary: Path, workdir: Path, inventory: Path, env: dict[str, str]) -> None:
        self.log = workdir / "rulebook.log"
        self.proc = subprocess.Popen(
            [str(binary), "-r", "rulebooks/zero-touch-onboarding.yml", "-i", str(inventory), "--print-events"],
            cwd=EXAMPLES,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def wait_for_file(path: Path, rulebook: Rulebook, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return dict(json.loads(path.read_text()))
        if rulebook.proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no {path.name} (rulebook exit {rulebook.proc.poll()}):\n{rulebook.output()[-6000:]}")


def system_config(gw: GatewayProcess, device: str) -> str:
    with manager.connect_uds(path=str(gw.run_dir / "devices" / device / "netconf.sock"), timeout=20) as m:
        return str(m.get_config(source="running", filter=("subtree", SYSTEM)).xml)


def test_a_first_call_home_runs_the_onboarding_playbook_on_that_device(
    rulebook_ready: Path,
    collections_path: Path,  # noqa: F811
    loop: EventLoopThread,
    tmp_path: Path,
) -> None:
    first, second = SimulatedDevice("ZT-0001"), SimulatedDevice("ZT-0002")
    inventory = {
        "devices": {
            d.name: {"ssh": {"host_keys": [d.host_key_line], "username": "admin", "password": "admin"}}
            for d in (first, second)
        }
    }
    gw = GatewayProcess(tmp_path, inventory).start()
    reports = tmp_path / "reports"
    reports.mkdir()
    fleet = tmp_path / "fleet.callhome.yml"  # the example inventory, for this gateway
    fleet.write_text(
        (EXAMPLES / "inventory" / "fleet.callhome.yml").read_text().replace("/run/callhome", str(gw.run_dir))
    )
    env = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_PERSISTENT_CONTROL_PATH_DIR": str(tmp_path / "pc"),
        "ANSIBLE_NOCOLOR": "1",
        "CALLHOME_RUN_DIR": str(gw.run_dir),
        "CALLHOME_ONBOARDING_REPORTS": str(reports),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    rulebook = Rulebook(rulebook_ready, tmp_path, fleet, env)
    try:
        # the first device calls home (the rulebook may still be starting: the source replays the buffer)
        loop.submit(first.call_home("127.0.0.1", gw.ssh_port)).result(20)
        report = wait_for_file(reports / "ZT-0001.json", rulebook)
        assert report["device"] == "ZT-0001" and report["baseline_changed"] is True
        assert report["identity"] == first.fingerprint
        assert "urn:ietf:params:netconf:capability:candidate:1.0" in report["capabilities"]
        assert {"ietf-system", "ietf-interfaces", "ietf-netconf-monitoring"} <= set(report["modules"])
        assert report["event"]["type"] == "device-connected" and report["event"]["first_call"] is True
        # the baseline is on the device, read back over NETCONF through the gateway
        config = system_config(gw, "ZT-0001")
        for expected in ("<contact>noc@example.net</contact>", "<location>awaiting-site-survey</location>"):
            assert expected in config
        assert "<address>192.0.2.123</address>" in config
        assert first.datastores.running.find(".//{*}ntp/{*}server/{*}udp/{*}address").text == "192.0.2.123"

        # it reconnects (not onboarded again); then the second device calls for the first time
        first.close()
        loop.submit(first.wait_closed()).result(10)
        loop.submit(first.call_home("127.0.0.1", gw.ssh_port)).result(20)
        loop.submit(second.call_home("127.0.0.1", gw.ssh_port)).result(20)
        report = wait_for_file(reports / "ZT-0002.json", rulebook)
        assert report["device"] == "ZT-0002"
        assert "<contact>noc@example.net</contact>" in system_config(gw, "ZT-0002")
    finally:
        rulebook.stop()
        first.close()
        second.close()
        assert gw.stop() == 0, gw.log.read_text()[-3000:]
    output = rulebook.output()
    recaps = [line for line in output.splitlines() if line.startswith("ZT-0")]
    assert [line.split()[0] for line in recaps] == ["ZT-0001", "ZT-0002"], output[-6000:]
    assert all(" failed=0 " in line for line in recaps), output[-6000:]
