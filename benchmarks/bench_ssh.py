"""NETCONF over SSH call home vs stock ncclient, against the same real device.

The device is Debian's yuma123 ``netconfd`` behind a private OpenSSH ``sshd``
(started here on loopback, stopped by PID at the end).  Every figure is a
ratio against a baseline measured in the same run, interleaved, because these
machines are noisy.

1. Setup: device TCP connection to NETCONF hello done.
   - call home: ``socat`` dials our listener and relays to sshd; measured from
     our accept of that connection to the Manager being returned by
     ``CallHomeServer.netconf``.
   - baseline: ``ncclient.manager.connect_ssh`` to a ``socat`` forward relay in
     front of the same sshd (the same extra hop), measured from the call to the
     Manager being returned.  The direct figure (no relay) is printed too.
   Target: ratio <= 1.05.
2. Small RPC round trip: get-config of a small subtree, our Manager vs a
   stock ncclient Manager on the same device.  Target: >= 20x faster.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/bench_ssh.py``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ncclient import manager as nc_manager

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callhome_transport import CallHomeServer, Device, HostKeyPin, Inventory, SSHClientConfig, SSHCredentials  # noqa: E402
from tests.integration.netconfd_peer import NACM_GROUP_FILTER, NetconfdDevice, ReverseRelay, free_port  # noqa: E402

FILTER = NACM_GROUP_FILTER


def forward_relay(target_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay", f"TCP:127.0.0.1:{target_port},nodelay"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        import socket

        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    return proc, port


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
    relay = ReverseRelay(listener_port=server.listen_port, device_port=device.ssh_port)
    with relay:
        m = server.netconf("DEV", timeout=30)
        done = time.time()
        event = server.wait_for("DEV", timeout=1)
        accepted = event.connected_at - event.handshake_seconds
        m.close_session()
        server.disconnect("DEV")
    return done - accepted


def rpc_times(m: nc_manager.Manager, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        m.get_config(source="running", filter=FILTER)
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", type=int, default=15, help="setups of each kind (interleaved)")
    parser.add_argument("--rpcs", type=int, default=30, help="RPCs of each kind")
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
                    started = time.monotonic()
                    m = connect_forward(device, relay_port)
                    stock.append(time.monotonic() - started)
                    m.close_session()
                    started = time.monotonic()
                    m = connect_forward(device, device.ssh_port)
                    direct.append(time.monotonic() - started)
                    m.close_session()
                relay = ReverseRelay(listener_port=server.listen_port, device_port=device.ssh_port)
                with relay, server.netconf("DEV", timeout=30) as m_ours, connect_forward(device, relay_port) as m_stock:
                    rpc_times(m_ours, 3)
                    rpc_times(m_stock, 3)
                    our_rpc, stock_rpc = [], []
                    for _ in range(args.rpcs):
                        our_rpc += rpc_times(m_ours, 1)
                        stock_rpc += rpc_times(m_stock, 1)
        finally:
            relay_proc.terminate()
            relay_proc.wait(5)

    med = statistics.median
    print("NETCONF over SSH, netconfd behind OpenSSH sshd on loopback (medians)")
    print(f"setup, call home (accept -> hello done):        {1000 * med(ours):8.1f} ms  (n={len(ours)})")
    print(f"setup, ncclient connect_ssh via socat relay:     {1000 * med(stock):8.1f} ms  (n={len(stock)})")
    print(f"setup, ncclient connect_ssh direct:              {1000 * med(direct):8.1f} ms  (n={len(direct)})")
    print(f"setup ratio call home / forward (target <= 1.05): {med(ours) / med(stock):6.3f}")
    print(f"rpc, our Manager:                                {1000 * med(our_rpc):8.2f} ms  (n={len(our_rpc)})")
    print(f"rpc, stock ncclient Manager:                     {1000 * med(stock_rpc):8.2f} ms  (n={len(stock_rpc)})")
    print(f"rpc speed-up stock / ours (target >= 20):        {med(stock_rpc) / med(our_rpc):6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
