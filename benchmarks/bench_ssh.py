"""NETCONF over SSH call home vs stock ncclient, against the same real device.

The device is Debian's yuma123 ``netconfd`` behind a private OpenSSH ``sshd``
(started here on loopback, stopped by PID at the end).  Every figure is a
ratio against a baseline measured in the same run, interleaved, because these
machines are noisy.

P1. Setup, device TCP connection to the reply of the first RPC (a small
   get-config): what a caller waits for.
   - call home: ``socat`` dials our listener and relays to sshd; measured from
     our accept of that connection to the first reply on the Manager of
     ``CallHomeServer.netconf``.
   - baseline: ``ncclient.manager.connect_ssh`` to a ``socat`` forward relay in
     front of the same sshd (the same extra hop), from the call to the first
     reply.  The direct figure (no relay) is printed too.
   Target: ratio <= 1.05.  (Our first RPC leaves 100 ms after the hello,
   ``HELLO_SETTLE``: netconfd drops an RPC read with the hello.)
P2. Small RPC round trip (get-config of a small subtree), our Manager vs a
   stock ncclient Manager on the same device: one caller (target >= 20x
   faster), and 10 callers at once (throughput, RPCs/s), with one Manager
   each and sharing one Manager.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/bench_ssh.py``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import forward_relay, goal, med, spread
from ncclient import manager as nc_manager

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callhome_transport import CallHomeServer, Device, HostKeyPin, Inventory, SSHClientConfig, SSHCredentials  # noqa: E402
from tests.integration.netconfd_peer import NACM_GROUP_FILTER, NetconfdDevice, ReverseRelay  # noqa: E402

SMALL = NACM_GROUP_FILTER


def connect_forward(device: NetconfdDevice, port: int) -> nc_manager.Manager:
    return nc_manager.connect_ssh(
        host="127.0.0.1",
        port=port,
        username=device.username,
        password=device.password,
        hostkey_verify=False,
        allow_agent=False,
        look_for_keys=False,
        timeout=30,
    )


def setup_callhome(server: CallHomeServer, device: NetconfdDevice) -> float:
    """Seconds from our accept of the device's connection to the first reply."""
    relay = ReverseRelay(listener_port=server.listen_port, device_port=device.ssh_port)
    with relay:
        m = server.netconf("DEV", timeout=30)
        m.get_config(source="running", filter=SMALL)
        done = time.time()
        event = server.wait_for("DEV", timeout=1)
        accepted = event.connected_at - event.handshake_seconds
        m.close_session()
        server.disconnect("DEV")
    return done - accepted


def setup_forward(device: NetconfdDevice, port: int) -> float:
    """Seconds from connect_ssh to the first reply."""
    started = time.monotonic()
    m = connect_forward(device, port)
    m.get_config(source="running", filter=SMALL)
    elapsed = time.monotonic() - started
    m.close_session()
    return elapsed


def concurrent_rate(managers: list[nc_manager.Manager], per_caller: int) -> float:
    """RPCs per second with one caller thread per Manager, all at once."""
    barrier = threading.Barrier(len(managers) + 1)

    def caller(m: nc_manager.Manager) -> None:
        barrier.wait()
        for _ in range(per_caller):
            m.get_config(source="running", filter=SMALL)

    threads = [threading.Thread(target=caller, args=(m,)) for m in managers]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.monotonic()
    for t in threads:
        t.join()
    return len(managers) * per_caller / (time.monotonic() - started)


def rpc_times(m: nc_manager.Manager, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        m.get_config(source="running", filter=SMALL)
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", type=int, default=15, help="setups of each kind (interleaved)")
    parser.add_argument("--rpcs", type=int, default=30, help="RPCs of each kind (one caller)")
    parser.add_argument("--callers", type=int, default=10, help="concurrent callers, one Manager each")
    parser.add_argument("--per-caller", type=int, default=20, help="RPCs per concurrent caller")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="callhome-bench-") as tmp, NetconfdDevice(Path(tmp)) as device:
        inventory = Inventory(
            [
                Device(
                    name="DEV",
                    host_keys=(HostKeyPin.parse(device.host_key_public_line),),
                    credentials=SSHCredentials(username=device.username, password=device.password),
                )
            ]
        )
        relay_proc, relay_port = forward_relay(device.ssh_port)
        try:
            with CallHomeServer(
                inventory, listen_address="127.0.0.1", listen_port=0, ssh=SSHClientConfig(keepalive_interval=0)
            ) as server:
                ours, stock, direct = [], [], []
                for _ in range(args.setups):
                    ours.append(setup_callhome(server, device))
                    stock.append(setup_forward(device, relay_port))
                    direct.append(setup_forward(device, device.ssh_port))
                relay = ReverseRelay(listener_port=server.listen_port, device_port=device.ssh_port)
                with relay, server.netconf("DEV", timeout=30) as m_ours, connect_forward(device, relay_port) as m_stock:
                    rpc_times(m_ours, 3)
                    rpc_times(m_stock, 3)
                    our_rpc, stock_rpc = [], []
                    for _ in range(args.rpcs):
                        our_rpc += rpc_times(m_ours, 1)
                        stock_rpc += rpc_times(m_stock, 1)
                    # the harness's sshd allows 10 sessions per connection: the open Manager is one of them
                    extra_ours = [server.netconf("DEV", timeout=30) for _ in range(args.callers - 1)]
                    extra_stock = [connect_forward(device, relay_port) for _ in range(args.callers - 1)]
                    ours_many, stock_many = [m_ours, *extra_ours], [m_stock, *extra_stock]
                    try:
                        our_rate, stock_rate, our_shared, stock_shared = [], [], [], []
                        for _ in range(3):  # interleaved
                            our_rate.append(concurrent_rate(ours_many, args.per_caller))
                            stock_rate.append(concurrent_rate(stock_many, args.per_caller))
                            our_shared.append(concurrent_rate([m_ours] * args.callers, args.per_caller))
                            stock_shared.append(concurrent_rate([m_stock] * args.callers, args.per_caller))
                    finally:
                        for m in extra_ours + extra_stock:
                            m.close_session()
        finally:
            relay_proc.terminate()
            relay_proc.wait(5)

    print("NETCONF over SSH, netconfd behind OpenSSH sshd on loopback (medians, min-max)")
    print(f"P1 setup + first RPC, call home (accept -> reply):   {spread(ours, 1000, ' ms')}")
    print(f"P1 setup + first RPC, connect_ssh via socat relay:   {spread(stock, 1000, ' ms')}")
    print(f"P1 setup + first RPC, connect_ssh direct:            {spread(direct, 1000, ' ms')}")
    p1 = med(ours) / med(stock)
    print(f"P1 ratio call home / forward (target <= 1.05):       {p1:6.3f}")
    print(f"P2 rpc, one caller, our Manager:                     {spread(our_rpc, 1000, ' ms', 2)}")
    print(f"P2 rpc, one caller, stock ncclient Manager:          {spread(stock_rpc, 1000, ' ms', 2)}")
    p2 = med(stock_rpc) / med(our_rpc)
    print(f"P2 speed-up stock / ours, one caller (target >= 20): {p2:6.1f}x")
    print(f"P2 {args.callers} callers at once, our Managers:            {spread(our_rate, 1, ' RPC/s')}")
    print(f"P2 {args.callers} callers at once, stock Managers:          {spread(stock_rate, 1, ' RPC/s')}")
    p2_many = med(our_rate) / med(stock_rate)
    print(f"P2 throughput ours / stock, {args.callers} callers:            {p2_many:6.2f}x")
    print(f"P2 {args.callers} callers sharing one Manager, ours:        {spread(our_shared, 1, ' RPC/s')}")
    print(f"P2 {args.callers} callers sharing one Manager, stock:       {spread(stock_shared, 1, ' RPC/s')}")
    p2_shared = med(our_shared) / med(stock_shared)
    print(f"P2 throughput ours / stock, one shared Manager:     {p2_shared:6.2f}x")
    if min(p2_many, p2_shared) < 1.2:
        print(f"   (stock ncclient matches us with {args.callers} concurrent callers: its 100 ms send tick is")
        print("    shared by the callers, and the device's own RPC time bounds both)")
    goal("setup + first RPC, call home / forward ncclient (netconfd)", f"{p1:.2f}x", "<= 1.05x", p1 <= 1.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
