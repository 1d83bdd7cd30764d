"""Fixtures that start real peers on loopback and stop them by PID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from callhome_transport.engine import EventLoopThread

from .cluster_peers import RedisServer, redis_available
from .netconfd_peer import NetconfdDevice, free_port, peers_available


@pytest.fixture(scope="module")
def netconfd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetconfdDevice]:
    """One netconfd + sshd device for a test module."""
    reason = peers_available()
    if reason:
        pytest.skip(reason)
    with NetconfdDevice(tmp_path_factory.mktemp("peer"), name="shared") as device:
        yield device


@pytest.fixture
def loop() -> Iterator[EventLoopThread]:
    """An event loop in a thread, for simulated devices (``loop.submit(device.call_home(...))``)."""
    thread = EventLoopThread(name="devices")
    yield thread
    thread.stop()


@pytest.fixture
def make_netconfd(tmp_path: Path) -> Iterator[object]:
    """Factory for extra devices, stopped at the end of the test."""
    reason = peers_available()
    if reason:
        pytest.skip(reason)
    started: list[NetconfdDevice] = []

    def make(**kwargs: object) -> NetconfdDevice:
        device = NetconfdDevice(tmp_path, name=f"d{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(device)
        return device.start()

    yield make
    for device in started:
        device.stop()


@pytest.fixture(scope="session")
def ln2_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The libnetconf2 call-home device, compiled once per run."""
    from .libnetconf2_peer import LN2_SOURCE, build_ln2, ln2_available

    reason = ln2_available()
    if reason:
        pytest.skip(reason)
    return build_ln2(LN2_SOURCE, tmp_path_factory.mktemp("ln2-build"))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server on a free loopback port, stopped at the end of the test."""
    reason = redis_available()
    if reason:
        pytest.skip(reason)
    server = RedisServer(tmp_path, host="127.0.0.1", port=free_port())
    server.start()
    yield server
    server.stop()
