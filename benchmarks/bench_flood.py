"""Admission under a connection flood (issue 15 item 10): how long a real
device takes to be registered by ``callhome serve`` while one address floods
every call-home port with 500 silent and 200 slow-loris connections per port
(``tests/integration/flood.py``, a separate process).

The devices are real: netconfd behind OpenSSH sshd (SSH, port 4334 role) and
stunnel + netconfd (TLS, 4335 role), calling home through socat from another
loopback address (127.0.0.3; the flood comes from 127.0.0.2).  A device that
is refused redials at once, as devices do, until it is registered or
``--give-up`` seconds have passed.  Each trial uses a fresh gateway (default
admission settings, 30 s handshake timeouts) and a fresh flood.

Baseline, measured in the same run: the same devices and gateway without the
flood.  Nothing here uses a configuration key the gateway did not always
have, so the same script measures an older checkout
(``PYTHONPATH=<old checkout> python benchmarks/bench_flood.py``).

Run: ``.venv/bin/python benchmarks/bench_flood.py [--trials 3]`` (root: real peers).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.flood import Flood  # noqa: E402
from tests.integration.netconfd_peer import NetconfdDevice, ReverseRelay, peers_available  # noqa: E402
from tests.integration.stunnel_peer import StunnelDevice, stunnel_available  # noqa: E402
from tests.integration.test_gateway import GatewayProcess  # noqa: E402
from tests.pki import DevicePKI  # noqa: E402

FLOOD_SOURCE = "127.0.0.2"
DEVICE_SOURCE = "127.0.0.3"


def registration_delay(
    gw: GatewayProcess, device: str, listener_port: int, device_port: int, give_up: float, source: str
) -> float:
    """Seconds from the device's first dial to the gateway reporting it
    connected; the device redials whenever its call ends unregistered.
    ``inf`` if it was not registered within ``give_up`` seconds."""
    started = time.monotonic()
    relay: ReverseRelay | None = None
    try:
        while time.monotonic() - started < give_up:
            if relay is None or relay.exited():
                if relay is not None:
                    relay.stop()
                relay = ReverseRelay(listener_port=listener_port, device_port=device_port, source_host=source)
                relay.start()
            remaining = give_up - (time.monotonic() - started)
            status, _ = gw.get(f"/devices/{device}/wait?timeout={min(1.0, max(0.1, remaining)):.2f}", 30)
            if status == 200:
                return time.monotonic() - started
        return float("inf")
    finally:
        if relay is not None:
            relay.stop()


def trial(
    work: Path, netconfd: NetconfdDevice, tls: StunnelDevice, pki: DevicePKI, *, flood: bool, nat: bool, give_up: float
) -> tuple[float, float]:
    """One gateway (and flood): both devices dial at once; their delays."""
    issuers = {"issuers": [str(pki.root_a_pem)], "crls": [str(pki.crl_a)], "identifier": "SN-0003"}
    inventory = {"devices": {"R1": netconfd.inventory_entry(), "SN-0003": {"transport": "tls", "tls": issuers}}}
    work.mkdir()
    gw = GatewayProcess(
        work,
        inventory,
        tls={"certfile": str(pki.manager_cert), "keyfile": str(pki.manager_key), "handshake_timeout": 30},
        ssh={"handshake_timeout": 30, "keepalive_interval": 30, "keepalive_count_max": 3},
        # nat: the devices share the flood's address, exempt from blocking (a key older gateways lack)
        **({"admission": {"exempt": [f"{FLOOD_SOURCE}/32"]}} if nat else {}),
    ).start()
    flooding = Flood(source=FLOOD_SOURCE, ssh_ports=[gw.ssh_port], tls_ports=[gw.tls_port], duration=give_up * 3)
    source = FLOOD_SOURCE if nat else DEVICE_SOURCE
    try:
        if flood:
            flooding.start()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            ssh = pool.submit(registration_delay, gw, "R1", gw.ssh_port, netconfd.ssh_port, give_up, source)
            tls_delay = pool.submit(registration_delay, gw, "SN-0003", gw.tls_port, tls.port, give_up, source)
            return ssh.result(), tls_delay.result()
    finally:
        flooding.stop()
        gw.stop()


def summary(values: list[float]) -> str:
    shown = ", ".join("never" if v == float("inf") else f"{v:.3f}" for v in values)
    return f"median {statistics.median(values):8.3f} s  max {max(values):8.3f} s  ({shown})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--give-up", type=float, default=60.0, help="seconds a device keeps redialling")
    parser.add_argument(
        "--nat", action="store_true", help="also: the devices call from the flood's own address, exempted"
    )
    args = parser.parse_args()
    reason = peers_available() or stunnel_available()
    if reason:
        print(f"error: cannot run the real devices: {reason}", file=sys.stderr)
        return 1
    scenarios = [("no flood (baseline)", False, False), ("under the flood", True, False)]
    if args.nat:
        scenarios.append(("flood, device behind the flood's exempt address", True, True))
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in scenarios}
    with tempfile.TemporaryDirectory(prefix="callhome-bench-flood-") as tmp:
        work = Path(tmp)
        pki = DevicePKI(work / "pki")
        cert, key = pki.device_files("SN-0003")
        with NetconfdDevice(work / "device") as netconfd:
            tls = StunnelDevice(work, netconfd, certfile=cert, keyfile=key, client_ca=pki.manager_ca_pem).start()
            try:
                for n in range(args.trials):
                    for index, (name, flood, nat) in enumerate(scenarios):
                        try:
                            delays = trial(
                                work / f"t{n}-{index}", netconfd, tls, pki, flood=flood, nat=nat, give_up=args.give_up
                            )
                        except RuntimeError as exc:  # e.g. a gateway that does not know admission.exempt
                            print(f"error: trial {n + 1} {name}: {str(exc).splitlines()[-1]}", flush=True)
                            continue
                        results[name].append(delays)
                        print(f"trial {n + 1} {name}: SSH {delays[0]:.3f} s, TLS {delays[1]:.3f} s", flush=True)
            finally:
                tls.stop()
    print()
    print("registration delay of a real device (first dial -> registered; it redials when refused),")
    print(f"500 silent + 200 slow-loris connections per port from {FLOOD_SOURCE}, {args.trials} trials:")
    base_name = scenarios[0][0]
    for index, transport in ((0, "SSH"), (1, "TLS")):
        base = [r[index] for r in results[base_name]]
        for name, _, _ in scenarios:
            values = [r[index] for r in results[name]]
            if not values:
                print(f"  {transport} {name}: error: did not run")
                continue
            print(f"  {transport} {name}: {summary(values)}")
            if name == base_name:
                continue
            if not base or any(v == float("inf") for v in base):
                print(f"  {transport} error: the baseline did not run or register; no ratio")
                continue
            ratio = statistics.median(values) / statistics.median(base)
            goal = "met" if max(values) < 2.0 else "NOT met"
            print(f"  {transport} {name} / baseline (medians): {ratio:.1f}x; registered within 2 s: {goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
