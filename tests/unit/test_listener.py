"""Listener edge cases: dual stack, port 0, address reuse, failing handlers."""

from __future__ import annotations

import asyncio
import socket

import pytest

from callhome_transport import ListenerError
from callhome_transport.addresses import PeerAddress, format_peer
from callhome_transport.transports.listener import Listener


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


def test_format_peer() -> None:
    assert format_peer(("::1", 22)) == "[::1]:22"
    assert format_peer(("127.0.0.1", 22)) == "127.0.0.1:22"
    assert format_peer(None) == "-"


def test_port_out_of_range() -> None:
    async def handler(sock: socket.socket, peer: PeerAddress) -> None: ...

    with pytest.raises(ValueError, match=r"0\.\.65535"):
        Listener(handler, listen_port=70000)


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")
async def test_ipv4_and_ipv6_share_one_port_and_record_peers() -> None:
    seen: list[PeerAddress] = []
    got = asyncio.Event()

    async def handler(sock: socket.socket, peer: PeerAddress) -> None:
        seen.append(peer)
        sock.close()
        if len(seen) == 2:
            got.set()

    listener = Listener(handler, listen_address=["127.0.0.1", "::1"], listen_port=0)
    await listener.start()
    try:
        port = listener.listen_port
        assert {a.listen_port for a in listener.addresses} == {port}
        for host in ("127.0.0.1", "::1"):
            _, writer = await _connect(host, port)
            writer.close()
        await asyncio.wait_for(got.wait(), 5)
    finally:
        await listener.close()
    assert sorted(p[0] for p in seen) == ["127.0.0.1", "::1"]


async def test_handler_failure_does_not_stop_the_listener(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0
    second = asyncio.Event()

    async def handler(sock: socket.socket, peer: PeerAddress) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("handler exploded")
        sock.close()
        second.set()

    listener = Listener(handler, listen_address="127.0.0.1", listen_port=0)
    await listener.start()
    try:
        for _ in range(2):
            _, writer = await _connect("127.0.0.1", listener.listen_port)
            writer.close()
            await asyncio.sleep(0.05)
        await asyncio.wait_for(second.wait(), 5)
    finally:
        await listener.close()
    assert "handler exploded" in caplog.text


async def test_rebind_same_port_right_after_close_while_peer_in_time_wait() -> None:
    async def handler(sock: socket.socket, peer: PeerAddress) -> None:
        sock.close()  # we close first: our side enters TIME_WAIT

    first = Listener(handler, listen_address="127.0.0.1", listen_port=0)
    await first.start()
    port = first.listen_port
    reader, writer = await _connect("127.0.0.1", port)
    await reader.read()  # wait for our close
    writer.close()
    await first.close()
    second = Listener(handler, listen_address="127.0.0.1", listen_port=port)
    await second.start()  # SO_REUSEADDR: no EADDRINUSE
    await second.close()


async def test_port_in_use_is_a_typed_error() -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]

    async def handler(sock: socket.socket, peer: PeerAddress) -> None: ...

    try:
        with pytest.raises(ListenerError) as info:
            await Listener(handler, listen_address="127.0.0.1", listen_port=port).start()
        assert info.value.listen_port == port
        assert "in use" in str(info.value)
    finally:
        blocker.close()


async def test_close_cancels_running_handlers() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(sock: socket.socket, peer: PeerAddress) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    listener = Listener(handler, listen_address="127.0.0.1", listen_port=0)
    await listener.start()
    _, writer = await _connect("127.0.0.1", listener.listen_port)
    await asyncio.wait_for(started.wait(), 5)
    await listener.close()
    assert cancelled.is_set()
    writer.close()
