"""Errors carry data as attributes and survive pickling (Ansible's process boundary)."""

from __future__ import annotations

import pickle

import pytest

from callhome_transport import errors

PEER = ("2001:db8::7", 53122)

CASES = [
    errors.InventoryError("inv.yml", "devices.SN-1.ssh.host_keys[0]", "a fingerprint"),
    errors.UnsupportedOptionError("sock", "no socket to pass in"),
    errors.ListenerError("::1", 4334, "Address already in use"),
    errors.EndpointError(path="/run/callhome/control.sock", reason="Permission denied"),
    errors.UnknownDeviceError(peer_address=PEER, fingerprint="SHA256:abc", key_type="ssh-ed25519"),
    errors.HostKeyMismatchError(device="SN-1", peer_address=PEER, fingerprint="SHA256:abc", expected="SHA256:def"),
    errors.AuthenticationFailedError(device="SN-1", peer_address=PEER, username="admin", reason="denied"),
    errors.HandshakeTimeoutError(peer_address=PEER, timeout=5.0),
    errors.DeviceBlockedError(device="SN-1", peer_address=PEER, seconds=42.0),
    errors.TransportError("boom", device="SN-1", peer_address=PEER),
    errors.DeviceNotConnectedError(device="SN-1", timeout=2.5),
    errors.DeviceDisconnectedError(device="SN-1", reason="keepalive"),
    errors.MessageTooLargeError(device="SN-1", limit=256 << 20),
    errors.MalformedMessageError(device="SN-1", reason="byte 0xFF at offset 3 is not UTF-8"),
]


@pytest.mark.parametrize("error", CASES, ids=lambda e: type(e).__name__)
def test_pickle_round_trip_keeps_type_message_and_attributes(error: errors.CallHomeError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert {k: v for k, v in vars(copy).items()} == {k: v for k, v in vars(error).items()}
    assert isinstance(copy, errors.CallHomeError)


def test_messages_name_the_peer_in_bracketed_ipv6_form() -> None:
    err = errors.UnknownDeviceError(peer_address=PEER, fingerprint="SHA256:abc", key_type="ssh-ed25519")
    assert "[2001:db8::7]:53122" in str(err)
    assert "ssh-ed25519 SHA256:abc" in str(err)
    assert err.fingerprint == "SHA256:abc"


def test_families_say_whose_fault() -> None:
    assert issubclass(errors.UnknownDeviceError, errors.TrustError)
    assert issubclass(errors.AuthenticationFailedError, errors.TransportError)
    assert issubclass(errors.DeviceNotConnectedError, errors.DeviceStateError)
    assert issubclass(errors.UnsupportedOptionError, TypeError)


def test_inventory_error_message_names_file_key_and_expectation() -> None:
    err = errors.InventoryError("/etc/callhome/inv.yml", "devices.SN-1.ssh.username", "a non-empty string")
    assert str(err) == "/etc/callhome/inv.yml: devices.SN-1.ssh.username: expected a non-empty string"
