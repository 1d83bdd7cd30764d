"""Ansible through the gateway vs forward: one ``ansible.netcommon.netconf_get``
task on N real devices, with ``callhome.network.netconf`` (the devices called
home to a running ``callhome serve``) and with ``ansible.netcommon.netconf``
(SSH forward to the same devices' sshd).  Target: call home / forward <= 1.1x.

Each device is a yuma123 ``netconfd`` behind its own OpenSSH ``sshd`` (own host
key, own port) on 127.0.0.1; the call-home leg is a ``socat`` reverse relay per
device to the gateway's SSH listen port, and the gateway pins each host key.
Both playbooks run against the same processes.  Every device gets a NACM
group ``bench-<host>`` first, and every run checks that each host's result
carries its own group: both inventories reach the right devices.

One netconfd per sshd: a netconfd accepts at most 4 ``--port`` values and
``netconf-subsystem`` must present the sshd port, so 20 front-ends would need
5 netconfd anyway, and a full device costs about 0.1 s to start and 9 MB.
Session limits are far off: netconfd ``max-sessions`` defaults to 1024; the
harness's sshd allows 10 sessions per connection and a run opens one per
device (the gateway opens an SSH channel per local session).

The two modes alternate in the same run (call home first in odd runs); each
playbook gets a fresh persistent-connection directory, so no connection is
reused across runs.
The wall time is that of the whole ``ansible-playbook`` process.

Run: ``.venv/bin/python benchmarks/bench_ansible.py [--devices 20 --runs 3 --forks 20]``
(needs root, netconfd, openssh-server, socat: scripts/install-system-packages.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.netconfd_peer import (  # noqa: E402
    NACM,
    NetconfdDevice,
    ReverseRelay,
    ensure_test_user,
    nacm_group_config,
    peers_available,
)
from tests.integration.test_gateway import GatewayProcess  # noqa: E402

CALLHOME = "callhome.network.netconf"
FORWARD = "ansible.netcommon.netconf"
COLLECTIONS = ROOT / ".venv" / "collections"
# Marks every process this benchmark starts (ansible-playbook and the
# ansible-connection daemons it forks): leftovers are found by it and ended by PID.
BENCH_TAG_VAR = "CALLHOME_BENCH_ANSIBLE_TAG"

PLAY = f"""
- name: netconf_get on every device
  hosts: devices
  gather_facts: false
  tasks:
    - name: Read the NACM groups
      ansible.netcommon.netconf_get:
        source: running
        filter: <nacm xmlns="{NACM}"><groups/></nacm>
"""

RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def host_name(index: int) -> str:
    return f"R{index:02d}"


class Bench:
    """The devices, the gateway, and the two inventories."""

    def __init__(self, work: Path, devices: int, forks: int) -> None:
        self.work = work
        self.forks = forks
        self.hosts = [host_name(i) for i in range(devices)]
        self.devices: dict[str, NetconfdDevice] = {}
        self.relays: dict[str, ReverseRelay] = {}
        self.gateway: GatewayProcess | None = None
        self.tag = uuid.uuid4().hex
        self.env = {
            **os.environ,
            BENCH_TAG_VAR: self.tag,
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_CONFIG": str(work / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
            "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_PARAMIKO_LOOK_FOR_KEYS": "False",  # password only: no ~/.ssh keys tried first
            "ANSIBLE_PERSISTENT_CONNECT_TIMEOUT": "60",
            "ANSIBLE_PERSISTENT_COMMAND_TIMEOUT": "60",
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.builtin.tree",  # per-host JSON results
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        (work / "ansible.cfg").write_text("[defaults]\nhost_key_checking = False\n")

    # -- setup ---------------------------------------------------------------

    def start(self) -> None:
        ensure_test_user()  # once: the per-device start then only re-sets the password
        for host in self.hosts:
            self.devices[host] = NetconfdDevice(self.work / "devices", name=host)
            self.devices[host].start()
        inventory: dict[str, object] = {
            "devices": {host: device.inventory_entry() for host, device in self.devices.items()}
        }
        gw_dir = self.work / "gateway"
        gw_dir.mkdir()
        self.gateway = GatewayProcess(
            gw_dir, inventory, admission={"max_pending_handshakes": 1000, "failures_before_block": 1000}
        ).start()
        for host, device in self.devices.items():
            self.relays[host] = ReverseRelay(listener_port=self.gateway.ssh_port, device_port=device.ssh_port).start()
        for host in self.hosts:
            status, record = self.gateway.get(f"/devices/{host}/wait?timeout=30", 40)
            if status != 200:
                raise RuntimeError(f"{host} did not call home: {status} {record}\n{self.gateway_log()}")
        # a device-specific mark, written through the gateway, read by both modes
        for host in self.hosts:
            with self.gateway.netconf(host) as m:
                m.edit_config(target="candidate", config=nacm_group_config(f"bench-{host}", "bench"))
                m.commit()
        self.write_inventories()

    def write_inventories(self) -> None:
        assert self.gateway is not None
        callhome = ["[devices]", *(f"{h} ansible_connection={CALLHOME}" for h in self.hosts)]
        callhome += ["[devices:vars]", f"ansible_callhome_run_dir={self.gateway.run_dir}", "ansible_network_os=default"]
        forward = ["[devices]"]
        for host, device in self.devices.items():
            forward.append(
                f"{host} ansible_connection={FORWARD} ansible_host=127.0.0.1 ansible_port={device.ssh_port} "
                f"ansible_user={device.username} ansible_password={device.password}"
            )
        forward += ["[devices:vars]", "ansible_network_os=default"]
        for mode, lines in ((CALLHOME, callhome), (FORWARD, forward)):
            path = self.inventory(mode)
            path.write_text("\n".join(lines) + "\n")
            path.chmod(0o600)
        (self.work / "play.yml").write_text(PLAY)

    def inventory(self, mode: str) -> Path:
        return self.work / f"hosts-{'callhome' if mode == CALLHOME else 'forward'}.ini"

    def gateway_log(self) -> str:
        if self.gateway is None:
            return ""
        with contextlib.suppress(OSError):
            return "--- gateway log ---\n" + "\n".join(self.gateway.log.read_text().splitlines()[-30:])
        return ""

    def all_called_home(self) -> None:
        """Before a call-home run: every device still connected (not timed)."""
        assert self.gateway is not None
        for host in self.hosts:
            status, record = self.gateway.get(f"/devices/{host}", 10)
            if status != 200 or not isinstance(record, dict) or record.get("state") != "connected":
                raise RuntimeError(f"{host} is not connected to the gateway: {record}\n{self.gateway_log()}")

    # -- one playbook run ----------------------------------------------------

    def run(self, mode: str, label: str) -> float:
        if mode == CALLHOME:
            self.all_called_home()
        run_dir = self.work / "runs" / label
        tree = run_dir / "tree"
        env = {
            **self.env,
            "ANSIBLE_PERSISTENT_CONTROL_PATH_DIR": str(run_dir / "pc"),  # fresh: nothing reused
            "ANSIBLE_CALLBACK_TREE_DIR": str(tree),
        }
        run_dir.mkdir(parents=True)
        cmd = ["ansible-playbook", "-i", str(self.inventory(mode)), "-f", str(self.forks), str(self.work / "play.yml")]
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=run_dir, capture_output=True, text=True, timeout=300, check=False)
        elapsed = time.perf_counter() - started
        (run_dir / "stdout.txt").write_text(proc.stdout + proc.stderr)
        self.reap()
        problems = self.check(proc, tree)
        if problems:
            raise SystemExit(
                f"FAILED: {label} ({mode}): ansible-playbook exited {proc.returncode}\n"
                + "\n".join(problems[:10])
                + f"\n--- ansible-playbook output (tail) ---\n{(proc.stdout + proc.stderr)[-4000:]}\n"
                + self.gateway_log()
            )
        return elapsed

    def check(self, proc: subprocess.CompletedProcess[str], tree: Path) -> list[str]:
        """Every host ok=1 failed=0 unreachable=0 in the recap, and its result
        holds its own device's mark."""
        problems = [] if proc.returncode == 0 else [f"exit status {proc.returncode}"]
        recap = {m[0]: (int(m[1]), int(m[2]), int(m[3])) for m in RECAP.findall(proc.stdout)}
        for host in self.hosts:
            if recap.get(host) != (1, 0, 0):
                problems.append(f"{host}: recap (ok, unreachable, failed) = {recap.get(host)}")
                continue
            try:
                result = json.loads((tree / host).read_text())
            except (OSError, ValueError) as exc:
                problems.append(f"{host}: no result: {exc}")
                continue
            if f"<name>bench-{host}</name>" not in str(result.get("stdout", "")):
                problems.append(f"{host}: result is not from device {host}: {str(result)[:300]}")
        return problems

    # -- teardown ------------------------------------------------------------

    def tagged_pids(self) -> list[int]:
        """ansible-connection daemons (and any other process) carrying this run's tag."""
        needle = f"{BENCH_TAG_VAR}={self.tag}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
        return found

    def reap(self, grace: float = 10.0) -> None:
        """ansible-playbook closes its persistent connections at the end
        (``reset``); wait for those daemons to go, then end any left by PID."""
        deadline = time.monotonic() + grace
        while (pids := self.tagged_pids()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        self.reap(grace=0)
        for relay in self.relays.values():
            relay.stop()
        if self.gateway is not None:
            self.gateway.stop()
        with ThreadPoolExecutor(max_workers=max(1, len(self.devices))) as pool:
            list(pool.map(lambda d: d.stop(), self.devices.values()))


@contextlib.contextmanager
def bench(work: Path, devices: int, forks: int) -> Iterator[Bench]:
    b = Bench(work, devices, forks)
    try:
        b.start()
        yield b
    finally:
        b.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each mode, alternated")
    parser.add_argument("--forks", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each mode first")
    args = parser.parse_args()
    reason = peers_available()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    if not (COLLECTIONS / "ansible_collections" / "ansible" / "netcommon").is_dir():
        print(f"cannot run: ansible.netcommon not under {COLLECTIONS} (scripts/install-ansible-collections.sh)")
        return 2
    med = statistics.median
    times: dict[str, list[float]] = {CALLHOME: [], FORWARD: []}
    with (
        tempfile.TemporaryDirectory(prefix="callhome-bench-ansible-") as tmp,
        bench(Path(tmp), args.devices, args.forks) as b,
    ):
        for i in range(args.warmup):
            for mode in (CALLHOME, FORWARD):
                b.run(mode, f"warmup{i}-{mode}")
        print(f"ansible-playbook, netconf_get on {args.devices} devices, -f {args.forks} (wall time, s)")
        print(f"{'run':>4}  {'order':<18} {'call home':>10} {'forward':>10} {'ratio':>7}  all hosts ok")
        for i in range(args.runs):
            order = (CALLHOME, FORWARD) if i % 2 == 0 else (FORWARD, CALLHOME)
            this: dict[str, float] = {}
            for mode in order:
                this[mode] = b.run(mode, f"run{i}-{mode}")
                times[mode].append(this[mode])
            print(
                f"{i + 1:>4}  {'ch, fwd' if order[0] == CALLHOME else 'fwd, ch':<18} {this[CALLHOME]:10.2f} "
                f"{this[FORWARD]:10.2f} {this[CALLHOME] / this[FORWARD]:7.3f}  yes ({args.devices}/{args.devices})",
                flush=True,
            )
    ch, fwd = med(times[CALLHOME]), med(times[FORWARD])
    print(f"{'med':>4}  {'':<18} {ch:10.2f} {fwd:10.2f} {ch / fwd:7.3f}")
    print(f"ratio call home / forward, medians (<= 1.1): {ch / fwd:.3f}")
    per_run = [c / f for c, f in zip(times[CALLHOME], times[FORWARD], strict=True)]
    print(f"ratio per run: {', '.join(f'{r:.3f}' for r in per_run)}; median of per-run ratios {med(per_run):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
