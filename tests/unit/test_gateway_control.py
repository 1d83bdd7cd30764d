"""The gateway's control API as a routing table, on a fake view: no socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from callhome_transport.errors import AuthenticationFailedError, DeviceNotConnectedError
from callhome_transport.gateway.control import ROUTES, handle
from callhome_transport.gateway.http import Request, Response
from callhome_transport.status import DeviceInfo, DeviceState


class FakeView:
    def __init__(self) -> None:
        self.infos = {
            "R1": DeviceInfo(name="R1", transport="ssh", state=DeviceState.CONNECTED, peer_address="192.0.2.1:5"),
            "T1": DeviceInfo(name="T1", transport="tls"),
        }
        self.waited: list[tuple[str, float]] = []
        self.wait_raises: Exception | None = None

    def names(self) -> Sequence[str]:
        return list(self.infos)

    def record(self, name: str) -> DeviceInfo | None:
        return self.infos.get(name)

    async def wait_for(self, name: str, timeout: float) -> None:
        self.waited.append((name, timeout))
        if self.wait_raises is not None:
            raise self.wait_raises
        self.infos[name].state = DeviceState.CONNECTED

    def rejected(self) -> list[dict[str, Any]]:
        return [{"reason": "unknown-device"}]

    def blocked(self) -> Any:
        return {"192.0.2.9": 30.0}

    def metrics(self) -> str:
        return "callhome_connected_devices 1\n"

    def events(self, query: Mapping[str, list[str]], client_gone: Callable[[], bool]) -> Response:
        self.events_asked = (dict(query), client_gone())
        return Response(200, [("Content-Type", "application/x-ndjson")], b'{"id":1}\n')


def get(view: FakeView, target: str, method: str = "GET") -> tuple[int, Any]:
    response: Response = asyncio.run(handle(view, Request(method=method, target=target, headers=[], body=b"")))
    if response.headers and response.headers[0][1] == "application/json":
        return response.status, json.loads(response.body)
    return response.status, response.body.decode()


def test_every_route_is_in_the_table() -> None:
    assert [pattern for pattern, _ in ROUTES] == [
        ("devices",),
        ("devices", "{name}"),
        ("devices", "{name}", "wait"),
        ("events",),
        ("rejected",),
        ("blocked",),
        ("metrics",),
    ]


def test_devices_and_one_device() -> None:
    view = FakeView()
    status, body = get(view, "/devices")
    assert status == 200
    assert [d["name"] for d in body] == ["R1", "T1"]
    assert body[1]["state"] == "never-connected"
    assert get(view, "/devices/R1")[1]["peer_address"] == "192.0.2.1:5"
    assert get(view, "/devices/nope") == (404, {"error": "no device nope"})


def test_wait_answers_at_once_for_a_connected_device_and_waits_for_others() -> None:
    view = FakeView()
    assert get(view, "/devices/R1/wait?timeout=5")[0] == 200
    assert view.waited == []
    status, body = get(view, "/devices/T1/wait?timeout=2.5")
    assert (status, body["state"]) == (200, "connected")
    assert view.waited == [("T1", 2.5)]


@pytest.mark.parametrize("timeout", ["-1", "nan", "inf", "86401", "x"])
def test_wait_refuses_a_bad_timeout(timeout: str) -> None:
    status, body = get(FakeView(), f"/devices/T1/wait?timeout={timeout}")
    assert status == 400
    assert body["timeout"] == timeout


def test_wait_timeout_and_refusal() -> None:
    view = FakeView()
    view.wait_raises = DeviceNotConnectedError(device="T1", timeout=1.0)
    assert get(view, "/devices/T1/wait?timeout=1")[0] == 504
    view.wait_raises = AuthenticationFailedError(
        device="T1", peer_address=("192.0.2.2", 7), username="u", reason="denied", fingerprint="f", key_type="k"
    )
    status, body = get(view, "/devices/T1/wait?timeout=1")
    assert status == 502
    assert body["refusal"]["type"] == "AuthenticationFailedError"
    assert get(view, "/devices/nope/wait")[0] == 404


def test_rejected_blocked_metrics_and_errors() -> None:
    view = FakeView()
    assert get(view, "/rejected") == (200, [{"reason": "unknown-device"}])
    assert get(view, "/blocked") == (200, {"192.0.2.9": 30.0})
    assert get(view, "/metrics") == (200, "callhome_connected_devices 1\n")
    assert get(view, "/devices", method="POST") == (405, {"error": "only GET"})
    assert get(view, "/nothing/here")[0] == 404


def test_events_get_the_query_and_whether_the_client_left() -> None:
    view = FakeView()
    target = "/events?since=4&types=device-connected"
    request = Request(method="GET", target=target, headers=[], body=b"", client_gone=lambda: True)
    response = asyncio.run(handle(view, request))
    assert (response.status, response.body) == (200, b'{"id":1}\n')
    assert view.events_asked == ({"since": ["4"], "types": ["device-connected"]}, True)
