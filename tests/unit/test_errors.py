"""Errors carry data as attributes and survive pickling (Ansible's process boundary)."""

from __future__ import annotations

import json
import pickle

import pytest

from callhome_transport import errors

PEER = ("2001:db8::7", 53122)

CASES = [
    errors.InventoryError("inv.yml", "devices.SN-1.ssh.host_keys[0]", "a fingerprint"),
    errors.UnsupportedOptionError("sock", "no socket to pass in"),
    errors.ListenerError("::1", 4334, "Address already in use"),
    errors.ProxyProtocolError(reason="no PROXY protocol header", peer_address=PEER),
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


REFUSALS = [
    errors.AuthenticationFailedError(
        device="SN-1", peer_address=PEER, username="admin", reason="denied", fingerprint="SHA256:abc", key_type="ed"
    ),
    errors.RevokedCertificateError(peer_address=PEER, reason="revoked on 2024-01-01", device="SN-3", serial="1F"),
    errors.CertificateRejectedError(peer_address=PEER, reason="wrong issuer", device="SN-3"),
    errors.DeviceBlockedError(device="SN-1", peer_address=PEER, seconds=42.0, fingerprint="SHA256:abc"),
]


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda e: type(e).__name__)
def test_a_refusal_reported_to_a_waiter_keeps_its_type_and_says_when(refusal: errors.CallHomeError) -> None:
    raised = errors.refused_while_waiting(refusal, 1700000000.5)
    assert type(raised) is type(refusal)
    assert raised.refused_at == 1700000000.5  # type: ignore[attr-defined]
    assert raised.device == refusal.device  # type: ignore[attr-defined]
    assert str(raised).startswith(str(refusal))
    assert "2023-11-14T22:13:20Z" in str(raised)
    copy = pickle.loads(pickle.dumps(raised))
    assert vars(copy) == vars(raised)
    assert not hasattr(refusal, "refused_at")  # the stored refusal is not changed


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda e: type(e).__name__)
def test_a_refusal_crosses_the_gateway_as_json(refusal: errors.CallHomeError) -> None:
    raised = errors.refused_while_waiting(refusal, 1700000000.5)
    data = json.loads(json.dumps(errors.refusal_to_dict(raised)))
    rebuilt = errors.refusal_from_dict(data)
    assert type(rebuilt) is type(raised)
    assert str(rebuilt) == str(raised)
    assert vars(rebuilt) == vars(raised)


def test_only_known_refusals_are_rebuilt_from_json() -> None:
    assert errors.refusal_from_dict({"type": "InventoryError", "message": "x"}) is None
    assert errors.refusal_from_dict({"type": "AuthenticationFailedError"}) is None


def test_every_exported_exception_is_a_call_home_error_that_pickles() -> None:
    # failed before: restconf's DeviceNotConnected and RestconfError were requests errors only,
    # and DeviceNotConnected did not survive pickling
    import callhome_transport
    from callhome_transport.integrations.restconf import RestconfErrorInfo

    exported = [getattr(callhome_transport, name) for name in callhome_transport.__all__]
    exceptions = [e for e in exported if isinstance(e, type) and issubclass(e, BaseException)]
    assert all(issubclass(e, errors.CallHomeError) for e in exceptions), exceptions
    samples = [
        callhome_transport.DeviceNotConnected("SN-1", 2.5),
        callhome_transport.RestconfError(404, [RestconfErrorInfo(error_type="protocol", error_tag="invalid-value")]),
        errors.RestconfDiscoveryError(device="SN-1", reason="host-meta has no <Link rel='restconf'>"),
    ]
    for error in samples:
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), str(copy), copy.device if hasattr(copy, "device") else None) == (
            type(error),
            str(error),
            getattr(error, "device", None),
        )
        assert isinstance(copy, errors.CallHomeError)
    assert isinstance(samples[0], errors.DeviceNotConnectedError)


def test_the_api_edge_raises_call_home_errors_that_keep_their_old_builtin_type() -> None:
    # failed before: an unknown name raised a bare KeyError, a closed server a bare RuntimeError
    unknown = errors.UnknownDeviceNameError(device="nope", source="devices.yml")
    closed = errors.ServerStateError("CallHomeServer is closed")
    for error, builtin in ((unknown, KeyError), (closed, RuntimeError)):
        assert isinstance(error, errors.CallHomeError) and isinstance(error, builtin)
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), str(copy), vars(copy)) == (type(error), str(error), vars(error))
    assert str(unknown) == "device 'nope' is not in the inventory (devices.yml)"
