"""Bounded memory against a device that sends large replies (the scripted
NETCONF server behind real OpenSSH sshd and real stunnel): the gateway relay
keeps to the SSH window / TLS read buffer while a local client reads slowly,
and the library refuses a reply over ``max_message_size`` or one that is not
UTF-8 with a typed error naming the device."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ncclient.operations.errors import TimeoutExpiredError

from callhome_transport import CallHomeServer, Inventory
from callhome_transport.errors import MalformedMessageError, MessageTooLargeError

from ..pki import DevicePKI
from .netconfd_peer import ReverseRelay, peers_available
from .stream_peer import (
    StreamingDevice,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    slow_read_reply,
    stream_filter,
    streamer_command,
)
from .stunnel_peer import StunnelDevice, stunnel_available
from .test_gateway import GatewayProcess

pytestmark = pytest.mark.integration

MiB = 1 << 20
REPLY = 128 * MiB
# What the gateway may grow by while relaying REPLY to a slow reader: about
# two SSH windows (2 MiB each) and the local socket's buffers, with room for
# the allocator.  Unbounded, it grew by nearly the whole reply.
GROWTH_BOUND = 32 * MiB


@pytest.fixture(scope="module")
def streaming(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamingDevice]:
    reason = peers_available()
    if reason:
        pytest.skip(reason)
    with StreamingDevice(tmp_path_factory.mktemp("stream")) as device:
        yield device


def _wait_sessions_closed(gw: GatewayProcess, device: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while gw.get(f"/devices/{device}")[1]["local_sessions"]:  # type: ignore[index]
        assert time.monotonic() < deadline, "the local session did not end"
        time.sleep(0.05)


def _slow_reader_keeps_gateway_bounded(gw: GatewayProcess, device: str) -> None:
    assert gw.proc is not None
    assert gw.get(f"/devices/{device}/wait?timeout=20")[0] == 200
    baseline = rss_bytes(gw.proc.pid)
    reset_peak_rss(gw.proc.pid)
    assert slow_read_reply(gw.run_dir / "devices" / device / "netconf.sock", REPLY) >= REPLY
    _wait_sessions_closed(gw, device)
    peak, after = peak_rss_bytes(gw.proc.pid), rss_bytes(gw.proc.pid)
    growth = f"baseline {baseline / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB, after {after / MiB:.0f} MiB"
    assert peak - baseline < GROWTH_BOUND, growth
    assert after - baseline < GROWTH_BOUND, growth


def test_gateway_relays_a_large_ssh_reply_to_a_slow_reader_in_bounded_memory(
    tmp_path: Path, streaming: StreamingDevice
) -> None:
    # failed before the fix: peak and after were about baseline + the whole reply
    gw = GatewayProcess(tmp_path, {"devices": {"S1": streaming.inventory_entry()}}).start()
    try:
        with ReverseRelay(listener_port=gw.ssh_port, device_port=streaming.ssh_port):
            _slow_reader_keeps_gateway_bounded(gw, "S1")
    finally:
        assert gw.stop() == 0


def test_gateway_relays_a_large_tls_reply_to_a_slow_reader_in_bounded_memory(tmp_path: Path) -> None:
    if stunnel_available():
        pytest.skip(stunnel_available())
    pki = DevicePKI(tmp_path / "pki")
    cert, key = pki.device_files("SN-0003")
    command = streamer_command(tmp_path / "streamer")
    tls = {"issuers": [str(pki.root_a_pem)], "identifier": "SN-0003"}
    with StunnelDevice(tmp_path, None, certfile=cert, keyfile=key, client_ca=pki.manager_ca_pem, command=command) as d:
        gw = GatewayProcess(
            tmp_path,
            {"devices": {"SN-0003": {"transport": "tls", "tls": tls}}},
            tls={"certfile": str(pki.manager_cert), "keyfile": str(pki.manager_key)},
        ).start()
        try:
            with ReverseRelay(listener_port=gw.tls_port, device_port=d.port):
                _slow_reader_keeps_gateway_bounded(gw, "SN-0003")
        finally:
            assert gw.stop() == 0


@pytest.fixture
def server(streaming: StreamingDevice) -> Iterator[CallHomeServer]:
    inventory = Inventory.from_dict({"devices": {"S1": streaming.inventory_entry()}})
    with (
        CallHomeServer(inventory, listen_address="127.0.0.1", listen_port=0) as srv,
        ReverseRelay(listener_port=srv.listen_port, device_port=streaming.ssh_port),
    ):
        yield srv


def test_reply_over_max_message_size_is_a_typed_error_and_closes_the_session(server: CallHomeServer) -> None:
    # failed before the fix: no limit, the 8 MiB reply was buffered and returned
    m = server.netconf("S1", timeout=15, max_message_size=MiB)
    with pytest.raises(MessageTooLargeError) as caught:
        m.get(filter=stream_filter(8 * MiB))
    assert caught.value.device == "S1"
    assert caught.value.limit == MiB
    assert "S1" in str(caught.value) and "1 MiB" in str(caught.value)
    assert not m.connected
    with pytest.raises(MessageTooLargeError):  # later RPCs say why, too
        m.get(filter=stream_filter(100))
    # the device stays connected: a new session works, and a reply under its limit passes
    with server.netconf("S1", timeout=15, max_message_size=MiB) as fresh:
        assert len(fresh.get(filter=stream_filter(MiB // 2)).xml) > MiB // 3


def test_late_reply_is_cut_at_the_limit_and_its_memory_released(server: CallHomeServer) -> None:
    # the reported case: the RPC timed out, the reply kept arriving and was
    # still held after close.  Failed before the fix: no limit, session open.
    limit = 64 * MiB
    m = server.netconf("S1", timeout=15, rpc_timeout=0.001, max_message_size=limit)
    baseline = rss_bytes(os.getpid())
    reset_peak_rss(os.getpid())
    with pytest.raises(TimeoutExpiredError):  # 64 MiB take far longer than 1 ms to arrive
        m.get(filter=stream_filter(2 * limit))
    # the session thread keeps reading the late reply; the limit ends the session
    deadline = time.monotonic() + 30
    while m.connected:
        assert time.monotonic() < deadline, "the session was not closed by the limit"
        time.sleep(0.05)
    with pytest.raises(MessageTooLargeError) as caught:
        m.close_session()
    assert caught.value.limit == limit
    peak, after = peak_rss_bytes(os.getpid()), rss_bytes(os.getpid())
    figures = f"baseline {baseline / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB, after {after / MiB:.0f} MiB"
    assert peak - baseline > limit * 0.9, figures  # the message did grow to the limit
    assert after - baseline < limit / 3, figures  # and was released (the error's traceback keeps no buffer)


def test_reply_that_is_not_utf8_is_a_typed_error_naming_the_device(server: CallHomeServer) -> None:
    # failed before the fix: a bare UnicodeDecodeError in ncclient's session thread, the RPC timed out
    m = server.netconf("S1", timeout=15, rpc_timeout=10)
    with pytest.raises(MalformedMessageError) as caught:
        m.get(filter=stream_filter(4096, invalid_utf8=True))
    assert caught.value.device == "S1"
    assert "not UTF-8" in caught.value.reason and "0xFF" in caught.value.reason
    assert not m.connected
