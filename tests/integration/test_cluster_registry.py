"""The shared registry against a real redis-server on loopback: records and
events, newest session wins (no two owners), records expire without their
gateway, Redis down and back (log once, resynchronise), an earlier life's
records cleared."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from callhome_transport.engine import EventLoopThread
from callhome_transport.gateway.cluster import ClusterConfig, ClusterMember, Placement
from callhome_transport.server.registry import Registry
from callhome_transport.sim import SimulatedDevice
from callhome_transport.status import DeviceState

from ..unit.test_registry import FakeConnection
from .cluster_peers import RedisServer, ServeProcess
from .netconfd_peer import free_port

pytestmark = pytest.mark.integration


class Closes:
    def __init__(self) -> None:
        self.devices: list[tuple[str, str]] = []
        self.event = asyncio.Event()

    def __call__(self, device: str, reason: str) -> None:
        self.devices.append((device, reason))
        self.event.set()


def member(redis: RedisServer, gateway: str, closes: Closes, **config: float) -> ClusterMember:
    settings = {"ttl": 5.0, "refresh_interval": 1.0, **config}
    return ClusterMember(
        ClusterConfig(redis_url=redis.url, gateway_id=gateway, host=f"host-{gateway}", **settings),
        on_close=closes,
        run_dir=f"/run/{gateway}",
    )


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[tuple[ClusterMember, Closes, ClusterMember, Closes]]:
    closes_a, closes_b = Closes(), Closes()
    a, b = member(redis_server, "gw-a", closes_a), member(redis_server, "gw-b", closes_b)
    await a.start()
    await b.start()
    yield a, closes_a, b, closes_b
    await a.close()
    await b.close()


async def until(condition: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition() if callable(condition) else condition
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def placement(m: ClusterMember, device: str) -> Placement | None:
    return await m.placement(device)


async def test_a_connected_device_is_published_with_its_gateway_and_removed_on_disconnect(
    pair: tuple[ClusterMember, Closes, ClusterMember, Closes],
) -> None:
    a, _, b, _ = pair
    a.publish("SN-1", transport="ssh", peer="192.0.2.7:40000", connected_since=1000.0)
    await until(lambda: placement(b, "SN-1"))
    found = await b.placement("SN-1")
    assert found is not None
    assert (found.gateway, found.host, found.transport, found.peer) == ("gw-a", "host-gw-a", "ssh", "192.0.2.7:40000")
    members = {m.gateway: m for m in await b.members()}
    assert members["gw-a"].run_dir == "/run/gw-a"
    assert (await b.placements()).keys() == {"SN-1"}
    await b._redis.set("callhome:device:JUNK", b"not json")  # someone else's key under our prefix
    assert (await b.placements()).keys() == {"SN-1"}
    a.withdraw("SN-1", "closed")
    await until(lambda: _absent(b, "SN-1"))


async def _no_members(m: ClusterMember) -> bool:
    return not await m.members()


async def _absent(m: ClusterMember, device: str) -> bool:
    return await m.placement(device) is None


async def test_events_on_the_channel(
    pair: tuple[ClusterMember, Closes, ClusterMember, Closes], redis_server: RedisServer
) -> None:
    import redis.asyncio as aioredis

    a, _, _, _ = pair
    client = aioredis.Redis.from_url(redis_server.url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(a.channel)
    a.publish("SN-2", transport="tls", peer="192.0.2.8:1", connected_since=1.0)
    await until(lambda: placement(a, "SN-2"))
    a.withdraw("SN-2", "keepalive timeout")
    events = []
    deadline = asyncio.get_running_loop().time() + 5
    while len(events) < 2 and asyncio.get_running_loop().time() < deadline:
        message = await pubsub.get_message(timeout=0.5)
        if message:
            events.append(json.loads(message["data"]))
    assert [(e["event"], e["device"], e["gateway"]) for e in events] == [
        ("connected", "SN-2", "gw-a"),
        ("disconnected", "SN-2", "gw-a"),
    ]
    assert events[1]["reason"] == "keepalive timeout"
    await pubsub.aclose()
    await client.aclose()


async def test_newest_session_wins_and_the_old_owner_closes_its_own(
    pair: tuple[ClusterMember, Closes, ClusterMember, Closes],
) -> None:
    a, closes_a, b, closes_b = pair
    a.publish("SN-3", transport="ssh", peer="198.51.100.1:1000", connected_since=1000.0)
    await until(lambda: placement(b, "SN-3"))
    # the device's old session on gw-a is stale; it calls again and lands on gw-b
    b.publish("SN-3", transport="ssh", peer="198.51.100.1:2000", connected_since=1001.0)
    await asyncio.wait_for(closes_a.event.wait(), 5)
    assert closes_a.devices == [("SN-3", "newer session on gateway gw-b")]
    assert "SN-3" not in a.held()
    found = await a.placement("SN-3")
    assert found is not None and found.gateway == "gw-b"
    # gw-a's late disconnect of its old session must not remove gw-b's record
    a.withdraw("SN-3", "closed")
    a.publish("SN-3b", transport="ssh", peer="p:9", connected_since=1.0)  # gw-a's writer runs in order:
    await until(lambda: placement(b, "SN-3b"))  # once this is there, anything gw-a queued before is done
    found = await a.placement("SN-3")
    assert found is not None and found.gateway == "gw-b"
    assert closes_b.devices == []


async def test_an_older_session_registering_late_loses_to_the_newer_one(
    pair: tuple[ClusterMember, Closes, ClusterMember, Closes],
) -> None:
    a, closes_a, b, closes_b = pair
    b.publish("SN-4", transport="ssh", peer="p:2", connected_since=2000.0)
    await until(lambda: placement(a, "SN-4"))
    a.publish("SN-4", transport="ssh", peer="p:1", connected_since=1999.0)  # e.g. after a Redis outage
    await asyncio.wait_for(closes_a.event.wait(), 5)
    assert closes_a.devices == [("SN-4", "newer session on gateway gw-b")]
    found = await b.placement("SN-4")
    assert found is not None and found.gateway == "gw-b"
    assert closes_b.devices == []


async def test_held_records_are_refreshed_and_expire_without_their_gateway(redis_server: RedisServer) -> None:
    closes = Closes()
    a = member(redis_server, "gw-a", closes, ttl=0.5, refresh_interval=0.1)
    observer = member(redis_server, "gw-o", Closes())
    await a.start()
    a.publish("SN-5", transport="ssh", peer="p:1", connected_since=1.0)
    await until(lambda: placement(observer, "SN-5"))
    await asyncio.sleep(1.2)  # a persistence check: more than twice the TTL, the refreshes keep it
    assert await observer.placement("SN-5") is not None
    for task in a._tasks:  # the gateway dies without a word (no withdrawal)
        task.cancel()
    _, running = await asyncio.wait(a._tasks, timeout=5)
    assert not running  # every task of the member stopped
    await until(lambda: _absent(observer, "SN-5"), timeout=3)
    await until(lambda: _no_members(observer), timeout=3)  # its member record expires too
    await observer.close()


async def test_a_cancelled_member_stops_wherever_it_was(redis_server: RedisServer) -> None:
    """Its tasks cancelled at any moment (mid-command included, where the
    Redis client sometimes swallows the cancellation), every task ends: none
    goes back to waiting.  Before the fix 1 to 4 rounds in 60 left a task
    waiting for ever (the kill-a-member tests hung until pytest-timeout)."""
    rng = random.Random(14)
    for round_ in range(40):
        m = member(redis_server, f"gw-c{round_}", Closes(), ttl=0.5, refresh_interval=0.1)
        await m.start()
        for index in range(20):
            m.publish(f"SN-C{index}", transport="ssh", peer="p:1", connected_since=1.0)
        await asyncio.sleep(rng.uniform(0, 0.15))  # a random moment of its work, not a wait for a condition
        for task in m._tasks:
            task.cancel()
        _, running = await asyncio.wait(m._tasks, timeout=5)
        assert not running, [task.get_name() for task in running]
        await m.close()


async def test_redis_down_logs_once_keeps_serving_and_resynchronises(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callhome_transport.gateway.cluster")
    closes = Closes()
    a = member(redis_server, "gw-a", closes, refresh_interval=0.2)
    await a.start()
    a.publish("SN-6", transport="ssh", peer="p:1", connected_since=1.0)
    await until(lambda: placement(a, "SN-6"))
    redis_server.stop()
    for index in range(20):  # devices come and go while Redis is away
        a.publish(f"SN-D{index}", transport="ssh", peer="p:2", connected_since=2.0)
    a.withdraw("SN-6", "closed")
    await until(lambda: not a.up)
    await asyncio.sleep(1.0)  # several refresh rounds and retries while down
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1, [r.getMessage() for r in unreachable]
    assert len(a.held()) == 20  # still serving what it holds
    redis_server.start()
    await until(lambda: a.up, timeout=10)
    assert any("is back: resynchronised 20 devices" in r.getMessage() for r in caplog.records)
    assert set((await a.placements()).keys()) == {f"SN-D{i}" for i in range(20)}
    assert closes.devices == []
    await a.close()


async def test_a_restarted_gateway_clears_what_its_earlier_life_left(redis_server: RedisServer) -> None:
    first = member(redis_server, "gw-a", Closes())
    await first.start()
    first.publish("SN-7", transport="ssh", peer="p:1", connected_since=1.0)
    first.publish("SN-8", transport="ssh", peer="p:1", connected_since=1.0)
    await until(lambda: placement(first, "SN-8"))
    for task in first._tasks:  # killed: nothing withdrawn
        task.cancel()
    _, running = await asyncio.wait(first._tasks, timeout=5)
    assert not running
    second = member(redis_server, "gw-a", Closes())
    second.publish("SN-8", transport="ssh", peer="p:2", connected_since=5.0)  # called again before Redis was reached
    await second.start()
    await until(lambda: _absent(second, "SN-7"))
    found = await second.placement("SN-8")
    assert found is not None and found.peer == "p:2"
    await second.close()


async def test_wait_elsewhere_wakes_on_the_connected_event(
    pair: tuple[ClusterMember, Closes, ClusterMember, Closes],
) -> None:
    a, _, b, _ = pair
    waiting = asyncio.ensure_future(b.wait_elsewhere("SN-9", 10))
    await until(lambda: "SN-9" in b._waiters)  # it found no record and waits for the event
    assert not waiting.done()
    a.publish("SN-9", transport="ssh", peer="p:1", connected_since=1.0)
    found = await asyncio.wait_for(waiting, 5)
    assert found is not None and found.gateway == "gw-a"
    assert await b.wait_elsewhere("SN-missing", 0.2) is None


async def test_attached_to_the_registry_it_publishes_withdraws_and_closes_through_it(redis_server: RedisServer) -> None:
    """The seam: a member is one of the device registry's observers.  A
    connection the registry takes is published with its peer; when it ends,
    the record goes; when another gateway holds a newer session, the member
    closes this gateway's through the registry."""
    registry = Registry(is_known=lambda name: name.startswith("SN-R"))
    a, b = member(redis_server, "gw-a", Closes()), member(redis_server, "gw-b", Closes())
    a.attach(registry)
    await a.start()
    await b.start()
    try:
        ending = FakeConnection("SN-R1")
        registry.add(ending)
        await until(lambda: placement(b, "SN-R1"))
        found = await b.placement("SN-R1")
        assert found is not None and (found.gateway, found.peer, found.transport) == ("gw-a", "192.0.2.7:50000", "ssh")
        ending.end("closed by device")
        await until(lambda: _absent(b, "SN-R1"))
        stale = FakeConnection("SN-R2")
        registry.add(stale)
        await until(lambda: placement(b, "SN-R2"))
        # the device's session here is stale; it calls again and lands on gw-b
        b.publish("SN-R2", transport="ssh", peer="198.51.100.1:2000", connected_since=time.time() + 1)
        assert await asyncio.wait_for(stale.closed, 5) == "closed"  # closed through the registry
        await until(lambda: registry.status("SN-R2").state is DeviceState.DISCONNECTED)
        found = await a.placement("SN-R2")
        assert found is not None and found.gateway == "gw-b"  # this gateway's close did not remove gw-b's record
    finally:
        await a.close()
        await b.close()


def test_config_is_checked_when_built() -> None:
    with pytest.raises(ValueError, match="redis://") as info:
        ClusterConfig(redis_url="http://:s3cret@x")
    assert "s3cret" not in str(info.value)
    with pytest.raises(ValueError, match="refresh_interval"):
        ClusterConfig(redis_url="redis://x", ttl=10, refresh_interval=10)
    with pytest.raises(ValueError, match="gateway_id"):
        ClusterConfig(redis_url="redis://x", gateway_id="a:b")
    config = ClusterConfig(redis_url="redis://x", host="gw-a")
    assert config.gateway_id == "gw-a"


def test_two_gateways_the_newest_session_wins_and_the_stale_one_is_closed(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """End to end, two ``callhome serve`` members of one Redis: a device's
    session on gw1 has gone stale (the device no longer uses it) and the
    device calls gw2; gw1 closes its own session, and every member lists the
    device once, on gw2."""
    old = SimulatedDevice("NW-1", password="pw")
    new = SimulatedDevice("NW-1", password="pw", host_key=old.host_key)  # the same device, calling again
    inventory = tmp_path / "devices.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "defaults": {"ssh": {"username": "admin", "password": "pw"}},
                "devices": {old.name: {"ssh": {"host_keys": [old.host_key_line]}}},
            }
        )
    )
    gateways = []
    loop = EventLoopThread(name="devices")
    try:
        for name in ("gw1", "gw2"):
            gateway = ServeProcess(
                tmp_path / name,
                inventory,
                listen={"addresses": ["127.0.0.1"], "ssh_port": free_port()},
                cluster={"redis": redis_server.url, "gateway_id": name, "ttl": 30, "refresh_interval": 10},
            )
            gateways.append(gateway)
            gateway.start()
        gw1, gw2 = gateways
        ports = [yaml.safe_load(g.config_path.read_text())["listen"]["ssh_port"] for g in gateways]
        loop.run(old.call_home("127.0.0.1", ports[0]))
        assert gw2.get(f"/devices/{old.name}/wait?timeout=10")[1]["gateway"] == "gw1"  # gw2 sees it on gw1
        loop.run(new.call_home("127.0.0.1", ports[1]))
        loop.run(asyncio.wait_for(old.wait_closed(), 10))  # gw1 hung up on the stale session
        for gateway in gateways:
            deadline = time.monotonic() + 10
            while (record := gateway.device(old.name))["gateway"] != "gw2" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert (record["state"], record["gateway"]) == ("connected", "gw2")
        assert "a newer session on gateway gw2" in gw1.output()
        _, listed = gw1.get("/devices")
        assert [r["gateway"] for r in listed if r["name"] == old.name] == ["gw2"]
    finally:
        loop.run(_closed(old, new))
        loop.stop()
        for gateway in gateways:
            gateway.stop()


async def _closed(*devices: SimulatedDevice) -> None:
    for device in devices:
        device.close()
        await device.wait_closed()
