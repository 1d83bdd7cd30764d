"""The fleet simulator (``callhome sim``): SSH, NETCONF/TLS and RESTCONF devices
with their own keys or certificates call a CallHomeServer that trusts exactly
the inventory the fleet wrote."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from callhome_transport import CallHomeServer, Inventory, RestconfClient, TLSClientConfig
from callhome_transport.engine import EventLoopThread
from callhome_transport.sim.fleet import Fleet, FleetConfig

SYS_FILTER = ("subtree", '<system xmlns="urn:ietf:params:xml:ns:yang:ietf-system"/>')


@pytest.fixture
def loop() -> Iterator[EventLoopThread]:
    thread = EventLoopThread(name="fleet")
    yield thread
    thread.stop()


def wait_connected(server: CallHomeServer, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(server.connected()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(server.connected()) == count


@pytest.mark.parametrize("transport", ["ssh", "tls", "restconf"])
def test_fleet_calls_home_and_is_served(loop: EventLoopThread, tmp_path: Path, transport: str) -> None:
    fleet = Fleet(FleetConfig(count=5, transport=transport, pki_dir=tmp_path / "pki"))
    inventory = Inventory.from_dict(fleet.inventory(), source="fleet")
    tls = TLSClientConfig(certfile=fleet.pki.manager_cert, keyfile=fleet.pki.manager_key) if fleet.pki else None
    with CallHomeServer(
        inventory, listen_address="127.0.0.1", listen_port=0, tls=tls, tls_listen_port=0, restconf_listen_port=0
    ) as server:
        port = {
            "ssh": lambda: server.listen_port,
            "tls": lambda: server.tls_listen_port,
            "restconf": lambda: server.restconf_listen_port,
        }[transport]()
        running: concurrent.futures.Future[None] = loop.submit(fleet.run("127.0.0.1", port))
        try:
            wait_connected(server, 5)
            name = fleet.devices[2].name
            if transport == "restconf":
                with requests.Session() as session:
                    session.mount("https://", server.restconf_adapter(wait_timeout=10))
                    rc = RestconfClient(session, name)
                    assert rc.root == "/restconf"
                    rc.patch("ietf-system:system", {"ietf-system:system": {"location": "rack-2"}})
                    assert rc.get("ietf-system:system").json()["ietf-system:system"]["location"] == "rack-2"
            else:
                with server.netconf(name, timeout=10) as m:
                    assert (
                        f"<hostname>{name.lower()}</hostname>" in m.get_config(source="running", filter=SYS_FILTER).xml
                    )
        finally:
            running.cancel()
