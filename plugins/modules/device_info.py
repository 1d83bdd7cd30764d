#!/usr/bin/python
# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: device_info
short_description: What the callhome gateway knows of call-home devices
description:
  - Reads the registry of the callhome gateway (C(callhome serve)) through its control socket, for
    one device or for all of them. Read only; safe in check mode.
version_added: 0.1.0
author:
  - callhome developers (@callhome)
extends_documentation_fragment:
  - callhome.network.gateway.module
options:
  name:
    description:
      - Name of one device in the gateway's inventory. All devices when not given.
    type: str
  connected_only:
    description:
      - Only the devices connected now.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Only reads.
notes:
  - Fails with the device's name when the gateway does not know it, and with the socket path when no
    gateway answers.
"""

EXAMPLES = r"""
- name: All devices the gateway knows
  callhome.network.device_info:
    run_dir: /run/callhome
  delegate_to: localhost
  register: fleet

- name: One device
  callhome.network.device_info:
    name: SN-0001
  delegate_to: localhost
  register: sn1

- name: Fail when it is not connected
  ansible.builtin.assert:
    that: sn1.device.connected
"""

RETURN = r"""
devices:
  description: The devices asked for, one record each.
  returned: always
  type: list
  elements: dict
  sample:
    - name: SN-0001
      transport: ssh
      state: connected
      connected: true
      peer_address: "192.0.2.7:53122"
      identity: "SHA256:Xb4..."
      connected_since: 1795000000.0
      connected_since_iso: "2026-11-18T10:13:20+00:00"
      last_seen: 1795000100.0
      last_seen_iso: "2026-11-18T10:15:00+00:00"
      reconnects: 0
      local_sessions: 1
      last_reason: null
      one_session_at_a_time: false
device:
  description:
    - The record of O(name), when O(name) is given (same keys as an item of RV(devices)), also when
      O(connected_only) left RV(devices) empty.
  returned: when O(name) is given
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.callhome.network.plugins.module_utils.gateway import (
    GATEWAY_ARGUMENT_SPEC,
    CallHomeError,
    device_result,
    fail_with,
    gateway_client,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str"},
            "connected_only": {"type": "bool", "default": False},
            **GATEWAY_ARGUMENT_SPEC,
        },
        supports_check_mode=True,
    )
    client = gateway_client(module)
    name = module.params["name"]
    try:
        infos = [client.device(name)] if name else client.devices()
    except CallHomeError as exc:
        fail_with(module, exc)
    result = {"changed": False}
    if name:
        result["device"] = device_result(infos[0])
    if module.params["connected_only"]:
        infos = [i for i in infos if i.connected]
    result["devices"] = [device_result(i) for i in infos]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
