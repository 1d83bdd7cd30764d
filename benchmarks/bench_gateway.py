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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import ROOT, LineProcess, goal, med, spread

sys.path.insert(0, str(ROOT))

from callhome_transport import CallHomeServer, Inventory
from callhome_transport.integrations.netconf import manager_over_socket
from tests.integration.netconfd_peer import NACM, NetconfdDevice, ReverseRelay
from tests.integration.test_gateway import GatewayProcess

HERE = Path(__file__).resolve().parent
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
EOM = b"]]>]]>"
HELLO = (
    f'<?xml version="1.0" encoding="UTF-8"?><hello xmlns="{NC}"><capabilities>'
    "<capability>urn:ietf:params:netconf:base:1.1</capability></capabilities></hello>"
).encode() + EOM
GET_ALL = f'<rpc message-id="1" xmlns="{NC}"><get-config><source><running/></source></get-config></rpc>'.encode()
END_OF_CHUNKS = b"\n##\n"


def timed(m: Any, filter_: Any) -> float:
    started = time.perf_counter()
    m.get_config(source="running", filter=filter_)
    return time.perf_counter() - started


def raw_bulk(sock: socket.socket) -> tuple[int, float, float]:
    """Hello, then one get-config of everything on a raw NETCONF stream:
    (reply bytes, seconds first byte -> last byte, seconds request -> last byte)."""
    sock.sendall(HELLO)
    data = b""
    while EOM not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the hello")
        data += chunk
    started = time.perf_counter()
    sock.sendall(b"\n#%d\n%s\n##\n" % (len(GET_ALL), GET_ALL))
    buffer = bytearray(1 << 20)
    total, tail, first = 0, b"", 0.0
    while not tail.endswith(END_OF_CHUNKS):
        n = sock.recv_into(buffer)
        if not n:
            raise ConnectionError("closed during the reply")
        if not total:
            first = time.perf_counter()
        total += n
        tail = (tail + bytes(buffer[max(0, n - 4) : n]))[-4:]
    done = time.perf_counter()
    sock.close()
    return total, done - first, done - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpcs", type=int, default=100)
    parser.add_argument("--bulk", type=int, default=10, help="bulk samples each way")
    parser.add_argument("--bulk-mib", type=int, default=64, help="MiB of the simulated device's configuration")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="callhome-bench-gw-") as tmp:
        work = Path(tmp)
        fleet = LineProcess(
            [
                sys.executable, str(HERE / "_fleet.py"), "--devices", "1", "--bulk-mib", str(args.bulk_mib),
                "--inventory-out", str(work / "sim.yml"), "--fingerprints-out", str(work / "sim.txt"),
            ],
            log=work / "fleet.log",
        )  # fmt: skip
        try:
            fleet.expect("ready", 300)
            with NetconfdDevice(work) as device:
                inventory = yaml.safe_load((work / "sim.yml").read_text())
                inventory["devices"]["R1"] = device.inventory_entry()
                gw = GatewayProcess(work, inventory).start()
                try:
                    with (
                        CallHomeServer(
                            Inventory.from_dict(inventory), listen_address="127.0.0.1", listen_port=0
                        ) as server,
                        ReverseRelay(listener_port=server.listen_port, device_port=device.ssh_port),
                        ReverseRelay(listener_port=gw.ssh_port, device_port=device.ssh_port),
                        server.netconf("R1", timeout=30) as direct,
                    ):
                        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                        unix.connect(str(gw.run_dir / "devices" / "R1" / "netconf.sock"))
                        with manager_over_socket(unix, device="R1", timeout=60) as relayed:
                            small = ("subtree", f'<nacm xmlns="{NACM}"><enable-nacm/></nacm>')
                            for m in (direct, relayed):
                                timed(m, small)
                            rt_direct, rt_relay = [], []
                            for _ in range(args.rpcs):
                                rt_direct.append(timed(direct, small))
                                rt_relay.append(timed(relayed, small))
                        for port in (gw.ssh_port, server.listen_port):
                            fleet.send(f"call 127.0.0.1 {port} 0 1 30")
                            if fleet.expect("called", 60)["ok"] != 1:
                                raise RuntimeError("the simulated device did not call")
                        sim = "SIM-00001"
                        gw.get(f"/devices/{sim}/wait?timeout=30")
                        sim_sock = str(gw.run_dir / "devices" / sim / "netconf.sock")

                        def through_gateway() -> tuple[int, float, float]:
                            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                            unix.connect(sim_sock)
                            return raw_bulk(unix)

                        bulk_direct: list[tuple[int, float, float]] = []
                        bulk_relay: list[tuple[int, float, float]] = []
                        raw_bulk(server.open_netconf_stream(sim, 30))  # warm
                        through_gateway()
                        for _ in range(args.bulk):
                            bulk_direct.append(raw_bulk(server.open_netconf_stream(sim, 30)))
                            bulk_relay.append(through_gateway())
                finally:
                    gw.stop()
        finally:
            fleet.stop()
    size = bulk_direct[0][0]
    rate_direct = [b[0] / b[1] / 1e6 for b in bulk_direct]
    rate_relay = [b[0] / b[1] / 1e6 for b in bulk_relay]
    rtt_direct = [b[2] for b in bulk_direct]
    rtt_relay = [b[2] for b in bulk_relay]
    small_ratio = med(rt_relay) / med(rt_direct)
    bulk_ratio = med(rate_relay) / med(rate_direct)
    print("gateway relay overhead (medians, min-max)")
    print(f"small RPC (netconfd), in-process Manager:  {spread(rt_direct, 1000, ' ms', 2)}")
    print(f"small RPC (netconfd), via netconf.sock:    {spread(rt_relay, 1000, ' ms', 2)}")
    print(f"small RPC ratio relay / direct (<= 1.15):  {small_ratio:6.3f}")
    print(f"bulk get-config, {size / 2**20:.1f} MiB reply from the simulated device, first byte -> last:")
    print(f"  in-process session:  {spread(rate_direct, 1, ' MB/s')}")
    print(f"  through netconf.sock: {spread(rate_relay, 1, ' MB/s')}")
    print(
        f"  request -> last byte: in-process {spread(rtt_direct, 1, ' s', 2)}; gateway {spread(rtt_relay, 1, ' s', 2)}"
    )
    print(f"bulk ratio relay / direct (>= 0.9):        {bulk_ratio:6.3f}")
    goal("gateway small RPC / in-process (netconfd)", f"{small_ratio:.2f}x", "<= 1.15x", small_ratio <= 1.15)
    goal(
        f"gateway bulk throughput / in-process ({args.bulk_mib} MiB)",
        f"{bulk_ratio:.2f}x",
        ">= 0.9x",
        bulk_ratio >= 0.9,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
