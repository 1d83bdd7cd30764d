"""Trust: presented key -> identity, without I/O."""

from __future__ import annotations

import logging

import pytest

from callhome_transport import Device, HostKeyPin, Inventory, SSHCredentials
from callhome_transport.identity.trust import AcceptAnyKey, InventoryTrust, PinnedKeyTrust, PresentedKey

FP1 = "SHA256:" + "1" * 43
FP2 = "SHA256:" + "2" * 43
PEER = ("192.0.2.10", 40000)


def presented(fp: str) -> PresentedKey:
    return PresentedKey(key_type="ssh-ed25519", fingerprint=fp, peer_address=PEER)


def test_inventory_trust_returns_that_devices_credentials() -> None:
    inv = Inventory(
        [
            Device(
                name="R1",
                host_keys=(HostKeyPin(fingerprint=FP1),),
                credentials=SSHCredentials(username="a", password="1"),
            ),
            Device(
                name="R2",
                host_keys=(HostKeyPin(fingerprint=FP2),),
                credentials=SSHCredentials(username="b", password="2"),
            ),
        ]
    )
    trust = InventoryTrust(inv)
    identity = trust.identify(presented(FP2))
    assert identity is not None
    assert identity.device == "R2"
    assert identity.credentials.username == "b"
    assert trust.identify(presented("SHA256:" + "9" * 43)) is None


def test_pinned_key_trust() -> None:
    creds = SSHCredentials(username="a", password="1")
    trust = PinnedKeyTrust("dev", (HostKeyPin(fingerprint=FP1),), creds)
    assert trust.identify(presented(FP2)) is None
    identity = trust.identify(presented(FP1))
    assert identity is not None and identity.fingerprint == FP1
    with pytest.raises(ValueError, match="at least one"):
        PinnedKeyTrust("dev", (), creds)


def test_accept_any_warns_with_fingerprint(caplog: pytest.LogCaptureFixture) -> None:
    trust = AcceptAnyKey("dev", SSHCredentials(username="a", password="pw-not-logged"))
    with caplog.at_level(logging.WARNING):
        assert trust.identify(presented(FP1)) is not None
    assert FP1 in caplog.text
    assert "pw-not-logged" not in caplog.text
