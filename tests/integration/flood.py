"""A connection flood against call-home listeners, as a separate process (the
attack of issue 15 item 10): from one source address, per port, ``--silent``
connections that never send a byte and ``--slow`` slow-loris connections that
send the start of a banner one byte per ``--interval`` seconds and never
finish it (SSH ports: ``SSH-2.0-``...; TLS ports: a handshake record header).
A connection the manager closes is opened again after ``--interval`` seconds,
so the pressure stays.  Prints ``ready`` once every connection was opened
once; stops after ``--duration`` seconds (bounded) or on SIGTERM.

    python -m tests.integration.flood --source 127.0.0.2 --ssh-port 4334 --tls-port 4335
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

SSH_SLOW = b"SSH-2.0-" + b"x" * 200  # never reaches its newline
TLS_SLOW = b"\x16\x03\x03\x40\x00" + b"\x02" * 200  # a 16 KiB ServerHello record that never completes


async def _connect(source: str, host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.bind((source, 0))
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _closed(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closed ``sock`` within ``seconds`` (what it sent is discarded)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(seconds):
            while True:
                if not await loop.sock_recv(sock, 65536):
                    return True
    except TimeoutError:
        return False
    except OSError:
        return True


async def _one(source: str, host: str, port: int, slow: bytes | None, interval: float, opened: asyncio.Event) -> None:
    """One flood connection, reopened whenever the manager closes it."""
    loop = asyncio.get_running_loop()
    first = True
    while True:
        try:
            sock = await _connect(source, host, port)
        except OSError:
            await asyncio.sleep(interval)
            continue
        if first:
            first = False
            opened.set()
        try:
            sent = 0
            while True:
                if slow is not None and sent < len(slow):
                    with contextlib.suppress(OSError):
                        await loop.sock_sendall(sock, slow[sent : sent + 1])
                    sent += 1
                if await _closed(sock, interval):
                    break
        finally:
            sock.close()
        await asyncio.sleep(interval)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="127.0.0.2", help="source address of every connection")
    parser.add_argument("--host", default="127.0.0.1", help="the manager's address")
    parser.add_argument("--ssh-port", type=int, action="append", default=[], help="an SSH call-home port")
    parser.add_argument("--tls-port", type=int, action="append", default=[], help="a TLS call-home port")
    parser.add_argument("--silent", type=int, default=500, help="silent connections per port")
    parser.add_argument("--slow", type=int, default=200, help="slow-loris connections per port")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between slow bytes and reconnects")
    parser.add_argument("--duration", type=float, default=120.0, help="stop after this many seconds")
    args = parser.parse_args(argv)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tasks: list[asyncio.Task[None]] = []
    opened: list[asyncio.Event] = []
    ports = [(port, SSH_SLOW) for port in args.ssh_port] + [(port, TLS_SLOW) for port in args.tls_port]
    for port, slow_bytes in ports:
        for slow in [None] * args.silent + [slow_bytes] * args.slow:
            event = asyncio.Event()
            opened.append(event)
            tasks.append(loop.create_task(_one(args.source, args.host, port, slow, args.interval, event)))
    try:
        async with asyncio.timeout(args.duration):
            await asyncio.gather(*(event.wait() for event in opened))
            print("ready", len(opened), flush=True)
            await stop.wait()
    except TimeoutError:
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return 0


class Flood:
    """This module run as a separate process, started and stopped by PID::

    with Flood(source="127.0.0.2", ssh_ports=[p1], tls_ports=[p2]):
        ...  # every flood connection has been opened once
    """

    def __init__(
        self,
        *,
        source: str,
        ssh_ports: list[int] = [],  # noqa: B006 - never mutated
        tls_ports: list[int] = [],  # noqa: B006
        silent: int = 500,
        slow: int = 200,
        duration: float = 120.0,
    ) -> None:
        ports = [arg for port in ssh_ports for arg in ("--ssh-port", str(port))]
        ports += [arg for port in tls_ports for arg in ("--tls-port", str(port))]
        self.args = [
            *(sys.executable, "-m", "tests.integration.flood", "--source", source, *ports),
            *("--silent", str(silent), "--slow", str(slow), "--duration", str(duration)),
        ]
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 60.0) -> Flood:
        root = Path(__file__).resolve().parent.parent.parent
        self.proc = subprocess.Popen(self.args, cwd=root, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("ready"):
            self.stop()
            raise RuntimeError(f"the flood did not start within {timeout} s ({line!r})")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Flood:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
