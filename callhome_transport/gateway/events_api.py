"""``GET /events`` on the control socket: the gateway's events as NDJSON
(one JSON object per line, docs/events.md), over an
:class:`~callhome_transport.events.EventLog`.

Query parameters:

``since=ID``
    only events after ``ID`` (the last id the consumer has); without it,
    every event the buffer holds.
``epoch=E``
    the epoch ``ID`` came from (the ``Callhome-Events-Epoch`` header of an
    earlier answer): from another gateway process, the consumer is told
    (``gateway-restarted``) and gets every event held.
``types=a,b``
    only these event types (repeatable).
``follow=true|false``
    ``true`` (default): stream new events as they happen, until the client
    leaves; ``false``: what the buffer holds now, then the answer ends.

The answer's headers carry ``Callhome-Events-Epoch``, ``-Oldest`` and
``-Last`` (the ids held when it started).  At most ``max_followers`` answers
stream at once (503 beyond); a client that stops reading for
``SEND_TIMEOUT`` seconds is cut off.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from ..events import EventLog, parse_types
from .http import Response, json_response

__all__ = ["EPOCH_HEADER", "EventsAPI"]

EPOCH_HEADER = "Callhome-Events-Epoch"
SEND_TIMEOUT = 60.0  # seconds a follower may leave its socket full before it is cut off
GONE_CHECK = 1.0  # seconds between checks, while no event comes, that the follower is still there
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass
class EventsAPI:
    """The handler of ``GET /events`` (sans sockets: it returns a
    :class:`~callhome_transport.gateway.http.Response` whose body is an async
    iterator of NDJSON chunks)."""

    log: EventLog
    max_followers: int = 32
    followers: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set while no answer streams

    def __post_init__(self) -> None:
        self.idle.set()

    async def drain(self, timeout: float) -> None:
        """After :meth:`EventLog.close`: wait up to ``timeout`` for the answers
        to end cleanly (their clients read the end of the stream)."""
        if self.followers:
            try:
                await asyncio.wait_for(self.idle.wait(), timeout)
            except TimeoutError:
                return

    def request(self, query: Mapping[str, list[str]], client_gone: Callable[[], bool] = lambda: False) -> Response:
        """Answer ``GET /events?<query>`` (``query`` as ``urllib.parse.parse_qs``
        gives it); ``client_gone`` says whether the client has hung up."""
        try:
            since = _integer(query, "since")
            types = parse_types(query.get("types", []))
            follow = _boolean(query, "follow", default=True)
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        epoch = query.get("epoch", [""])[-1] or None
        if self.followers >= self.max_followers:
            return json_response(
                503, {"error": f"{self.max_followers} event streams are open already (events.max_followers)"}
            )
        subscription = self.log.subscribe(after=since, types=types, epoch=epoch)
        self.followers += 1
        self.idle.clear()
        released = False

        async def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.followers -= 1
                if not self.followers:
                    self.idle.set()

        async def body() -> AsyncIterator[bytes]:
            while True:
                if follow:
                    batch = await subscription.next(timeout=GONE_CHECK)
                    if batch is None:  # the gateway stops
                        return
                    if not batch:
                        if client_gone():
                            return
                        continue
                else:
                    if subscription.done:
                        return
                    batch = subscription.read(until=subscription.end)
                    if not batch:
                        continue
                yield b"".join(item.line for item in batch)

        headers = [
            ("Content-Type", "application/x-ndjson"),
            ("Cache-Control", "no-store"),
            (EPOCH_HEADER, self.log.epoch),
            ("Callhome-Events-Oldest", str(self.log.oldest_id)),
            ("Callhome-Events-Last", str(self.log.last_id)),
        ]
        return Response(200, headers, stream=body(), done=release, send_timeout=SEND_TIMEOUT)


def _integer(query: Mapping[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    if not values:
        return None
    try:
        value = int(values[-1])
    except ValueError:
        raise ValueError(f"{name} must be an event id (a whole number >= 0), not {values[-1]!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be an event id (a whole number >= 0), not {value}")
    return value


def _boolean(query: Mapping[str, list[str]], name: str, *, default: bool) -> bool:
    values = query.get(name)
    if not values:
        return default
    value = values[-1].lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, not {values[-1]!r}")
