"""The unauthenticated start of a connection: the device's first bytes, the
banner timeout and early drop, on real loopback TCP sockets."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable

import pytest

from callhome_transport.transports.preauth import PendingConnection, PreauthEnded, bytes_received, ssh_banner_complete
from callhome_transport.transports.proxy import build_v2


@pytest.mark.parametrize(
    ("data", "complete"),
    [
        (b"SSH-2.0-OpenSSH_9.2p1\r\n", True),
        (b"SSH-2.0-OpenSSH_9.2p1", False),
        (b"welcome\r\n", True),  # RFC 4253 s4.2: lines before the version; the SSH client judges them
        (b"SSH-2.0-" + b"x" * 247, True),  # longer than any identification string
        (b"SSH-2.0-" + b"x" * 246, False),
        (b"", False),
    ],
)
def test_banner_line(data: bytes, complete: bool) -> None:
    assert ssh_banner_complete(data) is complete
    # fed one byte at a time, it completes exactly at its newline
    assert any(ssh_banner_complete(data[:n]) for n in range(len(data) + 1)) is complete


async def until(condition: Callable[[], object], timeout: float = 5) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def tcp_pair() -> tuple[socket.socket, socket.socket]:
    loop = asyncio.get_running_loop()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        device = socket.socket()
        device.setblocking(False)
        await loop.sock_connect(device, listener.getsockname())
        ours, _ = await loop.sock_accept(listener)
    ours.setblocking(False)
    return ours, device


def test_the_banner_arrives_a_byte_at_a_time_and_is_left_for_the_ssh_client() -> None:
    async def run() -> bytes:
        ours, device = await tcp_pair()
        pending = PendingConnection(ours, ("127.0.0.1", 1), tls=False)
        waiting = asyncio.ensure_future(pending.ssh_banner(5))
        for byte in b"SSH-2.0-dev\r\n":
            assert not waiting.done()
            device.send(bytes([byte]))
            await asyncio.sleep(0.01)
        await asyncio.wait_for(waiting, 5)
        assert pending.has_sent_first_bytes()
        data = ours.recv(100)  # nothing consumed
        ours.close()
        device.close()
        return data

    assert asyncio.run(run()) == b"SSH-2.0-dev\r\n"


def test_a_slow_loris_is_ended_at_the_banner_timeout() -> None:
    async def run() -> tuple[str, float]:
        ours, device = await tcp_pair()
        pending = PendingConnection(ours, ("127.0.0.1", 1), tls=False)
        device.send(b"SSH-2.0-")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PreauthEnded) as info:
            await pending.ssh_banner(0.3)
        ours.close()
        device.close()
        return info.value.reason, loop.time() - started

    reason, elapsed = asyncio.run(run())
    assert reason == "banner-timeout"
    assert 0.3 <= elapsed < 2


def test_a_silent_connection_can_be_dropped_while_it_waits() -> None:
    async def run() -> str:
        ours, device = await tcp_pair()
        pending = PendingConnection(ours, ("127.0.0.1", 1), tls=False)
        waiting = asyncio.ensure_future(pending.ssh_banner(30))
        await until(lambda: pending._waiter is not None)  # waiting for the device
        pending.end("dropped")
        with pytest.raises(PreauthEnded) as info:
            await asyncio.wait_for(waiting, 5)
        assert device.recv(10) == b""  # the device sees the connection end
        ours.close()
        device.close()
        return info.value.reason

    assert asyncio.run(run()) == "dropped"


def test_a_peer_that_closes_without_a_byte_ended_early() -> None:
    async def run() -> str:
        ours, device = await tcp_pair()
        pending = PendingConnection(ours, ("127.0.0.1", 1), tls=False)
        device.close()
        with pytest.raises(PreauthEnded) as info:
            await asyncio.wait_for(pending.ssh_banner(5), 5)
        ours.close()
        return info.value.reason

    assert asyncio.run(run()) == "closed-early"


def test_a_partial_banner_then_close_is_left_for_the_ssh_client_to_report() -> None:
    async def run() -> None:
        ours, device = await tcp_pair()
        pending = PendingConnection(ours, ("127.0.0.1", 1), tls=False)
        device.send(b"SSH-2.0-trunc")
        device.close()
        await asyncio.wait_for(pending.ssh_banner(5), 5)
        assert ours.recv(100) == b"SSH-2.0-trunc"
        ours.close()

    asyncio.run(run())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO byte counts are Linux only")
def test_tls_first_bytes_are_counted_by_the_kernel() -> None:
    async def run() -> None:
        ours, device = await tcp_pair()
        pending = PendingConnection(ours, ("127.0.0.1", 1), tls=True)
        assert bytes_received(ours) == 0
        device.send(b"\x16\x03\x03\x00\x2a" + b"\x02" * 10)
        await until(lambda: bytes_received(ours) == 15)
        assert not pending.has_sent_first_bytes()  # not a whole ServerHello yet
        pending.watch_first_bytes(0.1)
        await until(lambda: pending.ended == "banner-timeout")
        ours.close()
        device.close()
        ours, device = await tcp_pair()
        answered = PendingConnection(ours, ("127.0.0.1", 2), tls=True)
        device.send(b"\x16" * 47)  # as much as the smallest ServerHello record
        await until(answered.has_sent_first_bytes)
        ours.close()
        device.close()

    asyncio.run(run())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO byte counts are Linux only")
def test_a_proxy_header_read_before_does_not_count_as_the_tls_devices_first_bytes() -> None:
    async def run() -> None:
        ours, balancer = await tcp_pair()
        header = build_v2(("2001:db8::7", 40000), ("2001:db8::1", 4335))  # 52 bytes: more than a ServerHello
        balancer.send(header)
        await until(lambda: bytes_received(ours) == len(header))
        assert ours.recv(len(header)) == header  # the listener consumed it
        pending = PendingConnection(ours, ("2001:db8::7", 40000), tls=True)
        assert not pending.has_sent_first_bytes()  # failed before the fix: 52 >= 47
        balancer.send(b"\x16" * 47)
        await until(pending.has_sent_first_bytes)
        ours.close()
        balancer.close()

    asyncio.run(run())
