"""A stock OpenSSH device has RSA, ECDSA and ed25519 host keys and presents the
one of the first algorithm in our offer that it has (RFC 4253 s7.1).  We offer
the algorithms of the keys pinned in the inventory, so whichever one is pinned
is the one presented (issue: asyncssh's default offer put ``rsa-sha2-256``
first, and a device whose ed25519 key was pinned was refused as unknown)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

import callhome_transport
from callhome_transport import CallHomeServer, Inventory
from callhome_transport.server import AsyncCallHomeServer

from .libnetconf2_peer import Ln2Device
from .netconfd_peer import HOST_KEY_TYPES, NetconfdDevice, ReverseRelay, free_port

pytestmark = pytest.mark.integration


def pinned(device: NetconfdDevice | Ln2Device, *pins: str) -> Inventory:
    entry = device.inventory_entry()
    entry["ssh"]["host_keys"] = list(pins)
    return Inventory.from_dict({"devices": {"SN-0001": entry}})


@pytest.mark.parametrize("kind", HOST_KEY_TYPES)
def test_device_with_three_host_keys_presents_the_pinned_one(netconfd: NetconfdDevice, kind: str) -> None:
    assert set(netconfd.host_keys) == {"rsa", "ecdsa", "ed25519"}  # the stock OpenSSH set
    key = netconfd.host_keys[kind]
    with (
        CallHomeServer(pinned(netconfd, key.public_line), listen_address="127.0.0.1", listen_port=0) as server,
        ReverseRelay(listener_port=server.listen_port, device_port=netconfd.ssh_port),
        server.netconf("SN-0001", timeout=15) as m,
    ):
        assert m.session_id is not None
        [event] = server.connected()
        assert event.fingerprint == key.fingerprint
        assert not server.rejected()


def test_fingerprint_pin_gets_openssh_order(netconfd: NetconfdDevice) -> None:
    """A ``SHA256:`` pin does not say its type: we offer OpenSSH's order, so
    the device presents the key an OpenSSH client would see (ed25519)."""
    key = netconfd.host_keys["ed25519"]
    with (
        CallHomeServer(pinned(netconfd, key.fingerprint), listen_address="127.0.0.1", listen_port=0) as server,
        ReverseRelay(listener_port=server.listen_port, device_port=netconfd.ssh_port),
        server.netconf("SN-0001", timeout=15) as m,
    ):
        assert m.session_id is not None
        assert [e.fingerprint for e in server.connected()] == [key.fingerprint]


def test_reloaded_inventory_changes_the_offer(netconfd: NetconfdDevice) -> None:
    """After ``replace_inventory`` pins only the device's RSA key, the next call
    presents the RSA key (the offer is rebuilt with the trust)."""
    ed25519, rsa = netconfd.host_keys["ed25519"], netconfd.host_keys["rsa"]

    async def scenario() -> list[str]:
        seen = []
        async with AsyncCallHomeServer(
            pinned(netconfd, ed25519.public_line), listen_address="127.0.0.1", listen_port=0
        ) as server:
            for inventory in (None, pinned(netconfd, rsa.public_line)):
                if inventory is not None:
                    server.replace_inventory(inventory)
                relay = ReverseRelay(listener_port=server.listen_port, device_port=netconfd.ssh_port).start()
                try:
                    conn = await server.wait_for("SN-0001", 15)
                    seen.append(conn.fingerprint)
                    assert not server.rejected
                    await server.disconnect("SN-0001")
                finally:
                    relay.stop()
        return seen

    assert asyncio.run(scenario()) == [ed25519.fingerprint, rsa.fingerprint]


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_call_home_drop_in_with_a_non_default_key_pinned(netconfd: NetconfdDevice, kind: str) -> None:
    """``call_home(hostkey_b64=...)`` offers the pinned key's algorithms too."""
    port = free_port()
    relay = ReverseRelay(listener_port=port, device_port=netconfd.ssh_port)
    starter = threading.Thread(target=relay.start)
    try:
        starter.start()  # socat retries until the listener is up
        with callhome_transport.call_home(
            host="127.0.0.1",
            port=port,
            username=netconfd.username,
            password=netconfd.password,
            hostkey_b64=netconfd.host_keys[kind].public_line.split()[1],
            timeout=15,
        ) as m:
            assert m.session_id is not None
    finally:
        starter.join()
        relay.stop()


@pytest.mark.parametrize("kind", HOST_KEY_TYPES)
def test_libssh_device_with_three_host_keys_presents_the_pinned_one(
    tmp_path: Path, ln2_binary: Path, kind: str
) -> None:
    """The same against libssh's server (the libnetconf2 device), which
    chooses its host key from our offer as OpenSSH does."""
    device = Ln2Device(tmp_path, binary=ln2_binary, key_type=kind, host_key_types=HOST_KEY_TYPES)
    key = device.host_keys[kind]
    with (
        CallHomeServer(pinned(device, key.public_line), listen_address="127.0.0.1", listen_port=0) as server,
        device.start(listener_port=server.listen_port),
        server.netconf("SN-0001", timeout=15) as m,
    ):
        assert m.session_id is not None
        assert [e.fingerprint for e in server.connected()] == [key.fingerprint]
