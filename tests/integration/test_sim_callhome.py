"""Call home end to end with the embedded simulated device: a real asyncssh SSH
server calling a real listener over loopback (no third-party packages).

The third-party peers (netconfd behind OpenSSH sshd) are in test_netconfd.py.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gc
import logging
import pickle
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

import callhome_transport
from callhome_transport import (
    AdmissionConfig,
    AuthenticationFailedError,
    CallHomeServer,
    Device,
    DeviceConnected,
    DeviceNotConnectedError,
    HostKeyMismatchError,
    HostKeyPin,
    Inventory,
    SSHClientConfig,
    SSHCredentials,
    UnsupportedOptionError,
)
from callhome_transport.engine import EventLoopThread
from callhome_transport.identity.inventory import HoldPolicy
from callhome_transport.sim import SimulatedDevice

from .netconfd_peer import wait_rejected, wait_until

SYS_FILTER = ("subtree", '<system xmlns="urn:ietf:params:xml:ns:yang:ietf-system"/>')


@pytest.fixture
def device_loop() -> Iterator[EventLoopThread]:
    loop = EventLoopThread(name="devices")
    yield loop
    loop.stop()


def inventory_for(*sims: SimulatedDevice, password: str = "pw") -> Inventory:
    return Inventory(
        [
            Device(
                name=sim.name,
                host_keys=(HostKeyPin.parse(sim.host_key_line),),
                credentials=SSHCredentials(username=sim.username, password=password),
            )
            for sim in sims
        ]
    )


def call(
    device_loop: EventLoopThread, sim: SimulatedDevice, port: int, host: str = "127.0.0.1"
) -> concurrent.futures.Future[object]:
    return device_loop.submit(sim.call_home(host, port))


def hostname(m: object) -> str:
    xml = m.get_config(source="running", filter=SYS_FILTER).xml  # type: ignore[attr-defined]
    return xml.split("<hostname>")[1].split("</hostname>")[0]


def test_deferral_waits_for_the_device_then_serves_it(device_loop: EventLoopThread) -> None:
    sim = SimulatedDevice("SN-0001", password="pw")
    with CallHomeServer(inventory_for(sim), listen_address="127.0.0.1", listen_port=0) as server:
        threading.Timer(0.5, call, (device_loop, sim, server.listen_port)).start()
        started = time.monotonic()
        with server.netconf("SN-0001", timeout=10) as m:  # asked before the device called
            waited = time.monotonic() - started
            assert hostname(m) == "sn-0001"
            first = m.session_id
        assert 0.4 < waited < 10
        # the SSH connection outlives the Manager: a second session on a new
        # channel (greeted while the first was in use: hold_session auto)
        with server.netconf("SN-0001", timeout=1) as m:
            assert hostname(m) == "sn-0001"
            assert m.session_id != first
        assert sim.sessions_served >= 2


def test_device_not_connected_after_timeout_and_unknown_name() -> None:
    sim = SimulatedDevice("SN-0001")
    with CallHomeServer(inventory_for(sim), listen_address="127.0.0.1", listen_port=0) as server:
        started = time.monotonic()
        with pytest.raises(DeviceNotConnectedError) as info:
            server.netconf("SN-0001", timeout=0.3)
        assert 0.25 < time.monotonic() - started < 3
        assert info.value.device == "SN-0001"
        assert pickle.loads(pickle.dumps(info.value)).timeout == 0.3
        with pytest.raises(KeyError, match="not in the inventory"):
            server.netconf("NOPE", timeout=0.1)


def test_unknown_host_key_is_refused_before_any_authentication(
    device_loop: EventLoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    known = SimulatedDevice("SN-0001", password="pw")
    stranger = SimulatedDevice("SN-6666", password="pw")
    with (
        caplog.at_level(logging.WARNING, logger="callhome_transport"),
        CallHomeServer(inventory_for(known), listen_address="127.0.0.1", listen_port=0) as server,
    ):
        # the device sees our disconnect ("Host key is not trusted") or, if we
        # close first, a broken pipe
        with pytest.raises((asyncssh.Error, OSError)):
            call(device_loop, stranger, server.listen_port).result(10)
        assert stranger.auth_attempts == 0  # RFC 8071 C5/C7: no credential sent
        # the device may see the disconnect before the listener has recorded why
        deadline = time.monotonic() + 5
        while not server.rejected() and time.monotonic() < deadline:
            time.sleep(0.02)
        [rejected] = wait_rejected(server)
        assert rejected.reason == "unknown-device"
        assert rejected.fingerprint == stranger.fingerprint
        assert rejected.peer_address[0] == "127.0.0.1"
        assert stranger.fingerprint in caplog.text
        assert "rejected unknown device" in caplog.text
        # the listener still serves the known device
        call(device_loop, known, server.listen_port).result(10)
        with server.netconf("SN-0001", timeout=5) as m:
            assert hostname(m) == "sn-0001"


def test_a_connection_logs_one_info_line(device_loop: EventLoopThread, caplog: pytest.LogCaptureFixture) -> None:
    """One INFO line per connection, with who, from where, which identity and
    how long the handshake took; its steps (identified, authenticated) are
    DEBUG: a storm formats and writes thousands of lines on the event loop
    (failed before: two lines, identified and authenticated, and no
    handshake time)."""
    sim = SimulatedDevice("SN-0001", password="pw")
    with (
        caplog.at_level(logging.INFO, logger="callhome_transport"),
        CallHomeServer(inventory_for(sim), listen_address="127.0.0.1", listen_port=0) as server,
    ):
        call(device_loop, sim, server.listen_port).result(10)
        server.wait_for("SN-0001", 5)
        wait_until(lambda: "event=connected" in caplog.text)
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "SN-0001" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("device=SN-0001 peer=127.0.0.1:")
    assert f"transport=ssh event=connected identity={sim.fingerprint} handshake=" in lines[0]


def test_wrong_password_is_auth_failed_and_logged_without_the_secret(
    device_loop: EventLoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    sim = SimulatedDevice("SN-0001", password="right")
    with (
        caplog.at_level(logging.DEBUG),
        CallHomeServer(inventory_for(sim, password="wrong-secret-xyz"), listen_address="127.0.0.1", listen_port=0) as s,
    ):
        with pytest.raises(Exception):  # noqa: B017 - the device sees the manager hang up
            call(device_loop, sim, s.listen_port).result(10)
        [rejected] = wait_rejected(s)
        assert rejected.reason == "auth-failed"
        assert rejected.device == "SN-0001"
        assert sim.auth_attempts >= 1
    assert "wrong-secret-xyz" not in caplog.text
    assert "authentication as 'admin' failed on device SN-0001" in caplog.text


def test_two_devices_on_one_port_each_reached_by_name(device_loop: EventLoopThread) -> None:
    sims = [SimulatedDevice(f"SN-000{i}", password="pw") for i in (1, 2)]
    connected: list[DeviceConnected] = []
    with CallHomeServer(inventory_for(*sims), listen_address="127.0.0.1", listen_port=0) as server:
        server.on_connect(connected.append)
        for sim in sims:
            call(device_loop, sim, server.listen_port).result(10)
        with server.netconf("SN-0002", timeout=5) as m2, server.netconf("SN-0001", timeout=5) as m1:
            assert hostname(m1) == "sn-0001"
            assert hostname(m2) == "sn-0002"
        assert sorted(d.device for d in server.connected()) == ["SN-0001", "SN-0002"]
    assert sorted(e.fingerprint for e in connected) == sorted(s.fingerprint for s in sims)


def test_on_connect_callback_may_use_the_device(device_loop: EventLoopThread) -> None:
    sim = SimulatedDevice("SN-0001", password="pw")
    seen: concurrent.futures.Future[str] = concurrent.futures.Future()
    with CallHomeServer(inventory_for(sim), listen_address="127.0.0.1", listen_port=0) as server:

        def configure(event: DeviceConnected) -> None:
            with server.netconf(event.device, timeout=5) as m:
                seen.set_result(hostname(m))

        server.on_connect(configure)
        call(device_loop, sim, server.listen_port).result(10)
        assert seen.result(10) == "sn-0001"


def test_a_device_calling_again_replaces_its_stale_connection(device_loop: EventLoopThread) -> None:
    sim = SimulatedDevice("SN-0001", password="pw")
    with CallHomeServer(inventory_for(sim), listen_address="127.0.0.1", listen_port=0) as server:
        first = call(device_loop, sim, server.listen_port).result(10)
        port_1 = server.wait_for("SN-0001", 5).peer_address[1]
        second = call(device_loop, sim, server.listen_port).result(10)
        deadline = time.monotonic() + 5
        while server.wait_for("SN-0001", 5).peer_address[1] == port_1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.wait_for("SN-0001", 5).peer_address[1] != port_1
        device_loop.run(first.wait_closed(), 5)  # type: ignore[attr-defined]
        assert [d.device for d in server.connected()] == ["SN-0001"]
        with server.netconf("SN-0001", timeout=5) as m:
            assert hostname(m) == "sn-0001"
        assert second is not first


def test_a_device_keeps_no_closed_call_alive(device_loop: EventLoopThread) -> None:
    """A call the manager ended is not referenced by the device any more: a
    fleet of 10,000 calling again and again (the storm benchmarks) keeps a
    flat heap, so each storm starts from the same state (failed before: the
    device held its last connection until its next call)."""
    sim = SimulatedDevice("SN-0001", password="pw")
    lost = threading.Event()
    with CallHomeServer(inventory_for(sim), listen_address="127.0.0.1", listen_port=0) as server:
        conn = device_loop.submit(sim.call_home("127.0.0.1", server.listen_port, on_lost=lambda exc: lost.set()))
        gone = weakref.ref(conn.result(10))
        server.wait_for("SN-0001", 5)
        assert server.disconnect("SN-0001")
        assert lost.wait(10)
        conn = None  # type: ignore[assignment]
        deadline = time.monotonic() + 5  # asyncssh's own clean-up callbacks drop theirs soon after
        while gc.collect() >= 0 and gone() is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gone() is None


def test_public_key_authentication(device_loop: EventLoopThread, tmp_path: Path) -> None:
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp_path / "id_manager"
    key_path.write_bytes(client_key.export_private_key())
    sim = SimulatedDevice("SN-0001", password=None, authorized_keys=[client_key])
    inventory = Inventory(
        [
            Device(
                name="SN-0001",
                host_keys=(HostKeyPin.parse(sim.fingerprint),),
                credentials=SSHCredentials(username="admin", private_key=key_path),
            )
        ]
    )
    with CallHomeServer(inventory, listen_address="127.0.0.1", listen_port=0) as server:
        call(device_loop, sim, server.listen_port).result(10)
        with server.netconf("SN-0001", timeout=5) as m:
            assert hostname(m) == "sn-0001"


def test_listener_survives_garbage_silence_and_half_open_connections(device_loop: EventLoopThread) -> None:
    sim = SimulatedDevice("SN-0001", password="pw")
    config = SSHClientConfig(handshake_timeout=1.0)
    with CallHomeServer(inventory_for(sim), listen_address="127.0.0.1", listen_port=0, ssh=config) as server:
        port = server.listen_port
        garbage = socket.create_connection(("127.0.0.1", port))
        garbage.sendall(b"\x16\x03\x01\x02\x00" + bytes(range(256)) * 4 + b"GET / HTTP/1.1\r\n\r\n")
        silent = socket.create_connection(("127.0.0.1", port))
        half_open = socket.create_connection(("127.0.0.1", port))
        half_open.sendall(b"SSH-2.0-half\r\n")
        half_open.shutdown(socket.SHUT_WR)
        call(device_loop, sim, port).result(10)
        with server.netconf("SN-0001", timeout=5) as m:
            assert hostname(m) == "sn-0001"
        deadline = time.monotonic() + 5
        while len(server.rejected()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        reasons = sorted(r.reason for r in server.rejected())
        assert "handshake-timeout" in reasons  # the silent one, after 1 s
        assert len(reasons) == 3
        silent.settimeout(3)
        assert silent.recv(4096) == b""  # closed by the handshake timeout, without our banner
        for s in (garbage, silent, half_open):
            s.close()


def test_a_device_stalling_after_its_banner_is_ended_by_the_handshake_timeout() -> None:
    """The SSH phase is bounded by ``handshake_timeout`` (accept to
    authenticated) alone: asyncssh's own 2-minute login timer is off."""
    config = SSHClientConfig(handshake_timeout=1.0)
    inventory = inventory_for(SimulatedDevice("SN-0001", password="pw"))
    with CallHomeServer(inventory, listen_address="127.0.0.1", listen_port=0, ssh=config) as server:
        stalled = socket.create_connection(("127.0.0.1", server.listen_port))
        started = time.monotonic()
        stalled.sendall(b"SSH-2.0-stalls_after_its_banner\r\n")  # then no key exchange
        stalled.settimeout(10)
        received = b""
        while chunk := stalled.recv(65536):  # our banner and KEXINIT, then the close
            received += chunk
        took = time.monotonic() - started
        stalled.close()
        assert received.startswith(b"SSH-2.0-")
        assert 0.9 <= took < 5
        wait_rejected(server, 1)
        assert [r.reason for r in server.rejected()] == ["handshake-timeout"]


def test_call_home_drop_in_with_pinned_key(device_loop: EventLoopThread) -> None:
    sim = SimulatedDevice("SN-0001", username="admin", password="pw")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    hostkey_b64 = sim.host_key_line.split()[1]
    for _ in range(2):  # the second call on the same port right away: SO_REUSEADDR
        threading.Timer(0.3, call, (device_loop, sim, port)).start()
        with callhome_transport.call_home(
            host="127.0.0.1", port=port, username="admin", password="pw", hostkey_b64=hostkey_b64, timeout=10
        ) as m:
            assert hostname(m) == "sn-0001"
            assert m.connected


def test_call_home_refuses_a_device_with_another_key(
    device_loop: EventLoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    expected = SimulatedDevice("SN-0001", password="pw")
    impostor = SimulatedDevice("SN-0001", password="pw")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    threading.Timer(0.3, call, (device_loop, impostor, port)).start()
    with caplog.at_level(logging.WARNING, logger="callhome_transport"), pytest.raises(HostKeyMismatchError) as info:
        callhome_transport.call_home(
            host="127.0.0.1",
            port=port,
            username="admin",
            password="pw",
            hostkey_b64=expected.host_key_line.split()[1],
            accept_timeout=1.5,
        )
    assert info.value.fingerprint == impostor.fingerprint
    assert info.value.expected == expected.fingerprint
    assert impostor.auth_attempts == 0
    # failed before: the warning said "not pinned for any device in the inventory" (this call has none)
    assert f"does not match the expected device (expected {expected.fingerprint})" in caplog.text
    assert "inventory" not in caplog.text


def test_call_home_names_known_hosts_when_it_refuses_a_key(
    device_loop: EventLoopThread, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    listed = SimulatedDevice("SN-0001", password="pw")
    caller = SimulatedDevice("SN-0001", password="pw")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"127.0.0.1 {listed.host_key_line}\n")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    threading.Timer(0.3, call, (device_loop, caller, port)).start()
    with (
        caplog.at_level(logging.WARNING, logger="callhome_transport"),
        pytest.raises(callhome_transport.UnknownDeviceError) as info,
    ):
        callhome_transport.call_home(
            host="127.0.0.1",
            port=port,
            username="admin",
            password="pw",
            known_hosts=[str(known_hosts)],
            accept_timeout=1.5,
        )
    where = f"is not in known_hosts for 127.0.0.1 ({known_hosts})"
    assert where in str(info.value) and where in caplog.text
    assert "inventory" not in caplog.text
    assert caller.auth_attempts == 0


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"sock": object()}, "sock"),
        ({"bind_addr": "10.0.0.1"}, "bind_addr"),
        ({"allow_agent": True}, "allow_agent"),
        ({"look_for_keys": True}, "look_for_keys"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)
def test_call_home_names_options_it_cannot_honour(kwargs: dict[str, object], option: str) -> None:
    with pytest.raises(UnsupportedOptionError) as info:
        callhome_transport.call_home(host="127.0.0.1", port=0, username="u", password="p", **kwargs)  # type: ignore[arg-type]
    assert info.value.option == option


def test_call_home_auth_failure_is_typed(device_loop: EventLoopThread) -> None:
    sim = SimulatedDevice("SN-0001", password="right")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    threading.Timer(0.3, call, (device_loop, sim, port)).start()
    with pytest.raises(AuthenticationFailedError) as info:
        callhome_transport.call_home(
            host="127.0.0.1", port=port, username="admin", password="wrong", hostkey_verify=False, accept_timeout=2
        )
    assert info.value.username == "admin"


def test_source_blocked_after_failed_handshakes_then_released(device_loop: EventLoopThread) -> None:
    sim = SimulatedDevice("SN-0001", password="pw")
    admission = AdmissionConfig(failures_before_block=4, failure_window=30, block_seconds=1.5)
    with CallHomeServer(inventory_for(sim), listen_address="127.0.0.1", listen_port=0, admission=admission) as server:
        for _ in range(2):  # two garbage handshakes from 127.0.0.1 (protocol garbage weighs 2)
            with socket.create_connection(("127.0.0.1", server.listen_port)) as bad:
                bad.sendall(b"garbage\r\n")
                bad.shutdown(socket.SHUT_WR)
                bad.settimeout(5)
                while bad.recv(4096):
                    pass
        deadline = time.monotonic() + 5
        while len(server.rejected()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises((OSError, asyncssh.Error)):  # refused before any handshake
            call(device_loop, sim, server.listen_port).result(10)
        assert sim.auth_attempts == 0
        metrics = server.aio.metrics.render()
        assert 'callhome_connections_refused_total{reason="blocked",transport="ssh"} 1' in metrics
        assert 'callhome_handshakes_total{result="transport-error",transport="ssh"} 2' in metrics
        time.sleep(1.6)  # the block expires
        call(device_loop, sim, server.listen_port).result(10)
        with server.netconf("SN-0001", timeout=5) as m:
            assert hostname(m) == "sn-0001"


def test_a_device_named_with_the_hello_settle_quirk_gets_its_first_rpc_after_the_settle(
    device_loop: EventLoopThread,
) -> None:
    """``quirks: [hello-settle]`` in the inventory: the first RPC of a session
    greeted just now leaves 100 ms after our hello (as for yuma123 netconfd,
    recognised from its hello); the same device without it gets it at once."""
    sims = {name: SimulatedDevice(name, password="pw") for name in ("QUIRKY", "PLAIN")}
    entries = {
        name: {
            "ssh": {"host_keys": [sim.host_key_line], "username": sim.username, "password": "pw"},
            "hold_session": "never",  # every session greeted when asked for
            **({"quirks": ["hello-settle"]} if name == "QUIRKY" else {}),
        }
        for name, sim in sims.items()
    }
    with CallHomeServer(Inventory.from_dict({"devices": entries}), listen_address="127.0.0.1", listen_port=0) as srv:
        for sim in sims.values():
            call(device_loop, sim, srv.listen_port)
        first_rpc: dict[str, list[float]] = {}
        for name in sims:
            for _ in range(3):
                with srv.netconf(name, timeout=10) as m:
                    started = time.perf_counter()
                    hostname(m)
                    first_rpc.setdefault(name, []).append(time.perf_counter() - started)
    assert min(first_rpc["QUIRKY"]) >= 0.05, first_rpc  # the rest of the 100 ms after our hello
    assert min(first_rpc["PLAIN"]) < 0.05, first_rpc


def test_a_held_session_whose_hand_over_fails_is_closed_not_leaked(
    device_loop: EventLoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    # failed before: only BrokenPipeError closed the claimed session; any other
    # failure left its channel open on the device, out of the pool, for good
    from callhome_transport.integrations.netconf import StreamSession
    from callhome_transport.server import AsyncCallHomeServer

    sim = SimulatedDevice("SN-0001", password="pw")
    inventory = Inventory([dataclasses.replace(d, hold_session=HoldPolicy.ALWAYS) for d in inventory_for(sim)])
    with CallHomeServer(inventory, listen_address="127.0.0.1", listen_port=0) as server:
        call(device_loop, sim, server.listen_port)
        wait_until(lambda: server.session_held("SN-0001"), timeout=15)
        claimed: list[object] = []
        claim = AsyncCallHomeServer.claim_held_session

        def spy(self: AsyncCallHomeServer, device: str, **kwargs: Any) -> Any:
            found = claim(self, device, **kwargs)
            claimed.append(found)
            return found

        def fails(self: StreamSession, session: object, first: object) -> None:
            raise RuntimeError("hand-over failed")

        monkeypatch.setattr(AsyncCallHomeServer, "claim_held_session", spy)
        monkeypatch.setattr(StreamSession, "adopt_claimed", fails)
        with pytest.raises(RuntimeError, match="hand-over failed"):
            server.netconf("SN-0001", timeout=5)
        session = claimed[0][0]  # type: ignore[index]
        wait_until(lambda: session.is_closed)
        assert session.is_closed
        monkeypatch.undo()
        with server.netconf("SN-0001", timeout=5) as m:  # the device is still served
            assert hostname(m) == "sn-0001"
