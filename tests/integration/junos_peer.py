"""A Junos outbound-ssh device for the tests: this script dials the manager,
sends Junos's initiation sequence (MSG-ID, MSG-VER, DEVICE-ID and, with a
secret, HOST-KEY and HMAC), then splices the connection to a real OpenSSH sshd
(the netconfd device of ``netconfd_peer.py``), which then speaks SSH as the
Junos device's own sshd would.

It runs as its own process, stopped by PID, bounded in time like the socat
relay.  The secret comes in the environment (``JUNOS_OUTBOUND_SSH_SECRET``),
not on the command line.  The HMAC is computed here, independently of the
library: HMAC-SHA1 keyed by the secret over the HOST-KEY text, lower-case hex,
as Juniper's own YAPT server checks it.

    with JunosOutboundSSH(manager_port=p, sshd_port=device.ssh_port, device_id="mx-1",
                          host_key=device.host_key_public_line, secret="s3cret"):
        ...
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import os
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path

from .netconfd_peer import ReverseRelay

SECRET_ENV = "JUNOS_OUTBOUND_SSH_SECRET"


def initiation_sequence(device_id: str, host_key: str | None, secret: str | None, *, colon_form: bool = False) -> bytes:
    """The lines a Junos device sends before its SSH banner."""
    lines = ["MSG-ID: DEVICE-CONN-INFO", "MSG-VER: V1", f"DEVICE-ID: {': ' if colon_form else ''}{device_id}"]
    if secret is not None and host_key is not None:
        key_text = " ".join(host_key.split()[:2])  # "ssh-ed25519 AAAA...", no comment
        digest = hmac.new(secret.encode(), key_text.encode(), hashlib.sha1).hexdigest()
        lines += [f"HOST-KEY: {key_text}", f"HMAC: {digest}"]
    return "".join(line + "\r\n" for line in lines).encode()


def _dial(host: str, port: int, attempts: int = 50) -> socket.socket:
    for _ in range(attempts - 1):
        with contextlib.suppress(OSError):
            return socket.create_connection((host, port), timeout=5)
        time.sleep(0.1)
    return socket.create_connection((host, port), timeout=5)


def _splice(a: socket.socket, b: socket.socket, idle_timeout: float) -> None:
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ, b)
    sel.register(b, selectors.EVENT_READ, a)
    while True:
        events = sel.select(idle_timeout)
        if not events:
            return
        for key, _ in events:
            src: socket.socket = key.fileobj  # type: ignore[assignment]
            dst: socket.socket = key.data
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            try:
                dst.sendall(data)
            except OSError:
                return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manager-host", default="127.0.0.1")
    parser.add_argument("--manager-port", type=int, required=True)
    parser.add_argument("--sshd-host", default="127.0.0.1")
    parser.add_argument("--sshd-port", type=int, required=True)
    parser.add_argument("--device-id", required=True)
    parser.add_argument("--host-key", help="the HOST-KEY to send (an OpenSSH public key line)")
    parser.add_argument("--colon-form", action="store_true", help="send 'DEVICE-ID: : <id>'")
    parser.add_argument("--idle-timeout", type=float, default=600)
    args = parser.parse_args(argv)
    secret = os.environ.get(SECRET_ENV)
    manager = _dial(args.manager_host, args.manager_port)
    with manager:
        manager.sendall(initiation_sequence(args.device_id, args.host_key, secret, colon_form=args.colon_form))
        with socket.create_connection((args.sshd_host, args.sshd_port), timeout=5) as sshd:
            manager.settimeout(None)
            sshd.settimeout(None)
            _splice(manager, sshd, args.idle_timeout)
    return 0


class JunosOutboundSSH(ReverseRelay):
    """Runs this script as a device process (``python -m``, from the
    repository root); stop() ends it by PID, as for the socat relay."""

    def __init__(
        self,
        *,
        manager_port: int,
        sshd_port: int,
        device_id: str,
        host_key: str | None = None,
        secret: str | None = None,
        colon_form: bool = False,
    ) -> None:
        super().__init__(listener_port=manager_port, device_port=sshd_port)
        self.args = [
            sys.executable,
            "-m",
            __spec__.name if __spec__ else "tests.integration.junos_peer",
            f"--manager-port={manager_port}",
            f"--sshd-port={sshd_port}",
            f"--device-id={device_id}",
        ]
        if host_key is not None:
            self.args.append(f"--host-key={host_key}")
        if colon_form:
            self.args.append("--colon-form")
        self.env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
        if secret is not None:
            self.env[SECRET_ENV] = secret

    def start(self) -> JunosOutboundSSH:
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=Path(__file__).resolve().parents[2],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        return self


if __name__ == "__main__":
    sys.exit(main())
