"""Memory under a very large reply: a device (OpenSSH sshd whose ``netconf``
subsystem is the scripted streamer of tests/integration/netconf_streamer.py)
answers one RPC with a 2 GiB reply.

1. Gateway: a ``callhome serve`` process relays the reply through
   ``netconf.sock`` to a local client reading 16 KiB every 0.2 ms (slower than
   the device sends).  Printed: the gateway's RSS idle (the baseline, measured
   in this run), its peak while relaying (VmHWM), after the session; ratios to
   the baseline.
2. Library caller: a child process asks the same device for the same reply
   through ``CallHomeServer.netconf()`` (default ``max_message_size``, RPC
   timeout ``--rpc-timeout``), then closes the Manager.  Printed: its RSS
   before the RPC (the baseline), its peak, after close; what the RPC raised.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--size-mib 2048]`` (root:
the device's sshd needs it, as for the integration tests).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.netconfd_peer import ReverseRelay, peers_available  # noqa: E402
from tests.integration.stream_peer import (  # noqa: E402
    StreamingDevice,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    slow_read_reply,
    stream_filter,
)
from tests.integration.test_gateway import GatewayProcess  # noqa: E402

MiB = 1 << 20


def gateway_case(work: Path, device: StreamingDevice, size: int) -> dict[str, float]:
    gw = GatewayProcess(work, {"devices": {"S1": device.inventory_entry()}}).start()
    assert gw.proc is not None
    try:
        with ReverseRelay(listener_port=gw.ssh_port, device_port=device.ssh_port):
            status, _ = gw.get("/devices/S1/wait?timeout=30")
            if status != 200:
                raise RuntimeError(f"the device did not call the gateway: {status}")
            baseline = rss_bytes(gw.proc.pid)
            reset_peak_rss(gw.proc.pid)
            started = time.monotonic()
            received = slow_read_reply(gw.run_dir / "devices" / "S1" / "netconf.sock", size)
            seconds = time.monotonic() - started
            deadline = time.monotonic() + 30
            while gw.get("/devices/S1")[1]["local_sessions"] and time.monotonic() < deadline:  # type: ignore[index]
                time.sleep(0.1)
            return {
                "baseline": baseline,
                "peak": peak_rss_bytes(gw.proc.pid),
                "after": rss_bytes(gw.proc.pid),
                "received": received,
                "seconds": seconds,
            }
    finally:
        gw.stop()


def caller(args: argparse.Namespace) -> int:
    """The library caller (run in a child process): one 2 GiB RPC."""
    from callhome_transport import CallHomeServer, Inventory

    pid = os.getpid()
    inventory = Inventory.from_dict({"devices": {"S1": json.loads(args.inventory_entry)}})
    with (
        CallHomeServer(inventory, listen_address="127.0.0.1", listen_port=0) as server,
        ReverseRelay(listener_port=server.listen_port, device_port=args.device_port),
    ):
        m = server.netconf("S1", timeout=30, rpc_timeout=args.rpc_timeout)
        gc.collect()
        baseline = rss_bytes(pid)
        reset_peak_rss(pid)
        started = time.monotonic()
        try:
            m.get(filter=stream_filter(args.size_mib * MiB))
            outcome = "reply returned"
        except Exception as exc:
            outcome = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
        seconds = time.monotonic() - started
        try:
            m.close_session()
        except Exception as exc:
            outcome += f"; close_session: {type(exc).__name__}"
        m._session.close()  # the transport too, whatever close_session did (idempotent)
        gc.collect()
        result = {
            "baseline": baseline,
            "peak": peak_rss_bytes(pid),
            "after": rss_bytes(pid),
            "seconds": seconds,
            "outcome": outcome,
        }
    print(json.dumps(result))
    return 0


def caller_case(device: StreamingDevice, size_mib: int, rpc_timeout: float) -> dict[str, float | str]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--caller",
            "--size-mib",
            str(size_mib),
            "--rpc-timeout",
            str(rpc_timeout),
            "--device-port",
            str(device.ssh_port),
            "--inventory-entry",
            json.dumps(device.inventory_entry()),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"the caller failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, float | str] = json.loads(lines[-1])
    return result


def report(title: str, r: dict[str, float | str]) -> None:
    baseline = float(r["baseline"])
    print(title)
    print(f"  RSS baseline (idle, this run):   {baseline / MiB:8.0f} MiB")
    for key, label in (("peak", "peak during the reply:"), ("after", "after the session:")):
        value = float(r[key])
        print(f"  RSS {label:<29}{value / MiB:8.0f} MiB   ratio to baseline {value / baseline:6.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--rpc-timeout", type=float, default=30.0)
    parser.add_argument("--skip-gateway", action="store_true")
    parser.add_argument("--skip-caller", action="store_true")
    parser.add_argument("--caller", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--inventory-entry", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.caller:
        return caller(args)
    reason = peers_available()
    if reason:
        print(f"error: cannot run the device: {reason}", file=sys.stderr)
        return 1
    size = args.size_mib * MiB
    with tempfile.TemporaryDirectory(prefix="callhome-bench-mem-") as tmp, StreamingDevice(Path(tmp)) as device:
        if not args.skip_gateway:
            r = gateway_case(Path(tmp), device, size)
            print(
                f"gateway: {r['received'] / MiB:.0f} MiB relayed to a local client reading 16 KiB / 0.2 ms "
                f"in {r['seconds']:.1f} s"
            )
            report("gateway process (callhome serve)", r)
        if not args.skip_caller:
            c = caller_case(device, args.size_mib, args.rpc_timeout)
            print(f"library caller: get() of a {args.size_mib} MiB reply, {float(c['seconds']):.1f} s: {c['outcome']}")
            report("library caller process (CallHomeServer.netconf)", c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
