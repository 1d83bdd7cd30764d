# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""callhome.network.netconf: its options as Ansible resolves them, and
_connect() against a real gateway with simulated devices calling home."""

from __future__ import annotations

import json
import time

import pytest

from ansible.errors import AnsibleConnectionFailure
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import connection_loader

SYSTEM_FILTER = '<system xmlns="urn:ietf:params:xml:ns:yang:ietf-system"/>'


def netconf_connection(host="SN-0001", network_os=None, **variables):
    """The plugin as Ansible loads it, with the host's variables applied."""
    play_context = PlayContext()
    play_context.remote_addr = host
    play_context.network_os = network_os
    conn = connection_loader.get("callhome.network.netconf", play_context, "/dev/null")
    conn.set_options(var_options={"inventory_hostname": host, **variables})
    return conn


def close(conn):
    if conn._connected:
        conn.close()


# -- options ------------------------------------------------------------------------------


def test_loaded_by_its_collection_name():
    conn = netconf_connection()
    assert conn.transport == "callhome.network.netconf"
    # ansible.netcommon's netconf action plugin accepts only connections named *.netconf
    assert conn.ansible_name == "callhome.network.netconf"


def test_documented_defaults():
    conn = netconf_connection("SN-0001")
    assert conn.get_option("callhome_run_dir") == "/run/callhome"
    assert conn.get_option("wait_timeout") == 20
    assert conn.get_option("callhome_device") == "SN-0001"
    assert conn.get_option("persistent_command_timeout") == 30
    assert conn.get_option("persistent_connect_timeout") == 30
    assert conn.get_option("network_os") is None


def test_host_variables():
    conn = netconf_connection(
        "router-1",
        ansible_callhome_run_dir="/srv/callhome",
        ansible_callhome_wait_timeout="7.5",
        ansible_callhome_device="SN-0042",
        ansible_command_timeout=60,
    )
    assert conn.get_option("callhome_run_dir") == "/srv/callhome"
    assert conn.get_option("wait_timeout") == 7.5
    assert conn.get_option("callhome_device") == "SN-0042"
    assert conn.get_option("persistent_command_timeout") == 60


def test_environment(monkeypatch):
    monkeypatch.setenv("CALLHOME_RUN_DIR", "/var/run/ch")
    monkeypatch.setenv("CALLHOME_WAIT_TIMEOUT", "3")
    conn = netconf_connection()
    assert conn.get_option("callhome_run_dir") == "/var/run/ch"
    assert conn.get_option("wait_timeout") == 3


def test_network_os_unset_is_default_never_auto():
    conn = netconf_connection(network_os=None)
    assert conn._network_os == "default"
    assert conn.netconf.ansible_name == "ansible.netcommon.default"


def test_network_os_set_is_kept():
    conn = netconf_connection(network_os="ansible.netcommon.default", ansible_network_os="ansible.netcommon.default")
    assert conn._network_os == "ansible.netcommon.default"
    assert conn.get_option("network_os") == "ansible.netcommon.default"
    assert conn.netconf.ansible_name == "ansible.netcommon.default"


# -- _connect against a real gateway ---------------------------------------------------------


def test_connect_gives_a_working_manager(lab_factory):
    lab = lab_factory(ssh=["SN-0001"])
    lab.call("SN-0001")
    conn = netconf_connection("SN-0001", ansible_callhome_run_dir=str(lab.run_dir), ansible_callhome_wait_timeout=5)
    try:
        rc, out, err = conn._connect()
        assert (rc, err) == (0, b"")
        assert out == conn._manager.session_id.encode()
        assert "<hostname>sn-0001</hostname>" in conn._manager.get_config("running").data_xml
        # connected once: a second call reuses the session
        assert conn._connect()[1] == out
        # what ansible.netcommon's netconf modules call, through the default netconf sub-plugin
        capabilities = json.loads(conn.get_capabilities())
        assert "urn:ietf:params:netconf:base:1.1" in capabilities["server_capabilities"]
        reply = conn.get_config(source="running", filter=("subtree", SYSTEM_FILTER))
        assert "<hostname>sn-0001</hostname>" in reply
        assert lab.client.device("SN-0001").local_sessions == 1
    finally:
        close(conn)
    deadline = time.monotonic() + 5
    while lab.client.device("SN-0001").local_sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lab.client.device("SN-0001").local_sessions == 0


def test_connect_edit_and_commit(lab_factory):
    lab = lab_factory(ssh=["SN-0001"])
    lab.call("SN-0001")
    conn = netconf_connection("SN-0001", ansible_callhome_run_dir=str(lab.run_dir), ansible_callhome_wait_timeout=5)
    config = (
        '<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
        '<system xmlns="urn:ietf:params:xml:ns:yang:ietf-system"><location>rack-7</location></system></config>'
    )
    try:
        conn.edit_config(target="candidate", config=config)
        conn.commit()
        assert "<location>rack-7</location>" in conn.get_config(source="running", filter=("subtree", SYSTEM_FILTER))
    finally:
        close(conn)
    # committed on the device: another NETCONF session sees it
    with lab.client.netconf_manager("SN-0001", timeout=10) as other:
        assert "<location>rack-7</location>" in other.get_config("running").data_xml


def test_connect_waits_for_a_device_that_calls_later(lab_factory):
    lab = lab_factory(ssh=["SN-0001"])
    # the plugin is built before the device is told to call: on a loaded machine
    # building it can take longer than the delay, and the device would then be
    # connected before the plugin looked (no wait, no message to assert)
    conn = netconf_connection("SN-0001", ansible_callhome_run_dir=str(lab.run_dir), ansible_callhome_wait_timeout=10)
    started = time.monotonic()
    lab.call("SN-0001", delay=1.0, wait=False)
    try:
        assert conn._connect()[0] == 0
        assert time.monotonic() - started >= 0.9
        assert "<hostname>sn-0001</hostname>" in conn._manager.get_config("running").data_xml
        messages = [text for _level, text in conn.pop_messages()]
        assert any("device SN-0001 is never-connected: waiting up to 10s" in m for m in messages)
    finally:
        close(conn)


def test_connect_tls_device(lab_factory):
    lab = lab_factory(tls=["SN-0003"])
    lab.call("SN-0003")
    conn = netconf_connection("SN-0003", ansible_callhome_run_dir=str(lab.run_dir), ansible_callhome_wait_timeout=5)
    try:
        conn._connect()
        assert "<hostname>sn-0003</hostname>" in conn._manager.get_config("running").data_xml
    finally:
        close(conn)


def test_unknown_device(lab_factory):
    lab = lab_factory(ssh=["SN-0001"])
    conn = netconf_connection("SN-9999", ansible_callhome_run_dir=str(lab.run_dir))
    with pytest.raises(AnsibleConnectionFailure) as failure:
        conn._connect()
    assert "device SN-9999 is not in the inventory" in str(failure.value)
    assert str(lab.run_dir) in str(failure.value)
    assert not conn._connected


def test_device_that_never_calls(lab_factory, deadline):
    lab = lab_factory(ssh=["SN-0001"], absent=["SN-0002"])
    conn = netconf_connection("SN-0002", ansible_callhome_run_dir=str(lab.run_dir), ansible_callhome_wait_timeout=0.5)
    with pytest.raises(AnsibleConnectionFailure) as failure:
        conn._connect()
    assert "device SN-0002 did not call home within 0.5 s" in str(failure.value)
    assert time.monotonic() - deadline < 10
    assert not conn._connected


def test_device_not_connected_and_no_wait(lab_factory):
    lab = lab_factory(absent=["SN-0002"])
    conn = netconf_connection("SN-0002", ansible_callhome_run_dir=str(lab.run_dir), ansible_callhome_wait_timeout=0)
    with pytest.raises(AnsibleConnectionFailure) as failure:
        conn._connect()
    assert "device SN-0002 is never-connected and wait_timeout is 0" in str(failure.value)


@pytest.mark.parametrize("wait, command_timeout", [(30, 30), (45, 30), (12, 10)])
def test_wait_must_be_shorter_than_command_timeout(empty_run_dir, wait, command_timeout):
    conn = netconf_connection(
        "SN-0001",
        ansible_callhome_run_dir=str(empty_run_dir),
        ansible_callhome_wait_timeout=wait,
        ansible_command_timeout=command_timeout,
    )
    with pytest.raises(AnsibleConnectionFailure) as failure:
        conn._connect()
    message = str(failure.value)
    assert "wait_timeout (%gs)" % wait in message
    assert "persistent_command_timeout (%ds)" % command_timeout in message
    assert "SN-0001" in message
    assert "control.sock" not in message  # refused before asking any gateway


def test_gateway_not_running(empty_run_dir):
    conn = netconf_connection("SN-0001", ansible_callhome_run_dir=str(empty_run_dir), ansible_callhome_wait_timeout=1)
    with pytest.raises(AnsibleConnectionFailure) as failure:
        conn._connect()
    assert "no call-home gateway at %s" % (empty_run_dir / "control.sock") in str(failure.value)


def test_restconf_device_with_the_netconf_plugin(lab_factory):
    lab = lab_factory(restconf=["SN-0004"])
    lab.call("SN-0004")
    conn = netconf_connection("SN-0004", ansible_callhome_run_dir=str(lab.run_dir))
    with pytest.raises(AnsibleConnectionFailure) as failure:
        conn._connect()
    assert "device SN-0004 calls home over restconf: use ansible_connection=callhome.network.restconf" in str(failure.value)
    assert "ansible_connection=callhome.network.restconf" in str(failure.value)


def test_device_refusing_netconf_is_a_connection_failure_naming_it(lab_factory):
    lab = lab_factory(no_netconf=["SN-0007"])
    lab.call("SN-0007")
    conn = netconf_connection("SN-0007", ansible_callhome_run_dir=str(lab.run_dir), ansible_callhome_wait_timeout=5)
    try:
        with pytest.raises(AnsibleConnectionFailure) as failure:
            conn._connect()
        assert "SN-0007" in str(failure.value)
    finally:
        close(conn)
