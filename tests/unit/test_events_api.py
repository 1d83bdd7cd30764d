"""``GET /events`` as a handler (no sockets): query parameters, the NDJSON
body, following, the cap on open streams, and a client that hung up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import pytest

from callhome_transport.events import EventLog, LocalSessionOpened, SourceBlocked
from callhome_transport.gateway.events_api import EPOCH_HEADER, EventsAPI
from callhome_transport.gateway.http import Response


def opened(n: int) -> LocalSessionOpened:
    return LocalSessionOpened(device=f"D{n}", endpoint="netconf", session=n)


def query(text: str) -> dict[str, list[str]]:
    return parse_qs(text, keep_blank_values=True)


async def lines(response: Response, count: int | None = None) -> list[dict[str, Any]]:
    """The first ``count`` lines of a streamed answer (all if None)."""
    assert response.stream is not None
    out: list[dict[str, Any]] = []
    async for chunk in response.stream:
        out += [json.loads(line) for line in chunk.splitlines()]
        if count is not None and len(out) >= count:
            break
    return out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("since=x", "since must be an event id (a whole number >= 0), not 'x'"),
        ("since=-1", "since must be an event id (a whole number >= 0), not -1"),
        ("types=device-connected,nope", "unknown event type 'nope'; known: device-connected, "),
        ("follow=maybe", "follow must be true or false, not 'maybe'"),
    ],
)
def test_bad_parameters_are_400_with_the_reason(text: str, message: str) -> None:
    api = EventsAPI(EventLog())
    response = api.request(query(text))
    assert response.status == 400
    assert message in json.loads(response.body)["error"]
    assert api.followers == 0


async def test_follow_false_answers_what_is_held_then_ends_with_headers() -> None:
    log = EventLog(epoch="e1")
    for n in range(1, 4):
        log.emit(opened(n))
    api = EventsAPI(log)
    response = api.request(query("follow=false&since=1"))
    assert response.status == 200
    headers = dict(response.headers)
    assert headers["Content-Type"] == "application/x-ndjson"
    assert (headers[EPOCH_HEADER], headers["Callhome-Events-Oldest"], headers["Callhome-Events-Last"]) == (
        "e1",
        "1",
        "3",
    )
    log.emit(opened(4))  # after the answer started: not in it
    assert [line["id"] for line in await lines(response)] == [2, 3]


async def test_types_and_epoch_parameters() -> None:
    log = EventLog(epoch="now")
    log.emit(opened(1))
    log.emit(SourceBlocked(source="192.0.2.1", seconds=60))
    got = await lines(EventsAPI(log).request(query("follow=0&types=source-blocked&since=1&epoch=before")))
    assert [line["type"] for line in got] == ["gateway-restarted", "source-blocked"]
    assert got[0]["previous_epoch"] == "before"


async def test_following_streams_new_events_and_ends_when_the_gateway_stops() -> None:
    log = EventLog()
    api = EventsAPI(log)
    response = api.request(query(""))
    reader = asyncio.create_task(lines(response))
    await asyncio.sleep(0)
    for n in range(1, 4):
        log.emit(opened(n))
        await asyncio.sleep(0)
    log.close()
    got = await asyncio.wait_for(reader, 5)
    assert [line["id"] for line in got] == [1, 2, 3]


async def test_a_follower_whose_client_left_ends_while_no_event_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("callhome_transport.gateway.events_api.GONE_CHECK", 0.01)
    gone = asyncio.Event()
    response = EventsAPI(EventLog()).request(query(""), gone.is_set)
    reader = asyncio.create_task(lines(response))
    await asyncio.sleep(0.05)
    assert not reader.done()
    gone.set()
    assert await asyncio.wait_for(reader, 5) == []


async def test_streams_are_capped_and_a_slot_is_freed_when_the_answer_is_done() -> None:
    api = EventsAPI(EventLog(), max_followers=2)
    first = api.request(query(""))
    second = api.request(query("follow=false"))
    refused = api.request(query(""))
    assert (first.status, second.status, refused.status) == (200, 200, 503)
    assert "2 event streams are open already (events.max_followers)" in json.loads(refused.body)["error"]
    assert second.done is not None
    await second.done()
    await second.done()  # released once only
    assert api.followers == 1
    assert api.request(query("")).status == 200


async def test_a_slow_reader_holds_up_nothing() -> None:
    """Events emitted while a streamed answer is not read are not queued for
    it: it gets a dropped notice and the newest events."""
    log = EventLog(100)
    response = EventsAPI(log).request(query(""))
    for n in range(1, 1001):
        log.emit(opened(n))
    got = await lines(response, 101)
    assert got[0]["type"] == "events-dropped" and got[0]["missed"] == 900
    assert [line["id"] for line in got[1:]] == list(range(901, 1001))


async def test_the_stream_is_an_async_iterator_of_bytes() -> None:
    log = EventLog()
    log.emit(opened(1))
    response = EventsAPI(log).request(query("follow=false"))
    stream: AsyncIterator[bytes] | None = response.stream
    assert stream is not None
    chunks = [chunk async for chunk in stream]
    assert all(isinstance(c, bytes) and c.endswith(b"\n") for c in chunks)


async def test_drain_waits_for_the_streams_to_end_and_gives_up_after_its_timeout() -> None:
    log = EventLog()
    api = EventsAPI(log)
    await api.drain(0)  # nothing streams: at once
    response = api.request(query(""))
    reader = asyncio.create_task(lines(response))
    await asyncio.sleep(0)
    log.close()
    assert await reader == []
    draining = asyncio.create_task(api.drain(5))
    await asyncio.sleep(0)
    assert not draining.done()  # the answer is sent; its done() has not run yet
    assert response.done is not None
    await response.done()
    await asyncio.wait_for(draining, 5)
    stuck = api.request(query(""))
    assert stuck.status == 200
    started = asyncio.get_running_loop().time()
    await api.drain(0.05)  # a stream that never ends: drain returns after its timeout
    assert asyncio.get_running_loop().time() - started >= 0.05
