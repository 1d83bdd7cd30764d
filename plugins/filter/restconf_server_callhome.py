# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: restconf_server_callhome
short_description: The ietf-restconf-server call-home configuration, from role variables
version_added: 0.1.0
author:
  - callhome developers (@callhome)
description:
  - Renders the C(/restconf-server/call-home) subtree of the C(ietf-restconf-server) YANG module (RFC 8071 call
    home over HTTPS, draft-ietf-netconf-restconf-client-server), as the XML a NETCONF C(<config>) holds or as
    RFC 7951 JSON for RESTCONF.
  - The input is the list C(restconf_server_callhome_clients) of the C(callhome.network.restconf_server_callhome)
    role; docs/roles.md describes every key. Every client calls home over C(https) (port 4336 by default).
  - Bad input fails with the role variable and the key path.
options:
  _input:
    description: The call-home clients (C(restconf_server_callhome_clients)).
    type: list
    elements: dict
    required: true
  revision:
    description: The C(ietf-restconf-server) revision (the 2024-08-14 shape, with the 2024-10-10 TLS groupings).
    type: str
    choices: ["2024-08-14"]
    default: "2024-08-14"
  tls:
    description:
      - The TLS server side - C(asymmetric_key) and C(certificate) (names in the device's keystore),
        C(client_ca_certificates) and C(client_certificates) (PEM text of the manager's CA or certificate) and
        C(cert_to_name) (C(id), C(fingerprint) or C(certificate), C(map_type), C(name)).
    type: dict
    default: {}
  output:
    description: V(xml) (the content of a NETCONF C(<config>)) or V(json) (RFC 7951, for RESTCONF).
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
- name: RFC 7951 JSON for restconf_config
  ansible.builtin.debug:
    msg: "{{ clients | callhome.network.restconf_server_callhome(tls=tls, output='json') }}"
  vars:
    clients:
      - name: manager
        endpoints: [{name: primary, address: 192.0.2.10}]
    tls:
      asymmetric_key: serverkey
      certificate: servercert
      client_ca_certificates: ["{{ lookup('ansible.builtin.file', 'pki/manager-ca.pem') }}"]
      cert_to_name: [{map_type: common-name}]
"""

RETURN = r"""
_value:
  description: XML (C(<restconf-server>)) or JSON text.
  type: str
"""

from ansible_collections.callhome.network.plugins.plugin_utils.callhome_model import render, render_keystore_stub


def restconf_server_callhome(
    clients, revision="2024-08-14", tls=None, output="xml", operation="merge", present=None, keystore_stub=False
):
    """The call-home subtree of ietf-restconf-server (see DOCUMENTATION)."""
    if keystore_stub:
        return render_keystore_stub("restconf", clients, revision, "restconf_server_callhome", None, tls)
    return render("restconf", clients, revision, "restconf_server_callhome", None, tls, output, operation, present)


class FilterModule(object):
    """callhome.network filter for the restconf_server_callhome role."""

    def filters(self):
        return {"restconf_server_callhome": restconf_server_callhome}
