"""The event log (sans I/O): ids, the ring buffer, resume semantics (since,
epoch, dropped notices), type filters, and followers that never hold up the
emitter."""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callhome_transport.events import (
    AuthFailed,
    Connected,
    DeviceBlocked,
    Disconnected,
    Event,
    EventBody,
    EventLog,
    EventType,
    LocalSessionClosed,
    LocalSessionOpened,
    Notice,
    NoticeType,
    RegistryFeed,
    Rejected,
    SourceBlocked,
    parse_types,
)
from callhome_transport.identity.inventory import Transport
from callhome_transport.server.registry import (
    Blocked,
    DeviceConnected,
    DeviceDisconnected,
    LocalSession,
    RejectedAttempt,
)
from callhome_transport.status import BlockKind, DeviceState, RefusalReason


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


def connected(device: str = "SN-0001", *, first: bool = True) -> Connected:
    return Connected(
        device=device,
        transport="ssh",
        peer_address="192.0.2.7:53122",
        identity="SHA256:abc",
        fingerprint="SHA256:abc",
        first_call=first,
        reconnects=0 if first else 1,
        connected_at=1_700_000_000.25,
        handshake_seconds=0.041,
    )


def blocked(source: str = "198.51.100.9") -> SourceBlocked:
    return SourceBlocked(source=source, seconds=60.0)


UNKNOWN_DEVICE = Rejected(
    reason="unknown-device",
    transport="ssh",
    peer_address="[2001:db8::7]:53122",
    device=None,
    fingerprint="SHA256:xyz",
    key_type="ssh-ed25519",
    certificate_subject=None,
    device_id=None,
    detail="",
)

ONE_OF_EACH: list[EventBody] = [
    connected(),
    Disconnected(
        device="SN-0001", transport="ssh", reason="keepalive timeout", peer_address="[::1]:4", connected_seconds=3.5
    ),
    UNKNOWN_DEVICE,
    AuthFailed(device="SN-0002", transport="ssh", peer_address="192.0.2.8:1", fingerprint="", detail=""),
    blocked(),
    DeviceBlocked(device="SN-0002", seconds=60.0),
    LocalSessionOpened(device="SN-0001", endpoint="netconf", session=1),
    LocalSessionClosed(device="SN-0001", endpoint="netconf", session=1, seconds=0.25),
]


def ids(items: list[Event | Notice]) -> list[int]:
    return [item.id for item in items if isinstance(item, Event)]


def notices(items: list[Event | Notice]) -> list[Notice]:
    return [item for item in items if isinstance(item, Notice)]


# -- the events themselves ------------------------------------------------------------


def test_every_type_has_one_body_and_a_json_line_with_id_type_time_and_its_fields() -> None:
    assert {body.TYPE for body in ONE_OF_EACH} == set(EventType)
    log = EventLog(clock=Clock())
    for body in ONE_OF_EACH:
        event = log.emit(body)
        data = json.loads(event.line)
        assert data == event.to_json()
        assert event.line.endswith(b"\n") and event.line.count(b"\n") == 1
        assert list(data)[:3] == ["id", "type", "time"]
        assert data["type"] == body.TYPE.value
        assert {f.name for f in fields(body)} == set(data) - {"id", "type", "time"}


def test_ids_are_consecutive_from_one_with_the_clock_time() -> None:
    clock = Clock()
    log = EventLog(clock=clock)
    assert (log.last_id, log.oldest_id, len(log)) == (0, 1, 0)
    events = [log.emit(blocked(f"192.0.2.{i}")) for i in range(5)]
    assert [e.id for e in events] == [1, 2, 3, 4, 5]
    assert events[-1].time == clock.now
    assert all(a.time <= b.time for a, b in itertools.pairwise(events))
    assert (log.last_id, log.oldest_id, len(log)) == (5, 1, 5)


def test_the_ring_keeps_the_newest_capacity_events() -> None:
    log = EventLog(3, clock=Clock())
    for i in range(7):
        log.emit(blocked(f"192.0.2.{i}"))
    assert (log.oldest_id, log.last_id, len(log)) == (5, 7, 3)
    assert log.get(4) is None and log.get(8) is None
    held = [log.get(i) for i in (5, 6, 7)]
    assert [e.id for e in held if e is not None] == [5, 6, 7]


def test_a_log_holds_at_least_one_event() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        EventLog(0)


def test_parse_types() -> None:
    assert parse_types([]) is None
    assert parse_types(["", " "]) is None
    assert parse_types(["device-connected, device-disconnected", "source-blocked"]) == {
        EventType.DEVICE_CONNECTED,
        EventType.DEVICE_DISCONNECTED,
        EventType.SOURCE_BLOCKED,
    }
    with pytest.raises(ValueError, match=r"unknown event type 'connected'; known: device-connected, "):
        parse_types(["connected"])


# -- replay and resume ------------------------------------------------------------------


def test_without_since_a_reader_gets_everything_held_and_no_notice() -> None:
    log = EventLog(3, clock=Clock())
    for i in range(5):
        log.emit(blocked(f"192.0.2.{i}"))
    got = log.subscribe().read()
    assert ids(got) == [3, 4, 5] and not notices(got)


def test_since_is_the_last_id_the_consumer_has() -> None:
    log = EventLog(clock=Clock())
    for i in range(5):
        log.emit(blocked(f"192.0.2.{i}"))
    assert ids(log.subscribe(after=2).read()) == [3, 4, 5]
    assert log.subscribe(after=5).read() == []
    assert ids(log.subscribe(after=0).read()) == [1, 2, 3, 4, 5]


def test_asking_for_an_overwritten_id_says_how_many_were_missed_then_continues_from_the_oldest() -> None:
    log = EventLog(3, clock=Clock())
    for i in range(10):
        log.emit(blocked(f"192.0.2.{i}"))
    got = log.subscribe(after=2).read()
    (notice,) = notices(got)
    assert notice.type is NoticeType.EVENTS_DROPPED
    assert (notice.after, notice.oldest, notice.missed, notice.epoch) == (2, 8, 5, log.epoch)
    assert ids(got) == [8, 9, 10]
    assert got[0] is notice  # the notice comes first
    assert json.loads(notice.line) == {
        "type": "events-dropped",
        "time": notice.time,
        "epoch": log.epoch,
        "after": 2,
        "oldest": 8,
        "missed": 5,
    }
    # the id just before the oldest lost nothing
    assert not notices(log.subscribe(after=7).read())


def test_no_dropped_notice_when_only_unwanted_types_were_overwritten() -> None:
    log = EventLog(3, clock=Clock())
    log.emit(connected("A"))  # 1
    for i in range(5):
        log.emit(blocked(f"192.0.2.{i}"))  # 2..6; 1-3 overwritten
    wanted = frozenset({EventType.DEVICE_CONNECTED})
    assert log.subscribe(after=1, types=wanted).read() == []  # id 1 was delivered; 2, 3 were not wanted
    got = log.subscribe(after=0, types=wanted).read()
    assert [n.missed for n in notices(got)] == [3]  # id 1 itself was lost
    got = log.subscribe(after=1).read()  # all types: 2 and 3 were lost
    assert [n.missed for n in notices(got)] == [2] and ids(got) == [4, 5, 6]


def test_types_filter_replay_and_live() -> None:
    log = EventLog(clock=Clock())
    log.emit(connected("A"))
    log.emit(blocked())
    log.emit(connected("B"))
    sub = log.subscribe(types=frozenset({EventType.DEVICE_CONNECTED}))
    got = sub.read()
    assert ids(got) == [1, 3]
    log.emit(blocked())
    log.emit(connected("C"))
    assert ids(sub.read()) == [5]
    assert sub.cursor == 5


def test_an_id_from_another_gateway_process_is_answered_with_a_restart_notice_and_everything_held() -> None:
    log = EventLog(clock=Clock(), epoch="e2")
    for i in range(3):
        log.emit(blocked(f"192.0.2.{i}"))
    for got in (log.subscribe(after=2, epoch="e1").read(), log.subscribe(after=40).read()):
        (notice,) = notices(got)
        assert notice.type is NoticeType.GATEWAY_RESTARTED and notice.epoch == "e2"
        assert ids(got) == [1, 2, 3]
    assert notices(log.subscribe(after=2, epoch="e1").read())[0].previous_epoch == "e1"
    assert not notices(log.subscribe(after=2, epoch="e2").read())


def test_a_restarted_gateway_that_already_overwrote_events_says_so_too() -> None:
    log = EventLog(2, clock=Clock(), epoch="new")
    for i in range(5):
        log.emit(blocked(f"192.0.2.{i}"))
    got = log.subscribe(after=3, epoch="old").read()
    assert [n.type for n in notices(got)] == [NoticeType.GATEWAY_RESTARTED, NoticeType.EVENTS_DROPPED]
    assert notices(got)[1].missed == 3
    assert ids(got) == [4, 5]


def test_each_gateway_process_has_its_own_epoch() -> None:
    assert EventLog().epoch != EventLog().epoch


def test_a_non_following_read_stops_at_the_newest_event_when_it_subscribed() -> None:
    log = EventLog(clock=Clock())
    log.emit(blocked())
    sub = log.subscribe()
    log.emit(blocked())
    assert ids(sub.read(until=sub.end)) == [1]
    assert sub.done


def test_read_takes_at_most_limit_events() -> None:
    log = EventLog(clock=Clock())
    for i in range(10):
        log.emit(blocked(f"192.0.2.{i}"))
    sub = log.subscribe()
    assert ids(sub.read(4)) == [1, 2, 3, 4]
    assert ids(sub.read(4)) == [5, 6, 7, 8]
    assert ids(sub.read(4)) == [9, 10]


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 8),
    script=st.lists(st.one_of(st.integers(1, 12), st.just(0)), max_size=30),
    wanted=st.sets(st.sampled_from([EventType.DEVICE_CONNECTED, EventType.SOURCE_BLOCKED])),
)
def test_a_follower_gets_every_event_once_in_order_or_a_notice_that_counts_the_gap(
    capacity: int, script: list[int], wanted: set[EventType]
) -> None:
    """Emit bursts (n > 0) and read (0) in any order: the ids a follower gets
    plus the ids its notices say it missed are every id, each once; it never
    gets a filtered-out type; and a notice comes only if it missed a wanted one."""
    log = EventLog(capacity, clock=Clock())
    types = frozenset(wanted) or None
    sub = log.subscribe(types=types)
    emitted: list[Event] = []
    got: list[Event | Notice] = []
    for step in [*script, 0]:
        if step:
            emitted += [log.emit(connected() if (len(emitted) + i) % 3 else blocked()) for i in range(step)]
        else:
            while batch := sub.read(limit=3):
                got += batch
    seen = ids(got)
    assert seen == sorted(set(seen))
    missed: set[int] = set()
    for notice in notices(got):
        assert notice.after is not None and notice.oldest is not None and notice.missed is not None
        gap = set(range(notice.after + 1, notice.oldest))
        assert len(gap) == notice.missed
        assert any(types is None or e.type in types for e in emitted if e.id in gap)
        missed |= gap
    expected = {e.id for e in emitted if types is None or e.type in types}
    assert set(seen) == expected - missed
    assert not set(seen) & missed


# -- followers ----------------------------------------------------------------------------


async def test_a_follower_waits_for_the_next_event() -> None:
    log = EventLog(clock=Clock())
    sub = log.subscribe()
    waiting = asyncio.create_task(sub.next())
    await asyncio.sleep(0)
    assert not waiting.done()
    log.emit(blocked())
    assert ids(await asyncio.wait_for(waiting, 5) or []) == [1]


async def test_one_emit_wakes_every_follower_and_a_cancelled_one_leaves_the_others_waiting() -> None:
    log = EventLog(clock=Clock())
    subs = [log.subscribe() for _ in range(5)]
    tasks = [asyncio.create_task(s.next()) for s in subs]
    await asyncio.sleep(0)
    tasks[0].cancel()
    await asyncio.sleep(0)
    log.emit(blocked())
    results = await asyncio.wait_for(asyncio.gather(*tasks[1:]), 5)
    assert [ids(r or []) for r in results] == [[1]] * 4


async def test_next_returns_empty_on_timeout_and_none_once_closed_and_read() -> None:
    log = EventLog(clock=Clock())
    sub = log.subscribe()
    assert await sub.next(timeout=0.01) == []
    log.emit(blocked())
    log.close()
    assert ids(await sub.next() or []) == [1]
    assert await sub.next() is None
    waiting = log.subscribe()
    waiting.read()
    assert await waiting.next() is None


async def test_a_follower_that_does_not_read_costs_no_memory_and_is_told_what_it_missed() -> None:
    """The emitter never waits for followers: 100,000 events with a follower
    that reads nothing leave the ring at its capacity; the follower then gets
    one notice and the newest events."""
    log = EventLog(1000, clock=Clock())
    slow = log.subscribe()
    for i in range(100_000):
        log.emit(blocked(f"10.0.{i // 256 % 256}.{i % 256}"))
    assert len(log) == 1000 and len(log._ring) == 1000
    first = await slow.next()
    assert first is not None
    (notice,) = notices(first)
    assert (notice.after, notice.missed, notice.oldest) == (0, 99_000, 99_001)
    total = len(ids(first))
    while batch := slow.read():
        total += len(ids(batch))
    assert total == 1000


def _json_lines(items: list[Event | Notice]) -> list[dict[str, Any]]:
    return [json.loads(line) for item in items for line in item.line.splitlines()]


def test_notices_have_no_id_and_events_do() -> None:
    log = EventLog(1, clock=Clock())
    log.emit(blocked())
    log.emit(blocked())
    lines = _json_lines(log.subscribe(after=0).read())
    assert "id" not in lines[0] and lines[0]["type"] == "events-dropped"
    assert lines[1]["id"] == 2


# -- the registry's transitions as events (RegistryFeed) --------------------------------------


def refused(reason: RefusalReason, device: str | None, **extra: Any) -> RejectedAttempt:
    return RejectedAttempt(
        peer_address=("2001:db8::7", 53122),
        reason=reason,
        fingerprint="SHA256:xyz",
        key_type="ssh-ed25519",
        device=device,
        at=1_700_000_001.0,
        transport="ssh",
        **extra,
    )


def test_the_feed_turns_each_registry_transition_into_its_event() -> None:
    log = EventLog(clock=Clock())
    feed = RegistryFeed(log)
    feed.connected(
        DeviceConnected(
            device="SN-0001",
            transport=Transport.TLS,
            peer_address=("192.0.2.7", 53122),
            fingerprint="SHA256:abc",
            connected_at=1_700_000_000.25,
            handshake_seconds=0.0414444,
            certificate_subject="CN=SN-0001",
            reconnects=0,
        )
    )
    feed.disconnected(
        DeviceDisconnected(
            device="SN-0001",
            reason="closed by device",
            at=1_700_000_003.75,
            state=DeviceState.DISCONNECTED,
            state_changed=True,
            transport=Transport.TLS,
            peer_address=("192.0.2.7", 53122),
            connected_at=1_700_000_000.25,
        )
    )
    feed.rejected(refused(RefusalReason.AUTH_FAILED, "SN-0002", detail="denied"))
    feed.rejected(refused(RefusalReason.UNKNOWN_DEVICE, None))
    feed.rejected(
        refused(RefusalReason.REVOKED, "SN-0003", certificate_subject="CN=SN-0003", detail="revoked (serial 7)")
    )
    feed.blocked(Blocked(kind=BlockKind.DEVICE, key="SN-0002", seconds=60.0, at=1.0))
    feed.blocked(Blocked(kind=BlockKind.SOURCE, key="2001:db8::7", seconds=30.0, at=1.0))
    opened = LocalSession(device="SN-0001", endpoint="terminal", session=4, opened_at=10.0)
    feed.local_session(opened)
    feed.local_session(LocalSession(device="SN-0001", endpoint="terminal", session=4, opened_at=10.0, closed_at=12.5))
    bodies = [event.body for event in log.subscribe().read()]  # type: ignore[union-attr]
    assert bodies == [
        Connected(
            device="SN-0001",
            transport="tls",
            peer_address="192.0.2.7:53122",
            identity="CN=SN-0001",
            fingerprint="SHA256:abc",
            first_call=True,
            reconnects=0,
            connected_at=1_700_000_000.25,
            handshake_seconds=0.041444,
        ),
        Disconnected(
            device="SN-0001",
            transport="tls",
            reason="closed by device",
            peer_address="192.0.2.7:53122",
            connected_seconds=3.5,
        ),
        AuthFailed(
            device="SN-0002",
            transport="ssh",
            peer_address="[2001:db8::7]:53122",
            fingerprint="SHA256:xyz",
            detail="denied",
        ),
        UNKNOWN_DEVICE,
        Rejected(
            reason="revoked",
            transport="ssh",
            peer_address="[2001:db8::7]:53122",
            device="SN-0003",
            fingerprint="SHA256:xyz",
            key_type="ssh-ed25519",
            certificate_subject="CN=SN-0003",
            device_id=None,
            detail="revoked (serial 7)",
        ),
        DeviceBlocked(device="SN-0002", seconds=60.0),
        SourceBlocked(source="2001:db8::7", seconds=30.0),
        LocalSessionOpened(device="SN-0001", endpoint="terminal", session=4),
        LocalSessionClosed(device="SN-0001", endpoint="terminal", session=4, seconds=2.5),
    ]


def test_the_feed_reports_a_disconnection_only_when_the_device_state_changed() -> None:
    log = EventLog(clock=Clock())
    feed = RegistryFeed(log)
    for reason, state in (("handed over", DeviceState.CONNECTED), ("closed by device", DeviceState.CONNECTED)):
        feed.disconnected(
            DeviceDisconnected(
                device="T1",
                reason=reason,
                at=2.0,
                state=state,
                state_changed=False,  # handed over to its user, or another call of it is still usable
                transport=Transport.RESTCONF,
                peer_address=("192.0.2.7", 1),
                connected_at=1.0,
            )
        )
    assert log.last_id == 0
    reconnect = DeviceConnected(
        device="T1",
        transport=Transport.SSH,
        peer_address=("192.0.2.7", 2),
        fingerprint="SHA256:abc",
        connected_at=3.0,
        handshake_seconds=0.01,
        reconnects=2,
    )
    feed.connected(reconnect)
    [event] = log.subscribe().read()
    assert isinstance(event, Event) and isinstance(event.body, Connected)
    assert (event.body.first_call, event.body.reconnects, event.body.identity) == (False, 2, "SHA256:abc")
