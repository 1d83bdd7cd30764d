"""The registry on fake connections: no socket, no handshake."""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from callhome_transport._log import ContextAdapter
from callhome_transport.errors import (
    AuthenticationFailedError,
    DeviceNotConnectedError,
)
from callhome_transport.identity.inventory import Transport
from callhome_transport.server.registry import (
    Blocked,
    DeviceConnected,
    DeviceDisconnected,
    LocalSession,
    Registry,
    RejectedAttempt,
)
from callhome_transport.status import BlockKind, DeviceState, RefusalReason
from callhome_transport.transports.contract import ConnectionBase, DeviceConnection, Handshake

PEER = ("192.0.2.7", 50000)


class FakeConnection(ConnectionBase):
    """A connection that needs no socket: closed when told."""

    transport = Transport.SSH
    pooled: ClassVar[bool] = False

    def __init__(self, device: str, fingerprint: str = "SHA256:fake", transport: Transport | None = None) -> None:
        log = ContextAdapter(logging.getLogger("test"), device=device)
        super().__init__(
            Handshake(device=device, fingerprint=fingerprint, peer_address=PEER, log=log, accepted_at=time.monotonic()),
            transport=transport,
        )

    def end(self, reason: str = "closed by device") -> None:
        if not self.closed.done():
            self.closed.set_result(reason)

    def close(self) -> None:
        self.end("closed")


class FakePooled(FakeConnection):
    transport = Transport.TLS
    pooled: ClassVar[bool] = True

    def facts(self) -> dict[str, Any]:
        return {"certificate_subject": "CN=fake", "certificate_serial": "01"}


class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []

    def connected(self, event: DeviceConnected) -> None:
        self.events.append(event)

    def disconnected(self, event: DeviceDisconnected) -> None:
        self.events.append(event)

    def rejected(self, attempt: RejectedAttempt) -> None:
        self.events.append(attempt)

    def blocked(self, block: Blocked) -> None:
        self.events.append(block)

    def local_session(self, session: LocalSession) -> None:
        self.events.append(session)


def make_registry(*names: str) -> tuple[Registry, Recorder]:
    registry = Registry(is_known=lambda name: name in names, describe_source=lambda: "devices.yml")
    recorder = Recorder()
    registry.add_observer(recorder)
    return registry, recorder


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def refused(device: str, reason: RefusalReason = RefusalReason.AUTH_FAILED) -> RejectedAttempt:
    return RejectedAttempt(
        peer_address=PEER, reason=reason, fingerprint="SHA256:x", key_type="ssh-ed25519", device=device, at=time.time()
    )


def test_fakes_keep_the_contract() -> None:
    async def main() -> None:
        assert isinstance(FakeConnection("R1"), DeviceConnection)
        assert isinstance(FakePooled("R1"), DeviceConnection)

    asyncio.run(main())


def test_a_connection_is_registered_and_observed() -> None:
    async def main() -> None:
        registry, recorder = make_registry("R1")
        conn = FakeConnection("R1")
        registry.add(conn)
        assert registry.current("R1") is conn
        assert registry.connected() == {"R1": conn}
        [event] = recorder.events
        assert isinstance(event, DeviceConnected)
        assert (event.device, event.transport, event.fingerprint) == ("R1", Transport.SSH, "SHA256:fake")
        status = registry.status("R1")
        assert status.state is DeviceState.CONNECTED
        assert (status.peer_address, status.identity, status.reconnects) == ("192.0.2.7:50000", "SHA256:fake", 0)

    asyncio.run(main())


def test_a_new_call_replaces_the_stale_one_without_a_disconnect_event() -> None:
    async def main() -> None:
        registry, recorder = make_registry("R1")
        old, new = FakeConnection("R1"), FakeConnection("R1")
        registry.add(old)
        registry.add(new)
        await settle()
        assert old.is_closed
        assert registry.current("R1") is new
        assert [type(e) for e in recorder.events] == [DeviceConnected, DeviceConnected]
        assert registry.status("R1").reconnects == 1

    asyncio.run(main())


def test_pooled_calls_are_kept_side_by_side_and_handed_out_while_unused() -> None:
    async def main() -> None:
        registry, recorder = make_registry("T1")
        first, second = FakePooled("T1"), FakePooled("T1")
        registry.add(first)
        registry.add(second)
        assert registry.current("T1") is first
        first.claimed = True  # given to its user
        assert registry.current("T1") is second
        first.end("closed by device")
        await settle()
        # another call is still usable: the device stays connected
        disconnected = [e for e in recorder.events if isinstance(e, DeviceDisconnected)]
        assert disconnected == [
            DeviceDisconnected(
                device="T1",
                reason="closed by device",
                at=disconnected[0].at,
                state=DeviceState.CONNECTED,
                state_changed=False,
                transport=Transport.TLS,
                peer_address=PEER,
                connected_at=first.connected_at,
            )
        ]
        second.end("closed by device")
        await settle()
        assert registry.status("T1").state is DeviceState.DISCONNECTED
        assert registry.status("T1").last_reason == "closed by device"
        assert registry.current("T1") is None
        connected = recorder.events[0]
        assert isinstance(connected, DeviceConnected)
        assert connected.certificate_subject == "CN=fake"
        assert registry.status("T1").identity == "CN=fake"

    asyncio.run(main())


def test_a_connection_handed_over_is_no_disconnection() -> None:
    async def main() -> None:
        registry, recorder = make_registry("W1")
        conn = FakePooled("W1", transport=Transport.RESTCONF)
        registry.add(conn)
        conn.end("handed over")
        await settle()
        [_, ended] = recorder.events
        assert isinstance(ended, DeviceDisconnected)
        assert not ended.state_changed
        assert registry.status("W1").state is DeviceState.CONNECTED

    asyncio.run(main())


def test_wait_for_returns_when_the_device_calls() -> None:
    async def main() -> None:
        registry, _ = make_registry("R1")
        waiter = asyncio.ensure_future(registry.wait_for("R1", 5))
        await settle()
        assert not waiter.done()
        conn = FakeConnection("R1")
        registry.add(conn)
        assert await waiter is conn

    asyncio.run(main())


def test_wait_for_times_out_and_names_unknown_devices() -> None:
    async def main() -> None:
        registry, _ = make_registry("R1")
        with pytest.raises(DeviceNotConnectedError) as info:
            await registry.wait_for("R1", 0.01)
        assert info.value.device == "R1"
        with pytest.raises(KeyError, match=r"devices\.yml"):
            await registry.wait_for("nope", 1)

    asyncio.run(main())


def test_a_refusal_during_the_wait_ends_it() -> None:
    async def main() -> None:
        registry, recorder = make_registry("R1")
        waiter = asyncio.ensure_future(registry.wait_for("R1", 5))
        await settle()
        error = AuthenticationFailedError(
            device="R1", peer_address=PEER, username="admin", reason="denied", fingerprint="SHA256:x", key_type="k"
        )
        attempt = refused("R1")
        registry.reject(attempt, error)
        with pytest.raises(AuthenticationFailedError):
            await waiter
        assert recorder.events == [attempt]
        assert list(registry.rejected) == [attempt]
        status = registry.status("R1")
        assert (status.state, status.last_reason) == (DeviceState.AUTH_FAILED, "auth-failed")
        registry.forget_refusals()
        with pytest.raises(DeviceNotConnectedError):
            await registry.wait_for("R1", 0.01)

    asyncio.run(main())


def test_a_refusal_leaves_a_connected_device_connected() -> None:
    async def main() -> None:
        registry, _ = make_registry("R1")
        registry.add(FakeConnection("R1"))
        registry.reject(refused("R1", RefusalReason.CERTIFICATE_REJECTED))
        assert registry.status("R1").state is DeviceState.CONNECTED

    asyncio.run(main())


def test_rejected_history_is_bounded() -> None:
    registry = Registry(is_known=lambda name: True, history=2)
    attempts = [refused("R1", RefusalReason.UNKNOWN_DEVICE) for _ in range(3)]
    for attempt in attempts:
        registry.reject(attempt)
    assert list(registry.rejected) == attempts[1:]


def test_disconnect_and_close_all() -> None:
    async def main() -> None:
        registry, recorder = make_registry("R1", "T1")
        ssh, tls = FakeConnection("R1"), FakePooled("T1")
        registry.add(ssh)
        registry.add(tls)
        assert await registry.disconnect("R1")
        await settle()
        assert ssh.is_closed and registry.status("R1").state is DeviceState.DISCONNECTED
        assert not await registry.disconnect("R1")
        await registry.close_all()
        await settle()
        assert tls.is_closed
        assert not any(isinstance(e, DeviceDisconnected) and e.device == "T1" for e in recorder.events)

    asyncio.run(main())


def test_an_observer_that_fails_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        registry, recorder = make_registry("R1")

        def broken(event: DeviceConnected) -> None:
            raise RuntimeError("boom")

        registry.on_connected(broken)
        registry.on_connected(recorder.connected)
        registry.add(FakeConnection("R1"))
        assert len(recorder.events) == 2  # the observer added first, and the one after the failing one

    with caplog.at_level(logging.ERROR, logger="callhome_transport.server.registry"):
        asyncio.run(main())
    assert "connect callback failed for device R1" in caplog.text


def test_on_closed_runs_first_for_every_connection_that_ends() -> None:
    async def main() -> None:
        seen: list[tuple[str, str]] = []
        registry = Registry(
            is_known=lambda name: True, on_closed=lambda conn, reason: seen.append((conn.device, reason))
        )
        old, new = FakeConnection("R1"), FakeConnection("R1")
        registry.add(old)
        registry.add(new)  # old is replaced: it ends too
        new.end("reset")
        await settle()
        assert sorted(seen) == [("R1", "closed"), ("R1", "reset")]

    asyncio.run(main())


def test_a_reconnect_is_counted_in_the_connect_event() -> None:
    async def main() -> None:
        registry, recorder = make_registry("R1")
        registry.add(FakeConnection("R1"))
        registry.add(FakeConnection("R1"))
        first, second = recorder.events
        assert isinstance(first, DeviceConnected) and isinstance(second, DeviceConnected)
        assert (first.reconnects, second.reconnects) == (0, 1)
        registry.forget("R1")  # it left the inventory and came back: a first call again
        registry.add(FakeConnection("R1"))
        third = recorder.events[-1]
        assert isinstance(third, DeviceConnected) and third.reconnects == 0

    asyncio.run(main())


def test_blocks_and_local_sessions_reach_the_observers() -> None:
    async def main() -> None:
        registry, recorder = make_registry("R1")
        registry.add(FakeConnection("R1"))
        registry.block(BlockKind.SOURCE, "192.0.2.9", 60.0)
        with registry.local_session("R1", "netconf") as opened:
            with registry.local_session("R1", "terminal"):
                assert registry.local_sessions("R1") == 2
            assert registry.local_sessions() == 1
            last_seen = registry.status("R1").last_seen
            assert last_seen is not None and last_seen >= opened.opened_at  # opening a session touches the device
        assert registry.local_sessions("R1") == 0
        _, block, netconf, terminal, terminal_closed, netconf_closed = recorder.events
        assert isinstance(block, Blocked) and (block.kind, block.key, block.seconds) == (
            BlockKind.SOURCE,
            "192.0.2.9",
            60.0,
        )
        assert isinstance(netconf, LocalSession) and netconf.closed_at is None
        assert isinstance(terminal, LocalSession) and terminal.session != netconf.session
        assert isinstance(terminal_closed, LocalSession) and terminal_closed.session == terminal.session
        assert isinstance(netconf_closed, LocalSession) and netconf_closed.session == netconf.session
        assert netconf_closed.closed_at is not None and netconf_closed.closed_at >= netconf.opened_at

    asyncio.run(main())


def test_the_census_counts_what_connected_and_session_held_say_in_one_walk() -> None:
    # /metrics reads it: the same figures as connected() and session_held(), by one walk
    async def main() -> None:
        registry, _ = make_registry("S1", "S2", "S3", "T1", "T2")
        held = FakeConnection("S1")
        held.sessions = SimpleNamespace(ready=object(), claimed=False)  # type: ignore[assignment]
        registry.add(held)
        registry.add(FakeConnection("S2"))
        gone = FakeConnection("S3")
        registry.add(gone)
        gone.end()
        used, free = FakePooled("T1"), FakePooled("T1")
        used.claimed = True
        registry.add(used)
        registry.add(free)
        busy = FakePooled("T2")
        busy.claimed = True
        registry.add(busy)
        await settle()
        by_transport, held_count = registry.census()
        connected = registry.connected()
        assert set(connected) == {"S1", "S2", "T1"}
        assert by_transport == {Transport.SSH: 2, Transport.TLS: 1}
        assert held_count == sum(registry.session_held(name) for name in connected) == 1

    asyncio.run(main())
