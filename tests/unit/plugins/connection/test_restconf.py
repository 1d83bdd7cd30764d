# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""callhome.network.restconf: HTTP error mapping, options, and send_request
against a real gateway relaying to a simulated RESTCONF device."""

from __future__ import annotations

import json
import time

import pytest

from ansible.errors import AnsibleConnectionFailure
from ansible.module_utils.connection import ConnectionError as AnsibleConnectionError
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import connection_loader
from ansible_collections.callhome.network.plugins.connection.restconf import error_text, parse_body

SYSTEM = "/data/ietf-system:system"


def restconf_connection(host="SN-0004", **variables):
    play_context = PlayContext()
    play_context.remote_addr = host
    conn = connection_loader.get("callhome.network.restconf", play_context, "/dev/null")
    conn.set_options(var_options={"inventory_hostname": host, **variables})
    return conn


def connected(lab, name="SN-0004", **variables):
    variables.setdefault("ansible_callhome_wait_timeout", 5)
    return restconf_connection(name, ansible_callhome_run_dir=str(lab.run_dir), **variables)


# -- error_text / parse_body ------------------------------------------------------------------


def rfc8040_errors(*errors):
    return json.dumps({"ietf-restconf:errors": {"error": list(errors)}}).encode()


def test_error_text_uses_the_rfc8040_error_messages():
    body = rfc8040_errors(
        {"error-type": "application", "error-tag": "data-missing", "error-message": "no such interface eth9"},
        {"error-type": "application", "error-tag": "invalid-value", "error-message": "mtu out of range"},
    )
    assert error_text(404, "Not Found", body) == "no such interface eth9\nmtu out of range"


def test_error_text_falls_back_to_the_error_tag():
    body = rfc8040_errors({"error-type": "protocol", "error-tag": "invalid-value", "error-path": "/nope:missing"})
    assert error_text(404, "Not Found", body) == "invalid-value"


def test_error_text_accepts_errors_without_module_prefix():
    body = json.dumps({"errors": {"error": [{"error-tag": "access-denied", "error-message": "NACM says no"}]}})
    assert error_text(403, "Forbidden", body.encode()) == "NACM says no"


@pytest.mark.parametrize(
    "body, expected",
    [
        (b"upstream went away\n", "upstream went away"),  # not JSON: the body
        (b'{"ietf-restconf:errors": {"error": []}}', '{"ietf-restconf:errors": {"error": []}}'),  # no messages
        (b'["not", "a", "mapping"]', '["not", "a", "mapping"]'),
        (b'{"message": "plain JSON"}', '{"message": "plain JSON"}'),
        (b"caf\xe9 d\xe9faillant", "caf\ufffd d\ufffdfaillant"),  # not UTF-8: replaced, not raised
    ],
)
def test_error_text_other_bodies(body, expected):
    assert error_text(500, "Internal Server Error", body) == expected


@pytest.mark.parametrize("body", [b"", None, b"  \n"])
def test_error_text_empty_body_is_the_status_line(body):
    assert error_text(404, "Not Found", body) == "HTTP 404 Not Found"


def test_parse_body():
    data = {"ietf-system:system": {"hostname": "sn-0004"}}
    assert parse_body(json.dumps(data).encode(), "application/yang-data+json") == data
    assert parse_body(json.dumps(data).encode(), None) == data  # JSON without a content type
    assert parse_body(b"", "application/yang-data+json") == {}
    assert parse_body(None, None) == {}
    assert parse_body(b"<data/>", "application/yang-data+xml") == "<data/>"


# -- options ------------------------------------------------------------------------------


def test_documented_defaults():
    conn = restconf_connection("SN-0004")
    assert conn.transport == "callhome.network.restconf"
    assert conn.get_option("callhome_run_dir") == "/run/callhome"
    assert conn.get_option("wait_timeout") == 20
    assert conn.get_option("callhome_device") == "SN-0004"
    assert conn.get_option("root_path") == "/restconf"
    assert conn.get_option("persistent_command_timeout") == 30


def test_host_variables():
    conn = restconf_connection(
        "rc-1",
        ansible_callhome_run_dir="/srv/callhome",
        ansible_callhome_wait_timeout=2,
        ansible_callhome_device="SN-0004",
        ansible_httpapi_restconf_root="/api/restconf",
    )
    assert conn.get_option("callhome_run_dir") == "/srv/callhome"
    assert conn.get_option("wait_timeout") == 2
    assert conn.get_option("callhome_device") == "SN-0004"
    assert conn.get_option("root_path") == "/api/restconf"


# -- send_request against a real gateway -----------------------------------------------------


def test_get_returns_parsed_json(lab_factory):
    lab = lab_factory(restconf=["SN-0004"])
    lab.call("SN-0004")
    conn = connected(lab)
    try:
        for _attempt in range(2):  # a kept-alive local connection
            data = conn.send_request(None, path=SYSTEM, method="GET", accept="application/yang-data+json")
            assert data == {"ietf-system:system": {"hostname": "sn-0004", "location": "lab"}}
    finally:
        conn.close()


def test_missing_resource_is_404(lab_factory):
    lab = lab_factory(restconf=["SN-0004"])
    lab.call("SN-0004")
    conn = connected(lab)
    try:
        with pytest.raises(AnsibleConnectionError) as failure:
            conn.send_request(None, path="/data/nope:missing")
        assert failure.value.code == 404  # restconf_config reads 404 as "absent"
        assert "invalid-value" in str(failure.value)
        # the connection is still usable after an HTTP error
        assert conn.send_request(None, path=SYSTEM)["ietf-system:system"]["hostname"] == "sn-0004"
    finally:
        conn.close()


def test_put_patch_delete_round_trip(lab_factory):
    lab = lab_factory(restconf=["SN-0004"])
    lab.call("SN-0004")
    conn = connected(lab)
    path = "/data/example-ntp:ntp"
    try:
        created = {"example-ntp:ntp": {"enabled": True, "server": "192.0.2.1"}}
        assert conn.send_request(created, path=path, method="PUT") == {}
        assert conn.send_request(None, path=path) == created
        assert conn.send_request('{"example-ntp:ntp": {"server": "192.0.2.2"}}', path=path, method="patch") == {}
        assert conn.send_request(None, path=path) == {"example-ntp:ntp": {"enabled": True, "server": "192.0.2.2"}}
        replaced = {"example-ntp:ntp": {"enabled": False}}
        assert conn.send_request(replaced, path=path, method="PUT", content_type="application/yang-data+json") == {}
        assert conn.send_request(None, path=path) == replaced
        assert conn.send_request(None, path=path, method="DELETE") == {}
        with pytest.raises(AnsibleConnectionError) as failure:
            conn.send_request(None, path=path)
        assert failure.value.code == 404
    finally:
        conn.close()
    # the device itself holds what was sent
    assert "example-ntp:ntp" not in lab.devices["SN-0004"].data


def test_waits_for_a_device_that_calls_later(lab_factory):
    lab = lab_factory(restconf=["SN-0004"])
    started = time.monotonic()
    lab.call("SN-0004", delay=1.0, wait=False)
    conn = connected(lab, ansible_callhome_wait_timeout=10)
    try:
        assert conn.send_request(None, path=SYSTEM)["ietf-system:system"]["hostname"] == "sn-0004"
        assert time.monotonic() - started >= 0.9
    finally:
        conn.close()


def test_device_gone_after_connect_is_an_http_error_naming_it(lab_factory):
    lab = lab_factory(restconf=["SN-0004"], deferral_timeout=1)
    lab.call("SN-0004")
    conn = connected(lab)
    try:
        assert conn.send_request(None, path=SYSTEM)["ietf-system:system"]["hostname"] == "sn-0004"
        lab.hang_up("SN-0004")
        with pytest.raises(AnsibleConnectionError) as failure:
            conn.send_request(None, path=SYSTEM)
        assert failure.value.code in (502, 504)
        assert "SN-0004" in str(failure.value)
    finally:
        conn.close()


def test_gateway_restart_between_requests(lab_factory):
    """A kept-alive local connection dies with the gateway: an idempotent
    request is sent again on a new connection, a PATCH is not (it may have
    been applied) and fails naming the device; the next request works."""
    lab = lab_factory(restconf=["SN-0004"])
    lab.call("SN-0004")
    conn = connected(lab)
    try:
        assert conn.send_request(None, path=SYSTEM)["ietf-system:system"]["location"] == "lab"
        lab.restart_gateway()
        lab.call("SN-0004")
        assert conn.send_request(None, path=SYSTEM)["ietf-system:system"]["location"] == "lab"
        lab.restart_gateway()
        lab.call("SN-0004")
        with pytest.raises(AnsibleConnectionError) as failure:
            conn.send_request({"ietf-system:system": {"location": "rack-1"}}, path=SYSTEM, method="PATCH")
        assert "RESTCONF PATCH /restconf%s on device SN-0004 failed" % SYSTEM in str(failure.value)
        assert lab.devices["SN-0004"].data["ietf-system:system"]["location"] == "lab"
        assert conn.send_request({"ietf-system:system": {"location": "rack-1"}}, path=SYSTEM, method="PATCH") == {}
        assert conn.send_request(None, path=SYSTEM)["ietf-system:system"]["location"] == "rack-1"
    finally:
        conn.close()


def test_unknown_device(lab_factory):
    lab = lab_factory(restconf=["SN-0004"])
    conn = connected(lab, "SN-9999")
    with pytest.raises(AnsibleConnectionFailure) as failure:
        conn.send_request(None, path=SYSTEM)
    assert "device SN-9999 is not in the inventory" in str(failure.value)


def test_device_that_never_calls(lab_factory, deadline):
    lab = lab_factory(restconf=["SN-0004"])
    conn = connected(lab, ansible_callhome_wait_timeout=0.5)
    with pytest.raises(AnsibleConnectionFailure) as failure:
        conn.send_request(None, path=SYSTEM)
    assert "device SN-0004 did not call home within 0.5 s" in str(failure.value)
    assert time.monotonic() - deadline < 10


def test_wait_must_be_shorter_than_command_timeout(empty_run_dir):
    conn = restconf_connection(
        "SN-0004",
        ansible_callhome_run_dir=str(empty_run_dir),
        ansible_callhome_wait_timeout=30,
        ansible_command_timeout=20,
    )
    with pytest.raises(AnsibleConnectionFailure) as failure:
        conn.send_request(None, path=SYSTEM)
    assert "wait_timeout (30s)" in str(failure.value)
    assert "persistent_command_timeout (20s)" in str(failure.value)


def test_gateway_not_running(empty_run_dir):
    conn = restconf_connection("SN-0004", ansible_callhome_run_dir=str(empty_run_dir), ansible_callhome_wait_timeout=1)
    with pytest.raises(AnsibleConnectionFailure) as failure:
        conn.send_request(None, path=SYSTEM)
    assert "no call-home gateway at %s" % (empty_run_dir / "control.sock") in str(failure.value)


def test_ssh_device_with_the_restconf_plugin(lab_factory):
    lab = lab_factory(ssh=["SN-0001"])
    conn = connected(lab, "SN-0001")
    with pytest.raises(AnsibleConnectionFailure) as failure:
        conn.send_request(None, path=SYSTEM)
    assert "device SN-0001 calls home over ssh: use ansible_connection=callhome.network.netconf" in str(failure.value)
    assert "ansible_connection=callhome.network.netconf" in str(failure.value)
