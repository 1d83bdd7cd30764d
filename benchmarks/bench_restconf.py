"""RESTCONF call home through the requests adapter vs forward ``requests`` HTTPS,
against the same real TLS server (stunnel4 in front of the test RESTCONF
backend), both through a socat hop with TCP_NODELAY.  Ratios against a
baseline measured in the same run, interleaved.

1. GET of a small resource (``ietf-system:system``): median latency, ours /
   forward.  Target <= 1.1.
2. Throughput of a large body (``--big-mb`` MiB, streamed, 256 KiB chunks):
   ours / forward.  Target >= 0.9.

Why the two differed (ours was 1.2-1.4x faster): not the body (both read
every byte, checked) but the read path.  Measured here: the forward path
costs about 1.4x the CPU per MB of ours in this process, because
``http.client`` reads the ``SSLSocket`` one TLS record (16 KiB) per
``recv_into``, through several Python layers, while the call-home adapter
reads the plain relayed stream from a socketpair in large ``recv`` calls and
our event loop decrypts in asyncio's 256 KiB reads; and on two cores the
decryption runs in our event-loop thread beside the HTTP parsing.  Both
therefore do the same TLS and HTTP work but not the same number of Python
calls.  The figures: throughput with this process pinned to one CPU
(``sched_setaffinity``: no parallelism on either side; the headline ratio),
throughput on two CPUs, and the CPU time per MB of this process (every
thread), for both paths.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/bench_restconf.py``).
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from _common import forward_relay, goal, med, spread
from requests.adapters import HTTPAdapter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callhome_transport import CallHomeServer, Inventory, TLSClientConfig  # noqa: E402
from tests.integration.netconfd_peer import ReverseRelay  # noqa: E402
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


def timed_get(session: requests.Session, url: str) -> float:
    started = time.perf_counter()
    response = session.get(url, headers=ACCEPT)
    response.raise_for_status()
    return time.perf_counter() - started


def throughput(session: requests.Session, url: str) -> tuple[float, float]:
    """(MB/s, CPU seconds of this process per MB) of one large GET."""
    started, cpu0 = time.perf_counter(), time.process_time()
    total = 0
    with session.get(url, stream=True) as response:
        response.raise_for_status()
        for chunk in response.iter_content(256 * 1024):
            total += len(chunk)
        expected = int(response.headers["Content-Length"])
    if total != expected:
        raise RuntimeError(f"read {total} of {expected} bytes from {url}")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
    return total / elapsed / 1e6, cpu / (total / 1e6)


def big_runs(ours: requests.Session, forward: requests.Session, ours_url: str, fwd_url: str, runs: int) -> Any:
    """Interleaved large GETs: (ours MB/s, forward MB/s, ours CPU/MB, forward CPU/MB) lists."""
    out: tuple[list[float], list[float], list[float], list[float]] = ([], [], [], [])
    for _ in range(runs):
        rate, cpu = throughput(ours, f"{ours_url}/example-big:blob")
        out[0].append(rate)
        out[2].append(cpu)
        rate, cpu = throughput(forward, f"{fwd_url}/example-big:blob")
        out[1].append(rate)
        out[3].append(cpu)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gets", type=int, default=200)
    parser.add_argument("--big-mb", type=int, default=64)
    parser.add_argument("--big-runs", type=int, default=7)
    args = parser.parse_args()
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
                    two_cores = big_runs(ours, forward, ours_url, fwd_url, args.big_runs)
                    cpus = os.sched_getaffinity(0)
                    os.sched_setaffinity(0, {min(cpus)})
                    try:
                        one_core = big_runs(ours, forward, ours_url, fwd_url, args.big_runs)
                    finally:
                        os.sched_setaffinity(0, cpus)
                finally:
                    relay_proc.terminate()
                    relay_proc.wait(5)
        finally:
            backend.stop()
    print("RESTCONF over TLS, stunnel4 + test backend on loopback (medians; keep-alive connections)")
    print(f"small GET, call-home adapter:                 {1000 * med(small_ours):7.2f} ms  (n={len(small_ours)})")
    print(f"small GET, forward requests HTTPS:            {1000 * med(small_fwd):7.2f} ms  (n={len(small_fwd)})")
    print(f"small GET ratio ours / forward (<= 1.1):      {med(small_ours) / med(small_fwd):6.3f}")
    for label, (r_ours, r_fwd, c_ours, c_fwd) in (("one CPU (same work)", one_core), ("two CPUs", two_cores)):
        print(f"large body ({args.big_mb} MiB), {label}:")
        print(f"  call-home adapter: {spread(r_ours, 1, ' MB/s')}; {spread(c_ours, 1000, ' ms CPU/MB', 2)}")
        print(f"  forward HTTPS:     {spread(r_fwd, 1, ' MB/s')}; {spread(c_fwd, 1000, ' ms CPU/MB', 2)}")
        print(f"  throughput ratio ours / forward: {med(r_ours) / med(r_fwd):6.3f}")
        print(f"  CPU per MB ratio ours / forward: {med(c_ours) / med(c_fwd):6.3f}")
    value = med(one_core[0]) / med(one_core[1])
    name = f"RESTCONF large body ({args.big_mb} MiB) throughput ours / forward, one CPU"
    goal(name, f"{value:.2f}x", ">= 0.9x", value >= 0.9)
    return 0


if __name__ == "__main__":
    sys.exit(main())
