"""The splice between the manager's connection and the local server's, on
socket pairs (our own seam: no peer here; the real ones are in
tests/integration/test_agent.py)."""

from __future__ import annotations

import asyncio
import socket

from callhome_transport.agent.model import TcpKeepalives
from callhome_transport.agent.runner import Splice, set_keepalives


def pairs() -> tuple[socket.socket, socket.socket, socket.socket, socket.socket]:
    manager_far, manager_near = socket.socketpair()
    local_near, local_far = socket.socketpair()
    for s in (manager_far, manager_near, local_near, local_far):
        s.setblocking(False)
    return manager_far, manager_near, local_near, local_far


async def recv_exactly(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        assert chunk, "closed early"
        data += chunk
    return data


async def test_bytes_both_ways_counted_and_half_closes_passed_on() -> None:
    loop = asyncio.get_running_loop()
    manager_far, manager_near, local_near, local_far = pairs()
    moved: list[int] = []
    splice = Splice(manager_near, local_near, lambda: moved.append(1))
    running = asyncio.create_task(splice.run())
    await loop.sock_sendall(local_far, b"SSH-2.0-OpenSSH_9.2\r\n")  # the server speaks first
    assert await recv_exactly(manager_far, 21) == b"SSH-2.0-OpenSSH_9.2\r\n"
    big = bytes(range(256)) * 1024
    await loop.sock_sendall(manager_far, big)
    assert await recv_exactly(local_far, len(big)) == big
    manager_far.shutdown(socket.SHUT_WR)  # the manager is done sending
    assert await loop.sock_recv(local_far, 10) == b""  # passed on to the server
    await loop.sock_sendall(local_far, b"bye")  # the other direction still flows
    assert await recv_exactly(manager_far, 3) == b"bye"
    local_far.close()
    result = await asyncio.wait_for(running, 5)
    assert result.graceful
    assert result.reason == "the manager closed"
    assert (result.to_manager, result.from_manager) == (24, len(big))
    assert moved
    manager_far.close()


async def test_close_hangs_up_both_sides_gracefully() -> None:
    loop = asyncio.get_running_loop()
    manager_far, manager_near, local_near, local_far = pairs()
    splice = Splice(manager_near, local_near)
    running = asyncio.create_task(splice.run())
    await loop.sock_sendall(manager_far, b"x")
    assert await recv_exactly(local_far, 1) == b"x"
    splice.close("idle for 30 s")
    result = await asyncio.wait_for(running, 5)
    assert (result.graceful, result.reason) == (True, "hung up: idle for 30 s")
    assert await loop.sock_recv(manager_far, 10) == b""
    assert await loop.sock_recv(local_far, 10) == b""
    manager_far.close()
    local_far.close()


async def test_a_reset_is_an_ungraceful_end() -> None:
    # a reset needs TCP (socketpair is AF_UNIX): the manager's leg on loopback
    with socket.create_server(("127.0.0.1", 0)) as listener:
        manager_far = socket.create_connection(listener.getsockname())
        manager_near, _ = listener.accept()
    manager_near.setblocking(False)
    local_near, local_far = socket.socketpair()
    local_near.setblocking(False)
    running = asyncio.create_task(Splice(manager_near, local_near).run())
    manager_far.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    manager_far.close()  # SO_LINGER 0: RST
    result = await asyncio.wait_for(running, 5)
    assert not result.graceful
    assert result.reason == "connection error: Connection reset by peer"
    local_far.close()


def test_keepalives_are_set_as_configured() -> None:
    with socket.socket() as sock:
        set_keepalives(sock, TcpKeepalives(idle_time=15, max_probes=3, probe_interval=5))
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 15
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
    with socket.socket() as sock:
        set_keepalives(sock, None)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
