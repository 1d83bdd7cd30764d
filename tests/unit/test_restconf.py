"""RESTCONF adapter pieces without I/O: error bodies, host-meta, URL -> device."""

from __future__ import annotations

import socket

import pytest
import requests

from callhome_transport import CallHomeError, Device, Inventory, TLSIdentity, Transport
from callhome_transport.integrations.restconf import (
    CallHomeAdapter,
    RestconfClient,
    _root_from_host_meta,
    parse_restconf_errors,
)

from ..pki import DevicePKI


def test_json_error_body() -> None:
    body = (
        b'{"ietf-restconf:errors": {"error": [{"error-type": "application", "error-tag": "data-exists",'
        b' "error-path": "/ietf-system:system", "error-message": "exists"},'
        b' {"error-type": "protocol", "error-tag": "x"}]}}'
    )
    errors = parse_restconf_errors("application/yang-data+json", body)
    assert [e.error_tag for e in errors] == ["data-exists", "x"]
    assert errors[0].error_path == "/ietf-system:system"
    assert parse_restconf_errors("application/yang-data+json", b"not json") == []


def test_xml_error_body() -> None:
    body = (
        b'<errors xmlns="urn:ietf:params:xml:ns:yang:ietf-restconf"><error><error-type>protocol</error-type>'
        b"<error-tag>invalid-value</error-tag><error-message>nope</error-message></error></errors>"
    )
    [error] = parse_restconf_errors("application/yang-data+xml", body)
    assert (error.error_type, error.error_tag, error.error_message, error.error_path) == (
        "protocol",
        "invalid-value",
        "nope",
        None,
    )
    assert parse_restconf_errors("text/plain", body) == []


def test_host_meta() -> None:
    xrd = '<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0"><Link rel="restconf" href="/top/restconf/"/></XRD>'
    assert _root_from_host_meta(xrd) == "/top/restconf"
    with pytest.raises(CallHomeError, match="no <Link rel='restconf'>"):
        _root_from_host_meta('<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0"/>')
    with pytest.raises(CallHomeError, match="not XML"):
        _root_from_host_meta("<<<")


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> CallHomeAdapter:
    pki = DevicePKI(tmp_path_factory.mktemp("pki"))
    inventory = Inventory(
        [
            Device(
                name="SN-0003",
                transport=Transport.RESTCONF,
                tls=TLSIdentity(issuers=(pki.root_a.cert,), identifier="SN-0003"),
            ),
            Device(
                name="NC-1", transport=Transport.TLS, tls=TLSIdentity(issuers=(pki.root_a.cert,), identifier="NC-1")
            ),
        ]
    )

    def opener(device: str, timeout: float) -> socket.socket:  # never reached by these tests
        raise AssertionError("no stream expected")

    return CallHomeAdapter(inventory, opener)


def test_urls_name_restconf_devices_only(adapter: CallHomeAdapter) -> None:
    assert adapter._device("https://SN-0003/restconf/data") == "SN-0003"
    assert adapter._device("https://sn-0003/restconf/data") == "SN-0003"  # host names are case-insensitive
    for url, match in [
        ("https://NC-1/restconf", "not a RESTCONF device"),
        ("https://unknown/restconf", "not a RESTCONF device"),
        ("https://SN-0003:8443/restconf", "without a port"),
    ]:
        with pytest.raises(requests.exceptions.InvalidURL, match=match):
            adapter._device(url)


def test_an_unknown_device_is_named_as_the_caller_spelled_it(adapter: CallHomeAdapter) -> None:
    # failed before: "'sn-9999' is not a RESTCONF device" (requests lower-cases URL hosts)
    with requests.Session() as session:
        session.mount("https://", adapter)
        with pytest.raises(requests.exceptions.InvalidURL, match=r"^'SN-9999' is not a RESTCONF device") as info:
            RestconfClient(session, "SN-9999").get("ietf-system:system")
        assert "RESTCONF devices: SN-0003)" in str(info.value)
        with pytest.raises(requests.exceptions.InvalidURL, match=r"^'SN-9999'"):
            adapter.restconf_root(session, "SN-9999")
        assert RestconfClient(session, "sn-0003").device == "SN-0003"


def test_bad_adapter_settings(adapter: CallHomeAdapter) -> None:
    with pytest.raises(ValueError, match="wait_timeout"):
        CallHomeAdapter(adapter.inventory, adapter._opener, wait_timeout=0)
    with pytest.raises(ValueError, match="connections_per_device"):
        CallHomeAdapter(adapter.inventory, adapter._opener, connections_per_device=0)
    with requests.Session() as session, pytest.raises(TypeError, match="restconf_adapter"):
        RestconfClient(session, "SN-0003")
