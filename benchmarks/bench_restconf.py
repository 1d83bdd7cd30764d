"""RESTCONF call home through the requests adapter vs forward ``requests`` HTTPS,
against the same real TLS server (stunnel4 in front of the test RESTCONF
backend), both through a socat hop with TCP_NODELAY.  Ratios against a
baseline measured in the same run, interleaved.

1. GET of a small resource (``ietf-system:system``): median latency, ours /
   forward.  Target <= 1.1.
2. Throughput of a large body (streamed, 256 KiB chunks): ours / forward.
   Target >= 0.9.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/bench_restconf.py``).
"""

from __future__ import annotations

import argparse
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callhome_transport import CallHomeServer, Inventory, TLSClientConfig  # noqa: E402
from tests.integration.netconfd_peer import ReverseRelay, free_port  # noqa: E402
from tests.integration.restconf_backend import Backend  # noqa: E402
from tests.integration.stunnel_peer import StunnelDevice  # noqa: E402
from tests.pki import DevicePKI  # noqa: E402

ACCEPT = {"Accept": "application/yang-data+json"}


class ForwardAdapter(HTTPAdapter):
    """Plain requests HTTPS with the manager's client certificate, verifying the
    device chain against the manufacturer root (no host name: loopback)."""

    def __init__(self, pki: DevicePKI) -> None:
        self._ctx = ssl.create_default_context(cafile=str(pki.root_a_pem))
        self._ctx.check_hostname = False
        self._ctx.load_cert_chain(str(pki.manager_cert), str(pki.manager_key))
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._ctx
        kwargs["assert_hostname"] = False
        super().init_poolmanager(*args, **kwargs)


def forward_relay(target_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay", f"TCP:127.0.0.1:{target_port},nodelay"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    return proc, port


def timed_get(session: requests.Session, url: str) -> float:
    started = time.perf_counter()
    response = session.get(url, headers=ACCEPT)
    response.raise_for_status()
    return time.perf_counter() - started


def throughput(session: requests.Session, url: str) -> float:
    started = time.perf_counter()
    total = 0
    with session.get(url, stream=True) as response:
        response.raise_for_status()
        for chunk in response.iter_content(256 * 1024):
            total += len(chunk)
    return total / (time.perf_counter() - started) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gets", type=int, default=200)
    parser.add_argument("--big-mb", type=int, default=64)
    parser.add_argument("--big-runs", type=int, default=3)
    args = parser.parse_args()
    med = statistics.median
    with tempfile.TemporaryDirectory(prefix="callhome-bench-rc-") as tmp:
        work = Path(tmp)
        pki = DevicePKI(work / "pki")
        cert, key = pki.device_files("SN-0003")
        backend = Backend("sn-0003", big_size=args.big_mb * 1024 * 1024).start()
        inventory = Inventory.from_dict(
            {
                "devices": {
                    "SN-0003": {
                        "transport": "restconf",
                        "tls": {"issuers": [str(pki.root_a_pem)], "identifier": "SN-0003"},
                    }
                }
            }
        )
        config = TLSClientConfig(certfile=pki.manager_cert, keyfile=pki.manager_key)
        try:
            with (
                StunnelDevice(
                    work, None, certfile=cert, keyfile=key, client_ca=pki.manager_ca_pem, backend_port=backend.port
                ) as device,
                CallHomeServer(
                    inventory, listen_address="127.0.0.1", listen_port=None, tls=config, restconf_listen_port=0
                ) as srv,
                ReverseRelay(listener_port=srv.restconf_listen_port, device_port=device.port),
                requests.Session() as ours,
                requests.Session() as forward,
            ):
                ours.mount("https://", srv.restconf_adapter(wait_timeout=30))
                relay_proc, relay_port = forward_relay(device.port)
                forward.mount("https://", ForwardAdapter(pki))
                ours_url = "https://SN-0003/restconf/data"
                fwd_url = f"https://127.0.0.1:{relay_port}/restconf/data"
                try:
                    for _ in range(5):  # warm: connections established, caches filled
                        timed_get(ours, f"{ours_url}/ietf-system:system")
                        timed_get(forward, f"{fwd_url}/ietf-system:system")
                    small_ours, small_fwd = [], []
                    for _ in range(args.gets):
                        small_ours.append(timed_get(ours, f"{ours_url}/ietf-system:system"))
                        small_fwd.append(timed_get(forward, f"{fwd_url}/ietf-system:system"))
                    big_ours, big_fwd = [], []
                    for _ in range(args.big_runs):
                        big_ours.append(throughput(ours, f"{ours_url}/example-big:blob"))
                        big_fwd.append(throughput(forward, f"{fwd_url}/example-big:blob"))
                finally:
                    relay_proc.terminate()
                    relay_proc.wait(5)
        finally:
            backend.stop()
    print("RESTCONF over TLS, stunnel4 + test backend on loopback (medians; keep-alive connections)")
    print(f"small GET, call-home adapter:                 {1000 * med(small_ours):7.2f} ms  (n={len(small_ours)})")
    print(f"small GET, forward requests HTTPS:            {1000 * med(small_fwd):7.2f} ms  (n={len(small_fwd)})")
    print(f"small GET ratio ours / forward (<= 1.1):      {med(small_ours) / med(small_fwd):6.3f}")
    print(f"large body ({args.big_mb} MiB), call-home adapter: {med(big_ours):7.1f} MB/s (n={len(big_ours)})")
    print(f"large body ({args.big_mb} MiB), forward HTTPS:     {med(big_fwd):7.1f} MB/s (n={len(big_fwd)})")
    print(f"throughput ratio ours / forward (>= 0.9):     {med(big_ours) / med(big_fwd):6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
