"""Refusing connections near the open-file limit (callhome_transport.descriptors)
and the listener closing them before any work."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket

import pytest

from callhome_transport.addresses import PeerAddress
from callhome_transport.descriptors import (
    RESERVE_MIN,
    DescriptorGuard,
    OpenFileLimit,
    default_reserve,
    log_capacity,
    open_descriptors,
    raise_open_file_limit,
)
from callhome_transport.transports.listener import Listener


def test_reserve_is_one_percent_of_the_limit_at_least_the_minimum() -> None:
    assert default_reserve(1024) == RESERVE_MIN
    assert default_reserve(20000) == 200


def test_guard_admits_below_the_reserve_and_warns_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    guard = DescriptorGuard(limit=1000, reserve=100, clock=lambda: now[0])
    counted: list[int] = []
    guard.on_refused.append(lambda: counted.append(1))
    assert guard.admit(899)
    with caplog.at_level(logging.WARNING, logger="callhome_transport.descriptors"):
        assert not guard.admit(900)
        now[0] = 59.0
        assert not guard.admit(950)
        now[0] = 60.0
        assert not guard.admit(999)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings  # one a minute, however many refusals
    assert "descriptor 900 is within 100 of the open-file limit 1000 (1 refused" in warnings[0]
    assert "(2 refused since the last warning)" in warnings[1]
    assert guard.refused == 3 and len(counted) == 3


def test_raising_the_soft_limit_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and hard > 256:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
            limit = raise_open_file_limit()
            assert limit == OpenFileLimit(soft=hard, hard=hard, before=256)
            assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        else:
            assert raise_open_file_limit().soft >= soft
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_capacity_is_logged_and_a_small_limit_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    open_now = open_descriptors()
    if open_now is None:
        pytest.skip("no /proc/self/fd here")
    guard = DescriptorGuard(limit=open_now + 164, reserve=64)
    limit = OpenFileLimit(soft=open_now + 164, hard=open_now + 164, before=1024)
    with caplog.at_level(logging.INFO, logger="callhome_transport.descriptors"):
        room = log_capacity(limit, inventory_devices=500, guard=guard)
    assert room is not None and 95 <= room <= 105  # other threads may open or close a few meanwhile
    assert f"room for {room} connected devices" in caplog.text
    assert "the inventory has 500" in caplog.text  # the WARNING: fewer than the inventory


async def test_listener_closes_a_connection_accepted_near_the_limit_before_its_handler() -> None:
    handled: list[PeerAddress] = []

    async def handler(sock: socket.socket, peer: PeerAddress) -> None:
        handled.append(peer)
        sock.close()

    full = DescriptorGuard(limit=0, reserve=0)  # every descriptor is past this limit
    listener = Listener(handler, listen_address="127.0.0.1", listen_port=0, fd_guard=full)
    await listener.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.listen_port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once, nothing sent
        writer.close()
    finally:
        await listener.close()
    assert handled == [] and full.refused == 1
