# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""callhome.network.gateway inventory: file selection, hosts, groups and
variables from registry records, constructed features, and a real gateway."""

from __future__ import annotations

import pytest

from ansible import constants as C
from ansible.errors import AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.inventory import BaseInventoryPlugin
from ansible.plugins.loader import inventory_loader
from ansible.vars.manager import VariableManager

from callhome_transport.gateway.client import DeviceInfo

RUN_DIR = "/run/callhome-test"

RECORDS = [
    DeviceInfo(
        name="SN-0001",
        transport="ssh",
        state="connected",
        peer_address="192.0.2.7:53122",
        identity="SHA256:Xb4c5zYk0sB1r7ZV0Dq2W1uYyQJ3mE9kC8hN0pL6tQs",
        connected_since=1795000000.0,
        last_seen=1795000100.0,
        reconnects=2,
    ),
    DeviceInfo(name="SN-0002", transport="ssh", state="never-connected"),
    DeviceInfo(
        name="SN-0003",
        transport="tls",
        state="disconnected",
        identity="serialNumber=SN-0003,CN=sn-0003",
        last_reason="keepalive timeout",
    ),
    DeviceInfo(name="SN-0004", transport="restconf", state="connected", peer_address="198.51.100.4:40000"),
    DeviceInfo(name="LAB-0005", transport="restconf", state="rejected"),
    DeviceInfo(name="LAB-0006", transport="ssh", state="auth-failed"),
]


def gateway_plugin():
    return inventory_loader.get("callhome.network.gateway")


def configured(tmp_path, config):
    """The plugin with ``config`` read as Ansible reads an inventory source
    (so templates in compose/groups/keyed_groups are trusted), and an empty
    inventory."""
    path = tmp_path / "fleet.callhome.yml"
    path.write_text(config, encoding="utf-8")
    plugin = gateway_plugin()
    inventory = InventoryData()
    BaseInventoryPlugin.parse(plugin, inventory, DataLoader(), str(path))
    plugin._read_config_data(str(path))
    return plugin, inventory


def members(inventory, group):
    return sorted(host.name for host in inventory.groups[group].get_hosts())


def host_vars(inventory, name):
    """The host's variables with those of its groups under them, as Ansible merges them."""
    host = inventory.get_host(name)
    merged = {}
    for group in sorted(host.get_groups(), key=lambda g: (g.depth, g.priority, g.name)):
        merged.update(group.get_vars())
    merged.update(host.get_vars())
    return merged


# -- verify_file ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, accepted",
    [
        ("fleet.callhome.yml", True),
        ("fleet.callhome.yaml", True),
        ("callhome.yml", False),
        ("fleet.yml", False),
        ("fleet.callhome.yml.bak", False),
        ("fleet.callhome.json", False),
    ],
)
def test_verify_file_by_suffix(tmp_path, name, accepted):
    path = tmp_path / name
    path.write_text("plugin: callhome.network.gateway\n", encoding="utf-8")
    assert gateway_plugin().verify_file(str(path)) is accepted


def test_verify_file_needs_an_existing_file(tmp_path):
    assert gateway_plugin().verify_file(str(tmp_path / "missing.callhome.yml")) is False


# -- _populate ------------------------------------------------------------------------------


def test_hosts_groups_and_variables(tmp_path):
    plugin, inventory = configured(tmp_path, "plugin: callhome.network.gateway\n")
    plugin._populate(RECORDS, RUN_DIR)

    assert sorted(inventory.hosts) == sorted(r.name for r in RECORDS)
    assert members(inventory, "callhome_ssh") == ["LAB-0006", "SN-0001", "SN-0002"]
    assert members(inventory, "callhome_tls") == ["SN-0003"]
    assert members(inventory, "callhome_restconf") == ["LAB-0005", "SN-0004"]
    assert members(inventory, "callhome_connected") == ["SN-0001", "SN-0004"]
    assert members(inventory, "callhome_never_connected") == ["SN-0002"]
    assert members(inventory, "callhome_disconnected") == ["SN-0003"]
    assert members(inventory, "callhome_rejected") == ["LAB-0005"]
    assert members(inventory, "callhome_auth_failed") == ["LAB-0006"]

    sn1 = host_vars(inventory, "SN-0001")
    assert sn1["ansible_connection"] == "callhome.network.netconf"
    assert sn1["ansible_callhome_device"] == "SN-0001"
    assert sn1["ansible_callhome_run_dir"] == RUN_DIR
    assert "ansible_network_os" not in sn1  # the connection plugins default to "default"; group_vars may set it
    assert sn1["callhome_transport"] == "ssh"
    assert sn1["callhome_state"] == "connected"
    assert sn1["callhome_peer_address"] == "192.0.2.7:53122"
    assert sn1["callhome_identity"] == "SHA256:Xb4c5zYk0sB1r7ZV0Dq2W1uYyQJ3mE9kC8hN0pL6tQs"
    assert sn1["callhome_connected_since"] == 1795000000.0
    assert sn1["callhome_last_seen"] == 1795000100.0
    assert sn1["callhome_reconnects"] == 2

    assert host_vars(inventory, "SN-0003")["ansible_connection"] == "callhome.network.netconf"
    assert host_vars(inventory, "SN-0004")["ansible_connection"] == "callhome.network.restconf"
    assert host_vars(inventory, "LAB-0005")["ansible_connection"] == "callhome.network.restconf"
    assert host_vars(inventory, "SN-0002")["callhome_peer_address"] is None


def test_connected_only(tmp_path):
    plugin, inventory = configured(tmp_path, "plugin: callhome.network.gateway\nconnected_only: true\n")
    plugin._populate(RECORDS, RUN_DIR)
    assert sorted(inventory.hosts) == ["SN-0001", "SN-0004"]
    assert "callhome_never_connected" not in inventory.groups


def test_compose_groups_and_keyed_groups(tmp_path):
    config = """
plugin: callhome.network.gateway
compose:
  site: callhome_device.split('-')[0] | lower
  ansible_callhome_wait_timeout: "5"
groups:
  needs_attention: callhome_state in ['rejected', 'auth-failed', 'disconnected']
keyed_groups:
  - key: callhome_transport
    prefix: transport
  - key: site
    prefix: site
"""
    plugin, inventory = configured(tmp_path, config)
    plugin._populate(RECORDS, RUN_DIR)

    assert host_vars(inventory, "SN-0001")["site"] == "sn"
    assert host_vars(inventory, "LAB-0005")["site"] == "lab"
    assert host_vars(inventory, "SN-0002")["ansible_callhome_wait_timeout"] == 5
    assert members(inventory, "needs_attention") == ["LAB-0005", "LAB-0006", "SN-0003"]
    assert members(inventory, "transport_ssh") == ["LAB-0006", "SN-0001", "SN-0002"]
    assert members(inventory, "transport_restconf") == ["LAB-0005", "SN-0004"]
    assert members(inventory, "site_lab") == ["LAB-0005", "LAB-0006"]
    assert members(inventory, "site_sn") == ["SN-0001", "SN-0002", "SN-0003", "SN-0004"]


def test_strict_compose_error_names_the_host(tmp_path):
    config = "plugin: callhome.network.gateway\nstrict: true\ncompose:\n  broken: callhome_no_such_variable.upper()\n"
    plugin, _inventory = configured(tmp_path, config)
    with pytest.raises(Exception) as failure:
        plugin._populate(RECORDS[:1], RUN_DIR)
    assert "SN-0001" in str(failure.value)


def test_not_strict_compose_error_is_skipped(tmp_path):
    config = "plugin: callhome.network.gateway\ncompose:\n  broken: callhome_no_such_variable.upper()\n"
    plugin, inventory = configured(tmp_path, config)
    plugin._populate(RECORDS[:1], RUN_DIR)
    assert "broken" not in host_vars(inventory, "SN-0001")


# -- parse against a real gateway ---------------------------------------------------------------


def test_parse_a_running_gateway(tmp_path, lab_factory):
    lab = lab_factory(ssh=["SN-0001"], restconf=["SN-0004"], absent=["SN-0002"])
    lab.call("SN-0001")
    lab.call("SN-0004")
    path = tmp_path / "fleet.callhome.yml"
    path.write_text("plugin: callhome.network.gateway\nrun_dir: %s\n" % lab.run_dir, encoding="utf-8")
    inventory = InventoryData()
    plugin = gateway_plugin()
    assert plugin.verify_file(str(path))
    plugin.parse(inventory, DataLoader(), str(path))

    assert sorted(inventory.hosts) == ["SN-0001", "SN-0002", "SN-0004"]
    assert members(inventory, "callhome_connected") == ["SN-0001", "SN-0004"]
    assert members(inventory, "callhome_never_connected") == ["SN-0002"]
    sn1 = host_vars(inventory, "SN-0001")
    assert sn1["callhome_identity"] == lab.devices["SN-0001"].fingerprint
    assert sn1["callhome_peer_address"].startswith("127.0.0.1:")
    assert sn1["ansible_callhome_run_dir"] == str(lab.run_dir)
    assert "serialNumber=SN-0004" in host_vars(inventory, "SN-0004")["callhome_identity"]


def test_parse_without_a_gateway_names_the_source_and_socket(tmp_path, empty_run_dir):
    path = tmp_path / "fleet.callhome.yml"
    path.write_text("plugin: callhome.network.gateway\nrun_dir: %s\n" % empty_run_dir, encoding="utf-8")
    with pytest.raises(AnsibleParserError) as failure:
        gateway_plugin().parse(InventoryData(), DataLoader(), str(path))
    assert str(path) in str(failure.value)
    assert str(empty_run_dir / "control.sock") in str(failure.value)


def test_parse_rejects_another_plugins_file(tmp_path):
    path = tmp_path / "fleet.callhome.yml"
    path.write_text("plugin: community.docker.docker_containers\n", encoding="utf-8")
    with pytest.raises(AnsibleParserError, match="Incorrect plugin name"):
        gateway_plugin().parse(InventoryData(), DataLoader(), str(path))


def test_inventory_manager_end_to_end(tmp_path, lab_factory, monkeypatch):
    """As ansible-playbook -i fleet.callhome.yml loads it, with group_vars beside it."""
    lab = lab_factory(ssh=["SN-0001"], absent=["SN-0002"])
    lab.call("SN-0001")
    path = tmp_path / "fleet.callhome.yml"
    path.write_text("plugin: callhome.network.gateway\nrun_dir: %s\n" % lab.run_dir, encoding="utf-8")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "callhome_ssh.yml").write_text("ansible_callhome_wait_timeout: 5\n", encoding="utf-8")
    monkeypatch.setattr(C, "INVENTORY_ENABLED", ["callhome.network.gateway"])
    loader = DataLoader()
    manager = InventoryManager(loader=loader, sources=[str(path)])
    variables = VariableManager(loader=loader, inventory=manager)

    assert sorted(h.name for h in manager.get_hosts("callhome_ssh")) == ["SN-0001", "SN-0002"]
    assert [h.name for h in manager.get_hosts("callhome_connected")] == ["SN-0001"]
    sn1 = variables.get_vars(host=manager.get_host("SN-0001"), include_hostvars=False)
    assert sn1["ansible_connection"] == "callhome.network.netconf"
    assert sn1["ansible_callhome_wait_timeout"] == 5
    assert sn1["callhome_state"] == "connected"


def test_group_vars_can_set_the_network_os(tmp_path, lab_factory, monkeypatch):
    lab = lab_factory(ssh=["SN-0001"])
    path = tmp_path / "fleet.callhome.yml"
    path.write_text("plugin: callhome.network.gateway\nrun_dir: %s\n" % lab.run_dir, encoding="utf-8")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "callhome_ssh.yml").write_text(
        "ansible_network_os: junipernetworks.junos.junos\n", encoding="utf-8"
    )
    monkeypatch.setattr(C, "INVENTORY_ENABLED", ["callhome.network.gateway"])
    loader = DataLoader()
    manager = InventoryManager(loader=loader, sources=[str(path)])
    variables = VariableManager(loader=loader, inventory=manager)
    sn1 = variables.get_vars(host=manager.get_host("SN-0001"), include_hostvars=False)
    assert sn1["ansible_network_os"] == "junipernetworks.junos.junos"
