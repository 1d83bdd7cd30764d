"""Real third-party NETCONF devices on loopback, for the integration tests and
benchmarks: Debian's yuma123 ``netconfd`` behind a private OpenSSH ``sshd``,
made to call home with a ``socat`` reverse relay.

Every process runs from a private directory (config, host keys, logs, socket),
listens only on loopback high ports, is bounded in time and is stopped by PID.

    with NetconfdDevice(tmp_path) as device:              # sshd + netconfd
        with ReverseRelay(listener_port=port, device_port=device.ssh_port):
            ...                                           # the device calls home

The same device calls home through ``callhome agent`` instead of socat with
:class:`tests.integration.agent_peer.AgentProcess` (the device side of this
project, configured with the ietf-netconf-server call-home model).

``netconf-subsystem`` finds netconfd's socket from ``--ncxserver-sockname=
PORT@PATH``, where PORT must match the server port of ``SSH_CONNECTION``: the
sshd port.  netconfd is started with that port in ``--port``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

NETCONFD = "/usr/sbin/netconfd"
SSHD = "/usr/sbin/sshd"
SUBSYSTEM = "/usr/sbin/netconf-subsystem"
SOCAT = "/usr/bin/socat"

TEST_USER = "chtest"
TEST_PASSWORD = "ch-test-pw-1"  # a throwaway local account for the tests only

NACM = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"
# netconfd loads ietf-netconf-acm by default, so its config is editable with no
# extra module (the ietf-interfaces/ietf-system modules must not be loaded).
NACM_GROUP_FILTER = ("subtree", f'<nacm xmlns="{NACM}"><groups/></nacm>')


def nacm_group_config(group: str, user: str) -> str:
    """An edit-config payload that adds a NACM group (works on netconfd as shipped)."""
    return (
        '<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
        f'<nacm xmlns="{NACM}"><groups><group><name>{group}</name><user-name>{user}</user-name>'
        "</group></groups></nacm></config>"
    )


def peers_available() -> str | None:
    """Why real peers cannot run here, or None."""
    for path in (NETCONFD, SSHD, SUBSYSTEM, SOCAT):
        if not os.path.exists(path):
            return f"{path} is not installed (make test installs netconfd, openssh-server, socat)"
    if os.geteuid() != 0:
        return "real peers need root (sshd privilege separation, a local test account)"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def has_ipv6_loopback() -> bool:
    try:
        free_port("::1")
        return True
    except OSError:
        return False


def ensure_test_user(username: str = TEST_USER, password: str = TEST_PASSWORD) -> None:
    """Create the local test account if missing (idempotent) and set its password."""
    if subprocess.run(["id", username], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", username], check=True, capture_output=True, timeout=30)
    subprocess.run(["chpasswd"], input=f"{username}:{password}\n".encode(), check=True, capture_output=True, timeout=30)


# a stock OpenSSH server has all three (Debian's postinst generates them)
HOST_KEY_TYPES = ("rsa", "ecdsa", "ed25519")


@dataclass(frozen=True)
class HostKey:
    """One SSH host key generated for a test device (never committed)."""

    path: Path  # the private key; the public one is path + ".pub"
    public_line: str  # "ssh-ed25519 AAAA... comment"
    fingerprint: str  # "SHA256:..."

    @classmethod
    def generate(cls, directory: Path, kind: str) -> HostKey:
        """Generate (or reuse, on restart) ``directory/ssh_host_KIND_key``."""
        path = directory / f"ssh_host_{kind}_key"
        if not path.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True, capture_output=True, timeout=30
            )
        pub = path.with_name(path.name + ".pub")
        out = subprocess.run(["ssh-keygen", "-lf", str(pub)], check=True, capture_output=True, text=True, timeout=30)
        return cls(path=path, public_line=pub.read_text().strip(), fingerprint=out.stdout.split()[1])


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout)


def stop_process_group(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """SIGTERM the process group ``proc`` leads (started with
    ``start_new_session``), SIGKILL it after ``timeout`` s."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class NetconfdDevice:
    """yuma123 netconfd behind a private OpenSSH sshd on loopback."""

    def __init__(
        self,
        workdir: Path,
        *,
        listen_host: str = "127.0.0.1",
        key_type: str = "ed25519",
        host_key_types: tuple[str, ...] = HOST_KEY_TYPES,
        username: str = TEST_USER,
        password: str = TEST_PASSWORD,
        authorized_keys: list[str] | None = None,
        target: str = "candidate",
        name: str = "dev",
        max_sessions: int = 10,
        subsystem_wrapper: str | None = None,
        netns: str | None = None,
    ) -> None:
        self.dir = Path(workdir) / f"netconfd-{name}"
        self.netns = netns  # run inside this network namespace (tests/integration/netns.py)
        self.listen_host = listen_host
        if key_type not in host_key_types:
            raise ValueError(f"key_type {key_type!r} must be one of host_key_types {host_key_types}")
        self.key_type = key_type
        self.host_key_types = host_key_types
        self.username = username
        self.password = password
        self.authorized_keys = authorized_keys or []
        self.target = target
        self.max_sessions = max_sessions
        # a shell script run as the netconf subsystem instead of netconf-subsystem;
        # "{subsystem}" in it is the real command (e.g. to make a device that never answers)
        self.subsystem_wrapper = subsystem_wrapper
        self.ssh_port = 0
        self.sshd_log = self.dir / "sshd.log"
        self.netconfd_log = self.dir / "netconfd.log"
        # the key of ``key_type`` (the one tests pin), and every key by type
        self.host_key_public_line = ""
        self.host_key_fingerprint = ""
        self.host_keys: dict[str, HostKey] = {}
        self._sock_dir: Path | None = None
        self.ncx_socket = Path()
        self._sshd: subprocess.Popen[bytes] | None = None
        self._netconfd: subprocess.Popen[bytes] | None = None

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in (("sshd", self._sshd), ("netconfd", self._netconfd)) if p is not None}

    def start(self) -> NetconfdDevice:
        ensure_test_user(self.username, self.password)
        self.dir.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(exist_ok=True)
        self.ssh_port = free_port(self.listen_host if self.netns is None else "127.0.0.1")
        self.host_keys = {kind: HostKey.generate(self.dir, kind) for kind in self.host_key_types}
        self.host_key_public_line = self.host_keys[self.key_type].public_line
        self.host_key_fingerprint = self.host_keys[self.key_type].fingerprint
        host_key_lines = "".join(f"HostKey {key.path}\n" for key in self.host_keys.values())
        (self.dir / "authorized_keys").write_text("".join(k.strip() + "\n" for k in self.authorized_keys))
        # netconf-subsystem runs as the test user: the socket must sit in a
        # directory that user can traverse (pytest's tmp dirs are root-only)
        self._sock_dir = Path(tempfile.mkdtemp(prefix="callhome-ncx-"))
        self._sock_dir.chmod(0o755)
        sock = self._sock_dir / "ncxserver.sock"
        self.ncx_socket = sock
        (self.dir / "netconfd.conf").write_text("")  # never the host's /etc/yuma/netconfd.conf
        self._netconfd = subprocess.Popen(
            in_netns(
                self.netns,
                NETCONFD,
                f"--config={self.dir / 'netconfd.conf'}",
                "--no-startup",
                f"--superuser={self.username}",
                f"--ncxserver-sockname={sock}",
                f"--port={self.ssh_port}",
                f"--log={self.netconfd_log}",
                "--log-level=info",
                "--access-control=off",
                f"--target={self.target}",
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        subsystem = f"{SUBSYSTEM} --ncxserver-sockname={self.ssh_port}@{sock}"
        if self.subsystem_wrapper is not None:
            script = self._sock_dir / "subsystem.sh"  # run as the test user: not in pytest's root-only tmp
            (self._sock_dir / "lock").touch(0o644)  # "{dir}/lock": for flock(1) in the wrapper
            script.write_text("#!/bin/sh\n" + self.subsystem_wrapper.format(subsystem=subsystem, dir=self._sock_dir))
            script.chmod(0o755)
            subsystem = str(script)
        config = self.dir / "sshd_config"
        config.write_text(
            f"""Port {self.ssh_port}
ListenAddress {self.listen_host}
{host_key_lines}PidFile {self.dir / "sshd.pid"}
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
StrictModes no
AuthorizedKeysFile {self.dir / "authorized_keys"}
LoginGraceTime 30
MaxStartups 100
MaxSessions {self.max_sessions}
LogLevel DEBUG1
Subsystem netconf {subsystem}
"""
        )
        subprocess.run([SSHD, "-t", "-f", str(config)], check=True, capture_output=True, timeout=30)
        self._sshd = subprocess.Popen(
            in_netns(self.netns, SSHD, "-D", "-e", "-f", str(config), "-E", str(self.sshd_log)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_ready(sock)
        return self

    def _wait_ready(self, sock: Path, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in (self._netconfd, self._sshd):
                if proc is not None and proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(self._failure(f"exited with {proc.returncode}"))
            if sock.exists() and self.netns is not None:
                probe = f"exec 3<>/dev/tcp/{self.listen_host}/{self.ssh_port}; head -c 8 <&3"
                banner = subprocess.run(
                    in_netns(self.netns, "timeout", "2", "bash", "-c", probe), capture_output=True, check=False
                )
                if banner.stdout.startswith(b"SSH-2.0-"):
                    return
            elif sock.exists():
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection((self.listen_host, self.ssh_port), 0.5) as c,
                ):
                    c.settimeout(2)
                    if c.recv(64).startswith(b"SSH-2.0-"):
                        return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(self._failure(f"not ready within {timeout} s"))

    def _failure(self, what: str) -> str:
        return (
            f"netconfd/sshd device {what}\n--- netconfd log ---\n{_tail(self.netconfd_log)}"
            f"\n--- sshd log ---\n{_tail(self.sshd_log)}"
        )

    def inventory_entry(self, password: str | None = None) -> dict[str, Any]:
        """This device in a callhome inventory: its pinned host key and the
        test account (``password`` overrides, e.g. a wrong one)."""
        return {
            "ssh": {
                "host_keys": [self.host_key_public_line],
                "username": self.username,
                "password": self.password if password is None else password,
            }
        }

    def auth_attempts(self) -> int:
        """User-authentication requests sshd received (every method, including
        ``none``), from its LogLevel DEBUG1 log: ``userauth-request for user``."""
        try:
            text = self.sshd_log.read_text(errors="replace")
        except OSError:
            return 0
        return len(re.findall(r"userauth-request for user", text))

    def log_has(self, pattern: str) -> bool:
        try:
            return re.search(pattern, self.sshd_log.read_text(errors="replace")) is not None
        except OSError:
            return False

    def kill_hard(self) -> None:
        """SIGKILL netconfd and every sshd of this device (listener and session
        children): the device dies mid-session."""
        for proc in (self._netconfd, self._sshd):
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def stop(self) -> None:
        for proc in (self._sshd, self._netconfd):
            stop_process_group(proc)
        if self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None

    def __enter__(self) -> NetconfdDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ReverseRelay:
    """The device calls home: ``socat`` dials the manager's listener, then the
    device's sshd, and relays one connection both ways (RFC 8071 S1, S2)."""

    def __init__(
        self,
        *,
        listener_port: int,
        device_port: int,
        listener_host: str = "127.0.0.1",
        device_host: str = "127.0.0.1",
        source_host: str | None = None,
        netns: str | None = None,
    ) -> None:
        # source_host: the address the device calls from (any of 127.0.0.0/8 on Linux)
        bind = f",bind={source_host}" if source_host else ""
        self.args = in_netns(
            netns,
            SOCAT,
            "-T",
            "600",  # bounded: the relay ends after 10 min of silence at most
            # nodelay on both legs: without it Nagle on the relay holds every
            # second small segment for the peer's 40 ms delayed ACK
            f"{_socat_addr(listener_host, listener_port)},retry=50,interval=0.1,nodelay{bind}",
            f"{_socat_addr(device_host, device_port)},nodelay",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ReverseRelay:
        if shutil.which(SOCAT) is None:
            raise RuntimeError("socat is not installed")
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        return self

    def freeze(self) -> None:
        """SIGSTOP the relay: the path to the device goes silent while the TCP
        connection stays open (a dead device behind NAT)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
        _stop(self.proc)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def __enter__(self) -> ReverseRelay:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def in_netns(netns: str | None, *argv: str) -> list[str]:
    """``argv``, run inside network namespace ``netns`` when given (``ip netns exec`` execs it: same PID)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def _socat_addr(host: str, port: int) -> str:
    return f"TCP6:[{host}]:{port}" if ":" in host else f"TCP4:{host}:{port}"


def wait_rejected(server: Any, count: int = 1, timeout: float = 5.0) -> list[Any]:
    """The server's refused attempts once there are ``count`` of them: the
    device (or its relay) may see the hang-up before the listener has
    recorded why, so poll instead of reading at once."""
    deadline = time.monotonic() + timeout
    while len(server.rejected()) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return list(server.rejected())


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Return once ``condition()`` is true, or after ``timeout`` seconds (the
    test's own assertion then says what did not happen): in place of a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


class InThread:
    """``function(*args, **kwargs)`` running in a thread, e.g. a caller
    waiting for a device while the test makes the device call."""

    def __init__(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._result: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(function, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            self._result.append(function(*args, **kwargs))
        except BaseException as exc:  # handed to the test by outcome()
            self._result.append(exc)

    def outcome(self, timeout: float) -> Any:
        """What the function returned or raised (returned, not raised),
        waiting up to ``timeout`` seconds; ``AssertionError`` if still running."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"still running after {timeout} s"
        return self._result[0]
