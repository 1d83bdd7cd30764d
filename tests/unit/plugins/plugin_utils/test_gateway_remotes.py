# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gateways option (a cluster's hosts and their SSH settings) as the
client's remotes, and the connection plugins reading it."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleConnectionFailure
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import connection_loader
from ansible_collections.callhome.network.plugins.plugin_utils.gateway import gateway_remotes

from callhome_transport.gateway.remote import SSHGateway


def test_entries_become_ssh_targets_and_an_entry_without_ssh_host_is_this_host():
    remotes = gateway_remotes(
        {
            "gw-a": {},
            "gw-b": {"ssh_host": "10.0.1.2", "ssh_user": "callhome", "ssh_key": "/k", "run_dir": "/run/ch"},
            "gw-c": {"ssh_host": "10.0.1.3", "ssh_port": "2222", "known_hosts": "/kh"},
            "gw-d": None,
        }
    )
    assert remotes["gw-a"] is None
    assert remotes["gw-d"] is None
    assert remotes["gw-b"] == SSHGateway(host="10.0.1.2", username="callhome", key_file="/k", run_dir="/run/ch")
    assert remotes["gw-c"] == SSHGateway(host="10.0.1.3", port=2222, known_hosts="/kh")


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"ssh_host": "h", "user": "x"}, "unknown keys user"),
        ("10.0.1.2", "expected a mapping"),
        ({"ssh_host": "h", "ssh_port": 70000}, "port must be 1..65535"),
        ({"ssh_host": "h", "ssh_port": "ssh"}, "gateways.gw-b"),
    ],
)
def test_bad_entries_name_the_gateway(entry, message):
    with pytest.raises(AnsibleConnectionFailure, match=message):
        gateway_remotes({"gw-b": entry})


@pytest.mark.parametrize("plugin", ["callhome.network.netconf", "callhome.network.restconf"])
def test_the_connection_plugins_take_the_gateways_variable(plugin):
    conn = connection_loader.get(plugin, PlayContext(), "/dev/null")
    gateways = {"gw-b": {"ssh_host": "10.0.1.2"}}
    conn.set_options(var_options={"inventory_hostname": "SN-1", "ansible_callhome_gateways": gateways})
    assert conn.get_option("callhome_gateways") == gateways
