"""RESTCONF call home (RFC 8071 port 4336 style, RFC 8040) through requests,
against real TLS peers: stunnel4 (mutual TLS) in front of the test RESTCONF
backend, calling home through socat reverse relays."""

from __future__ import annotations

import concurrent.futures
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from callhome_transport import (
    CallHomeServer,
    DeviceConnected,
    DeviceNotConnected,
    Inventory,
    RestconfClient,
    RestconfError,
    TLSClientConfig,
)

from ..pki import DevicePKI
from .netconfd_peer import ReverseRelay, wait_rejected
from .restconf_backend import Backend
from .stunnel_peer import StunnelDevice, stunnel_available

pytestmark = pytest.mark.integration

BIG = 48 * 1024 * 1024


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevicePKI:
    return DevicePKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def inventory(pki: DevicePKI) -> Inventory:
    a = {"issuers": [str(pki.root_a_pem)], "crls": [str(pki.crl_a)]}
    return Inventory.from_dict(
        {
            "devices": {
                "SN-0003": {
                    "transport": "restconf",
                    "tls": {**a, "identifier": "SN-0003"},
                    "restconf": {"basic_auth": {"username": "rc-admin", "password": "rc-secret-1"}},
                },
                "SN-0004": {"transport": "restconf", "tls": {**a, "identifier": "SN-0004"}},
            }
        }
    )


@pytest.fixture
def server(pki: DevicePKI, inventory: Inventory) -> Iterator[CallHomeServer]:
    if stunnel_available():
        pytest.skip(stunnel_available())
    config = TLSClientConfig(certfile=pki.manager_cert, keyfile=pki.manager_key, handshake_timeout=5)
    with CallHomeServer(
        inventory, listen_address="127.0.0.1", listen_port=None, tls=config, restconf_listen_port=0
    ) as srv:
        yield srv


class RestconfDevice:
    """Backend + stunnel for one device serial."""

    def __init__(self, tmp_path: Path, pki: DevicePKI, serial: str, **backend_kwargs: object) -> None:
        self.backend = Backend(serial.lower(), **backend_kwargs).start()  # type: ignore[arg-type]
        cert, key = pki.device_files(serial)
        self.tls = StunnelDevice(
            tmp_path,
            None,
            certfile=cert,
            keyfile=key,
            client_ca=pki.manager_ca_pem,
            name=serial,
            backend_port=self.backend.port,
        ).start()

    def call_home(self, server: CallHomeServer) -> ReverseRelay:
        return ReverseRelay(listener_port=server.restconf_listen_port, device_port=self.tls.port).start()

    def stop(self) -> None:
        self.tls.stop()
        self.backend.stop()


@pytest.fixture
def devices(tmp_path: Path, pki: DevicePKI) -> Iterator[dict[str, RestconfDevice]]:
    made = {
        "SN-0003": RestconfDevice(tmp_path, pki, "SN-0003", basic_auth=("rc-admin", "rc-secret-1"), big_size=BIG),
        "SN-0004": RestconfDevice(tmp_path, pki, "SN-0004"),
    }
    yield made
    for device in made.values():
        device.stop()


@pytest.fixture
def session(server: CallHomeServer) -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.mount("https://", server.restconf_adapter(wait_timeout=10))
        yield s


def test_discovery_get_config_and_state_json_and_xml(
    server: CallHomeServer, devices: dict[str, RestconfDevice], session: requests.Session
) -> None:
    relay = devices["SN-0003"].call_home(server)
    try:
        rc = RestconfClient(session, "SN-0003")
        assert rc.root == "/restconf"
        assert rc.get("ietf-system:system").json()["ietf-system:system"]["hostname"] == "sn-0003"
        state = rc.get("ietf-system:system-state/platform").json()
        assert state["ietf-system:platform"]["os-name"] == "restconf-test-backend"
        xml = RestconfClient(session, "SN-0003", encoding="xml").get("ietf-system:system")
        assert xml.headers["Content-Type"] == "application/yang-data+xml"
        assert "<hostname>sn-0003</hostname>" in xml.text
        # the plain requests form from the issue, URL host = device name
        raw = session.get(
            "https://SN-0003/restconf/data/ietf-system:system", headers={"Accept": "application/yang-data+json"}
        )
        assert raw.status_code == 200
    finally:
        relay.stop()


def test_patch_then_get_delete_and_keep_alive(
    server: CallHomeServer, devices: dict[str, RestconfDevice], session: requests.Session
) -> None:
    events: list[DeviceConnected] = []
    server.on_connect(events.append)
    relay = devices["SN-0004"].call_home(server)
    try:
        rc = RestconfClient(session, "SN-0004")
        rc.patch("ietf-system:system", {"ietf-system:system": {"location": "rack-7"}})
        assert rc.get("ietf-system:system").json()["ietf-system:system"]["location"] == "rack-7"
        rc.post("", {"example:extra": {"x": 1}})
        rc.delete("example:extra")
        with pytest.raises(RestconfError) as info:
            rc.get("example:extra")
        assert info.value.status_code == 404
        assert info.value.error_tag == "invalid-value"
        assert info.value.error_path == "/example:extra"
    finally:
        relay.stop()
    # six requests, one call-home connection: HTTP/1.1 keep-alive
    assert len(events) == 1
    assert len(devices["SN-0004"].backend.requests) == 6


def test_error_bodies_are_typed_in_json_and_xml(
    server: CallHomeServer, devices: dict[str, RestconfDevice], session: requests.Session
) -> None:
    relay = devices["SN-0004"].call_home(server)
    try:
        rc = RestconfClient(session, "SN-0004")
        with pytest.raises(RestconfError) as info:
            rc.post("", {"ietf-system:system": {"hostname": "x"}})
        assert (info.value.status_code, info.value.error_tag) == (409, "data-exists")
        assert info.value.error_path == "/ietf-system:system"
        assert "already exists" in (info.value.error_message or "")
        with pytest.raises(RestconfError) as xml_info:
            RestconfClient(session, "SN-0004", encoding="xml").delete("ietf-system:system-state")
        assert (xml_info.value.status_code, xml_info.value.error_tag) == (405, "operation-not-supported")
        assert isinstance(xml_info.value, requests.HTTPError)
    finally:
        relay.stop()


def test_basic_auth_only_to_the_device_configured_for_it(
    server: CallHomeServer, devices: dict[str, RestconfDevice], session: requests.Session
) -> None:
    relays = [devices[name].call_home(server) for name in ("SN-0003", "SN-0004")]
    try:
        RestconfClient(session, "SN-0003").get("ietf-system:system")
        RestconfClient(session, "SN-0004").get("ietf-system:system")
    finally:
        for relay in relays:
            relay.stop()
    assert all(auth and auth.startswith("Basic ") for _, _, auth in devices["SN-0003"].backend.requests)
    assert all(auth is None for _, _, auth in devices["SN-0004"].backend.requests)


def test_device_not_connected_waits_then_fails_naming_it(server: CallHomeServer) -> None:
    with requests.Session() as s:
        s.mount("https://", server.restconf_adapter(wait_timeout=0.5))
        started = time.monotonic()
        with pytest.raises(DeviceNotConnected) as info:
            s.get("https://SN-0004/restconf/data/ietf-system:system")
        assert 0.4 < time.monotonic() - started < 5
        assert info.value.device == "SN-0004"
        assert isinstance(info.value, requests.exceptions.ConnectionError)
        with pytest.raises(requests.exceptions.InvalidURL, match="not a RESTCONF device"):
            s.get("https://nonsense.example/restconf")


def test_device_closing_between_requests_is_waited_for_again(
    server: CallHomeServer, devices: dict[str, RestconfDevice], session: requests.Session
) -> None:
    device = devices["SN-0004"]
    relay = device.call_home(server)
    rc = RestconfClient(session, "SN-0004")
    assert rc.get("ietf-system:system").status_code == 200
    relay.stop()  # the device goes away
    time.sleep(0.3)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    later = pool.submit(lambda: time.sleep(0.5) or device.call_home(server))
    try:
        started = time.monotonic()
        assert rc.get("ietf-system:system").status_code == 200  # waited for the next call home
        assert time.monotonic() - started >= 0.3
    finally:
        later.result(5).stop()
        pool.shutdown()


def test_two_devices_concurrently_and_one_device_serialised(
    server: CallHomeServer, devices: dict[str, RestconfDevice], session: requests.Session
) -> None:
    relays = [devices[name].call_home(server) for name in ("SN-0003", "SN-0004")]
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [
                pool.submit(RestconfClient(session, name).get, "ietf-system:system")
                for name in ("SN-0003", "SN-0004")
                for _ in range(4)
            ]
            hostnames = sorted(f.result(20).json()["ietf-system:system"]["hostname"] for f in futures)
        assert hostnames == ["sn-0003"] * 4 + ["sn-0004"] * 4
    finally:
        for relay in relays:
            relay.stop()


def test_wrong_identity_is_rejected(tmp_path: Path, pki: DevicePKI, server: CallHomeServer) -> None:
    impostor = RestconfDevice(tmp_path, pki, "SN-9999")
    try:
        relay = impostor.call_home(server)
        relay.wait(10)
        [rejected] = wait_rejected(server)
        assert rejected.reason == "certificate-rejected"
        assert "SN-9999" in rejected.detail
        assert impostor.backend.requests == []  # not one HTTP byte reached it
    finally:
        impostor.stop()


def test_large_body_is_streamed_not_buffered(
    server: CallHomeServer, devices: dict[str, RestconfDevice], session: requests.Session
) -> None:
    relay = devices["SN-0003"].call_home(server)
    try:
        tracemalloc.start()
        response = session.get("https://SN-0003/restconf/data/example-big:blob", stream=True)
        received = 0
        for chunk in response.iter_content(256 * 1024):
            received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert received == BIG
        assert peak < BIG / 4, f"peak {peak} bytes while streaming {BIG}"
    finally:
        relay.stop()
