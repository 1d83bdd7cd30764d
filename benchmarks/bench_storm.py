"""Call-home storm: N simulated SSH devices (``callhome sim``, a separate
process) call the manager at once; time until all are identified,
authenticated and registered, handshakes per second and manager CPU per
handshake.  Then the same fleet idles: manager CPU for keepalives and RSS
per session.  Baseline in the same run: stock ``ncclient.manager.call_home``,
which takes one device per call (measured on a sample of devices).

Run: ``.venv/bin/python benchmarks/bench_storm.py --devices 1000``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callhome_transport import AdmissionConfig, Inventory, SSHClientConfig  # noqa: E402
from callhome_transport.server import AsyncCallHomeServer  # noqa: E402
from tests.integration.netconfd_peer import free_port  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_fleet(
    count: int, port: int, inventory: Path, prefix: str, duration: float, *, wait_listener: bool = True
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "callhome_transport.cli", "sim", "--devices", str(count),
            "--gateway", f"127.0.0.1:{port}", "--inventory-out", str(inventory), "--prefix", prefix,
            "--duration", str(duration), *(["--wait-listener"] if wait_listener else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def wait_file(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300
    while not path.exists() or path.stat().st_size == 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the fleet did not start")
        time.sleep(0.1)
    time.sleep(0.2)


async def storm(count: int, idle_seconds: float, work: Path) -> dict[str, float]:
    port = free_port()
    inventory_path = work / "fleet.yml"
    fleet = start_fleet(count, port, inventory_path, "SIM-", duration=600)
    try:
        await asyncio.to_thread(wait_file, inventory_path, fleet)
        inventory = Inventory.from_file(inventory_path)
        server = AsyncCallHomeServer(
            inventory,
            listen_address="127.0.0.1",
            listen_port=port,
            ssh=SSHClientConfig(handshake_timeout=120, keepalive_interval=30),
            admission=AdmissionConfig(max_pending_handshakes=count * 2, failures_before_block=0),
        )
        rss_before = rss_kib()
        cpu0, t0 = cpu_seconds(), time.monotonic()
        await server.start()
        while len(server.connected()) < count:
            if time.monotonic() - t0 > 300:
                raise RuntimeError(f"only {len(server.connected())} of {count} connected after 300 s")
            await asyncio.sleep(0.01)
        elapsed, cpu = time.monotonic() - t0, cpu_seconds() - cpu0
        # idle: keepalives (30 s) and RSS; also the worst event-loop stall seen
        stalls: list[float] = []
        idle_cpu0, idle_t0 = cpu_seconds(), time.monotonic()
        while time.monotonic() - idle_t0 < idle_seconds:
            before = time.monotonic()
            await asyncio.sleep(0.05)
            stalls.append(time.monotonic() - before - 0.05)
        idle_cpu = (cpu_seconds() - idle_cpu0) / (time.monotonic() - idle_t0)
        rss_after = rss_kib()
        await server.close()
        return {
            "elapsed": elapsed,
            "cpu": cpu,
            "idle_cpu": idle_cpu,
            "rss_per_session_kib": (rss_after - rss_before) / count,
            "max_stall": max(stalls) if stalls else 0.0,
        }
    finally:
        fleet.terminate()
        fleet.wait(30)


def _quiet_close(m: object) -> None:
    try:
        m.close_session()  # type: ignore[attr-defined]
    except Exception:  # the fleet may already be gone
        return


def stock_rate(sample: int, work: Path) -> float:
    """Devices per second for stock ncclient.manager.call_home, one device per call."""
    from ncclient import manager

    port = free_port()
    inventory_path = work / "stock.yml"
    # no readiness probe here: stock call_home would accept the probe as its one device
    fleet = start_fleet(sample, port, inventory_path, "STOCK-", duration=300, wait_listener=False)
    wait_file(inventory_path, fleet)
    managers = []
    started = time.monotonic()
    try:
        for _ in range(sample):
            managers.append(
                manager.call_home(
                    host="127.0.0.1", port=port, username="admin", password="admin", hostkey_verify=False,
                    allow_agent=False, look_for_keys=False, timeout=60,
                )
            )  # fmt: skip
        return sample / (time.monotonic() - started)
    finally:
        for m in managers:
            threading.Thread(target=_quiet_close, args=(m,), daemon=True).start()
        fleet.terminate()
        fleet.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=65.0, help="seconds of idle measurement (keepalive every 30 s)")
    parser.add_argument("--stock-sample", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="callhome-storm-") as tmp:
        work = Path(tmp)
        result = asyncio.run(storm(args.devices, args.idle, work))
        try:
            stock = stock_rate(args.stock_sample, work)
            stock_text = f"{stock:8.1f} devices/s (n={args.stock_sample})"
        except Exception as exc:  # report the stock failure instead of a ratio
            stock, stock_text = 0.0, f"failed: {type(exc).__name__}: {exc}"
    ours = args.devices / result["elapsed"]
    print(f"call-home storm: {args.devices} SSH devices (fleet in its own process), {os.cpu_count()} cores")
    print(f"all registered after:             {result['elapsed']:8.2f} s (goal <= 5 s for 1,000)")
    print(f"handshakes per second:            {ours:8.1f}")
    print(f"manager CPU per handshake:        {1000 * result['cpu'] / args.devices:8.2f} ms")
    print(f"stock ncclient call_home loop:    {stock_text}")
    if stock:
        print(f"rate ratio ours / stock:          {ours / stock:8.1f}x")
    print(f"idle CPU with {args.devices} sessions:     {100 * result['idle_cpu']:8.2f} % of one core (30 s keepalives)")
    print(f"RSS per session:                  {result['rss_per_session_kib']:8.1f} KiB (goal <= 60 KB)")
    print(f"worst event-loop stall while idle:{1000 * result['max_stall']:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
