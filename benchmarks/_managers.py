"""The Python managers of ``bench_storm.py``, each run in a process of its
own so that its CPU is its own (not a benchmark itself).

``bare``
    a bare asyncssh client loop: our listener's accept loop (backlog 1024,
    TCP_NODELAY), then ``asyncssh.connect(sock=...)`` per connection with
    the same authentication as ours (host key checked against the pinned
    fingerprints in ``validate_host_public_key``, then the password), the
    way an asyncssh user writes it: options passed per call, so asyncssh
    builds them per connection.  ``--level hello`` also opens the same
    ``netconf`` subsystem channel and exchanges the same hello.
``server``
    our :class:`AsyncCallHomeServer` (``--watch-loop``: with ``watch_loop=True``,
    as for thousands of sessions; ``--level auth``: registered;
    ``hello``: then ``take_session``, a ``netconf`` channel greeted and held
    ready to lend, in the same event loop: the work of the C client's
    ``nc_accept_callhome``).  ``--level manager``: the synchronous
    :class:`CallHomeServer` handing an ncclient Manager to each device from
    its ``on_connect`` worker pool.
``stock``
    stock ncclient: ``manager.connect_ssh(sock=accepted)`` behind the same
    accept loop, one device after the other (ncclient's own ``call_home``
    binds a new listening socket per call and cannot be called twice in one
    process).  ncclient cannot check a host key it does not know in advance,
    so the key is checked against the pins after ``connect_ssh`` returns
    (the password has gone to an unverified device by then: RFC 8071 s5 is
    broken; the work is the same).

Output: ``{"event": "ready", "port"}``, then ``{"event": "done", "ok",
"failed", "seconds", "gc_*"}`` once ``--count`` devices are through (ok or
failed).  Commands on stdin: ``idle SECONDS`` (the worst event-loop stalls
over that time: ``{"event": "idle", ...}``), ``status``; EOF ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import emit, thread_sched

EOM = b"]]>]]>"
CLIENT_HELLO = (
    b'<?xml version="1.0" encoding="UTF-8"?><hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><capabilities>'
    b"<capability>urn:ietf:params:netconf:base:1.0</capability>"
    b"<capability>urn:ietf:params:netconf:base:1.1</capability></capabilities></hello>" + EOM
)
BACKLOG = 1024  # callhome_transport.transports.listener.Listener's


def fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


class GcWatch:
    """Garbage-collection pauses of this process (gc.callbacks)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._started)

    def summary(self) -> dict[str, float]:
        pauses, self.pauses = self.pauses, []
        return {"gc_count": len(pauses), "gc_total": sum(pauses), "gc_worst": max(pauses, default=0.0)}


class Tally:
    """Devices through (ok or failed); ``done`` once ``count`` are."""

    def __init__(self, count: int, gc_watch: GcWatch) -> None:
        self.count = count
        self.ok = self.failed = 0
        self.first = self.last = 0.0
        self.errors: dict[str, int] = {}
        self._gc = gc_watch
        self._lock = threading.Lock()

    def started(self) -> None:
        with self._lock:
            if not self.first:
                self.first = time.monotonic()

    def add(self, ok: bool, error: str = "") -> None:
        with self._lock:
            if ok:
                self.ok += 1
            else:
                self.failed += 1
                self.errors[error[:120]] = self.errors.get(error[:120], 0) + 1
            self.last = time.monotonic()
            if self.ok + self.failed == 1:  # the warm-up device: GC counts start after it
                self._gc.summary()
                emit("first")
            if self.ok + self.failed == self.count:
                emit(
                    "done",
                    ok=self.ok,
                    failed=self.failed,
                    seconds=self.last - self.first,
                    errors=dict(sorted(self.errors.items(), key=lambda e: -e[1])[:5]),
                    **self._gc.summary(),
                )


def listening_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(BACKLOG)
    return sock


async def read_until_eom(reader: Callable[[], Any]) -> bytes:
    data = b""
    while EOM not in data:
        chunk = await reader()
        if not chunk:
            raise ConnectionError("closed before the hello")
        data += chunk
    return data


async def stdin_commands(idle: Callable[[float], Any], status: Callable[[], None]) -> None:
    """Serve ``idle``/``status`` commands until EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().split():
        if line[0] == "idle":
            await idle(float(line[1]))
        elif line[0] == "status":
            status()


async def measure_idle(seconds: float, gc_watch: GcWatch) -> None:
    """Worst overshoot of a 50 ms sleep on this event loop over ``seconds``."""
    gc_watch.summary()
    stalls = []  # (stall, seconds the loop's thread ran, seconds it waited for a CPU)
    pid, tid = os.getpid(), threading.get_native_id()
    started = time.monotonic()
    cpu_before = time.process_time()
    while time.monotonic() - started < seconds:
        before, (ran, waited) = time.monotonic(), thread_sched(pid, tid)
        await asyncio.sleep(0.05)
        ran_after, waited_after = thread_sched(pid, tid)
        stalls.append((time.monotonic() - before - 0.05, ran_after - ran, waited_after - waited))
    cpu_share = (time.process_time() - cpu_before) / (time.monotonic() - started)
    stalls.sort()
    worst = stalls[-1]
    emit(
        "idle",
        worst=worst[0],
        worst_ran=worst[1],
        worst_waited=worst[2],
        worst_less_wait=max(stall - waited for stall, _, waited in stalls),
        p99=stalls[int(0.99 * (len(stalls) - 1))][0],
        samples=len(stalls),
        cpu_share=cpu_share,
        **gc_watch.summary(),
    )


# -- bare asyncssh ----------------------------------------------------------------------------


def one_session_each(path: Path) -> Any:
    """The fleet's inventory with ``hold_session: never``: one NETCONF session
    per device, as the C client opens, with no spare greeted for a next caller
    (``auto`` keeps one on a device in use)."""
    import yaml

    from callhome_transport import Inventory

    data = yaml.safe_load(path.read_text())
    data.setdefault("defaults", {})["hold_session"] = "never"
    return Inventory.from_dict(data)


def algorithms(args: argparse.Namespace, kind: Any = list) -> dict[str, Any]:
    """The ``--kex`` and ``--cipher`` choices as asyncssh / SSHClientConfig keywords."""
    chosen = {"kex_algs": args.kex, "encryption_algs": args.cipher}
    return {key: kind(names) for key, names in chosen.items() if names}


async def run_bare(args: argparse.Namespace) -> None:
    import asyncssh

    pins = set(args.fingerprints.read_text().split())
    gc_watch = GcWatch()
    tally = Tally(args.count, gc_watch)
    held: list[Any] = []

    class Pinned(asyncssh.SSHClient):
        def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
            return fingerprint(key.public_data) in pins

    async def handshake(sock: socket.socket, peer: tuple[str, int]) -> None:
        try:
            conn = await asyncssh.connect(
                sock=sock,
                host=peer[0],
                port=peer[1],
                known_hosts=([], [], []),  # every key goes to validate_host_public_key
                client_factory=Pinned,
                username=args.username,
                password=args.password,
                config=None,
                client_keys=None,
                agent_path=None,
                gss_host=None,
                x509_trusted_certs=None,
                host_based_auth=False,
                keepalive_interval=args.keepalive,
                keepalive_count_max=3,
                **algorithms(args),
            )
            held.append(conn)
            if args.level == "hello":
                writer, reader, _ = await conn.open_session(subsystem="netconf", encoding=None)
                writer.write(CLIENT_HELLO)
                await read_until_eom(lambda: reader.read(65536))
                held.append(writer)
        except Exception as exc:  # counted and reported
            sock.close()
            tally.add(False, f"{type(exc).__name__}: {exc}")
            return
        tally.add(True)

    loop = asyncio.get_running_loop()
    lsock = listening_socket(args.port)
    lsock.setblocking(False)
    emit("ready", port=lsock.getsockname()[1])

    async def accept_loop() -> None:
        while True:
            sock, peer = await loop.sock_accept(lsock)
            tally.started()
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(handshake(sock, peer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    tasks: set[asyncio.Task[None]] = set()
    acceptor = loop.create_task(accept_loop())
    await stdin_commands(lambda s: measure_idle(s, gc_watch), lambda: emit("status", ok=tally.ok, failed=tally.failed))
    acceptor.cancel()


# -- our server -------------------------------------------------------------------------------


async def run_server(args: argparse.Namespace) -> None:
    from callhome_transport import AdmissionConfig, SSHClientConfig
    from callhome_transport.server import AsyncCallHomeServer, DeviceConnected, RejectedAttempt

    gc_watch = GcWatch()
    tally = Tally(args.count, gc_watch)
    held: list[Any] = []
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    server = AsyncCallHomeServer(
        one_session_each(args.inventory),
        listen_address="127.0.0.1",
        listen_port=args.port,
        ssh=SSHClientConfig(
            handshake_timeout=120,
            keepalive_interval=args.keepalive,
            keepalive_jitter=args.keepalive_jitter,
            **algorithms(args, tuple),
        ),
        admission=AdmissionConfig(max_pending_handshakes=max(256, 2 * args.count), failures_before_block=0),
        watch_loop=args.watch_loop,
    )

    async def hello(device: str) -> None:
        try:
            held.append(await server.take_session(device, 30))
        except Exception as exc:  # counted and reported
            tally.add(False, f"{type(exc).__name__}: {exc}")
            return
        tally.add(True)

    def connected(event: DeviceConnected) -> None:
        tally.started()
        if args.level == "hello":
            task = loop.create_task(hello(event.device))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        else:
            tally.add(True)

    def rejected(attempt: RejectedAttempt) -> None:
        tally.started()
        tally.add(False, f"{attempt.reason}: {attempt.detail}")

    server.add_connect_callback(connected)
    server.add_reject_callback(rejected)
    await server.start()
    emit("ready", port=server.listen_port)
    await stdin_commands(lambda s: measure_idle(s, gc_watch), lambda: emit("status", ok=tally.ok, failed=tally.failed))
    await server.close()


def run_server_managers(args: argparse.Namespace) -> None:
    """``server --level manager``: CallHomeServer and an ncclient Manager per device."""
    from callhome_transport import AdmissionConfig, CallHomeServer, SSHClientConfig
    from callhome_transport.server import DeviceConnected

    gc_watch = GcWatch()
    tally = Tally(args.count, gc_watch)
    held: list[Any] = []
    with CallHomeServer(
        one_session_each(args.inventory),
        listen_address="127.0.0.1",
        listen_port=args.port,
        ssh=SSHClientConfig(handshake_timeout=120, keepalive_interval=args.keepalive, **algorithms(args, tuple)),
        admission=AdmissionConfig(max_pending_handshakes=max(256, 2 * args.count), failures_before_block=0),
    ) as server:

        def connected(event: DeviceConnected) -> None:
            tally.started()
            try:
                held.append(server.netconf(event.device, timeout=30))
            except Exception as exc:  # counted and reported
                tally.add(False, f"{type(exc).__name__}: {exc}")
                return
            tally.add(True)

        server.on_connect(connected)
        emit("ready", port=server.listen_port)
        for line in sys.stdin:
            if line.split()[:1] == ["status"]:
                emit("status", ok=tally.ok, failed=tally.failed)


# -- stock ncclient ---------------------------------------------------------------------------


def run_stock(args: argparse.Namespace) -> None:
    from ncclient import manager

    pins = set(args.fingerprints.read_text().split())
    gc_watch = GcWatch()
    tally = Tally(args.count, gc_watch)
    held = []
    lsock = listening_socket(args.port)
    lsock.settimeout(120)
    emit("ready", port=lsock.getsockname()[1])
    for _ in range(args.count):
        try:
            sock, peer = lsock.accept()
        except TimeoutError:
            tally.add(False, "no call within 120 s")
            continue
        tally.started()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            m = manager.connect_ssh(
                sock=sock,
                host=peer[0],
                port=peer[1],
                username=args.username,
                password=args.password,
                hostkey_verify=False,
                allow_agent=False,
                look_for_keys=False,
                timeout=60,
            )
        except Exception as exc:  # counted and reported
            sock.close()
            tally.add(False, f"{type(exc).__name__}: {exc}")
            continue
        key = m._session._transport.get_remote_server_key()
        if fingerprint(key.asbytes()) not in pins:
            m.close_session()
            tally.add(False, "host key not pinned")
            continue
        held.append(m)
        tally.add(True)
    for line in sys.stdin:  # hold the sessions until EOF
        if line.split()[:1] == ["status"]:
            emit("status", ok=tally.ok, failed=tally.failed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["bare", "server", "stock"])
    parser.add_argument("--level", choices=["auth", "hello", "manager"], default="auth")
    parser.add_argument("--count", type=int, required=True, help="devices to wait for")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--inventory", type=Path, help="server: the fleet's inventory")
    parser.add_argument("--fingerprints", type=Path, help="bare, stock: the fleet's host-key fingerprints")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--keepalive", type=float, default=30.0)
    parser.add_argument("--keepalive-jitter", type=float, default=1.0, help="server: SSHClientConfig.keepalive_jitter")
    parser.add_argument("--kex", nargs="*", default=[], help="key-exchange algorithms to offer (default asyncssh's)")
    parser.add_argument("--cipher", nargs="*", default=[], help="encryption algorithms to offer (default asyncssh's)")
    parser.add_argument("--watch-loop", action="store_true", help="server: watch_loop=True (gc.freeze after bursts)")
    parser.add_argument("--trace-loop", type=Path, help="write the event loop's long iterations here (_looptrace)")
    args = parser.parse_args()
    if args.trace_loop:
        from _looptrace import LoopTrace

        LoopTrace(args.trace_loop).install()
    if args.kind == "stock":
        run_stock(args)
    elif args.kind == "bare":
        asyncio.run(run_bare(args))
    elif args.level == "manager":
        run_server_managers(args)
    else:
        asyncio.run(run_server(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
