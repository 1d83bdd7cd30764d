#!/usr/bin/python
# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: netconf_capabilities
short_description: What a NETCONF server announced in its hello, and the YANG modules among it
description:
  - Returns the capabilities a NETCONF server sent in its C(<hello>) on the task's NETCONF connection, and the YANG
    modules announced there as capability URIs (RFC 6020 s5.6.4, RFC 7950 s5.6.4 -
    C(NAMESPACE?module=NAME&revision=DATE&features=...&deviations=...)) by name.
  - Works over C(ansible.netcommon.netconf) and C(callhome.network.netconf) (through the call-home gateway). Read
    only; safe in check mode.
  - Servers that announce a YANG library (C(urn:ietf:params:netconf:capability:yang-library:1.1)) list their
    modules there instead of in the hello; read it with C(ansible.netcommon.netconf_get).
version_added: 0.1.0
author:
  - callhome developers (@callhome)
options: {}
attributes:
  check_mode:
    support: full
    description: Only reads what the connection already has.
notes:
  - The C(callhome.network.netconf_server_callhome) role uses it to find the C(ietf-netconf-server) revision a device
    implements.
"""

EXAMPLES = r"""
- name: Which ietf-netconf-server revision does the device implement
  callhome.network.netconf_capabilities:
  register: hello

- name: Show it
  ansible.builtin.debug:
    msg: "{{ hello.modules['ietf-netconf-server'].revision | default('none announced') }}"
"""

RETURN = r"""
capabilities:
  description: Every capability URI of the server's hello, as sent.
  returned: always
  type: list
  elements: str
modules:
  description: The YANG modules announced as capabilities, by module name.
  returned: always
  type: dict
  sample:
    ietf-netconf-server:
      namespace: urn:ietf:params:xml:ns:yang:ietf-netconf-server
      revision: "2023-12-28"
      features: [ssh-call-home, central-netconf-server-supported]
      deviations: []
"""

import json
from urllib.parse import parse_qs, urlsplit

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.connection import Connection, ConnectionError


def modules_of(capabilities):
    """The modules announced in ``capabilities`` (RFC 7950 s5.6.4 URIs)."""
    modules = {}
    for uri in capabilities:
        parts = urlsplit(uri.strip())
        query = parse_qs(parts.query)
        names = query.get("module")
        if not names:
            continue
        namespace = uri.split("?", 1)[0]

        def listed(key):
            return [item for value in query.get(key, []) for item in value.split(",") if item]

        modules[names[0]] = {
            "namespace": namespace,
            "revision": (query.get("revision") or [None])[0],
            "features": listed("features"),
            "deviations": listed("deviations"),
        }
    return modules


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    if not module._socket_path:
        module.fail_json(
            msg="netconf_capabilities needs a NETCONF connection (ansible_connection ansible.netcommon.netconf "
            "or callhome.network.netconf)"
        )
    try:
        reply = Connection(module._socket_path).get_capabilities()
    except ConnectionError as exc:
        module.fail_json(msg="could not read the server's capabilities: %s" % exc)
    capabilities = json.loads(reply) if isinstance(reply, str) else reply
    server = list(capabilities.get("server_capabilities", []))
    module.exit_json(changed=False, capabilities=server, modules=modules_of(server))


if __name__ == "__main__":
    main()
