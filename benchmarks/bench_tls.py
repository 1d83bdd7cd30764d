"""NETCONF over TLS call home vs forward ncclient TLS, against the same real device.

The device is stunnel4 (mutual TLS) in front of yuma123 netconfd, started here
on loopback; the PKI is generated for the run.  Ratios against a baseline
measured in the same run, interleaved.

Stock ``ncclient.manager.connect_tls`` cannot be the baseline as shipped: its
``TLSSession`` reads 4096 bytes per wake-up and never drains
``SSLSocket.pending()``, so netconfd's 5 KiB hello times out (measured: the
capability exchange fails after 60 s).  The baseline is therefore stock
``TLSSession`` with only that read fixed (``_transport_read`` drains
``pending()``), everything else stock, including its 100 ms send tick.

1. Setup, device TCP connection to NETCONF hello done (both through a socat
   hop with TCP_NODELAY).  Target: ratio <= 1.05.
2. Small RPC round trip (get-config of a small subtree).  Target: >= 20x faster.
3. Strict C4 mode (tlslite-ng, heartbeat extension advertised, TLS 1.2) setup
   against the default ``ssl`` path at the same TLS version: a second stunnel
   in front of the same netconfd accepts TLS 1.2 at most, and both paths set
   up against it (the default path's TLS 1.3 figure is printed too).

Setup times come from the server's connect events, waited on (a queue), not
polled.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/bench_tls.py``).
"""

from __future__ import annotations

import argparse
import queue
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import forward_relay
from ncclient import manager as nc_manager
from ncclient.capabilities import Capabilities
from ncclient.transport.tls import BUF_SIZE, TLSSession

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callhome_transport import CallHomeServer, DeviceConnected, Inventory, TLSClientConfig  # noqa: E402
from tests.integration.netconfd_peer import NACM_GROUP_FILTER, NetconfdDevice, ReverseRelay  # noqa: E402
from tests.integration.stunnel_peer import StunnelDevice  # noqa: E402
from tests.pki import DevicePKI  # noqa: E402


class DrainingTLSSession(TLSSession):  # type: ignore[misc]
    """Stock TLSSession with only its 4 KiB read stall fixed."""

    def _transport_read(self) -> bytes:
        data: bytes = self._socket.recv(BUF_SIZE)
        while self._socket.pending():
            data += self._socket.recv(self._socket.pending())
        return data


def connect_forward(port: int, pki: DevicePKI) -> Any:
    handler = nc_manager.make_device_handler(None)
    session = DrainingTLSSession(handler)
    assert isinstance(session._client_capabilities, Capabilities)
    session.connect(
        host="127.0.0.1",
        port=port,
        certfile=str(pki.manager_cert),
        keyfile=str(pki.manager_key),
        ca_certs=str(pki.root_a_pem),
        protocol=ssl.PROTOCOL_TLS_CLIENT,
        check_hostname=False,
        timeout=30,
    )
    return nc_manager.Manager(session, handler, timeout=30)


def rpc_times(m: Any, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        m.get_config(source="running", filter=NACM_GROUP_FILTER)
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", type=int, default=15)
    parser.add_argument("--rpcs", type=int, default=30)
    args = parser.parse_args()
    med = statistics.median
    with tempfile.TemporaryDirectory(prefix="callhome-bench-tls-") as tmp:
        work = Path(tmp)
        pki = DevicePKI(work / "pki")
        cert, key = pki.device_files("SN-0003")
        inventory = Inventory.from_dict(
            {
                "devices": {
                    "SN-0003": {"transport": "tls", "tls": {"issuers": [str(pki.root_a_pem)], "identifier": "SN-0003"}}
                }
            }
        )
        config = TLSClientConfig(certfile=pki.manager_cert, keyfile=pki.manager_key)
        with (
            NetconfdDevice(work) as netconfd,
            StunnelDevice(work, netconfd, certfile=cert, keyfile=key, client_ca=pki.manager_ca_pem) as device,
            StunnelDevice(
                work,
                netconfd,
                certfile=cert,
                keyfile=key,
                client_ca=pki.manager_ca_pem,
                name="tls12",
                max_version="TLSv1.2",
            ) as device12,
            CallHomeServer(
                inventory,
                listen_address="127.0.0.1",
                listen_port=None,
                tls=config,
                tls_listen_port=0,
                tls_strict_listen_port=0,
            ) as srv,
        ):
            events: queue.Queue[DeviceConnected] = queue.Queue()
            srv.on_connect(events.put)

            def setup_callhome(port: int, device_port: int = device.port) -> float:
                with ReverseRelay(listener_port=port, device_port=device_port):
                    m = srv.netconf("SN-0003", timeout=30)
                    done = time.time()
                    event = events.get(timeout=5)
                    m.close_session()
                return done - (event.connected_at - event.handshake_seconds)

            relay_proc, relay_port = forward_relay(device.port)
            try:
                ours, stock, strict, ours12 = [], [], [], []
                for _ in range(args.setups):
                    ours.append(setup_callhome(srv.tls_listen_port))
                    ours12.append(setup_callhome(srv.tls_listen_port, device12.port))
                    strict.append(setup_callhome(srv.tls_strict_listen_port, device12.port))
                    started = time.monotonic()
                    m = connect_forward(relay_port, pki)
                    stock.append(time.monotonic() - started)
                    m.close_session()
                with (
                    ReverseRelay(listener_port=srv.tls_listen_port, device_port=device.port),
                    srv.netconf("SN-0003", timeout=30) as m_ours,
                ):
                    m_stock = connect_forward(relay_port, pki)
                    rpc_times(m_ours, 3)
                    rpc_times(m_stock, 3)
                    our_rpc, stock_rpc = [], []
                    for _ in range(args.rpcs):
                        our_rpc += rpc_times(m_ours, 1)
                        stock_rpc += rpc_times(m_stock, 1)
                    m_stock.close_session()
            finally:
                relay_proc.terminate()
                relay_proc.wait(5)
    print("NETCONF over TLS, stunnel4 + netconfd on loopback (medians)")
    print(f"setup, call home (accept -> hello done):           {1000 * med(ours):8.1f} ms  (n={len(ours)})")
    print(f"setup, forward ncclient TLSSession (read fixed):    {1000 * med(stock):8.1f} ms  (n={len(stock)})")
    print(f"setup ratio call home / forward (target <= 1.05):   {med(ours) / med(stock):6.3f}")
    print(f"rpc, our Manager:                                  {1000 * med(our_rpc):8.2f} ms  (n={len(our_rpc)})")
    print(f"rpc, ncclient TLSSession Manager:                  {1000 * med(stock_rpc):8.2f} ms  (n={len(stock_rpc)})")
    print(f"rpc speed-up stock / ours (target >= 20):          {med(stock_rpc) / med(our_rpc):6.1f}x")
    print(f"setup, default ssl, device capped at TLS 1.2:       {1000 * med(ours12):8.1f} ms  (n={len(ours12)})")
    print(f"setup, strict C4 (tlslite-ng), same TLS 1.2 device: {1000 * med(strict):8.1f} ms  (n={len(strict)})")
    print(f"strict C4 setup cost, strict / default ssl, TLS 1.2: {med(strict) / med(ours12):6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
