"""A real libnetconf2 NETCONF device that calls home natively, for the
integration tests and benchmarks: ``ln2_device/ln2_device.c`` compiled
against Debian's ``libnetconf2-dev`` 2.0 (server and call-home API) and
``libyang2-dev``, with its YANG modules from Debian's ``libyuma-base``
(installed with netconfd).

Unlike the netconfd device, no relay is needed: libnetconf2's own call-home
thread dials the manager and redials whenever the connection ends, exactly as
netopeer2 and the products built on libnetconf2 do.  Native behaviour worth
knowing (libnetconf2 2.0.24, ``src/session_server*.c``):

- SSH: after authentication it waits 10 s (``NC_TRANSPORT_TIMEOUT``) for a
  ``netconf`` subsystem request, else logs ``Failed to start "netconf" SSH
  subsystem for too long, disconnecting.`` and, after 1 s
  (``NC_CH_ENDPT_FAIL_WAIT``), dials again: an idle manager sees a new
  connection every ~11 s.
- TLS: it waits ``hello_timeout`` (60 s here, netopeer2's default) for the
  client's ``<hello>``, then drops the connection and dials again.
- The call-home thread watches only the *first* NETCONF session of a
  connection: when that session ends (``<close-session>``, channel closed), it
  dials a new connection even while other sessions on the old SSH connection
  are still open.

Every process runs from a private directory, talks only to loopback, is
bounded in time (``--lifetime``) and is stopped by PID.

    binary = build_ln2(LN2_SOURCE, build_dir)            # once per run
    device = Ln2Device(tmp_path, binary=binary)          # its host key exists now:
    inventory = {"devices": {"LN2": device.inventory_entry()}}
    ...                                                  # start the manager with it, then
    with device.start(listener_port=server.listen_port):
        ...                                              # it calls home by itself
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .netconfd_peer import HostKey, _tail, stop_process_group

LN2_SOURCE = Path(__file__).parent / "ln2_device" / "ln2_device.c"
# ietf-netconf, ietf-netconf-acm, ietf-netconf-monitoring: Debian's libnetconf2
# 2.0 package installs no YANG module, libyuma-base (netconfd's) has them
LN2_YANG_DIR = Path("/usr/share/yuma/modules/ietf")
LN2_PKG_CONFIG = ("libnetconf2", "libyang")
LN2_USER = "ln2admin"
LN2_PASSWORD = "ln2-test-pw-1"  # a throwaway credential of a throwaway device

# libnetconf2's own log line for each TCP connection its call-home thread dials
DIAL_LINE = "Successfully connected to "
ESTABLISHED_LINE = re.compile(r"call-home session \d+ established as user ")
SUBSYSTEM_TIMEOUT = 'Failed to start "netconf" SSH subsystem for too long'


def ln2_available() -> str | None:
    """Why the libnetconf2 device cannot be built and run here, or None."""
    for tool in ("gcc", "pkg-config"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make test installs gcc, pkg-config, libnetconf2-dev)"
    probe = subprocess.run(["pkg-config", "--exists", *LN2_PKG_CONFIG], capture_output=True, check=False)
    if probe.returncode != 0:
        return "libnetconf2-dev / libyang2-dev are not installed (make test installs them)"
    for header in ("/usr/include/libssh/callbacks.h", "/usr/include/openssl/x509.h"):
        if not os.path.exists(header):
            return f"{header} is missing (libnetconf2 2.0's nc_server.h needs libssh-dev and libssl-dev)"
    if not (LN2_YANG_DIR / "ietf-netconf@2011-06-01.yang").exists():
        return f"{LN2_YANG_DIR} has no ietf-netconf module (Debian's libyuma-base, installed with netconfd)"
    return None


def build_ln2(source: Path, workdir: Path, packages: Sequence[str] = LN2_PKG_CONFIG) -> Path:
    """Compile ``source`` (a C file using libnetconf2 and libyang, or the
    pkg-config ``packages`` given) with gcc and pkg-config into ``workdir``;
    return the executable.

    The file name carries a digest of the source and the compiler flags, so a
    second call with the same inputs (the same run, or another helper's
    benchmark) reuses the binary.  Raises RuntimeError with the compiler's
    output on failure."""
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", *packages], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    command = ["gcc", "-std=gnu11", "-O2", "-Wall", "-Wextra"]
    digest = hashlib.sha256(source.read_bytes() + " ".join(command + flags).encode()).hexdigest()[:12]
    workdir.mkdir(parents=True, exist_ok=True)
    binary = workdir / f"{source.stem}-{digest}"
    if binary.exists():
        return binary
    partial = binary.with_name(binary.name + f".{os.getpid()}.partial")
    result = subprocess.run(
        [*command, "-o", str(partial), str(source), *flags], capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"building {source.name} failed:\n{result.stderr}")
    partial.replace(binary)  # atomic: a concurrent build of the same source lands the same file
    return binary


def certificate_fingerprint(path: Path) -> str:
    """libnetconf2's cert-to-name fingerprint of the first certificate in a PEM
    file: ``04`` (SHA-256, RFC 7407 tls-fingerprint) and the digest, colon-separated."""
    cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
    return ":".join(["04", *(f"{byte:02x}" for byte in cert.fingerprint(hashes.SHA256()))])


class Ln2Device:
    """The libnetconf2 device, calling home to ``listener_host:listener_port``
    (the port may be given to :meth:`start`).

    SSH (default): host keys (``host_key_types``, ed25519 alone by default)
    generated when the object is made (so a manager can pin one before the
    device first calls), libssh presenting the one the manager's offer
    prefers; password
    authentication as ``username``.  TLS (``transport="tls"``): presents
    ``certfile`` (+ ``chainfile``), requires a client certificate issued by
    ``client_ca`` whose own fingerprint is ``client_cert``'s."""

    def __init__(
        self,
        workdir: Path,
        *,
        binary: Path,
        listener_port: int = 0,
        listener_host: str = "127.0.0.1",
        transport: str = "ssh",
        key_type: str = "ed25519",
        host_key_types: tuple[str, ...] = ("ed25519",),
        username: str = LN2_USER,
        password: str = LN2_PASSWORD,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        chainfile: Path | None = None,
        client_ca: Path | None = None,
        client_cert: Path | None = None,
        hello_timeout: int = 60,
        lifetime: int = 900,
        name: str = "ln2",
    ) -> None:
        if transport not in ("ssh", "tls"):
            raise ValueError(f"transport ssh or tls, not {transport!r}")
        if key_type not in host_key_types:
            raise ValueError(f"key_type {key_type!r} must be one of host_key_types {host_key_types}")
        if transport == "tls" and None in (certfile, keyfile, client_ca, client_cert):
            raise ValueError("a TLS device needs certfile, keyfile, client_ca and client_cert")
        self.dir = Path(workdir) / f"ln2-{name}"
        self.binary = binary
        self.listener_host = listener_host
        self.listener_port = listener_port
        self.transport = transport
        self.key_type = key_type
        self.username = username
        self.password = password
        self.certfile, self.keyfile, self.chainfile = certfile, keyfile, chainfile
        self.client_ca, self.client_cert = client_ca, client_cert
        self.hello_timeout = hello_timeout
        self.lifetime = lifetime  # seconds; the device exits by itself after it
        self.log = self.dir / "ln2_device.log"
        # the key of ``key_type`` (the one tests pin), and every key by type
        self.host_key: HostKey | None = None
        self.host_keys: dict[str, HostKey] = {}
        if transport == "ssh":
            self.dir.mkdir(parents=True, exist_ok=True)
            self.host_keys = {kind: HostKey.generate(self.dir, kind) for kind in host_key_types}
            self.host_key = self.host_keys[key_type]
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def host_key_public_line(self) -> str:
        assert self.host_key is not None, "an SSH device"
        return self.host_key.public_line

    @property
    def host_key_fingerprint(self) -> str:
        assert self.host_key is not None, "an SSH device"
        return self.host_key.fingerprint

    def command(self) -> list[str]:
        args = [
            str(self.binary),
            f"--ch-host={self.listener_host}",
            f"--ch-port={self.listener_port}",
            f"--yang-dir={LN2_YANG_DIR}",
            f"--username={self.username}",
            f"--hello-timeout={self.hello_timeout}",
            f"--lifetime={self.lifetime}",
            "--verbose",
        ]
        if self.transport == "tls":
            args += ["--tls", f"--cert={self.certfile}", f"--key={self.keyfile}", f"--client-ca={self.client_ca}"]
            assert self.client_cert is not None
            args.append(f"--client-fingerprint={certificate_fingerprint(self.client_cert)}")
            if self.chainfile is not None:
                args.append(f"--chain={self.chainfile}")
        else:
            args += [f"--hostkey={key.path}" for key in self.host_keys.values()]
            args.append("--password-env=LN2_DEVICE_PASSWORD")
        return args

    def start(self, listener_port: int | None = None, timeout: float = 10.0) -> Ln2Device:
        """Start calling home (to ``listener_port`` if given)."""
        if listener_port is not None:
            self.listener_port = listener_port
        if not self.listener_port:
            raise ValueError("a listener_port to call")
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.dir,
                env={**os.environ, "LN2_DEVICE_PASSWORD": self.password},
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.log_has(r"calling home to "):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"libnetconf2 device did not start:\n{_tail(self.log, 30)}")
            time.sleep(0.02)
        return self

    def inventory_entry(self) -> dict[str, Any]:
        """This SSH device in a callhome inventory: its pinned host key and credentials."""
        return {"ssh": {"host_keys": [self.host_key_public_line], "username": self.username, "password": self.password}}

    # -- what the device saw --------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_has(self, pattern: str) -> bool:
        return re.search(pattern, self.log_text()) is not None

    def dials(self) -> int:
        """TCP connections the device has dialled (each call home, each redial)."""
        return self.log_text().count(DIAL_LINE)

    def established(self) -> int:
        """Call-home connections that got as far as their first NETCONF session."""
        return len(ESTABLISHED_LINE.findall(self.log_text()))

    def subsystem_timeouts(self) -> int:
        """Connections libnetconf2 dropped because no ``netconf`` subsystem came within 10 s."""
        return self.log_text().count(SUBSYSTEM_TIMEOUT)

    def wait_for_log(self, pattern: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_has(pattern):
                return True
            time.sleep(0.05)
        return self.log_has(pattern)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        stop_process_group(self._proc)

    def __enter__(self) -> Ln2Device:
        return self if self.running() else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
