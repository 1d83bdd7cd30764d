"""Hosts as Linux network namespaces, for tests that need several machines
(a balancer, gateways, Redis, a controller, devices) on one.

:class:`Lab` makes a private switch (a namespace holding a bridge) and one
namespace per :meth:`Lab.host`, each with a veth pair plugged into that
bridge and an address on the lab's subnet.  Traffic stays inside the lab's
namespaces; the file system is shared, so hosts see the same files (each
test keeps its hosts' files apart by directory).  Every name starts with
``chc-<pid>-`` (other test suites use other prefixes); :meth:`Lab.close`
stops every process the lab started, by PID, and deletes its namespaces,
also when a test fails; namespaces left by a lab whose process is gone are
removed at the next start.

Needs root (``ip netns``), iproute2 and a kernel with veth and bridge.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .cluster_peers import Process
from .netconfd_peer import in_netns

PREFIX = "chc"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,11}$")


def netns_available() -> str | None:
    """Why the namespace tests cannot run here, or ``None``."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"{PREFIX}-{os.getpid()}-probe"
    try:
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ip netns unavailable: {exc}"
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False, timeout=10)
    return None


def _run(argv: Sequence[str]) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")


def clean_stale() -> None:
    """Delete ``chc-<pid>-*`` namespaces whose creating process is gone."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = re.match(rf"^{PREFIX}-(\d+)-", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


class Host:
    """One namespace: a host with an address on the lab's subnet."""

    def __init__(self, lab: Lab, name: str, address: str) -> None:
        self.lab = lab
        self.name = name
        self.netns = f"{lab.id}-{name}"
        self.address = address

    def run(self, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in this host and wait (text output captured)."""
        return subprocess.run(
            in_netns(self.netns, *argv),
            capture_output=True,
            text=True,
            check=False,
            timeout=kwargs.pop("timeout", 60),  # type: ignore[arg-type]
            **kwargs,  # type: ignore[call-overload]
        )

    def spawn(self, argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None) -> Process:
        """Start ``argv`` in this host in the background; the lab stops it."""
        process = Process(in_netns(self.netns, *argv), log, env=env)
        process.start()
        self.lab.processes.append(process)
        return process

    def adopt(self, process: Process) -> Process:
        """Let the lab stop ``process`` (already built for this host)."""
        self.lab.processes.append(process)
        return process


class Lab:
    """A private switch and the hosts plugged into it."""

    def __init__(self, subnet: str = "10.77.0.0/24") -> None:
        clean_stale()
        self.id = f"{PREFIX}-{os.getpid()}"
        self.network = ipaddress.ip_network(subnet)
        self._addresses = self.network.hosts()
        self.hosts: dict[str, Host] = {}
        self.processes: list[Process] = []
        self.switch = f"{self.id}-sw"
        self._namespaces: list[str] = []
        try:
            self._add_namespace(self.switch)
            _run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"])
            _run(["ip", "-n", self.switch, "link", "set", "br0", "up"])
        except BaseException:
            self.close()
            raise

    def _add_namespace(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])

    def host(self, name: str) -> Host:
        """A new host ``name`` (lower case, up to 12 characters) with the next address."""
        if not _NAME.match(name) or name in self.hosts or name == "sw":
            raise ValueError(f"host name {name!r}: unique, [a-z0-9-], up to 12 characters")
        host = Host(self, name, str(next(self._addresses)))
        self._add_namespace(host.netns)
        port = f"v{len(self.hosts)}"  # the switch side; each name exists only in its own namespace
        veth = ["ip", "link", "add", "eth0", "netns", host.netns, "type", "veth"]
        _run([*veth, "peer", "name", port, "netns", self.switch])
        _run(["ip", "-n", self.switch, "link", "set", port, "master", "br0", "up"])
        _run(["ip", "-n", host.netns, "addr", "add", f"{host.address}/{self.network.prefixlen}", "dev", "eth0"])
        _run(["ip", "-n", host.netns, "link", "set", "eth0", "up"])
        self.hosts[name] = host
        return host

    def unplug(self, name: str) -> None:
        """Take ``name``'s link down (the host drops off the network)."""
        _run(["ip", "-n", self.hosts[name].netns, "link", "set", "eth0", "down"])

    def close(self) -> None:
        """Stop every process (by PID), then delete every namespace."""
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop(timeout=10)
        self.processes.clear()
        for name in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self._namespaces.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
