"""Greeted and held NETCONF sessions (callhome_transport.protocol.session) over an
in-memory device stream: our own seam, so a stand-in device is fine here; the
real devices are in tests/integration/test_held_sessions.py."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable

import pytest

from callhome_transport.errors import ClientHelloError, HelloTimeoutError, TransportError
from callhome_transport.protocol.framing import EOM, Framing
from callhome_transport.protocol.hello import BASE_10, BASE_11, DEFAULT_CLIENT_CAPABILITIES, HELLO_SETTLE, encode_hello
from callhome_transport.protocol.session import (
    DeviceSession,
    DeviceTraits,
    EarlyData,
    SessionPool,
    exchange_hello,
    greet_local,
)


class Stream:
    """A device session: answers our hello with ``hello`` (or never)."""

    def __init__(self, hello: bytes | None, session_id: int = 1) -> None:
        self.early = EarlyData()
        self.hello = hello
        self.written: list[bytes] = []
        self.attached: socket.socket | None = None
        self._closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @property
    def closed(self) -> asyncio.Future[str]:
        return self._closed

    def write_to_device(self, data: bytes) -> None:
        self.written.append(data)
        if len(self.written) == 1 and self.hello is not None:
            asyncio.get_running_loop().call_soon(self.early.add, self.hello)

    async def attach_local(self, sock: socket.socket) -> None:
        self.attached = sock

    def close(self) -> None:
        self.early.end()
        if not self._closed.done():
            self._closed.set_result("closed")


def device_hello(session_id: int, *bases: str) -> bytes:
    return encode_hello(bases or (BASE_10, BASE_11), str(session_id))


class Device:
    """Opens streams like a device's channels: ``answers(n)`` says whether the
    n-th one (from 1) sends a hello, ``refuse(n)`` whether it is refused."""

    def __init__(self, answers: object = True, refused: object = False) -> None:
        self.opened = 0
        self.streams: list[Stream] = []
        self.closed = False
        self._answers = answers
        self._refused = refused

    async def open(self) -> Stream:
        self.opened += 1
        refused = self._refused(self.opened) if callable(self._refused) else self._refused
        if refused:
            raise TransportError("cannot open a netconf channel on device SN-1: open failed", device="SN-1")
        answers = self._answers(self.opened) if callable(self._answers) else self._answers
        stream = Stream(device_hello(self.opened) if answers else None)
        self.streams.append(stream)
        return stream

    def pool(
        self, *, hold: bool, traits: DeviceTraits | None = None, hello_timeout: float = 0.2, warm: float = 0.0
    ) -> SessionPool:
        return SessionPool(
            warm=warm,
            device="SN-1",
            open_stream=self.open,
            is_closed=lambda: self.closed,
            hold=hold,
            traits=traits or DeviceTraits(),
            hello_timeout=hello_timeout,
            peer_address=("192.0.2.1", 4334),
        )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def until(condition: Callable[[], object]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition not met")


async def ready_pool(device: Device) -> SessionPool:
    """A pool holding sessions (``hold``), once its spare is ready."""
    pool = device.pool(hold=True)
    pool.start()
    await until(lambda: pool.ready)
    return pool


async def test_early_data_reads_the_hello_and_keeps_what_follows() -> None:
    early = EarlyData()
    reader = asyncio.ensure_future(early.read_hello())
    for byte in device_hello(3) + b"\n#4\nabcd\n##\n":
        early.add(bytes([byte]))
        await asyncio.sleep(0)
    assert (await reader).endswith(b"<session-id>3</session-id></hello>")
    assert early.take() == b"\n#4\nabcd\n##\n"


async def test_early_data_device_closing_before_its_hello() -> None:
    early = EarlyData()
    early.add(b"<hello")
    early.end()
    with pytest.raises(ConnectionError):
        await early.read_hello()


async def test_exchange_hello_sends_ours_and_negotiates() -> None:
    stream = Stream(device_hello(9, BASE_10))
    session = await exchange_hello(stream, device="SN-1", timeout=1)
    assert stream.written[0].endswith(EOM) and BASE_11.encode() in stream.written[0]
    assert session.session_id == "9"
    assert session.framing is Framing.END_OF_MESSAGE  # the device offers base:1.0 only
    assert session.replay() == device_hello(9, BASE_10)


@pytest.mark.parametrize(
    ("capabilities", "settle"),
    [((BASE_11,), 0.0), ((BASE_11, "http://yuma123.org/ns/yuma123-system?module=yuma123-system"), HELLO_SETTLE)],
    ids=["other", "yuma123"],
)
async def test_a_session_greeted_just_now_is_lent_at_once_unless_the_device_needs_the_settle(
    capabilities: tuple[str, ...], settle: float
) -> None:
    stream = Stream(encode_hello(capabilities, "5"))
    session = await exchange_hello(stream, device="SN-1", timeout=1)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        await session.lend(ours, to_device=b"rpc")
    waited = time.monotonic() - session.hello_sent_at
    assert stream.attached is ours and stream.written[-1] == b"rpc"
    if settle:
        assert waited >= settle
    else:
        assert waited < HELLO_SETTLE / 2, waited  # was HELLO_SETTLE for every device


async def test_exchange_hello_timeout_names_the_device_and_closes() -> None:
    stream = Stream(None)
    with pytest.raises(HelloTimeoutError) as info:
        await exchange_hello(stream, device="SN-1", timeout=0.05, peer_address=("192.0.2.1", 4334))
    assert info.value.device == "SN-1" and info.value.timeout == 0.05
    assert stream.closed.done()


async def test_exchange_hello_without_a_common_base_is_refused() -> None:
    stream = Stream(encode_hello(("urn:example:base:9",), "1"))
    with pytest.raises(TransportError, match="no NETCONF base version"):
        await exchange_hello(stream, device="SN-1", timeout=1)


async def test_anchor_kept_spare_lent_and_replaced() -> None:
    device = Device()
    pool = await ready_pool(device)
    assert pool.anchor is not None and pool.anchor.session_id == "1"  # the call's first session: kept
    assert pool.ready is not None and pool.ready.session_id == "2"
    first = await pool.take(1)
    assert first.session_id == "2" and pool.lent == 1
    await until(lambda: pool.ready)
    assert pool.ready is not None and pool.ready.session_id == "3"  # prepared in the background
    first.close()
    await until(lambda: pool.lent == 0)
    assert device.opened == 3
    assert pool.anchor is not None and not pool.anchor.is_closed


async def test_the_next_session_is_greeted_soon_after_a_lending_or_a_return_not_at_once() -> None:
    # failed before: the next session was opened and greeted the moment one
    # was lent, on the loop and on the device, while the caller sent its first RPC
    device = Device()
    pool = await ready_pool(device)
    taken = await pool.take(1)
    await settle()
    assert device.opened == 2 and pool.ready is None  # not at once
    await until(lambda: device.opened == 3)  # soon after
    again = await pool.take(1)
    await settle()
    assert device.opened == 3
    again.close()
    await settle()
    # failed before: a session was opened the moment a lent one closed, and
    # libnetconf2 (still freeing the closed one) never greeted it
    assert device.opened == 3
    await until(lambda: device.opened == 4)
    taken.close()


async def test_a_caller_thread_claims_the_spare_once_and_the_loop_records_it() -> None:
    # CallHomeServer.netconf claims a held session from its own thread (no
    # hop to the loop); two callers at once never get the same session
    device = Device()
    pool = await ready_pool(device)
    spare = pool.spare
    assert pool.claim(("urn:example:other",)) is None  # greeted with other capabilities
    start = threading.Barrier(4, timeout=10)  # the default executor runs at least 5 threads

    def claim() -> DeviceSession | None:
        start.wait()
        return pool.claim(spare.client_capabilities if spare is not None else ())

    claimed = [s for s in await asyncio.gather(*(asyncio.to_thread(claim) for _ in range(4))) if s is not None]
    assert claimed == [spare] and pool.ready is None and pool.lent == 0
    assert pool.claim(claimed[0].client_capabilities) is None
    pool.record_claimed(claimed[0])  # on the loop, with the session's first message
    assert pool.lent == 1
    await until(lambda: device.opened == 3)  # the next spare, soon after
    claimed[0].close()
    await until(lambda: pool.lent == 0)


async def test_nothing_to_claim_without_hold_or_from_a_closed_pool() -> None:
    assert Device().pool(hold=False).claim(DEFAULT_CLIENT_CAPABILITIES) is None
    device = Device()
    pool = await ready_pool(device)
    device.closed = True
    assert pool.claim(DEFAULT_CLIENT_CAPABILITIES) is None


async def test_without_hold_each_take_greets_a_new_session() -> None:
    device = Device()
    pool = device.pool(hold=False)
    pool.start()
    await settle()
    assert pool.ready is None and pool.anchor is None and device.opened == 0
    session = await pool.take(1)
    assert session.session_id == "1" and device.opened == 1


async def test_warm_keeps_a_spare_while_the_device_is_used_then_closes_it() -> None:
    # hold_session: auto on a device that needs nothing held: the next caller
    # gets a greeted session (no channel, no hello) while the device is in use
    device = Device()
    pool = device.pool(hold=False, warm=0.4)
    pool.start()
    await settle()
    assert device.opened == 0  # nothing before the first caller
    first = await pool.take(1)
    assert first.session_id == "1"
    await until(lambda: pool.ready)
    assert pool.anchor is None and pool.ready is not None and pool.ready.session_id == "2"
    second = await pool.take(1)
    assert second.session_id == "2" and device.opened == 2  # taken, not opened
    await until(lambda: device.opened == 3)  # the next spare
    first.close()
    second.close()
    await until(lambda: pool.lent == 0)
    spare = pool.ready
    assert spare is not None
    await asyncio.sleep(0.6)  # unused for longer than warm
    assert pool.ready is None and spare.is_closed and device.opened == 3
    third = await pool.take(1)  # the device is in use again
    assert third.session_id == "4"
    await until(lambda: pool.ready)
    pool.close()


async def test_warm_keeps_the_spare_while_a_session_is_open_longer_than_warm() -> None:
    # failed before: "used" was counted from the lending only, so a Manager
    # kept open longer than warm lost the spare the next caller would take
    device = Device()
    pool = device.pool(hold=False, warm=0.3)
    taken = await pool.take(1)
    await until(lambda: pool.ready)
    spare = pool.ready
    await asyncio.sleep(0.7)  # the device is in use the whole time
    assert pool.ready is spare and spare is not None and not spare.is_closed
    taken.close()
    await until(lambda: pool.lent == 0)
    await asyncio.sleep(0.1)
    assert pool.ready is spare  # returned just now: still in use
    await until(lambda: pool.ready is None)  # then unused for warm
    assert spare.is_closed
    pool.close()


async def test_warm_spare_closed_by_the_device_is_not_greeted_again_until_the_next_caller() -> None:
    device = Device()
    pool = device.pool(hold=False, warm=30)
    await pool.take(1)
    await until(lambda: pool.ready)
    spare = pool.ready
    assert spare is not None
    spare.close()  # e.g. the device's idle timeout
    await until(lambda: pool.ready is None)
    await asyncio.sleep(0.2)
    assert device.opened == 2
    await pool.take(1)
    await until(lambda: device.opened == 3)
    pool.close()


async def test_warm_never_holds_the_only_session_of_a_one_session_device() -> None:
    device = Device()
    pool = device.pool(hold=False, warm=30, traits=DeviceTraits(one_at_a_time=True))
    session = await pool.take(1)
    session.close()
    await until(lambda: pool.lent == 0)
    await asyncio.sleep(0.2)
    assert device.opened == 1 and pool.ready is None


async def test_a_warm_session_that_fails_teaches_nothing_and_ends_warm_on_that_call() -> None:
    # failed before: a device refusing a second session (its limit) while one
    # was in use was learned as one-session-at-a-time from the warm attempt
    traits = DeviceTraits()
    device = Device(refused=lambda n: n == 2)
    pool = device.pool(hold=False, warm=30, traits=traits)
    first = await pool.take(1)
    await until(lambda: device.opened == 2 and pool._prep is None)
    assert not traits.one_at_a_time and pool.warm == 0
    second = await pool.take(1)  # two at once is what the device allows
    assert second.session_id == "3" and not traits.one_at_a_time
    await asyncio.sleep(0.2)
    assert device.opened == 3  # no more warm attempts on this call
    first.close()
    second.close()


async def test_a_caller_does_not_wait_for_a_warm_session_still_being_greeted() -> None:
    # failed before: the caller waited on the warm session, which this device
    # never answers while another is open, and got "stayed busy"
    device = Device(answers=lambda n: n != 2)
    pool = device.pool(hold=False, warm=30, hello_timeout=5)
    first = await pool.take(1)
    await until(lambda: device.opened == 2)  # the warm one, never answered
    second = await pool.take(1)
    assert second.session_id == "3"
    first.close()
    second.close()
    pool.close()


async def test_learning_one_at_a_time_takes_the_spare_out_before_closing_it() -> None:
    # failed before: the closing spare stayed in the pool until the device
    # confirmed the close, and could be lent meanwhile
    device = Device()
    pool = await ready_pool(device)
    spare = pool.spare
    assert spare is not None and pool.anchor is not None
    device.streams[1].close = lambda: None  # type: ignore[method-assign]  # a close not yet confirmed
    pool._learn_one_at_a_time(TransportError("refused", device="SN-1"))
    assert pool.spare is None and pool.claim(spare.client_capabilities) is None
    pool.close()


async def test_first_session_never_answered_is_an_error_not_a_lesson() -> None:
    traits = DeviceTraits()
    pool = Device(answers=False).pool(hold=False, traits=traits)
    with pytest.raises(HelloTimeoutError):
        await pool.take(5)
    assert not traits.one_at_a_time


@pytest.mark.parametrize("failure", ["silent", "refused"])
async def test_second_session_failing_while_one_is_open_queues_behind_it(failure: str) -> None:
    traits = DeviceTraits()
    if failure == "silent":
        device = Device(answers=lambda n: n != 2)  # the second channel is accepted, never answered
    else:
        device = Device(refused=lambda n: n == 2)
    pool = device.pool(hold=False, traits=traits)
    first = await pool.take(1)
    second = asyncio.ensure_future(pool.take(5))
    while not traits.one_at_a_time:
        await asyncio.sleep(0.01)
    assert not second.done()  # queued
    first.close()
    session = await asyncio.wait_for(second, 5)
    assert session.session_id == "3"


async def test_one_session_device_busy_past_the_wait() -> None:
    pool = Device().pool(hold=False, traits=DeviceTraits(one_at_a_time=True))
    await pool.take(1)
    with pytest.raises(TransportError, match="one NETCONF session at a time and stayed busy"):
        await pool.take(0.1)


@pytest.mark.parametrize("role", ["anchor", "spare"])
async def test_held_session_closed_by_the_device_is_greeted_again(role: str) -> None:
    device = Device()
    pool = await ready_pool(device)
    held = getattr(pool, role)
    assert held is not None
    held.greeted_at -= 60  # it lived a while
    held.close()
    await until(lambda: getattr(pool, role) not in (None, held))


async def test_closed_pool_releases_its_held_sessions() -> None:
    device = Device()
    pool = await ready_pool(device)
    held = [pool.anchor, pool.spare]
    pool.close()
    assert all(s is not None and s.is_closed for s in held)
    assert pool.anchor is None and pool.ready is None


async def test_one_session_device_lends_its_anchor_and_queues_the_next_caller() -> None:
    device = Device(answers=lambda n: n != 2)  # a second channel is accepted, never answered
    traits = DeviceTraits()
    pool = device.pool(hold=True, traits=traits)
    pool.start()
    while not traits.one_at_a_time:
        await asyncio.sleep(0.01)
    first = await pool.take(1)
    assert first.session_id == "1"  # the anchor: all there is
    second = asyncio.ensure_future(pool.take(5))
    await settle()
    assert not second.done()
    first.close()
    assert (await asyncio.wait_for(second, 5)).session_id == "3"


async def local_pair(session: DeviceSession, client_sends: bytes) -> tuple[bytes, bytes | BaseException]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()
    greeting = asyncio.ensure_future(greet_local(ours, session, 1))
    received = b""
    while not received.endswith(EOM):
        received += await loop.sock_recv(theirs, 65536)
    await loop.sock_sendall(theirs, client_sends)
    try:
        result: bytes | BaseException = await greeting
    except ClientHelloError as exc:
        result = exc
    ours.close()
    theirs.close()
    return received, result


async def test_local_client_gets_the_device_hello_and_its_own_is_answered() -> None:
    session = await exchange_hello(Stream(device_hello(5)), device="SN-1", timeout=1)
    client_hello = encode_hello((BASE_10, BASE_11))
    replayed, rest = await local_pair(session, client_hello + b"\n#3\nrpc\n##\n")
    assert replayed == session.replay()
    assert rest == b"\n#3\nrpc\n##\n"  # what followed the client's hello, for the device


@pytest.mark.parametrize(
    ("device_bases", "client_bases"),
    [((BASE_10, BASE_11), (BASE_10,)), ((BASE_10,), (BASE_11,))],
    ids=["session-1.1-client-1.0", "session-1.0-client-1.1"],
)
async def test_local_client_that_cannot_use_the_framing_is_refused(
    device_bases: tuple[str, ...], client_bases: tuple[str, ...]
) -> None:
    session = await exchange_hello(Stream(device_hello(5, *device_bases)), device="SN-1", timeout=1)
    _, result = await local_pair(session, encode_hello(client_bases))
    assert isinstance(result, ClientHelloError)
    assert result.device == "SN-1" and "framing" in result.reason
