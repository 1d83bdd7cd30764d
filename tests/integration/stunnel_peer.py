"""A real NETCONF-over-TLS device on loopback: Debian's stunnel4 in server mode
with mutual TLS, running yuma123's ``netconf-subsystem`` per connection against
a netconfd (RFC 7589 on the device side), or another program (``command``).  A ``socat`` reverse relay makes it
call home, exactly as for SSH.

``netconf-subsystem`` normally runs under sshd: it takes the user from ``USER``
and netconfd's socket from the server port in ``SSH_CONNECTION``.  A wrapper
sets both (the port netconfd lists in ``--port``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

from .netconfd_peer import SUBSYSTEM, NetconfdDevice, _tail, free_port, stop_process_group

STUNNEL = "/usr/bin/stunnel4"


def stunnel_available() -> str | None:
    return None if os.path.exists(STUNNEL) else f"{STUNNEL} is not installed (make test installs stunnel4)"


class StunnelDevice:
    """stunnel (TLS server, client certificate required) in front of netconfd."""

    def __init__(
        self,
        workdir: Path,
        netconfd: NetconfdDevice | None,
        *,
        certfile: Path,
        keyfile: Path,
        client_ca: Path,
        listen_host: str = "127.0.0.1",
        name: str = "tls",
        backend_port: int | None = None,
        command: list[str] | None = None,
        max_version: str | None = None,
    ) -> None:
        """``max_version`` (stunnel's ``sslVersionMax``, e.g. ``TLSv1.2``) caps
        the TLS version the device accepts (default: the newest)."""
        self.dir = Path(workdir) / f"stunnel-{name}"
        self.max_version = max_version
        self.netconfd = netconfd
        self.backend_port = backend_port
        self.command = command  # a program serving NETCONF on stdin/stdout, instead of netconfd
        self.certfile = certfile
        self.keyfile = keyfile
        self.client_ca = client_ca
        self.listen_host = listen_host
        self.port = 0
        self.log = self.dir / "stunnel.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StunnelDevice:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.listen_host)
        if self.backend_port is not None:
            # RESTCONF device: TLS in front of an HTTP backend
            service = f"connect = 127.0.0.1:{self.backend_port}\n"
        elif self.command is not None:
            service = f"exec = {self.command[0]}\nexecArgs = {' '.join(self.command)}\n"
        else:
            assert self.netconfd is not None, "a NETCONF device needs a netconfd"
            wrapper = self.dir / "netconf-over-tls.sh"
            wrapper.write_text(
                "#!/bin/sh\n"
                f"export USER={self.netconfd.username}\n"
                f'export SSH_CONNECTION="127.0.0.1 0 127.0.0.1 {self.netconfd.ssh_port}"\n'
                f"exec {SUBSYSTEM} --ncxserver-sockname={self.netconfd.ssh_port}@{self.netconfd.ncx_socket}\n"
            )
            wrapper.chmod(0o755)
            service = f"exec = {wrapper}\nexecArgs = netconf-over-tls.sh\n"
        accept = f"{self.listen_host}:{self.port}"  # stunnel splits host and port at the last colon
        config = self.dir / "stunnel.conf"
        config.write_text(
            f"""foreground = yes
pid =
output = {self.log}
debug = 6
[netconf-tls]
accept = {accept}
cert = {self.certfile}
key = {self.keyfile}
CAfile = {self.client_ca}
requireCert = yes
verifyChain = yes
sslVersionMin = TLSv1.2
{f"sslVersionMax = {self.max_version}" if self.max_version else ""}
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
{service}"""
        )
        self._proc = subprocess.Popen(
            [STUNNEL, str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"stunnel exited with {self._proc.returncode}\n{_tail(self.log)}")
            with contextlib.suppress(OSError), socket.create_connection((self.listen_host, self.port), 0.5):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"stunnel not ready\n{_tail(self.log)}")

    def stop(self) -> None:
        stop_process_group(self._proc)

    def __enter__(self) -> StunnelDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
