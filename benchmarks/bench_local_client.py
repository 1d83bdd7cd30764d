"""A local NETCONF client of the gateway (``callhome serve``), on one netconfd
device behind sshd calling home over SSH:

1. RPC round trip on ``devices/R1/netconf.sock``: stock
   ``ncclient.manager.connect_uds`` (the baseline) vs
   ``callhome_transport.gateway.connect`` (the documented fast path: no 100 ms
   send tick).
2. Opening a session and its first RPC, ``gateway.connect``: a device greeted
   on demand (``hold_session: never``, the baseline) vs one whose session the
   gateway holds ready (``hold_session: always``).

Run: ``.venv/bin/python benchmarks/bench_local_client.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ncclient import manager  # noqa: E402

from callhome_transport import gateway  # noqa: E402
from callhome_transport.gateway.client import GatewayClient  # noqa: E402
from tests.integration.netconfd_peer import NACM, NetconfdDevice, ReverseRelay  # noqa: E402
from tests.integration.test_gateway import GatewayProcess  # noqa: E402

SMALL = ("subtree", f'<nacm xmlns="{NACM}"><enable-nacm/></nacm>')


def rpc_times(open_: Callable[[], Any], rpcs: int) -> list[float]:
    times = []
    with open_() as m:
        m.get_config(source="running", filter=SMALL)
        for _ in range(rpcs):
            started = time.perf_counter()
            m.get_config(source="running", filter=SMALL)
            times.append(time.perf_counter() - started)
    return times


def open_times(open_: Callable[[], Any], ready: Callable[[], bool], sessions: int) -> list[float]:
    times = []
    for _ in range(sessions):
        deadline = time.monotonic() + 10
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.15)  # past HELLO_SETTLE for both: what differs is the greeting
        started = time.perf_counter()
        with open_() as m:
            m.get_config(source="running", filter=SMALL)
            times.append(time.perf_counter() - started)
    return times


def measure(work: Path, hold: str, args: argparse.Namespace) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    with NetconfdDevice(work) as device:
        entry = {**device.inventory_entry(), "hold_session": hold}
        gw = GatewayProcess(work, {"devices": {"R1": entry}}).start()
        try:
            with ReverseRelay(listener_port=gw.ssh_port, device_port=device.ssh_port):
                client = GatewayClient(gw.run_dir)
                client.wait("R1", 30)

                def fast() -> Any:
                    return gateway.connect("R1", gw.run_dir, timeout=30)

                def ready() -> bool:
                    return hold == "never" or client.device("R1").session_held

                if hold == "never":
                    sock = str(gw.run_dir / "devices" / "R1" / "netconf.sock")
                    results["connect_uds"] = rpc_times(lambda: manager.connect_uds(path=sock), args.rpcs)
                    results["gateway.connect"] = rpc_times(fast, args.rpcs)
                results[f"open {hold}"] = open_times(fast, ready, args.sessions)
        finally:
            gw.stop()
    return results


def report(results: dict[str, list[float]], label: str, key: str, baseline: str | None = None) -> None:
    if key not in results:
        print(f"{label}: ERROR, not measured")
        return
    print(f"{label}: {1000 * statistics.median(results[key]):8.2f} ms (median of {len(results[key])})")
    if baseline is not None:
        if baseline not in results:
            print(f"  ratio: ERROR, the baseline ({baseline}) did not run")
            return
        print(f"  ratio baseline / this: {statistics.median(results[baseline]) / statistics.median(results[key]):.1f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpcs", type=int, default=30)
    parser.add_argument("--sessions", type=int, default=30)
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="callhome-bench-local-") as tmp:
        for hold in ("never", "always"):
            (Path(tmp) / hold).mkdir()
            results.update(measure(Path(tmp) / hold, hold, args))
    print("a local client of the gateway: netconfd behind sshd, SSH call home")
    report(results, "small RPC, ncclient.manager.connect_uds (baseline)", "connect_uds")
    report(results, "small RPC, callhome_transport.gateway.connect     ", "gateway.connect", "connect_uds")
    report(results, "open + first RPC, greeted on demand (baseline)    ", "open never")
    report(results, "open + first RPC, session held ready              ", "open always", "open never")
    return 0


if __name__ == "__main__":
    sys.exit(main())
