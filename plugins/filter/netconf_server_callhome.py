# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: netconf_server_callhome
short_description: The ietf-netconf-server call-home configuration, from role variables
version_added: 0.1.0
author:
  - callhome developers (@callhome)
description:
  - Renders the C(/netconf-server/call-home) subtree of the C(ietf-netconf-server) YANG module (RFC 8071 call
    home, draft-ietf-netconf-netconf-client-server) for one of the module revisions devices implement, as the
    XML a NETCONF C(<config>) holds or as RFC 7951 JSON.
  - The input is the list C(netconf_server_callhome_clients) of the C(callhome.network.netconf_server_callhome)
    and C(callhome.network.callhome_agent) roles; docs/roles.md describes every key.
  - 2023-12-28 and 2025-04-24 take the same payload except the SSH user's password; 2019-07-02 differs (keystore
    and truststore references, C(authorized-key), no C(reconnect-strategy/max-wait)) and, for TLS clients, the
    payload also carries the truststore bag of the manager's CA certificates.
  - "Bad input fails with the role variable and the key path, for example
    C(netconf_server_callhome_clients[0].endpoints[1].port: expected an integer 1..65535)."
options:
  _input:
    description: The call-home clients (C(netconf_server_callhome_clients)).
    type: list
    elements: dict
    required: true
  revision:
    description: The C(ietf-netconf-server) revision the device implements.
    type: str
    choices: ["2025-04-24", "2023-12-28", "2019-07-02"]
    default: "2023-12-28"
  ssh:
    description:
      - The SSH server side, for clients with C(transport=ssh) - C(host_key) (the name of the device's host key in
        its keystore) and C(users) (the manager's user names, OpenSSH C(public_keys), C(password) or
        C(password_hash)).
    type: dict
    default: {}
  tls:
    description:
      - The TLS server side, for clients with C(transport=tls) - C(asymmetric_key) and C(certificate) (names in the
        device's keystore), C(client_ca_certificates) and C(client_certificates) (PEM text of the manager's CA or
        certificate) and C(cert_to_name) (C(id), C(fingerprint) or C(certificate), C(map_type), C(name)).
    type: dict
    default: {}
  output:
    description: V(xml) (the content of a NETCONF C(<config>)) or V(json) (RFC 7951).
    type: str
    choices: [xml, json]
    default: xml
  operation:
    description: V(merge) renders the clients; V(remove) renders only their names with C(nc:operation="remove") (XML).
    type: str
    choices: [merge, remove]
    default: merge
  present:
    description:
      - With V(remove), the names of the clients the device has now. Only those are removed; when they would all
        go, the C(call-home) container is removed instead (its client list may not be empty); when none of them is
        named, the result is empty (nothing to do).
    type: list
    elements: str
  keystore_stub:
    description:
      - Render instead a keystore with placeholder keys under the names the configuration references, so that
        C(yanglint) can resolve them when the device's real keystore is not at hand.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: The payload for a device that implements the 2019-07-02 revision
  ansible.builtin.debug:
    msg: "{{ clients | callhome.network.netconf_server_callhome(revision='2019-07-02', ssh={'host_key': 'genkey'}) }}"
  vars:
    clients:
      - name: manager
        endpoints: [{name: primary, address: 192.0.2.10}]
        reconnect_strategy: {start_with: first-listed, max_attempts: 3}
"""

RETURN = r"""
_value:
  description: XML (C(<netconf-server>), and for 2019-07-02 TLS clients C(<truststore>)) or JSON text.
  type: str
"""

from ansible_collections.callhome.network.plugins.plugin_utils.callhome_model import render, render_keystore_stub


def netconf_server_callhome(
    clients, revision="2023-12-28", ssh=None, tls=None, output="xml", operation="merge", present=None, keystore_stub=False
):
    """The call-home subtree of ietf-netconf-server (see DOCUMENTATION)."""
    if keystore_stub:
        return render_keystore_stub("netconf", clients, revision, "netconf_server_callhome", ssh, tls)
    return render("netconf", clients, revision, "netconf_server_callhome", ssh, tls, output, operation, present)


class FilterModule(object):
    """callhome.network filters for the netconf_server_callhome and callhome_agent roles."""

    def filters(self):
        return {"netconf_server_callhome": netconf_server_callhome}
