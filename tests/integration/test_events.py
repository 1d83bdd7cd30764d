"""The gateway's events end to end: a real ``callhome serve`` subprocess,
simulated devices calling in (their own processes' worth of SSH: asyncssh
servers on an event loop thread), and consumers of ``GET /events``: the
client library (replay, follow, resume, a gateway restart) and the CLI."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ncclient import manager

from callhome_transport.engine import EventLoopThread
from callhome_transport.gateway.client import EventCursor, GatewayClient
from callhome_transport.sim import SimulatedDevice

from .test_gateway import GatewayProcess

pytestmark = pytest.mark.integration


class Follower:
    """``GatewayClient.events(follow=True)`` in a thread, collecting lines."""

    def __init__(self, client: GatewayClient, cursor: EventCursor | None = None) -> None:
        self.client = client
        self.cursor = cursor or EventCursor()
        self.lines: list[dict[str, Any]] = []
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for line in self.client.events(self.cursor, follow=True):
                self.lines.append(line)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.ended.set()

    def wait_for(self, predicate: Any, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if predicate(line):
                    return line
            if self.ended.is_set():
                break
            time.sleep(0.02)
        raise AssertionError(f"no such event; got {self.lines} (error {self.error})")


def of(kind: str, device: str | None = None, **fields: Any) -> Any:
    def match(line: dict[str, Any]) -> bool:
        return (
            line.get("type") == kind
            and (device is None or line.get("device") == device)
            and all(line.get(k) == v for k, v in fields.items())
        )

    return match


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    good = SimulatedDevice("EV-GOOD")
    wrong = SimulatedDevice("EV-WRONG")  # the inventory has another password for it
    stranger = SimulatedDevice("EV-UNKNOWN")  # not in the inventory
    inventory = {
        "devices": {
            "EV-GOOD": {"ssh": {"host_keys": [good.host_key_line], "username": "admin", "password": "admin"}},
            "EV-WRONG": {"ssh": {"host_keys": [wrong.host_key_line], "username": "admin", "password": "not-it"}},
        }
    }
    gateway = GatewayProcess(
        tmp_path,
        inventory,
        admission={"failures_before_block": 2, "failure_window": 60, "block_seconds": 30},
        events={"buffer": 100},
    ).start()
    yield {"gateway": gateway, "good": good, "wrong": wrong, "stranger": stranger}
    assert gateway.stop() == 0, gateway.log.read_text()[-3000:]


def call(loop: EventLoopThread, device: SimulatedDevice, port: int, source: str = "127.0.0.1") -> BaseException | None:
    """One call home from ``source``; the exception if it was refused."""

    async def dial() -> None:
        sock = socket.socket()
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        await device.call_home(sock=sock)

    try:
        loop.submit(dial()).result(20)
    except (ConnectionError, OSError, Exception) as exc:
        return exc
    return None


def test_events_of_a_device_lifecycle_refusals_blocks_and_local_sessions(
    world: dict[str, Any], loop: EventLoopThread, tmp_path: Path
) -> None:
    gw: GatewayProcess = world["gateway"]
    client = GatewayClient(gw.run_dir, timeout=10)
    follower = Follower(client)

    # a device calls home for the first time; a local NETCONF session; it hangs up and calls again
    assert call(loop, world["good"], gw.ssh_port) is None
    first = follower.wait_for(of("device-connected", "EV-GOOD"))
    assert first["first_call"] is True and first["reconnects"] == 0
    assert first["transport"] == "ssh" and first["peer_address"].startswith("127.0.0.1:")
    assert first["identity"] == first["fingerprint"] == world["good"].fingerprint
    assert first["connected_at"] <= first["time"] and first["handshake_seconds"] > 0
    with manager.connect_uds(path=str(gw.run_dir / "devices" / "EV-GOOD" / "netconf.sock"), timeout=10) as m:
        assert "ev-good" in m.get_config(source="running").xml
    opened = follower.wait_for(of("local-session-opened", "EV-GOOD", endpoint="netconf"))
    closed = follower.wait_for(of("local-session-closed", "EV-GOOD", session=opened["session"]))
    assert closed["seconds"] >= 0
    loop.submit(_hang_up(world["good"])).result(10)
    gone = follower.wait_for(of("device-disconnected", "EV-GOOD"))
    assert gone["reason"] and gone["connected_seconds"] > 0
    assert call(loop, world["good"], gw.ssh_port) is None
    again = follower.wait_for(of("device-connected", "EV-GOOD", first_call=False))
    assert again["reconnects"] == 1

    # an identified device refuses our credentials, twice: blocked by name
    for _ in range(2):
        assert call(loop, world["wrong"], gw.ssh_port) is not None
    failed = follower.wait_for(of("device-auth-failed", "EV-WRONG"))
    assert failed["transport"] == "ssh" and failed["peer_address"].startswith("127.0.0.1:")
    assert (
        failed["fingerprint"] == world["wrong"].fingerprint and "authentication as 'admin' failed" in failed["detail"]
    )
    assert follower.wait_for(of("device-blocked", "EV-WRONG"))["seconds"] == 30

    # an unknown device from another address, twice: rejected with its fingerprint, then its address blocked
    for _ in range(2):
        assert call(loop, world["stranger"], gw.ssh_port, source="127.0.0.2") is not None
    rejected = follower.wait_for(of("device-rejected", reason="unknown-device"))
    assert rejected["fingerprint"] == world["stranger"].fingerprint and rejected["key_type"] == "ssh-ed25519"
    assert rejected["peer_address"].startswith("127.0.0.2:") and rejected["device"] is None
    assert follower.wait_for(of("source-blocked", source="127.0.0.2"))["seconds"] == 30
    # a block is announced after the refusal that started it
    kinds = [line["type"] for line in follower.lines]
    assert kinds.index("device-blocked") == kinds.index("device-auth-failed") + 2
    assert kinds[kinds.index("source-blocked") - 1] == "device-rejected"

    # the follower's ids are consecutive and it got every event a replay gets
    follower.wait_for(of("source-blocked"))
    replay = list(client.events())
    ids = [line["id"] for line in follower.lines]
    assert ids == list(range(1, len(ids) + 1))
    assert follower.lines == replay[: len(follower.lines)]
    assert not follower.error

    # resume after an id; only some types; the CLI
    cursor = EventCursor(since=first["id"])
    assert [line["id"] for line in client.events(cursor)] == [line["id"] for line in replay[first["id"] :]]
    assert cursor.since == replay[-1]["id"] and cursor.epoch
    only = list(client.events(types=["device-connected", "device-disconnected"]))
    assert [line["type"] for line in only] == ["device-connected", "device-disconnected", "device-connected"]
    cli = gw.cli("events", "--json", "--types", "device-connected")
    assert cli.returncode == 0, cli.stderr
    assert [json.loads(line)["first_call"] for line in cli.stdout.splitlines()] == [True, False]
    text = gw.cli("events", "--since", str(again["id"] - 1))
    assert text.returncode == 0, text.stderr
    assert "device-connected" in text.stdout and "EV-GOOD" in text.stdout and "(reconnect 1)" in text.stdout
    assert "device-auth-failed" in text.stdout and "source-blocked" in text.stdout
    bad = gw.cli("events", "--types", "nope")
    assert bad.returncode == 1 and "unknown event type 'nope'" in bad.stderr

    # the gateway restarts: the same cursor resumes with a notice and the new process's events
    assert gw.stop() == 0
    follower.ended.wait(10)
    assert follower.ended.is_set() and not follower.error
    gw.start()
    assert call(loop, world["good"], gw.ssh_port) is None
    resumed = list(client.events(cursor))
    assert resumed[0]["type"] == "gateway-restarted" and resumed[0]["previous_epoch"] != resumed[0]["epoch"]
    assert of("device-connected", "EV-GOOD", first_call=True)(resumed[1]) and resumed[1]["id"] == 1
    assert cursor.epoch == resumed[0]["epoch"] and cursor.since == resumed[-1]["id"]


async def _hang_up(device: SimulatedDevice) -> None:
    device.close()
    await device.wait_closed()
