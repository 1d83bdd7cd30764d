"""The gateway's control API (``control.sock``): a routing table of handlers
that read a :class:`ControlView` and return a
:class:`~callhome_transport.gateway.http.Response`.  No socket here: the
service serves it over HTTP, the tests call :func:`handle` with a fake view
(tests/unit/test_gateway_control.py).

============================  ==============================================
``GET /devices``              every device's record (:class:`DeviceInfo`)
``GET /devices/NAME``         one device's record (404: not served)
``GET /devices/NAME/wait``    the record once the device is connected
                              (``?timeout=`` seconds, 0..86400, default 60;
                              504 after it, 502 with the refusal if the
                              device called during the wait and was refused)
``GET /events``               the gateway's events as NDJSON (``?since=``,
                              ``epoch=``, ``types=``, ``follow=``;
                              docs/events.md)
``GET /rejected``             the recent refused attempts
``GET /blocked``              the source addresses blocked now
``GET /metrics``              Prometheus text format
============================  ==============================================
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from ..errors import REFUSAL_ERRORS, DeviceNotConnectedError, refusal_to_dict
from ..status import DeviceInfo
from .http import Request, Response, json_response

__all__ = ["ROUTES", "WAIT_TIMEOUT_MAX", "ControlView", "handle", "seconds"]

WAIT_TIMEOUT_MAX = 86400.0  # seconds: the most GET /devices/<name>/wait?timeout= may ask (a day)

REFUSALS = tuple(REFUSAL_ERRORS.values())  # a device that called during a wait and was refused


class ControlView(Protocol):
    """What the control API reads of the gateway."""

    def names(self) -> Sequence[str]:
        """The devices served, in inventory order."""
        ...

    def record(self, name: str) -> DeviceInfo | None: ...

    async def wait_for(self, name: str, timeout: float) -> None:
        """Return once ``name`` is connected; raises
        :class:`DeviceNotConnectedError` or the device's refusal."""
        ...

    def events(self, query: Mapping[str, list[str]], client_gone: Callable[[], bool]) -> Response:
        """``GET /events`` (:class:`~callhome_transport.gateway.events_api.EventsAPI`)."""
        ...

    def rejected(self) -> list[dict[str, Any]]: ...

    def blocked(self) -> Any: ...

    def metrics(self) -> str: ...


def seconds(text: str | None) -> float | None:
    """``text`` as a finite number of seconds, or None (absent, not a
    number, NaN or infinite)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Call:
    """One request as the handlers see it: the path's parameters and the query."""

    params: Mapping[str, str]
    query: Mapping[str, list[str]]
    client_gone: Callable[[], bool] = lambda: False  # whether the client has hung up


Handler = Callable[[ControlView, Call], Awaitable[Response]]


def _no_device(name: str) -> Response:
    return json_response(404, {"error": f"no device {name}"})


async def _devices(view: ControlView, call: Call) -> Response:
    records = [view.record(name) for name in view.names()]
    return json_response(200, [r.as_dict() for r in records if r is not None])


async def _device(view: ControlView, call: Call) -> Response:
    record = view.record(call.params["name"])
    return json_response(200, record.as_dict()) if record is not None else _no_device(call.params["name"])


async def _wait(view: ControlView, call: Call) -> Response:
    name = call.params["name"]
    asked = call.query.get("timeout", ["60"])[0]
    timeout = seconds(asked)
    if timeout is None or not 0 <= timeout <= WAIT_TIMEOUT_MAX:
        error = f"timeout must be a number of seconds from 0 to {WAIT_TIMEOUT_MAX:g}"
        return json_response(400, {"error": error, "timeout": asked})
    record = view.record(name)
    if record is None:
        return _no_device(name)
    if record.connected:
        # connected, even if its one session is in use (a TLS device's
        # NETCONF session, a RESTCONF device's relay connection)
        return json_response(200, record.as_dict())
    try:
        await view.wait_for(name, timeout)
    except DeviceNotConnectedError as exc:
        return json_response(504, {"error": str(exc), "device": name, "timeout": timeout})
    except REFUSALS as exc:
        # the device called during the wait and was refused: say why
        return json_response(502, {"error": str(exc), "device": name, "refusal": refusal_to_dict(exc)})
    record = view.record(name)
    return json_response(200, record.as_dict()) if record is not None else _no_device(name)


async def _events(view: ControlView, call: Call) -> Response:
    return view.events(call.query, call.client_gone)


async def _rejected(view: ControlView, call: Call) -> Response:
    return json_response(200, view.rejected())


async def _blocked(view: ControlView, call: Call) -> Response:
    return json_response(200, view.blocked())


async def _metrics(view: ControlView, call: Call) -> Response:
    return Response(200, [("Content-Type", "text/plain; version=0.0.4")], view.metrics().encode())


# (path pattern, handler); a "{name}" segment matches one path segment
ROUTES: tuple[tuple[tuple[str, ...], Handler], ...] = (
    (("devices",), _devices),
    (("devices", "{name}"), _device),
    (("devices", "{name}", "wait"), _wait),
    (("events",), _events),
    (("rejected",), _rejected),
    (("blocked",), _blocked),
    (("metrics",), _metrics),
)


def _match(pattern: tuple[str, ...], path: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(path):
        return None
    params = {}
    for want, got in zip(pattern, path, strict=True):
        if want.startswith("{"):
            params[want.strip("{}")] = got
        elif want != got:
            return None
    return params


async def handle(view: ControlView, request: Request) -> Response:
    """Route ``request`` (only GET) to its handler."""
    parts = urlsplit(request.target)
    path = [p for p in parts.path.split("/") if p]
    if request.method != "GET":
        return json_response(405, {"error": "only GET"})
    for pattern, handler in ROUTES:
        params = _match(pattern, path)
        if params is not None:
            call = Call(params=params, query=parse_qs(parts.query), client_gone=request.client_gone)
            return await handler(view, call)
    return json_response(404, {"error": f"no such resource {parts.path}"})
