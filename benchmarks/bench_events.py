"""Gateway events: how soon a ``GET /events`` consumer learns that a device
called home, and whether a storm's events all arrive.

A real ``callhome serve`` subprocess; simulated SSH devices in a process of
their own (commanded over stdin); consumers in this process
(``GatewayClient.events(follow=True)``, one thread each).

1. **Latency, one device at a time** (``--sequential``): from the handshake
   completing in the gateway (the event's ``connected_at``, taken at
   authentication) to the event line arriving at each consumer.  Baseline in
   the same run: ``GET /devices/NAME/wait``, the per-device long poll a tool
   had before events, started before the device calls; its answer's arrival
   against the same ``connected_at``.
2. **Storm** (``--devices``): the rest of the fleet calls at once.  Every
   consumer must get one ``device-connected`` per device (counted), ids
   consecutive, no ``events-dropped``.  Event throughput at the consumer
   against the gateway's handshake rate in the same storm (1.0: events keep
   up), and the latency during the storm.
3. **Emit cost**: ``EventLog.emit`` in this process, with no follower and
   with 32 waiting, against the gateway's CPU per handshake in the storm.

Run: ``.venv/bin/python benchmarks/bench_events.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callhome_transport.events import EventLog, LocalSessionOpened  # noqa: E402
from callhome_transport.gateway.client import EventCursor, GatewayClient  # noqa: E402
from tests.integration.netconfd_peer import free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

# the simulated devices' process: "call FIRST COUNT" makes devices FIRST..FIRST+COUNT-1
# (0-based) call at once, each once; it answers "called OK FAILED" when all are done
FLEET = r"""
import asyncio, sys, yaml
from callhome_transport.sim.fleet import Fleet, FleetConfig

async def main(count, port, inventory):
    fleet = Fleet(FleetConfig(count=count))
    open(inventory, "w").write(yaml.safe_dump(fleet.inventory()))
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def call(device):
        try:
            await asyncio.wait_for(device.call_home("127.0.0.1", port), 120)
            return True
        except Exception:
            return False

    while words := (await reader.readline()).decode().split():
        first, n = int(words[1]), int(words[2])
        done = await asyncio.gather(*(call(d) for d in fleet.devices[first : first + n]))
        print(f"called {sum(done)} {n - sum(done)}", flush=True)
    for device in fleet.devices:
        device.close()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
"""


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    ms = sorted(v * 1000 for v in values)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else [ms[0]] * 99
    return f"p50 {q[49]:7.2f}  p90 {q[89]:7.2f}  p99 {q[98]:7.2f}  max {ms[-1]:7.2f} ms (n={len(ms)})"


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Consumer:
    """One ``GET /events`` follower in a thread: (arrival time, line) pairs."""

    def __init__(self, client: GatewayClient) -> None:
        self.client = client
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self.connected: dict[str, tuple[float, dict[str, Any]]] = {}
        self.changed = threading.Condition()
        self.cursor = EventCursor()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        for line in self.client.events(self.cursor, follow=True):
            now = time.time()
            with self.changed:
                self.lines.append((now, line))
                if line.get("type") == "device-connected":
                    self.connected[line["device"]] = (now, line)
                self.changed.notify_all()

    def wait_devices(self, names: list[str], timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: all(n in self.connected for n in names), timeout)


class Fleet:
    def __init__(self, count: int, port: int, inventory: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FLEET, str(count), str(port), str(inventory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the simulated fleet did not start")

    def call(self, first: int, count: int) -> tuple[int, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"call {first} {count}\n")
        self.proc.stdin.flush()
        words = self.proc.stdout.readline().split()
        if not words or words[0] != "called":
            raise RuntimeError("the simulated fleet stopped")
        return int(words[1]), int(words[2])

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def start_gateway(work: Path, inventory: Path, port: int, devices: int) -> tuple[subprocess.Popen[bytes], Path]:
    run_dir = work / "run"
    config = {
        "inventory": str(inventory),
        "run_dir": str(run_dir),
        "listen": {"addresses": ["127.0.0.1"], "ssh_port": port, "tls_port": None, "restconf_port": None},
        "ssh": {"handshake_timeout": 120, "keepalive_interval": 30},
        "admission": {"max_pending_handshakes": 2 * devices, "failures_before_block": 0},
        "events": {"buffer": 10_000, "max_followers": 64},
    }
    (work / "gateway.yml").write_text(yaml.safe_dump(config))
    ready = work / "ready.json"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "callhome_transport.cli", "serve"),
            *("--config", str(work / "gateway.yml"), "--ready-file", str(ready)),
        ],
        stdout=(work / "gateway.log").open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start:\n" + (work / "gateway.log").read_text()[-2000:])
        time.sleep(0.05)
    return proc, run_dir


def sequential(
    fleet: Fleet, client: GatewayClient, consumers: list[Consumer], names: list[str]
) -> tuple[list[float], list[float]]:
    """Devices call one at a time; a per-device wait is in place first."""
    event_lat: list[float] = []
    wait_lat: list[float] = []
    for index, name in enumerate(names):
        answer: dict[str, Any] = {}

        def wait(name: str = name, answer: dict[str, Any] = answer) -> None:
            status, record = client.get(f"/devices/{name}/wait?timeout=60", timeout=70)
            answer["at"], answer["status"], answer["record"] = time.time(), status, record

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.05)  # the wait request reaches the gateway before the device calls
        ok, _ = fleet.call(index, 1)
        if not ok:
            raise RuntimeError(f"{name} could not call home")
        waiter.join(60)
        for consumer in consumers:
            if not consumer.wait_devices([name], 30):
                raise RuntimeError(f"a consumer never got {name}'s event")
        event = consumers[0].connected[name][1]
        event_lat += [c.connected[name][0] - event["connected_at"] for c in consumers]
        if answer.get("status") == 200:
            wait_lat.append(answer["at"] - answer["record"]["connected_since"])
    return event_lat, wait_lat


def emit_cost(followers: int, count: int = 200_000) -> float:
    """Seconds per ``EventLog.emit`` with ``followers`` waiting (a fresh log
    of the default capacity, so most emits overwrite an older event)."""
    import asyncio

    async def measure() -> float:
        log = EventLog()
        subs = [log.subscribe() for _ in range(followers)]
        tasks = [asyncio.create_task(s.next()) for s in subs]
        await asyncio.sleep(0)
        body = LocalSessionOpened(device="SN-0001", endpoint="netconf", session=1)
        started = time.perf_counter()
        for _ in range(count):
            log.emit(body)
        elapsed = time.perf_counter() - started
        log.close()
        await asyncio.gather(*tasks)
        return elapsed / count

    return asyncio.run(measure())


def memory_per_event(count: int = 10_000) -> float:
    """Bytes a full buffer holds per ``device-connected`` event (the largest
    type), its JSON line included (tracemalloc)."""
    import tracemalloc

    from callhome_transport.events import Connected

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    log = EventLog(count)
    line_bytes = 0
    for i in range(count):
        event = log.emit(
            Connected(
                device=f"SN-{i:05d}",
                transport="ssh",
                peer_address=f"[2001:db8::{i:x}]:{40000 + i % 20000}",
                identity="SHA256:" + "x" * 43,
                fingerprint="SHA256:" + "x" * 43,
                first_call=True,
                reconnects=0,
                connected_at=1.7e9 + i,
                handshake_seconds=0.0123,
            )
        )
        line_bytes += len(event.line)  # made at a follower's first read: counted here
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del log
    assert line_bytes > 0
    return held / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000, help="devices in the storm")
    parser.add_argument("--sequential", type=int, default=100, help="devices calling one at a time first")
    parser.add_argument("--consumers", type=int, default=2, help="GET /events followers")
    args = parser.parse_args()
    total = args.sequential + args.devices
    with tempfile.TemporaryDirectory(prefix="callhome-bench-events-") as tmp:
        work = Path(tmp)
        port = free_port()
        fleet = Fleet(total, port, work / "fleet.yml")
        gateway, run_dir = start_gateway(work, work / "fleet.yml", port, total)
        try:
            client = GatewayClient(run_dir, timeout=30)
            consumers = [Consumer(client) for _ in range(args.consumers)]
            names = [f"SIM-{i:05d}" for i in range(1, total + 1)]
            event_lat, wait_lat = sequential(fleet, client, consumers, names[: args.sequential])

            storm_names = names[args.sequential :]
            cpu0 = proc_cpu(gateway.pid)
            started, storm_began = time.monotonic(), time.time()
            ok, failed = fleet.call(args.sequential, args.devices)
            complete = all(c.wait_devices(storm_names, 300) for c in consumers)
            storm_seconds = time.monotonic() - started
            gateway_cpu = proc_cpu(gateway.pid) - cpu0
            replay = list(client.events(types=["device-connected"]))
        finally:
            fleet.stop()
            gateway.terminate()
            gateway.wait(60)

    print(f"gateway events: {args.consumers} GET /events consumers, {os.cpu_count()} cores")
    print(f"1. one device at a time ({args.sequential}): handshake completed -> consumer has the event")
    print(f"   GET /events (each consumer):       {percentiles(event_lat)}")
    print(f"   baseline GET /devices/NAME/wait:   {percentiles(wait_lat)}")
    if event_lat and wait_lat:
        ratio = statistics.median(event_lat) / statistics.median(wait_lat)
        print(f"   median ratio events / wait:        {ratio:7.2f}x")
    else:
        print("   median ratio events / wait:        error: a side has no samples")

    print(f"2. storm: {args.devices} devices at once ({ok} authenticated, {failed} failed)")
    lost = False
    for n, consumer in enumerate(consumers, 1):
        with consumer.changed:
            lines = list(consumer.lines)
        storm = [(at, e) for at, e in lines if e.get("type") == "device-connected" and e["device"] in storm_names]
        ids = [e["id"] for _, e in lines if "id" in e]
        notices = [e["type"] for _, e in lines if "id" not in e]
        consecutive = ids == list(range(ids[0], ids[0] + len(ids))) if ids else False
        devices = {e["device"] for _, e in storm}
        lost = lost or len(devices) != args.devices or not consecutive or bool(notices)
        print(
            f"   consumer {n}: {len(storm)} device-connected events for {len(devices)} of {args.devices} devices; "
            f"ids consecutive: {consecutive}; notices: {notices or 'none'}"
        )
    print(f"   replay (GET /events?follow=false): {len(replay)} device-connected events (all devices: {total})")
    lost = lost or len({e["device"] for e in replay}) != total
    print(f"   every consumer complete:           {complete}, {storm_seconds:.2f} s after the storm began")
    print(f"   no event lost:                     {not lost}")
    storm = [
        (at, e) for at, e in consumers[0].lines if e.get("type") == "device-connected" and e["device"] in storm_names
    ]
    if len(storm) > 1:
        last_auth = max(e["connected_at"] for _, e in storm)
        last_arrival = max(at for at, _ in storm)
        handshake_rate = len(storm) / (last_auth - storm_began)
        delivered_rate = len(storm) / (last_arrival - storm_began)
        print(f"   handshakes (gateway):              {handshake_rate:8.1f} /s (storm start to last authenticated)")
        print(f"   events delivered (consumer 1):     {delivered_rate:8.1f} /s (storm start to last event read)")
        print(f"   ratio delivered / handshakes:      {delivered_rate / handshake_rate:8.2f}x (1.0: events keep up)")
        print(f"   last event read after last auth:   {1000 * (last_arrival - last_auth):8.1f} ms")
    else:
        print("   ratio delivered / handshakes:      error: not enough events to measure a rate")
    print(f"   latency during the storm:          {percentiles([at - e['connected_at'] for at, e in storm])}")

    per_handshake = gateway_cpu / max(1, ok)
    idle = min(emit_cost(0) for _ in range(3))  # best of 3: the first run warms up
    busy = min(emit_cost(32) for _ in range(3))
    print("3. EventLog (this process)")
    print(f"   memory per held event:             {memory_per_event():8.0f} bytes (device-connected, with its line)")
    print(f"   no follower:                       {idle * 1e6:8.2f} us per event")
    print(f"   32 followers waiting:              {busy * 1e6:8.2f} us per event")
    print(
        f"   gateway CPU per storm handshake:   {per_handshake * 1e3:8.2f} ms (clock ticks of {1000 / CLK_TCK:.0f} ms)"
    )
    if per_handshake > 0:
        print(f"   emit / handshake CPU:              {100 * busy / per_handshake:8.3f} %")
    else:
        print("   emit / handshake CPU:              error: no gateway CPU measured")
    return 1 if lost or not complete else 0


if __name__ == "__main__":
    sys.exit(main())
