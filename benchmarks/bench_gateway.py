"""Gateway relay overhead: NETCONF through ``netconf.sock`` of a running
``callhome serve`` vs a Manager in the same process as the call-home server,
on the same netconfd device (two call-home connections from it).  Both use
the library's tick-free session (``manager_over_socket``) so that only the
relay differs.

1. Small RPC round trip (get-config of a small subtree).  Target <= 1.15x.
2. Bulk get-config throughput (a few hundred KB of configuration).  Target >= 0.9x.

Run: ``.venv/bin/python benchmarks/bench_gateway.py``.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callhome_transport import CallHomeServer, Device, HostKeyPin, Inventory, SSHCredentials  # noqa: E402
from callhome_transport.integrations.netconf import manager_over_socket  # noqa: E402
from tests.integration.netconfd_peer import NACM, NACM_GROUP_FILTER, NetconfdDevice, ReverseRelay  # noqa: E402
from tests.integration.test_gateway import GatewayProcess  # noqa: E402


def timed(m: Any, filter_: Any) -> tuple[float, int]:
    started = time.perf_counter()
    xml = m.get_config(source="running", filter=filter_).xml
    return time.perf_counter() - started, len(xml)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpcs", type=int, default=100)
    parser.add_argument("--bulk", type=int, default=10)
    parser.add_argument("--groups", type=int, default=1500, help="NACM groups making the bulk configuration")
    args = parser.parse_args()
    med = statistics.median
    with tempfile.TemporaryDirectory(prefix="callhome-bench-gw-") as tmp:
        work = Path(tmp)
        with NetconfdDevice(work) as device:
            creds = {"username": device.username, "password": device.password}
            gw = GatewayProcess(
                work, {"devices": {"R1": {"ssh": {"host_keys": [device.host_key_public_line], **creds}}}}
            ).start()
            inventory = Inventory(
                [
                    Device(
                        name="R1",
                        host_keys=(HostKeyPin.parse(device.host_key_public_line),),
                        credentials=SSHCredentials(**creds),
                    )
                ]
            )
            try:
                with (
                    CallHomeServer(inventory, listen_address="127.0.0.1", listen_port=0) as server,
                    ReverseRelay(listener_port=server.listen_port, device_port=device.ssh_port),
                    ReverseRelay(listener_port=gw.ssh_port, device_port=device.ssh_port),
                    server.netconf("R1", timeout=30) as direct,
                ):
                    groups = "".join(
                        f"<group><name>bulk-{i:05d}</name><user-name>user-{i:05d}</user-name></group>"
                        for i in range(args.groups)
                    )
                    direct.edit_config(
                        target="candidate",
                        config=f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><nacm xmlns="{NACM}">'
                        f"<groups>{groups}</groups></nacm></config>",
                    )
                    direct.commit()
                    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    unix.connect(str(gw.run_dir / "devices" / "R1" / "netconf.sock"))
                    with manager_over_socket(unix, device="R1", timeout=60) as relayed:
                        small = ("subtree", f'<nacm xmlns="{NACM}"><enable-nacm/></nacm>')
                        for m in (direct, relayed):
                            timed(m, small)
                        rt_direct, rt_relay = [], []
                        for _ in range(args.rpcs):
                            rt_direct.append(timed(direct, small)[0])
                            rt_relay.append(timed(relayed, small)[0])
                        bulk_direct, bulk_relay = [], []
                        size = 0
                        for _ in range(args.bulk):
                            t, size = timed(direct, NACM_GROUP_FILTER)
                            bulk_direct.append(size / t / 1e6)
                            t, size = timed(relayed, NACM_GROUP_FILTER)
                            bulk_relay.append(size / t / 1e6)
            finally:
                gw.stop()
    print("gateway relay overhead: netconfd behind sshd, SSH call home (medians)")
    print(f"small RPC, in-process Manager:          {1000 * med(rt_direct):7.2f} ms (n={len(rt_direct)})")
    print(f"small RPC, through netconf.sock:        {1000 * med(rt_relay):7.2f} ms (n={len(rt_relay)})")
    print(f"small RPC ratio relay / direct (<=1.15): {med(rt_relay) / med(rt_direct):6.3f}")
    print(f"bulk get-config ({size / 1e3:.0f} kB), direct:    {med(bulk_direct):7.1f} MB/s (n={len(bulk_direct)})")
    print(f"bulk get-config, through netconf.sock:  {med(bulk_relay):7.1f} MB/s")
    print(f"bulk ratio relay / direct (>= 0.9):      {med(bulk_relay) / med(bulk_direct):6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
