"""``callhome agent`` as a real process in front of a real device: the
netconfd + OpenSSH device of :mod:`.netconfd_peer` made to call home by the
agent instead of a ``socat`` relay.

    payload = callhome_payload(Client("nms", [("gw", gateway_port)]))
    with AgentProcess(tmp_path, payload, local_ssh_port=netconfd.ssh_port) as agent:
        ...                      # the device calls home as the model says
        agent.wait_log("event=exhausted")

The payload is the standard ietf-netconf-server call-home XML, written here
by hand (not by the library's renderer) so the tests check our parser against
text a user would write.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NCS = "urn:ietf:params:xml:ns:yang:ietf-netconf-server"
AGENT_NS = "urn:callhome:params:xml:ns:yang:callhome-agent"


@dataclass
class Client:
    """One netconf-client: endpoints are (name, port) on 127.0.0.1, or
    (name, host, port)."""

    name: str
    endpoints: list[tuple[Any, ...]]
    periodic: dict[str, Any] | None = None  # {"period": 1, "idle-timeout": 3, "anchor-time": ...}
    reconnect: dict[str, Any] = field(default_factory=dict)  # start-with, max-wait, max-attempts
    keepalives: tuple[int, int, int] | None = None  # idle-time, max-probes, probe-interval
    transport: str = "ssh"  # or "tls"


def callhome_payload(*clients: Client, local_ssh: tuple[str, int] | None = None) -> str:
    """ietf-netconf-server call home (2023-12-28/2025-04-24 shape) as XML."""
    parts = [f'<netconf-server xmlns="{NCS}">', "  <call-home>"]
    for c in clients:
        parts += ["    <netconf-client>", f"      <name>{c.name}</name>", "      <endpoints>"]
        for endpoint in c.endpoints:
            name, host, port = endpoint if len(endpoint) == 3 else (endpoint[0], "127.0.0.1", endpoint[1])
            keepalives = ""
            if c.keepalives is not None:
                idle, probes, interval = c.keepalives
                keepalives = (
                    f"<keepalives><idle-time>{idle}</idle-time><max-probes>{probes}</max-probes>"
                    f"<probe-interval>{interval}</probe-interval></keepalives>"
                )
            parts += [
                "        <endpoint>",
                f"          <name>{name}</name>",
                f"          <{c.transport}><tcp-client-parameters>",
                f"            <remote-address>{host}</remote-address><remote-port>{port}</remote-port>{keepalives}",
                f"          </tcp-client-parameters></{c.transport}>",
                "        </endpoint>",
            ]
        parts.append("      </endpoints>")
        if c.periodic is None:
            parts.append("      <connection-type><persistent/></connection-type>")
        else:
            inner = "".join(f"<{k}>{v}</{k}>" for k, v in c.periodic.items())
            parts.append(f"      <connection-type><periodic>{inner}</periodic></connection-type>")
        if c.reconnect:
            inner = "".join(f"<{k}>{v}</{k}>" for k, v in c.reconnect.items())
            parts.append(f"      <reconnect-strategy>{inner}</reconnect-strategy>")
        parts.append("    </netconf-client>")
    parts += ["  </call-home>", "</netconf-server>"]
    if local_ssh is not None:
        parts.append(
            f'<agent xmlns="{AGENT_NS}"><local-ssh><address>{local_ssh[0]}</address>'
            f"<port>{local_ssh[1]}</port></local-ssh></agent>"
        )
    return "\n".join(parts) + "\n"


class AgentProcess:
    """``python -m callhome_transport.cli agent`` with its own config, log and
    metrics file; stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        workdir: Path,
        payload: str,
        *,
        local_ssh_port: int | None = None,
        local_tls_port: int | None = None,
        name: str = "agent",
        revision: str = "2025-04-24",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "callhome.xml"
        self.config.write_text(payload)
        self.log = self.dir / "agent.log"
        self.metrics_file = self.dir / "agent.prom"
        self.args = [
            sys.executable,
            "-m",
            "callhome_transport.cli",
            "agent",
            "--config",
            str(self.config),
            "--revision",
            revision,
            "--metrics-file",
            str(self.metrics_file),
            "-v",
            *extra_args,
        ]
        if local_ssh_port is not None:
            self.args += ["--local-ssh", f"127.0.0.1:{local_ssh_port}"]
        if local_tls_port is not None:
            self.args += ["--local-tls", f"127.0.0.1:{local_tls_port}"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> AgentProcess:
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reload(self, payload: str) -> None:
        self.config.write_text(payload)
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGHUP)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log_text()))

    def wait_log(self, pattern: str, timeout: float = 15.0, count: int = 1) -> str:
        """Wait until ``pattern`` appears ``count`` times; returns the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if len(re.findall(pattern, text)) >= count:
                return text
            if not self.running():
                break
            time.sleep(0.05)
        raise AssertionError(
            f"{pattern!r} x{count} not in the agent log within {timeout} s:\n{self.log_text()[-4000:]}"
        )

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the metrics file (0 if absent)."""
        try:
            text = self.metrics_file.read_text()
        except OSError:
            return 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                series, value = line.rsplit(" ", 1)
                if all(f'{k}="{v}"' in series for k, v in labels.items()):
                    return float(value)
        return 0.0

    def wait_metric(self, name: str, at_least: float, timeout: float = 10.0, **labels: str) -> float:
        """Wait until the metrics file (written just after the log lines) shows ``name`` >= ``at_least``."""
        deadline = time.monotonic() + timeout
        while (value := self.metric(name, **labels)) < at_least and time.monotonic() < deadline:
            time.sleep(0.02)
        return value

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
