"""Gateway cluster benchmarks (docs/scale.md), all real processes on loopback:

1. storm: N simulated SSH devices (one separate process) call at once; time
   until every device is registered, gateway CPU.  Scenarios, each with a
   fresh fleet, Redis and gateway(s):
   ``direct-1w`` (``callhome serve``, one process; the baseline),
   ``direct-2w`` (``callhome serve --workers 2``, SO_REUSEPORT) and
   ``haproxy-1w`` (one process behind HAProxy 2.6, ``send-proxy-v2``).
   Prints 2 workers / 1 worker and HAProxy / direct.
2. registry latency: devices call one at a time; TCP dial to registered in
   the local registry (no Redis) vs dial to the ``connected`` event out of
   Redis (registered cluster-wide).
3. Redis writes per second of the registration script, pipelined (the
   paper model's Redis capacity).

Run (timing-sensitive: alone on the machine):
``flock /tmp/bench.lock .venv/bin/python benchmarks/bench_cluster.py --devices 9000``.

A gateway holds about two descriptors per device (its call-home socket and
the device's Unix endpoint) and HAProxy two per connection; with this
machine's limit of 20,000 descriptors per process, 9,000 devices is the
largest storm one gateway process (and HAProxy) can take here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from callhome_transport.gateway.client import GatewayClient  # noqa: E402
from tests.integration.cluster_peers import HAProxy, RedisServer, ServeProcess  # noqa: E402
from tests.integration.netconfd_peer import free_port  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


# -- the fleet, in its own process -------------------------------------------------------------


def fleet_main(count: int, inventory_out: Path, target: str, go: Path) -> None:
    """Write the fleet's inventory, wait for ``go``, then call ``target`` with every device at once."""
    from callhome_transport.sim.fleet import Fleet, FleetConfig

    fleet = Fleet(FleetConfig(count=count, prefix="BC-", backoff_initial=0.5, backoff_max=2.0))
    staged = inventory_out.with_suffix(".tmp")
    staged.write_text(yaml.safe_dump(fleet.inventory()))
    staged.replace(inventory_out)
    while not go.exists():
        time.sleep(0.01)
    host, _, port = target.rpartition(":")
    asyncio.run(fleet.run(host, int(port)))


# -- storms ---------------------------------------------------------------------------------------


def connected_per_process(run_dirs: list[Path]) -> list[int]:
    counts = []
    for run_dir in run_dirs:
        _, text = GatewayClient(run_dir, timeout=30).get("/metrics")
        counts.append(
            sum(
                int(float(line.rsplit(" ", 1)[1]))
                for line in str(text).splitlines()
                if line.startswith("callhome_connected_devices{")
            )
        )
    return counts


def storm(scenario: str, count: int, work: Path) -> dict[str, float]:
    work.mkdir(parents=True)
    workers = 2 if scenario.endswith("2w") else 1
    behind_haproxy = scenario.startswith("haproxy")
    redis = RedisServer(work, host="127.0.0.1", port=free_port())
    gateway_port, front_port = free_port(), free_port()
    inventory, go = work / "fleet.yml", work / "go"
    target = f"127.0.0.1:{front_port if behind_haproxy else gateway_port}"
    fleet = subprocess.Popen(
        [sys.executable, __file__, "--fleet-process", str(count), str(inventory), target, str(go)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started: list[Any] = []
    try:
        redis.start()
        started.append(redis)
        deadline = time.monotonic() + 300
        while not inventory.exists():
            if fleet.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the fleet did not start")
            time.sleep(0.05)
        listen: dict[str, Any] = {"addresses": ["127.0.0.1"], "ssh_port": gateway_port}
        if behind_haproxy:
            listen["proxy_protocol"] = {"from": ["127.0.0.2/32"]}
        gateway = ServeProcess(
            work / "gw",
            inventory,
            listen=listen,
            extra_args=["--workers", str(workers)] if workers > 1 else [],
            ssh={"handshake_timeout": 120, "keepalive_interval": 30, "keepalive_count_max": 3},
            admission={"max_pending_handshakes": count * 2, "failures_before_block": 0},
            cluster={"redis": redis.url, "gateway_id": "bench", "ttl": 90, "refresh_interval": 30},
        )
        gateway.start(timeout=300)
        started.append(gateway)
        ready = json.loads(gateway.ready_file.read_text())
        pids = ready.get("workers", [ready["pid"]])
        run_dirs = [Path(d) for d in ready.get("worker_run_dirs", [ready["run_dir"]])]
        proxy_pid = None
        if behind_haproxy:
            balancer = HAProxy(
                work,
                bind=("127.0.0.1", front_port),
                backends=[("127.0.0.1", gateway_port)],
                source="127.0.0.2",
                maxconn=min(9800, count + 200),
            )
            balancer.start()
            started.append(balancer)
            proxy_pid = balancer.pid
        cpu0 = sum(cpu_of(pid) for pid in pids)
        proxy_cpu0 = cpu_of(proxy_pid) if proxy_pid else 0.0
        fleet_cpu0 = cpu_of(fleet.pid)
        t0 = time.monotonic()
        go.touch()
        while sum(per_process := connected_per_process(run_dirs)) < count:
            if time.monotonic() - t0 > 600:
                raise RuntimeError(f"only {sum(per_process)} of {count} registered after 600 s")
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        return {
            "elapsed": elapsed,
            "gateway_cpu": sum(cpu_of(pid) for pid in pids) - cpu0,
            "haproxy_cpu": (cpu_of(proxy_pid) - proxy_cpu0) if proxy_pid else 0.0,
            "fleet_cpu": cpu_of(fleet.pid) - fleet_cpu0,
            "smallest_share": min(per_process) / count,
        }
    finally:
        fleet.terminate()
        fleet.wait(30)
        for process in reversed(started):
            process.stop()


# -- registry latency -------------------------------------------------------------------------------


async def registry_latency(samples: int, work: Path) -> dict[str, list[float]]:
    """Dial -> registered, per device, without and with Redis (same run)."""
    from callhome_transport import Device, HostKeyPin, Inventory, SSHCredentials
    from callhome_transport.engine import EventLoopThread
    from callhome_transport.sim import SimulatedDevice

    work.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(work, host="127.0.0.1", port=free_port())
    redis.start()
    devices_loop = EventLoopThread(name="devices")
    sims = [SimulatedDevice(f"RL-{i:04d}", password="pw") for i in range(samples)]
    inventory = Inventory(
        [
            Device(
                name=s.name,
                host_keys=(HostKeyPin.parse(s.host_key_line),),
                credentials=SSHCredentials(username=s.username, password="pw"),
            )
            for s in sims
        ]
    )
    results: dict[str, list[float]] = {}
    try:
        for mode in ("local", "redis", "haproxy"):
            results[mode] = await _latencies(mode, inventory, sims, devices_loop, redis.url, work)
    finally:
        devices_loop.stop()
        redis.stop()
    return results


async def _latencies(
    mode: str, inventory: Any, sims: list[Any], devices_loop: Any, redis_url: str, work: Path
) -> list[float]:
    import redis.asyncio as aioredis

    from callhome_transport.gateway.cluster import ClusterConfig, ClusterMember
    from callhome_transport.server import AsyncCallHomeServer

    loop = asyncio.get_running_loop()
    registered: dict[str, asyncio.Future[float]] = {}

    def mark(device: str) -> None:
        future = registered.get(device)
        if future is not None and not future.done():
            future.set_result(time.perf_counter())

    from callhome_transport.transports.proxy import ProxyProtocolConfig

    proxy = ProxyProtocolConfig(trusted=("127.0.0.2/32",)) if mode == "haproxy" else None
    server = AsyncCallHomeServer(inventory, listen_address="127.0.0.1", listen_port=0, proxy_protocol=proxy)
    member = None
    if mode == "redis":
        member = ClusterMember(ClusterConfig(redis_url=redis_url, gateway_id="lat", host="lat"), run_dir=str(work))
        await member.start()
        client = aioredis.Redis.from_url(redis_url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(member.channel)

        async def events() -> None:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message and message.get("type") == "message":
                    mark(json.loads(message["data"])["device"])

        listener = loop.create_task(events())
        member.attach(server.registry)  # as the gateway does: an observer of the registry
    else:
        server.add_connect_callback(lambda event: mark(event.device))
    await server.start()
    port = server.listen_port
    balancer = None
    if mode == "haproxy":
        (work / "haproxy").mkdir(exist_ok=True)
        balancer = HAProxy(
            work / "haproxy", bind=("127.0.0.1", free_port()), backends=[("127.0.0.1", port)], source="127.0.0.2"
        )
        await asyncio.to_thread(balancer.start)
        port = balancer.bind[1]
    latencies = []
    try:
        for sim in sims:
            registered[sim.name] = loop.create_future()
            dialled = time.perf_counter()
            devices_loop.submit(sim.call_home("127.0.0.1", port))
            latencies.append(await asyncio.wait_for(registered[sim.name], 30) - dialled)
    finally:
        if balancer is not None:
            balancer.stop()
    await server.close()
    for sim in sims:
        await asyncio.wrap_future(devices_loop.submit(_closed(sim)))
    if member is not None:
        listener.cancel()
        await pubsub.aclose()
        await client.aclose()
        await member.close()
    return latencies


async def _closed(sim: Any) -> None:
    sim.close()
    await sim.wait_closed()


# -- Redis capacity ----------------------------------------------------------------------------------


async def redis_writes(count: int, work: Path) -> tuple[float, float, float]:
    """Registration scripts per second through one member, pipelined (the
    refresh path), per second of Redis CPU (the server's own cost), and Redis
    memory per record (bytes)."""
    from callhome_transport.gateway.cluster import ClusterConfig, ClusterMember

    redis = RedisServer(work, host="127.0.0.1", port=free_port())
    redis.start()
    try:
        member = ClusterMember(ClusterConfig(redis_url=redis.url, gateway_id="cap", host="cap"), run_dir=str(work))
        await member.start()
        await asyncio.sleep(0.2)  # the member's own start-up writes
        memory0 = int((await member._redis.info("memory"))["used_memory"])
        for index in range(count):
            member.publish(f"CAP-{index:06d}", transport="ssh", peer="p:1", connected_since=1.0)
        while len(await member.placements()) < count:  # first writes (new records, events)
            await asyncio.sleep(0.05)
        per_record = (int((await member._redis.info("memory"))["used_memory"]) - memory0) / count
        held = list(member.held().values())
        redis_cpu0 = await _redis_cpu(member)
        started = time.perf_counter()
        for first in range(0, len(held), 500):
            await member._apply(held[first : first + 500], [])  # a refresh round of every record
        elapsed = time.perf_counter() - started
        redis_cpu = await _redis_cpu(member) - redis_cpu0
        await member.close()
        return count / elapsed, count / redis_cpu if redis_cpu > 0 else float("nan"), per_record
    finally:
        redis.stop()


async def _redis_cpu(member: Any) -> float:
    info = await member._redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--fleet-process":
        fleet_main(int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], Path(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", type=int, default=9000, help="devices per storm")
    parser.add_argument("--trials", type=int, default=1, help="storms per scenario (medians reported)")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--redis-records", type=int, default=100_000)
    parser.add_argument("--only", nargs="*", default=["storm", "latency", "redis"])
    args = parser.parse_args()
    scenarios = ("direct-1w", "direct-2w", "haproxy-1w")
    results: dict[str, list[dict[str, float]]] = {s: [] for s in scenarios}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="callhome-bench-cluster-") as tmp:
        work = Path(tmp)
        print(f"gateway cluster benchmarks, {os.cpu_count()} cores, {args.devices} devices per storm")
        if "storm" in args.only:
            for trial in range(args.trials):
                for scenario in scenarios:
                    try:
                        results[scenario].append(storm(scenario, args.devices, work / f"{scenario}-{trial}"))
                    except Exception as exc:  # reported instead of a ratio
                        errors[scenario] = f"{type(exc).__name__}: {exc}"
            print("\nstorm: all devices registered after (median), gateway CPU, handshakes/s")
            elapsed = {s: median([r["elapsed"] for r in results[s]]) for s in scenarios}
            for scenario in scenarios:
                if scenario in errors or not results[scenario]:
                    print(f"  {scenario:11s} FAILED: {errors.get(scenario, 'no result')}")
                    continue
                cpu = median([r["gateway_cpu"] for r in results[scenario]])
                extra = f", fleet CPU {median([r['fleet_cpu'] for r in results[scenario]]):.1f} s"
                if scenario.startswith("haproxy"):
                    extra += f", HAProxy CPU {median([r['haproxy_cpu'] for r in results[scenario]]):.1f} s"
                if scenario.endswith("2w"):
                    extra += f", smaller worker's share {median([r['smallest_share'] for r in results[scenario]]):.0%}"
                print(
                    f"  {scenario:11s} {elapsed[scenario]:7.2f} s  gateway CPU {cpu:6.1f} s "
                    f"({1000 * cpu / args.devices:.2f} ms/device)  {args.devices / elapsed[scenario]:7.0f}/s{extra}"
                )
            base = "direct-1w"
            for scenario, label in (("direct-2w", "2 workers / 1 worker"), ("haproxy-1w", "through HAProxy / direct")):
                if base in errors or scenario in errors or not results[base] or not results[scenario]:
                    print(f"  {label}: no ratio (a scenario failed)")
                else:
                    ratio = elapsed[scenario] / elapsed[base]
                    print(f"  time ratio {label}: {ratio:.2f}x (throughput {1 / ratio:.2f}x)")
        if "latency" in args.only:
            latency = asyncio.run(registry_latency(args.latency_samples, work / "latency"))
            local, shared = median(latency["local"]), median(latency["redis"])
            balanced = median(latency["haproxy"])
            print(f"\nlatency, dial -> registered, {args.latency_samples} devices one at a time (median)")
            print(f"  local registry only:        {1000 * local:7.2f} ms (p95 {1000 * _p95(latency['local']):.2f})")
            print(f"  + Redis (event received):   {1000 * shared:7.2f} ms (p95 {1000 * _p95(latency['redis']):.2f})")
            print(
                f"  through HAProxy (PROXY v2): {1000 * balanced:7.2f} ms (p95 {1000 * _p95(latency['haproxy']):.2f})"
            )
            print(f"  ratio with / without Redis: {shared / local:.2f}x (+{1000 * (shared - local):.2f} ms)")
            print(f"  ratio HAProxy / direct:     {balanced / local:.2f}x (+{1000 * (balanced - local):.2f} ms)")
        if "redis" in args.only:
            (work / "cap").mkdir()
            rate, per_cpu, per_record = asyncio.run(redis_writes(args.redis_records, work / "cap"))
            print(
                f"\nRedis: {rate:,.0f} registration writes/s from one member (script, pipelined by 500, "
                f"{args.redis_records} records); {per_cpu:,.0f} writes per second of Redis CPU; "
                f"{per_record:.0f} bytes of Redis memory per device record"
            )
    return 1 if errors else 0


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.95 * (len(ordered) - 1))] if ordered else float("nan")


if __name__ == "__main__":
    sys.exit(main())
