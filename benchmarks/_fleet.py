"""The simulated devices of the storm benchmarks, in a process of their own
(not a benchmark itself; ``bench_storm.py`` and ``bench_gateway.py`` run it).

It makes ``--devices`` simulated SSH devices (``callhome_transport.sim``: each
its own ed25519 host key, password ``admin``), writes the inventory that
trusts them and a file of their host-key fingerprints (one a line), prints
``{"event": "ready"}`` and then takes commands on stdin, one a line:

``call HOST PORT FIRST COUNT TIMEOUT``
    devices FIRST..FIRST+COUNT-1 call HOST:PORT all at once, each once (no
    redial, so no backoff is ever measured); when every call has
    authenticated or failed: ``{"event": "called", "ok", "failed",
    "seconds" (command to the last authentication), "cpu_user",
    "cpu_system" (this process, over the same span), "errors"}``.
``hangup``
    every device closes its connections, then the fleet collects its garbage
    (so every storm starts from the same state); ``{"event": "closed"}``.

EOF on stdin ends it.  ``--bulk-mib N`` gives the first device a running
configuration of about N MiB (interfaces), for the relay bulk test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncssh
import yaml
from _common import emit
from lxml import etree

from callhome_transport.sim.fleet import Fleet, FleetConfig

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
IF = "urn:ietf:params:xml:ns:yang:ietf-interfaces"


def bulk_config(mib: int) -> etree._Element:
    """A ``<data>`` tree of about ``mib`` MiB: interfaces with descriptions."""
    entry = (
        "<interface><name>eth{:07d}</name><description>"
        + "d" * 96
        + "</description><enabled>true</enabled></interface>"
    )
    count = mib * 1024 * 1024 // (len(entry) + 2)
    text = f'<data xmlns="{NC}"><interfaces xmlns="{IF}">' + "".join(entry.format(i) for i in range(count))
    text += "</interfaces></data>"
    return etree.fromstring(text.encode(), etree.XMLParser(huge_tree=True))


def _record_kex(get_kex: Any) -> Any:
    """asyncssh forgets the key exchange it ran; remember it on the connection
    (this process only: the benchmark reports what each manager negotiated)."""

    def recording(conn: Any, alg: bytes) -> Any:
        conn.bench_kex = alg.decode()
        return get_kex(conn, alg)

    return recording


asyncssh.connection.get_kex = _record_kex(asyncssh.connection.get_kex)  # type: ignore[attr-defined]


def negotiated(conn: asyncssh.SSHServerConnection) -> str:
    """Key exchange and cipher the manager chose."""
    return f"{getattr(conn, 'bench_kex', '?')} {conn.get_extra_info('recv_cipher')}"


def cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def run(args: argparse.Namespace) -> None:
    fleet = Fleet(FleetConfig(count=args.devices, prefix=args.prefix))
    args.inventory_out.write_text(yaml.safe_dump(fleet.inventory()))
    args.fingerprints_out.write_text("".join(f"{d.fingerprint}\n" for d in fleet.devices))
    if args.bulk_mib:
        big = bulk_config(args.bulk_mib)
        fleet.devices[0].datastores.running = big
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    connections: list[asyncssh.SSHServerConnection] = []
    emit("ready", devices=len(fleet.devices))

    async def call(
        device: object,
        host: str,
        port: int,
        timeout: float,
        errors: Counter[str],
        algorithms: Counter[str],
    ) -> float:
        try:
            conn = await asyncio.wait_for(device.call_home(host, port), timeout)
        except Exception as exc:  # counted and reported: a failed call is a result here
            errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
            return -1.0
        connections.append(conn)
        algorithms[negotiated(conn)] += 1
        return time.monotonic()

    async def hangup() -> None:
        for conn in connections:
            conn.close()
        await asyncio.gather(*(c.wait_closed() for c in connections), return_exceptions=True)
        connections.clear()

    while line := (await reader.readline()).decode().split():
        if line[0] == "call":
            host, port, first, count, timeout = line[1], int(line[2]), int(line[3]), int(line[4]), float(line[5])
            errors: Counter[str] = Counter()
            algorithms: Counter[str] = Counter()
            cpu0, started = cpu(), time.monotonic()
            devices = fleet.devices[first : first + count]
            done = await asyncio.gather(*(call(d, host, port, timeout, errors, algorithms) for d in devices))
            cpu1 = cpu()
            ok = [t for t in done if t > 0]
            emit(
                "called",
                ok=len(ok),
                failed=len(done) - len(ok),
                seconds=(max(ok) - started) if ok else None,
                cpu_user=cpu1[0] - cpu0[0],
                cpu_system=cpu1[1] - cpu0[1],
                errors=dict(errors.most_common(5)),
                algorithms=dict(algorithms.most_common(3)),
            )
        elif line[0] == "hangup":
            await hangup()
            # every storm starts from the same heap: without this the fleet's CPU per
            # handshake grew storm after storm (1.08 -> 1.42 ms in five bare storms in a
            # row), which favoured whichever manager ran first
            gc.collect()
            emit("closed")
        else:
            emit("error", message=f"unknown command {line[0]!r}")
    await hangup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--prefix", default="SIM-")
    parser.add_argument("--inventory-out", type=Path, required=True)
    parser.add_argument("--fingerprints-out", type=Path, required=True)
    parser.add_argument("--bulk-mib", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
