# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: gateway
short_description: Call-home devices from the callhome gateway's registry
description:
  - One host per device the callhome gateway (C(callhome serve)) knows, read from its control socket.
    A device is named by its identity in the gateway's inventory, not by an address (call-home draft).
  - Each host gets C(ansible_callhome_device), C(ansible_callhome_run_dir) and C(callhome_*) variables
    with the registry record. Its transport group sets C(ansible_connection)
    (C(callhome.network.netconf) for SSH and TLS devices, C(callhome.network.restconf) for RESTCONF
    devices) as a group variable, so C(group_vars/) and C(host_vars/) files override it (for example
    C(ansible_network_os) for a vendor netconf sub-plugin; the connection plugins use C(default)
    when it is not set).
  - Groups C(callhome_ssh), C(callhome_tls), C(callhome_restconf) by transport and
    C(callhome_connected), C(callhome_disconnected), C(callhome_never_connected),
    C(callhome_rejected), C(callhome_auth_failed) by state; more with O(groups) and O(keyed_groups).
  - The configuration file name must end in C(.callhome.yml) or C(.callhome.yaml).
version_added: 0.1.0
author:
  - callhome developers (@callhome)
requirements:
  - callhome-transport (the Python package of this project) on the controller
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin, to use it in an inventory file.
    required: true
    choices: ["callhome.network.gateway"]
    type: str
  run_dir:
    description:
      - Run directory of the gateway (its C(run_dir) setting), holding C(control.sock).
    type: path
    default: /run/callhome
    env:
      - name: CALLHOME_RUN_DIR
  gateways:
    description:
      - A gateway cluster (docs/scale.md) - its hosts, by the host name each gateway announces (its
        C(cluster.host) setting), and how to reach each over SSH. The device list is read from the
        first gateway that answers (this host's O(run_dir) first, then these in order); every
        gateway answers for the whole cluster.
      - 'Each entry: C(ssh_host) (address; an entry without it is this host), C(ssh_port) (22),
        C(ssh_user), C(ssh_key) (a private key file), C(known_hosts) (default: OpenSSH''s),
        C(run_dir) (/run/callhome).'
      - Each host gets it as C(ansible_callhome_gateways), so the connection plugins reach a device on
        whichever gateway holds it when a task runs (also after a failover), over SSH stream-local
        forwarding (the gateway host's sshd needs C(AllowStreamLocalForwarding yes) and
        C(AllowTcpForwarding) not C(no)); a device held on this host keeps the direct socket.
    type: dict
  connected_only:
    description:
      - Only the devices connected when the inventory is read. By default every device of the
        gateway's inventory is a host, so that a play can wait for the ones not connected yet.
    type: bool
    default: false
"""

EXAMPLES = r"""
# fleet.callhome.yml
plugin: callhome.network.gateway
run_dir: /run/callhome
# a cluster: gateways on three hosts behind one balancer (this host is gw-a)
gateways:
  gw-a: {}
  gw-b: {ssh_host: 10.0.1.2, ssh_user: callhome, ssh_key: ~/.ssh/callhome_ed25519}
  gw-c: {ssh_host: 10.0.1.3, ssh_user: callhome, ssh_key: ~/.ssh/callhome_ed25519}
keyed_groups:
  - key: callhome_transport
    prefix: transport
compose:
  site: callhome_device.split('-')[0]
"""

from ansible.errors import AnsibleParserError
from ansible.module_utils.basic import missing_required_lib
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

from ansible.errors import AnsibleConnectionFailure
from ansible_collections.callhome.network.plugins.plugin_utils.gateway import gateway_remotes

try:
    from callhome_transport.errors import CallHomeError
    from callhome_transport.gateway.client import GatewayClient, cluster_client
except ImportError as exc:
    HAS_CALLHOME = False
    CALLHOME_IMPORT_ERROR = exc
else:
    HAS_CALLHOME = True
    CALLHOME_IMPORT_ERROR = None

CONNECTION_BY_TRANSPORT = {
    "ssh": "callhome.network.netconf",
    "tls": "callhome.network.netconf",
    "restconf": "callhome.network.restconf",
}


def group_name(kind):
    """A registry state or transport as an Ansible group name."""
    return "callhome_" + kind.replace("-", "_")


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "callhome.network.gateway"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith((".callhome.yml", ".callhome.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        if not HAS_CALLHOME:
            raise AnsibleParserError("%s: %s" % (missing_required_lib("callhome-transport"), CALLHOME_IMPORT_ERROR))
        run_dir = self.get_option("run_dir")
        gateways = self.get_option("gateways")
        try:
            if gateways:
                devices = cluster_client(run_dir, gateway_remotes(gateways)).devices()
            else:
                devices = GatewayClient(run_dir).devices()
        except (CallHomeError, AnsibleConnectionFailure) as exc:
            raise AnsibleParserError("callhome.network.gateway (%s): %s" % (path, exc)) from None
        self._populate(devices, run_dir, gateways)

    def _populate(self, devices, run_dir, gateways=None):
        strict = self.get_option("strict")
        for info in devices:
            if self.get_option("connected_only") and not info.connected:
                continue
            host = self.inventory.add_host(info.name)
            variables = {
                "ansible_callhome_device": info.name,
                "ansible_callhome_run_dir": run_dir,  # per host: two gateways may feed one inventory
                "callhome_device": info.name,
                "callhome_transport": info.transport,
                "callhome_state": info.state,
                "callhome_peer_address": info.peer_address,
                "callhome_identity": info.identity,
                "callhome_connected_since": info.connected_since,
                "callhome_last_seen": info.last_seen,
                "callhome_reconnects": info.reconnects,
                "callhome_gateway": info.gateway,
            }
            if gateways:
                variables["ansible_callhome_gateways"] = gateways
            for key, value in variables.items():
                self.inventory.set_variable(host, key, value)
            for kind in (info.transport, info.state):
                group = self.inventory.add_group(group_name(kind))
                self.inventory.add_child(group, host)
            # group variables, so that group_vars/ and host_vars/ files override them
            transport_vars = {
                "ansible_connection": CONNECTION_BY_TRANSPORT.get(info.transport, "callhome.network.netconf"),
            }
            for key, value in transport_vars.items():
                self.inventory.set_variable(group_name(info.transport), key, value)
            hostvars = dict(transport_vars, **self.inventory.get_host(host).get_vars())
            self._set_composite_vars(self.get_option("compose"), hostvars, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, host, strict=strict)
