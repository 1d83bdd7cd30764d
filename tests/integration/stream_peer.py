"""A device that sends replies of any size: the scripted NETCONF server of
:mod:`netconf_streamer` as the ``netconf`` subsystem of a private OpenSSH
``sshd`` on loopback (and, with :func:`streamer_command`, behind stunnel for
TLS).  It calls home through :class:`~.netconfd_peer.ReverseRelay` like the
netconfd device.

    with StreamingDevice(tmp_path) as device:
        inventory = {"devices": {"S1": device.inventory_entry()}}
        ...   # get(filter=stream_filter(300 << 20)) answers 300 MiB
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .netconfd_peer import (
    SSHD,
    TEST_PASSWORD,
    TEST_USER,
    HostKey,
    _tail,
    ensure_test_user,
    free_port,
    stop_process_group,
)

EOM = b"]]>]]>"
PYTHON = "/usr/bin/python3"  # the system's: sshd runs the subsystem as the test account
STREAMER = Path(__file__).with_name("netconf_streamer.py")


def stream_filter(size: int, *, invalid_utf8: bool = False) -> tuple[str, str]:
    """A get filter that makes the device answer with about ``size`` bytes."""
    encoding = ' encoding="invalid-utf8"' if invalid_utf8 else ""
    return ("subtree", f'<stream xmlns="urn:callhome:test:stream" size="{size}"{encoding}/>')


def streamer_command(directory: Path) -> list[str]:
    """The streamer as a command other accounts can run: copied into
    ``directory`` (made world-readable; pytest's tmp dirs are root-only)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    script = directory / STREAMER.name
    shutil.copyfile(STREAMER, script)
    script.chmod(0o644)
    return [PYTHON, str(script)]


class StreamingDevice:
    """OpenSSH sshd whose ``netconf`` subsystem is the streamer."""

    def __init__(self, workdir: Path, *, name: str = "stream", listen_host: str = "127.0.0.1") -> None:
        self.dir = Path(workdir) / f"sshd-{name}"
        self.listen_host = listen_host
        self.username = TEST_USER
        self.password = TEST_PASSWORD
        self.ssh_port = 0
        self.log = self.dir / "sshd.log"
        self.host_key_public_line = ""
        self._script_dir: Path | None = None
        self._sshd: subprocess.Popen[bytes] | None = None

    def start(self) -> StreamingDevice:
        ensure_test_user(self.username, self.password)
        self.dir.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(exist_ok=True)
        self.ssh_port = free_port(self.listen_host)
        host_key = HostKey.generate(self.dir, "ed25519")
        self.host_key_public_line = host_key.public_line
        self._script_dir = Path(tempfile.mkdtemp(prefix="callhome-streamer-"))
        command = " ".join(streamer_command(self._script_dir))
        config = self.dir / "sshd_config"
        config.write_text(
            f"""Port {self.ssh_port}
ListenAddress {self.listen_host}
HostKey {host_key.path}
PidFile {self.dir / "sshd.pid"}
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication no
PermitRootLogin no
StrictModes no
LoginGraceTime 30
MaxSessions 10
LogLevel INFO
Subsystem netconf {command}
"""
        )
        subprocess.run([SSHD, "-t", "-f", str(config)], check=True, capture_output=True, timeout=30)
        self._sshd = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config), "-E", str(self.log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._sshd.poll() is not None:
                raise RuntimeError(f"sshd exited with {self._sshd.returncode}\n{_tail(self.log)}")
            with contextlib.suppress(OSError), socket.create_connection((self.listen_host, self.ssh_port), 0.5) as c:
                c.settimeout(2)
                if c.recv(64).startswith(b"SSH-2.0-"):
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd not ready\n{_tail(self.log)}")

    def inventory_entry(self) -> dict[str, Any]:
        ssh = {"host_keys": [self.host_key_public_line], "username": self.username, "password": self.password}
        return {"ssh": ssh}

    def stop(self) -> None:
        stop_process_group(self._sshd)
        if self._script_dir is not None:
            shutil.rmtree(self._script_dir, ignore_errors=True)
            self._script_dir = None

    def __enter__(self) -> StreamingDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` now (``VmRSS``), in bytes."""
    return _status_bytes(pid, "VmRSS")


def reset_peak_rss(pid: int) -> None:
    """Start measuring ``pid``'s peak RSS from now (Linux ``clear_refs`` 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size of ``pid`` since :func:`reset_peak_rss` (``VmHWM``)."""
    return _status_bytes(pid, "VmHWM")


_NC = b'xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"'
# base:1.1 too: the gateway has agreed chunked framing with the device (RFC 6242 s4.1)
CLIENT_HELLO = (
    b"<hello " + _NC + b"><capabilities><capability>urn:ietf:params:netconf:base:1.0</capability>"
    b"<capability>urn:ietf:params:netconf:base:1.1</capability></capabilities></hello>]]>]]>"
)
END_OF_CHUNKS = b"\n##\n"


def _chunked(message: bytes) -> bytes:
    return b"\n#%d\n%s%s" % (len(message), message, END_OF_CHUNKS)


def slow_read_reply(path: Path, size: int, *, read_size: int = 16384, pause: float = 0.0002) -> int:
    """As a local client of ``path`` (a gateway ``netconf.sock``), ask the
    streaming device for a reply of ``size`` bytes and read it slowly:
    ``read_size`` bytes, then ``pause`` seconds (the reader's pace, not a wait
    for a condition).  Return the bytes read; the session is closed."""
    received = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(str(path))
        hello = b""
        while EOM not in hello:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"{path} closed before the device's hello")
            hello += data
        rpc = b'<rpc message-id="1" %s><get><filter type="subtree">%s</filter></get></rpc>' % (
            _NC,
            stream_filter(size)[1].encode(),
        )
        sock.sendall(CLIENT_HELLO + _chunked(rpc))
        tail = b""
        while not tail.endswith(END_OF_CHUNKS):
            data = sock.recv(read_size)
            if not data:
                raise ConnectionError(f"{path} closed after {received} bytes of the reply")
            received += len(data)
            tail = (tail + data)[-len(END_OF_CHUNKS) :]
            time.sleep(pause)
        sock.sendall(_chunked(b'<rpc message-id="2" %s><close-session/></rpc>' % _NC))
    return received
