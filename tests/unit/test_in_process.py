"""ncclient sessions lent in-process (``CallHomeServer.netconf``): the relay's
in-process end, dispatch on the event loop, large messages off it, in order.
The device is our simulator's sans-I/O NETCONF server on one end of a
socketpair, the other end a :class:`TransportStream` (the TLS relay's device
side) on a real event loop: our own seams; the real devices are in
tests/integration."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from ncclient.transport.errors import TransportError as NcTransportError

from callhome_transport.engine import EventLoopThread
from callhome_transport.integrations.netconf import INLINE_LIMIT, PreparedManager
from callhome_transport.protocol.session import DeviceSession, exchange_hello
from callhome_transport.sim.datastore import Datastores
from callhome_transport.transports.relay import TransportStream

from .test_netconf import serve  # the simulator's NETCONF server on one end of a socketpair


@pytest.fixture
def engine() -> Iterator[EventLoopThread]:
    engine = EventLoopThread()
    yield engine
    engine.stop()


def greeted(engine: EventLoopThread, stores: Datastores) -> tuple[DeviceSession, threading.Thread]:
    ours, theirs = socket.socketpair()
    device = threading.Thread(target=serve, args=(theirs, stores), daemon=True)
    device.start()

    async def _greet() -> DeviceSession:
        loop = asyncio.get_running_loop()
        _, stream = await loop.connect_accepted_socket(TransportStream, ours)
        return await exchange_hello(stream, device="R1", timeout=5)

    return engine.run(_greet()), device


def lend(engine: EventLoopThread, session: DeviceSession) -> PreparedManager:
    prepared = PreparedManager(device="R1", timeout=10)

    async def _adopt() -> None:
        prepared.session.adopt_in_process(session)

    engine.run(_adopt())
    return prepared


def reader_threads() -> int:
    return sum(t.name.startswith("callhome-netconf-R1") for t in threading.enumerate())


def test_rpcs_without_a_socket_or_a_reader_thread(engine: EventLoopThread) -> None:
    session, device = greeted(engine, Datastores(hostname="r1"))
    threads = threading.active_count()
    m = lend(engine, session).manager()
    assert m.session_id == session.session_id
    for _ in range(5):
        assert "<hostname>r1</hostname>" in m.get_config(source="running").xml
    assert threading.active_count() == threads  # dispatched on the event loop
    m.close_session()
    device.join(5)
    assert not device.is_alive()


def test_large_reply_is_dispatched_off_the_loop_and_in_order(engine: EventLoopThread) -> None:
    stores = Datastores(hostname="r1")
    session, device = greeted(engine, stores)
    prepared = lend(engine, session)
    m = prepared.manager()
    big = "x" * (4 * INLINE_LIMIT)
    edit = (
        '<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
        f'<system xmlns="urn:ietf:params:xml:ns:yang:ietf-system"><contact>{big}</contact></system></config>'
    )
    m.edit_config(target="running", config=edit)

    assert big in m.get_config(source="running").xml
    assert prepared.session._offload is not None  # the large reply went off the loop
    # small replies after the large one still arrive, in order, on the loop again
    assert "<hostname>r1</hostname>" in m.get_config(source="running").xml
    m.close_session()
    device.join(5)
    deadline = time.monotonic() + 5
    while reader_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reader_threads() == 0


def test_device_closing_fails_the_next_rpc(engine: EventLoopThread) -> None:
    session, _device = greeted(engine, Datastores(hostname="r1"))
    m = lend(engine, session).manager()
    engine.loop.call_soon_threadsafe(session.close)  # the device side ends
    deadline = time.monotonic() + 5
    while m.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not m.connected
    with pytest.raises(NcTransportError):
        m.get_config(source="running")


def test_after_close_nothing_reaches_the_session(engine: EventLoopThread) -> None:
    session, device = greeted(engine, Datastores(hostname="r1"))
    prepared = lend(engine, session)
    prepared.session.close()
    device.join(5)  # the device saw its session end
    assert not device.is_alive()
    assert session.is_closed


def test_a_claimed_session_is_recorded_then_attached_on_the_loop_without_waiting_for_it(
    engine: EventLoopThread,
) -> None:
    # a session held ready is claimed from the caller's thread (no hop to the
    # loop): the lending is recorded and the relay started there, in that
    # order, before the session's first message; nothing the device sent is lost
    session, device = greeted(engine, Datastores(hostname="r1"))
    stream = session.stream
    assert isinstance(stream, TransportStream)
    order: list[str] = []
    prepared = PreparedManager(device="R1", timeout=10)
    prepared.session.adopt_claimed(session, lambda: order.append(f"recorded, attached={stream.local is not None}"))
    m = prepared.manager()
    assert "<hostname>r1</hostname>" in m.get_config(source="running").xml
    assert order == ["recorded, attached=False"] and stream.local is not None
    m.close_session()
    device.join(5)
    assert not device.is_alive()


def test_a_claimed_session_closed_unused_is_still_recorded_and_ended(engine: EventLoopThread) -> None:
    session, device = greeted(engine, Datastores(hostname="r1"))
    recorded = threading.Event()
    prepared = PreparedManager(device="R1", timeout=10)
    prepared.session.adopt_claimed(session, recorded.set)
    prepared.session.close()
    assert recorded.wait(5)
    device.join(5)
    assert not device.is_alive()  # the device saw the session end


def test_a_claimed_session_is_attached_even_if_recording_it_fails(engine: EventLoopThread) -> None:
    # failed before: an exception in the recording left the relay unattached
    # and the first RPC waited for its timeout
    session, device = greeted(engine, Datastores(hostname="r1"))

    def recording_fails() -> None:
        raise RuntimeError("recording failed")

    prepared = PreparedManager(device="R1", timeout=5)
    prepared.session.adopt_claimed(session, recording_fails)
    m = prepared.manager()
    assert "<hostname>r1</hostname>" in m.get_config(source="running").xml
    m.close_session()
    device.join(5)
