"""Device trust: from what a device presented to *which device this is*.

RFC 8071 s5 order: validate the presented host key -> identify the device ->
choose that device's credentials -> authenticate.  A :class:`Trust` answers
the middle two steps for one presented key, without any I/O: it returns an
:class:`Identity` (the device's name and the credentials to use with it) or
``None``, and the SSH room refuses the connection before any authentication
when it gets ``None``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from .inventory import HostKeyPin, Inventory, SSHCredentials

__all__ = ["AcceptAnyKey", "Identity", "InventoryTrust", "PinnedKeyTrust", "PresentedKey", "Trust"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PresentedKey:
    """The host key a device presented during key exchange."""

    key_type: str  # e.g. "ssh-ed25519"
    fingerprint: str  # "SHA256:..."
    peer_address: tuple[str, int]


@dataclass(frozen=True, kw_only=True)
class Identity:
    """Who called, and what we authenticate to it with."""

    device: str
    credentials: SSHCredentials = field(repr=False)
    fingerprint: str


class Trust(Protocol):
    """Resolves a presented host key to an :class:`Identity`, or ``None``."""

    def identify(self, presented: PresentedKey) -> Identity | None: ...


class InventoryTrust:
    """Identifies devices by the host keys pinned in an :class:`Inventory`."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def identify(self, presented: PresentedKey) -> Identity | None:
        device = self.inventory.device_for_fingerprint(presented.fingerprint)
        if device is None or device.credentials is None:
            return None
        return Identity(device=device.name, credentials=device.credentials, fingerprint=presented.fingerprint)


class PinnedKeyTrust:
    """Accepts exactly the pinned keys, as one named device (the
    single-device :func:`~callhome_transport.call_home` case)."""

    def __init__(self, device: str, pins: tuple[HostKeyPin, ...], credentials: SSHCredentials) -> None:
        if not pins:
            raise ValueError("at least one pinned host key")
        self.device = device
        self.fingerprints = frozenset(pin.fingerprint for pin in pins)
        self.key_types = tuple(pin.key_type for pin in pins)  # "" for a SHA256: pin
        self.credentials = credentials

    def identify(self, presented: PresentedKey) -> Identity | None:
        if presented.fingerprint not in self.fingerprints:
            return None
        return Identity(device=self.device, credentials=self.credentials, fingerprint=presented.fingerprint)


class AcceptAnyKey:
    """Trusts whatever key is presented (``hostkey_verify=False``).

    This defeats RFC 8071 s5: credentials go to whoever connects.  It exists
    only for drop-in compatibility with ncclient scripts, and says so in a
    WARNING with the fingerprint on every connection.
    """

    def __init__(self, device: str, credentials: SSHCredentials) -> None:
        self.device = device
        self.credentials = credentials

    def identify(self, presented: PresentedKey) -> Identity | None:
        log.warning(
            "host key verification disabled: trusting %s key %s from %s without checking it",
            presented.key_type,
            presented.fingerprint,
            presented.peer_address[0],
        )
        return Identity(device=self.device, credentials=self.credentials, fingerprint=presented.fingerprint)
