"""Real engines for the cluster tests: HAProxy (the L4 balancer, PROXY v2),
redis-server (the shared registry) and ``callhome serve`` processes, each
started on loopback or inside a network namespace (:mod:`.netns`), recorded
by PID and stopped by PID."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from callhome_transport.gateway.client import UnixHTTPConnection

from .netconfd_peer import HostKey, in_netns

SSHD = "/usr/sbin/sshd"

HAPROXY = "/usr/sbin/haproxy"
REDIS_SERVER = "/usr/bin/redis-server"


def haproxy_available() -> str | None:
    """Why HAProxy tests cannot run here, or ``None``."""
    return None if os.access(HAPROXY, os.X_OK) else f"{HAPROXY} not installed (Debian package haproxy)"


def redis_available() -> str | None:
    if not os.access(REDIS_SERVER, os.X_OK):
        return f"{REDIS_SERVER} not installed (Debian package redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis Python client is not installed (pip install 'callhome-transport[cluster]')"
    return None


def wait_port(host: str, port: int, timeout: float, *, netns: str | None = None, proc: Any = None) -> None:
    """Wait until ``host:port`` accepts (from inside ``netns`` when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited {proc.returncode} before listening on {host}:{port}")
        if netns is None:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
                sock.settimeout(0.5)
                if sock.connect_ex((host, port)) == 0:
                    return
        else:
            probe = subprocess.run(
                in_netns(netns, "bash", "-c", f"exec 3<>/dev/tcp/{host}/{port}"),
                capture_output=True,
                check=False,
                timeout=5,
            )
            if probe.returncode == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout} s")


def wait_listening(port: int, timeout: float, *, netns: str | None = None, proc: Any = None) -> None:
    """Wait until a socket listens on TCP ``port`` (``ss``; no connection is
    made, so a balancer does not forward a probe to its backends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited {proc.returncode} before listening on port {port}")
        listing = subprocess.run(
            in_netns(netns, "ss", "-Hltn", f"sport = :{port}"), capture_output=True, text=True, check=False, timeout=5
        )
        if listing.stdout.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


class Process:
    """One background process, its output in ``log``, stopped by PID."""

    def __init__(self, argv: list[str], log: Path, *, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=self.env
            )
        return self.proc

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process (its PID only, not its group)."""
        if self.running():
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)  # its own session, started by us
                self.proc.wait(5)
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class HAProxy(Process):
    """HAProxy 2.6 in ``mode tcp``: one frontend, round robin over ``backends``
    with ``send-proxy-v2`` (and TCP health checks, which send a PROXY v2
    LOCAL header)."""

    def __init__(
        self,
        workdir: Path,
        *,
        bind: tuple[str, int],
        backends: Sequence[tuple[str, int]],
        source: str | None = None,
        netns: str | None = None,
        send_proxy: str = "send-proxy-v2",
        check_interval_ms: int = 500,
        maxconn: int = 2000,
    ) -> None:
        self.bind = bind
        self.netns = netns
        self.config_path = workdir / "haproxy.cfg"
        host, port = bind
        servers = "\n".join(
            f"    server g{i} {_hostport(h, p)} {send_proxy} check inter {check_interval_ms}ms fall 2 rise 1"
            for i, (h, p) in enumerate(backends, 1)
        )
        self.config_path.write_text(
            f"""global
    maxconn {maxconn}
defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    option redispatch
    retries 2
frontend callhome
    bind {_hostport(host, port)}
    default_backend gateways
backend gateways
    balance roundrobin
{f"    source {source}" if source else ""}
{servers}
"""
        )
        super().__init__(in_netns(netns, HAPROXY, "-f", str(self.config_path), "-db"), workdir / "haproxy.log")

    def start(self) -> subprocess.Popen[bytes]:
        check = subprocess.run(
            [HAPROXY, "-c", "-f", str(self.config_path)], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c: {check.stdout}{check.stderr}")
        proc = super().start()
        wait_listening(self.bind[1], 10, netns=self.netns, proc=proc)
        return proc


class RedisServer(Process):
    """redis-server with nothing persisted, on ``host:port``."""

    def __init__(self, workdir: Path, *, host: str, port: int, netns: str | None = None) -> None:
        self.host, self.port, self.netns = host, port, netns
        self.dir = workdir
        argv = [
            REDIS_SERVER,
            *("--bind", host, "--port", str(port), "--save", "", "--appendonly", "no"),
            *("--dir", str(workdir), "--protected-mode", "no", "--daemonize", "no"),
        ]
        super().__init__(in_netns(netns, *argv), workdir / f"redis-{port}.log")

    @property
    def url(self) -> str:
        return f"redis://{_hostport(self.host, self.port)}/0"

    def start(self) -> subprocess.Popen[bytes]:
        proc = super().start()
        wait_port(self.host, self.port, 10, netns=self.netns, proc=proc)
        return proc


class ServeProcess(Process):
    """``callhome serve`` with a configuration written from ``config`` (a
    dict, merged over working defaults), optionally in ``netns``."""

    def __init__(
        self,
        workdir: Path,
        inventory_path: Path,
        *,
        listen: dict[str, Any],
        netns: str | None = None,
        extra_args: Sequence[str] = (),
        **config: Any,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.dir = workdir
        self.netns = netns
        # a short run directory: socket paths must fit AF_UNIX (107 bytes), and pytest's
        # tmp paths (longer under pytest-xdist) leave little room
        self.run_dir = Path(tempfile.mkdtemp(prefix="chsv-"))
        atexit.register(shutil.rmtree, self.run_dir, True)
        self.ready_file = workdir / "ready.json"
        self.config_path = workdir / "gateway.yml"
        cfg: dict[str, Any] = {
            "inventory": str(inventory_path),
            "run_dir": str(self.run_dir),
            "deferral_timeout": 15,
            "listen": {"tls_port": None, "restconf_port": None, **listen},
            "ssh": {"handshake_timeout": 5, "keepalive_interval": 2, "keepalive_count_max": 2},
            **config,
        }
        self.config_path.write_text(yaml.safe_dump(cfg))
        argv = [
            *(sys.executable, "-m", "callhome_transport.cli", "serve"),
            *("--config", str(self.config_path), "--ready-file", str(self.ready_file), *extra_args),
        ]
        super().__init__(in_netns(netns, *argv), workdir / "gateway.log")

    def start(self, timeout: float = 30) -> subprocess.Popen[bytes]:
        with contextlib.suppress(FileNotFoundError):
            self.ready_file.unlink()
        proc = super().start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"gateway exited {proc.returncode}:\n{self.output()}")
            if self.ready_file.exists():  # written once every listener and endpoint is up
                return proc
            time.sleep(0.05)
        raise RuntimeError(f"gateway not ready after {timeout} s:\n{self.output()}")

    def get(self, path: str, timeout: float = 30) -> tuple[int, Any]:
        conn = UnixHTTPConnection(str(self.run_dir / "control.sock"), timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read().decode()
        finally:
            conn.close()
        return response.status, (json.loads(body) if body.lstrip().startswith(("{", "[")) else body)

    def device(self, name: str) -> dict[str, Any]:
        status, body = self.get(f"/devices/{name}")
        assert status == 200, body
        return dict(body)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GatewaySSHD(Process):
    """A gateway host's OpenSSH sshd, for clients that reach its Unix sockets
    through stream-local channels: key authentication of ``authorized_key``,
    ``AllowStreamLocalForwarding yes`` and ``AllowTcpForwarding`` as given
    (OpenSSH refuses stream-local channels while it is ``no``)."""

    def __init__(
        self,
        workdir: Path,
        *,
        address: str,
        port: int,
        authorized_key: str,
        netns: str | None = None,
        allow_tcp_forwarding: str = "yes",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.address, self.port, self.netns = address, port, netns
        self.host_key = HostKey.generate(workdir, "ed25519")
        (workdir / "authorized_keys").write_text(authorized_key.strip() + "\n")
        self.config_path = workdir / "sshd_config"
        self.config_path.write_text(
            f"""Port {port}
ListenAddress {address}
HostKey {self.host_key.path}
PidFile {workdir / "sshd.pid"}
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
AuthorizedKeysFile {workdir / "authorized_keys"}
AllowStreamLocalForwarding yes
AllowTcpForwarding {allow_tcp_forwarding}
MaxSessions 200
MaxStartups 200
LogLevel VERBOSE
"""
        )
        super().__init__(in_netns(netns, SSHD, "-D", "-e", "-f", str(self.config_path)), workdir / "sshd.log")

    @property
    def known_hosts_line(self) -> str:
        host = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{host} {self.host_key.public_line}"

    def start(self) -> subprocess.Popen[bytes]:
        Path("/run/sshd").mkdir(exist_ok=True)
        subprocess.run([SSHD, "-t", "-f", str(self.config_path)], check=True, capture_output=True)
        proc = super().start()
        wait_port(self.address, self.port, 10, netns=self.netns, proc=proc)
        return proc


def client_key(directory: Path) -> Path:
    """A fresh ed25519 key pair for an SSH client (never committed)."""
    path = directory / "client_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path
