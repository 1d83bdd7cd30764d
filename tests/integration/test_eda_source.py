"""The Event-Driven Ansible source ``callhome.network.gateway_events`` (its
``main(queue, args)``, as ansible-rulebook calls it) against a real gateway
subprocess with simulated devices calling in: events in order, resume after a
gateway restart, resume from its state file with a dropped notice when the
gateway's buffer overwrote events it wanted, and a refused request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from callhome_transport.gateway.client import EventCursor, GatewayClient
from callhome_transport.sim import SimulatedDevice

from ..unit.test_eda_gateway_events import load_plugin
from .test_gateway import GatewayProcess

pytestmark = pytest.mark.integration


class Source:
    """The plugin's ``main`` as a task, with its queue."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task = asyncio.create_task(load_plugin().main(self.queue, args))

    async def take(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        out = []
        for _ in range(count):
            out.append(await asyncio.wait_for(self.queue.get(), timeout))
        return out

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[GatewayProcess, SimulatedDevice]]:
    device = SimulatedDevice("EDA-1")
    inventory = {
        "devices": {"EDA-1": {"ssh": {"host_keys": [device.host_key_line], "username": "admin", "password": "admin"}}}
    }
    gw = GatewayProcess(tmp_path, inventory, events={"buffer": 4}).start()
    yield gw, device
    device.close()
    assert gw.stop() == 0, gw.log.read_text()[-3000:]


async def hang_up(gw: GatewayProcess, device: SimulatedDevice) -> None:
    """The device hangs up; returns once the gateway has seen it (its disconnected event is out)."""
    device.close()
    await device.wait_closed()
    client = GatewayClient(gw.run_dir)
    for _ in range(500):
        if not (await asyncio.to_thread(client.device, device.name)).connected:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the gateway did not see the device hang up")


async def test_events_resume_across_a_gateway_restart_and_from_the_state_file(
    gateway: tuple[GatewayProcess, SimulatedDevice], tmp_path: Path
) -> None:
    gw, device = gateway
    state = tmp_path / "position.json"
    args = {"run_dir": str(gw.run_dir), "types": ["device-connected"], "state_file": str(state)}
    source = Source(args)
    await device.call_home("127.0.0.1", gw.ssh_port)
    (first,) = await source.take(1)
    assert (first["type"], first["device"], first["first_call"], first["id"]) == ("device-connected", "EDA-1", True, 1)

    # the gateway restarts; the device calls the new one: the source reconnects on its own
    await asyncio.to_thread(gw.stop)
    await device.wait_closed()
    await asyncio.to_thread(gw.start)
    await device.call_home("127.0.0.1", gw.ssh_port)
    restarted, again = await source.take(2)
    assert restarted["type"] == "gateway-restarted" and restarted["epoch"] != restarted.get("previous_epoch")
    assert (again["type"], again["id"], again["first_call"]) == ("device-connected", 1, True)
    assert json.loads(state.read_text()) == {"epoch": restarted["epoch"], "since": 1}
    again_epoch = restarted["epoch"]

    # the rulebook stops; meanwhile the device hangs up and calls 3 times more (ids 2-8: the buffer of 4
    # holds 5-8, so 3, a device-connected, is lost); started again, the source resumes from its state file
    await source.stop()
    await hang_up(gw, device)
    for _ in range(3):
        await device.call_home("127.0.0.1", gw.ssh_port)
        await hang_up(gw, device)
    source = Source(args)
    try:
        dropped, *connected = await source.take(3)
        assert (dropped["type"], dropped["after"], dropped["missed"], dropped["oldest"]) == ("events-dropped", 1, 3, 5)
        assert [(e["type"], e["id"], e["first_call"]) for e in connected] == [
            ("device-connected", 5, False),
            ("device-connected", 7, False),
        ]
        assert source.queue.empty()
        # what the library's client gets from the same position
        expected = list(GatewayClient(gw.run_dir).events(EventCursor(1, again_epoch), types=["device-connected"]))
        assert [{k: v for k, v in e.items() if k != "time"} for e in expected] == [
            {k: v for k, v in e.items() if k != "time"} for e in [dropped, *connected]
        ]
    finally:
        await source.stop()


async def test_a_request_the_gateway_refuses_stops_the_source(gateway: tuple[GatewayProcess, SimulatedDevice]) -> None:
    """Bad arguments fail at start; a bad request (here: a since from the
    state file the gateway cannot take) ends the source with the gateway's
    reason instead of retrying forever."""
    gw, _ = gateway
    plugin = load_plugin()
    with pytest.raises(plugin.BadArguments, match="unknown event type"):
        await plugin.main(asyncio.Queue(), {"run_dir": str(gw.run_dir), "types": "connected"})
    options = plugin.Options({"run_dir": str(gw.run_dir)})
    cursor = plugin.Cursor(since=1, epoch="e")
    options.types = ("not-a-type",)  # past the source's own check: the gateway's 400
    with pytest.raises(plugin.GatewayRefused) as info:
        await plugin.stream_once(asyncio.Queue(), options, cursor)
    assert info.value.status == 400 and "unknown event type 'not-a-type'" in info.value.detail


async def test_it_waits_for_a_gateway_that_is_not_there_yet(tmp_path: Path) -> None:
    source = Source({"run_dir": str(tmp_path / "nowhere"), "reconnect_delay": 0.2})
    await asyncio.sleep(0.5)
    assert not source.task.done()  # retrying, not failed
    await source.stop()


async def test_a_gateway_that_stops_ends_the_stream_cleanly(gateway: tuple[GatewayProcess, SimulatedDevice]) -> None:
    """The source tells a stopping gateway (the stream's end was sent) from a
    broken connection (an answer cut short): stop drains event streams first."""
    gw, device = gateway
    plugin = load_plugin()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    cursor = plugin.Cursor()
    streaming = asyncio.create_task(plugin.stream_once(queue, plugin.Options({"run_dir": str(gw.run_dir)}), cursor))
    await device.call_home("127.0.0.1", gw.ssh_port)
    assert (await asyncio.wait_for(queue.get(), 20))["type"] == "device-connected"
    await asyncio.to_thread(gw.stop)
    assert await asyncio.wait_for(streaming, 20) is True  # returned, not GatewayEventsError
    assert cursor.since == 1 and cursor.epoch
