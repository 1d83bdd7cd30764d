#!/usr/bin/python
# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: wait_for_device
short_description: Wait until a call-home device has called the gateway
description:
  - Blocks until the device named O(name) holds a connected call-home session with the callhome
    gateway, or fails after O(timeout) seconds. This is the deferral of the call-home draft in
    Ansible terms, the manager holds the work until the device connects.
  - Returns at once when the device is already connected. Read only; safe in check mode.
version_added: 0.1.0
author:
  - callhome developers (@callhome)
extends_documentation_fragment:
  - callhome.network.gateway.module
options:
  name:
    description:
      - Name of the device in the gateway's inventory.
    type: str
    required: true
  timeout:
    description:
      - Seconds to wait at most.
    type: float
    default: 300
attributes:
  check_mode:
    support: full
    description: Only waits and reads.
notes:
  - The failure when the device does not call in time names the device and the wait, and returns
    the device's last known record in RV(device).
"""

EXAMPLES = r"""
- name: Hold the play until the device has called home (at most 10 minutes)
  callhome.network.wait_for_device:
    name: "{{ inventory_hostname }}"
    timeout: 600
  delegate_to: localhost
"""

RETURN = r"""
device:
  description: The device's record (see M(callhome.network.device_info)); on timeout, its last known record.
  returned: always, unless the gateway or the device is unknown
  type: dict
elapsed:
  description: Seconds waited.
  returned: always
  type: float
  sample: 4.2
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.callhome.network.plugins.module_utils.gateway import (
    GATEWAY_ARGUMENT_SPEC,
    CallHomeError,
    DeviceNotConnectedError,
    device_result,
    fail_with,
    gateway_client,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "timeout": {"type": "float", "default": 300},
            **GATEWAY_ARGUMENT_SPEC,
        },
        supports_check_mode=True,
    )
    client = gateway_client(module)
    name = module.params["name"]
    timeout = module.params["timeout"]
    started = time.monotonic()
    try:
        info = client.wait(name, timeout)
    except DeviceNotConnectedError as exc:
        elapsed = round(time.monotonic() - started, 3)
        try:
            last = device_result(client.device(name))
        except CallHomeError:
            last = None
        msg = "device %s did not call home within %gs (waited %.1fs; state %s%s)" % (
            name,
            timeout,
            elapsed,
            last["state"] if last else "unknown",
            ", last reason: %s" % last["last_reason"] if last and last.get("last_reason") else "",
        )
        module.fail_json(msg=msg, error=type(exc).__name__, device=last, elapsed=elapsed)
    except CallHomeError as exc:
        fail_with(module, exc, elapsed=round(time.monotonic() - started, 3))
    module.exit_json(changed=False, device=device_result(info), elapsed=round(time.monotonic() - started, 3))


if __name__ == "__main__":
    main()
