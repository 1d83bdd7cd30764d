"""One schema for a device's record: the registry's status, the control API's
JSON, GatewayClient's DeviceInfo and the CLI table."""

from __future__ import annotations

import json

from callhome_transport.cli import _devices_table
from callhome_transport.status import TABLE_COLUMNS, DeviceInfo, DeviceState, DeviceStatus, RefusalReason


def test_the_state_table() -> None:
    status = DeviceStatus()
    assert status.state is DeviceState.NEVER_CONNECTED
    status.on_connected(peer_address="192.0.2.1:5", identity="SHA256:a", at=10.0)
    assert (status.state, status.reconnects, status.last_seen) == (DeviceState.CONNECTED, 0, 10.0)
    assert not status.on_refused(RefusalReason.AUTH_FAILED, "denied", 11.0)  # a live session keeps it connected
    assert not status.on_ended("closed", still_connected=True)
    assert not status.on_ended("handed over", still_connected=False)
    assert status.on_ended("closed by device", still_connected=False)
    assert (status.state, status.last_reason) == (DeviceState.DISCONNECTED, "closed by device")
    assert status.on_refused(RefusalReason.AUTH_FAILED, "denied", 12.0)
    assert (status.state, status.last_reason) == (DeviceState.AUTH_FAILED, "auth-failed: denied")
    assert status.on_refused(RefusalReason.REVOKED, "", 13.0)
    assert (status.state, status.last_reason) == (DeviceState.REJECTED, "revoked")
    status.on_connected(peer_address="192.0.2.1:6", identity="SHA256:a", at=14.0)
    assert (status.state, status.reconnects, status.last_reason) == (DeviceState.CONNECTED, 1, None)


def test_json_round_trip_keeps_unknown_keys() -> None:
    info = DeviceInfo.of(DeviceStatus(state=DeviceState.CONNECTED), name="R1", transport="ssh", local_sessions=2)
    data = json.loads(json.dumps(info.as_dict()))
    assert data["state"] == "connected"
    assert list(data)[:3] == ["name", "transport", "state"]
    data["added_by_a_newer_gateway"] = {"x": 1}
    data["state"] = "some-new-state"
    back = DeviceInfo.from_json(data)
    assert back.extra == {"added_by_a_newer_gateway": {"x": 1}}
    assert back.state == "some-new-state"
    assert back.as_dict() == data
    connected = DeviceInfo.from_json({"name": "R1", "transport": "ssh", "state": "connected"})
    assert connected.connected and connected.state == DeviceState.CONNECTED
    assert type(connected.state) is str  # plain JSON types: Ansible takes no others into its variables


def test_the_cli_table_has_a_column_per_schema_field_it_names() -> None:
    infos = [
        DeviceInfo(name="R1", transport="ssh", state=DeviceState.CONNECTED, peer_address="192.0.2.1:5", reconnects=3),
        DeviceInfo(name="T1", transport="tls"),
    ]
    lines = _devices_table(infos).splitlines()
    assert lines[0].split("  ")[0] == "DEVICE"
    assert [header for header, _ in TABLE_COLUMNS] == [h.strip() for h in lines[0].split("  ") if h.strip()]
    assert lines[1].split()[:4] == ["R1", "ssh", "connected", "192.0.2.1:5"]
    assert lines[2].split()[:4] == ["T1", "tls", "never-connected", "-"]
