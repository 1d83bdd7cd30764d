"""NETCONF sessions the server greets itself and holds ready (issue 15 items 2
and 3), against real peers: yuma123 netconfd behind OpenSSH sshd, and the same
sshd with a ``netconf`` subsystem that never answers (a device that accepts a
channel and sends no hello), or answers one session at a time."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from callhome_transport import CallHomeServer, HelloTimeoutError, Inventory, TransportError, gateway
from callhome_transport.gateway.client import GatewayClient

from .netconfd_peer import (
    NACM_GROUP_FILTER,
    InThread,
    NetconfdDevice,
    ReverseRelay,
    nacm_group_config,
)
from .test_gateway import GatewayProcess

pytestmark = pytest.mark.integration

BASE_10_ONLY_HELLO = (
    b'<hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><capabilities>'
    b"<capability>urn:ietf:params:netconf:base:1.0</capability></capabilities></hello>]]>]]>"
)
NEVER_ANSWERS = "exec cat >/dev/null\n"  # accepts the channel, reads, never writes
# the real subsystem for one session at a time; any other session is read and never answered
ONE_AT_A_TIME = "flock -n {dir}/lock {subsystem} || exec cat >/dev/null\n"


def groups(m: object) -> list[str]:
    xml = m.get_config(source="running", filter=NACM_GROUP_FILTER).xml  # type: ignore[attr-defined]
    return [part.split("</name>")[0] for part in xml.split("<name>")[1:]]


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_held_session_is_lent_with_its_hello_and_replaced(netconfd: NetconfdDevice) -> None:
    """hold_session: always: a greeted session is ready right after the call;
    netconf() lends it (ncclient is told the device's hello) and another one is
    prepared in the background."""
    entry = {**netconfd.inventory_entry(), "hold_session": "always"}
    inventory = Inventory.from_dict({"devices": {"SN-0001": entry}})
    with (
        CallHomeServer(inventory, listen_address="127.0.0.1", listen_port=0) as server,
        ReverseRelay(listener_port=server.listen_port, device_port=netconfd.ssh_port),
    ):
        server.wait_for("SN-0001", timeout=15)
        wait_until(lambda: server.session_held("SN-0001"))
        with server.netconf("SN-0001", timeout=15, rpc_timeout=10) as first:
            assert first.session_id is not None
            assert ":candidate" in " ".join(first.server_capabilities)
            wait_until(lambda: server.session_held("SN-0001"))  # the next one, prepared meanwhile
            with server.netconf("SN-0001", timeout=15, rpc_timeout=10) as second:
                assert second.session_id != first.session_id
                second.edit_config(target="candidate", config=nacm_group_config("held-ops", "erin"))
                second.commit()
            assert "held-ops" in groups(first)  # two sessions at once, both answered


def test_auto_keeps_a_session_ready_while_the_device_is_used(
    netconfd: NetconfdDevice, caplog: pytest.LogCaptureFixture
) -> None:
    """hold_session: auto on a device that needs nothing held (OpenSSH +
    netconfd): nothing is greeted before the first caller; while the device
    is used, the next caller gets a session greeted in the background; one
    unused for hold_idle seconds is closed on the device."""
    inventory = Inventory.from_dict({"devices": {"SN-0001": netconfd.inventory_entry()}})
    with (
        caplog.at_level(logging.DEBUG, logger="callhome_transport"),
        CallHomeServer(inventory, listen_address="127.0.0.1", listen_port=0, hold_idle=1.5) as server,
        ReverseRelay(listener_port=server.listen_port, device_port=netconfd.ssh_port),
    ):
        server.wait_for("SN-0001", timeout=15)
        time.sleep(0.3)
        assert not server.session_held("SN-0001")  # nothing before the first caller
        with server.netconf("SN-0001", timeout=15, rpc_timeout=10) as first:
            wait_until(lambda: server.session_held("SN-0001"))  # greeted for the next caller
            assert len(sessions_on_device(first)) == 2  # this one and the one kept ready
            with server.netconf("SN-0001", timeout=15, rpc_timeout=10) as second:
                assert second.session_id != first.session_id
                assert isinstance(groups(second), list)
        wait_until(lambda: server.session_held("SN-0001"))  # greeted again after the last one closed
        wait_until(lambda: not server.session_held("SN-0001"), timeout=10)  # then unused for 1.5 s: closed
        closed = [r.getMessage() for r in caplog.records if "kept ready: unused for" in r.getMessage()]
        assert len(closed) == 1, closed
        closed_id = closed[0].split("closing NETCONF session ")[1].split()[0]
        with server.netconf("SN-0001", timeout=15, rpc_timeout=10) as third:
            assert closed_id not in sessions_on_device(third)  # the device freed it too
            assert third.session_id != closed_id


def sessions_on_device(m: object) -> list[str]:
    """The ids of the NETCONF sessions netconfd has open (ietf-netconf-monitoring)."""
    xml = m.get(filter=("subtree", SESSIONS_FILTER)).xml  # type: ignore[attr-defined]
    return [part.split("</session-id>")[0] for part in xml.split("<session-id>")[1:]]


SESSIONS_FILTER = (
    '<netconf-state xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"><sessions/></netconf-state>'
)


def test_gateway_replays_the_hello_and_refuses_a_client_that_cannot_use_the_framing(
    tmp_path: Path, netconfd: NetconfdDevice
) -> None:
    gw = GatewayProcess(tmp_path, {"devices": {"R1": {**netconfd.inventory_entry(), "hold_session": "always"}}}).start()
    try:
        with ReverseRelay(listener_port=gw.ssh_port, device_port=netconfd.ssh_port):
            client = GatewayClient(gw.run_dir)
            wait_until(lambda: client.device("R1").session_held)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
                raw.settimeout(10)
                raw.connect(str(gw.run_dir / "devices" / "R1" / "netconf.sock"))
                hello = b""
                while not hello.endswith(b"]]>]]>"):
                    hello += raw.recv(65536)
                assert b"<session-id>" in hello and b"urn:ietf:params:netconf:base:1.1" in hello
                raw.sendall(BASE_10_ONLY_HELLO)  # the device and the gateway agreed on base:1.1
                assert raw.recv(4096) == b""
            refused = (
                "device=R1 event=local-session-failed reason=local NETCONF client of device R1 refused: "
                "the local client offers urn:ietf:params:netconf:base:1.0, but the session with the device "
                "uses base:1.1 framing"
            )
            wait_until(lambda: refused in gw.log.read_text())  # logged as the connection closes
            assert "base:1.1 framing" in str(client.device("R1").last_session_error)
            # clients that offer base:1.1 work: the fast path and stock ncclient
            with gateway.connect("R1", gw.run_dir, timeout=10) as m:
                assert isinstance(groups(m), list)
            with gw.netconf("R1") as m:
                assert isinstance(groups(m), list)
    finally:
        assert gw.stop() == 0


def test_device_that_never_answers_the_hello(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A device that accepts the channel and sends no hello: the caller gets a
    clear error naming the device, logged once (issue 15 item 3)."""
    with NetconfdDevice(tmp_path, name="mute", subsystem_wrapper=NEVER_ANSWERS) as device:
        inventory = Inventory.from_dict({"devices": {"SN-0001": device.inventory_entry()}})
        with (
            caplog.at_level(logging.INFO, logger="callhome_transport"),
            CallHomeServer(inventory, listen_address="127.0.0.1", listen_port=0, hello_timeout=1.5) as server,
            ReverseRelay(listener_port=server.listen_port, device_port=device.ssh_port),
        ):
            with pytest.raises(HelloTimeoutError) as info:
                server.netconf("SN-0001", timeout=15)
            assert info.value.device == "SN-0001" and info.value.timeout == 1.5
            assert "device SN-0001 accepted a NETCONF session but sent no hello within 1.5 s" in str(info.value)
        gw = GatewayProcess(tmp_path, {"devices": {"R1": device.inventory_entry()}}, hello_timeout=1.5).start()
        try:
            with ReverseRelay(listener_port=gw.ssh_port, device_port=device.ssh_port):
                with pytest.raises(TransportError) as failed:
                    GatewayClient(gw.run_dir).netconf_manager("R1", wait=15, timeout=10)
                assert "device R1 accepted a NETCONF session but sent no hello within 1.5 s" in str(failed.value)
                log = gw.log.read_text()
                assert log.count("sent no hello") == 1, log
                assert "local-session-opened" not in log
        finally:
            assert gw.stop() == 0


def test_second_session_never_answered_makes_a_one_session_device(tmp_path: Path) -> None:
    """A device that serves one session and accepts a second channel without
    ever answering it: the gateway learns it as one-session-at-a-time and
    queues the second client until the first session ends (issue 15 item 3)."""
    with NetconfdDevice(tmp_path, name="single", subsystem_wrapper=ONE_AT_A_TIME) as device:
        gw = GatewayProcess(tmp_path, {"devices": {"R1": device.inventory_entry()}}, hello_timeout=1.5).start()
        try:
            with ReverseRelay(listener_port=gw.ssh_port, device_port=device.ssh_port):
                client = GatewayClient(gw.run_dir)
                first = client.netconf_manager("R1", wait=15, timeout=10)
                assert isinstance(groups(first), list)
                second = InThread(client.netconf_manager, "R1", timeout=10)
                wait_until(lambda: client.device("R1").one_session_at_a_time)
                first.close_session()
                m = second.outcome(15)
                assert not isinstance(m, BaseException), m
                with m:
                    assert isinstance(groups(m), list)
            log = gw.log.read_text()
            assert log.count("one session at a time from now on") == 1, log
            assert "sent no hello within 1.5 s" in log
            assert log.count("event=local-session-opened") == 2, log
            assert "local-session-failed" not in log
        finally:
            assert gw.stop() == 0
