# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
author:
  - callhome developers (@callhome)
name: netconf
short_description: NETCONF to call-home devices through the callhome gateway
description:
  - A persistent NETCONF connection to a device that calls home (RFC 8071). The device opened
    the TCP connection to the callhome gateway (C(callhome serve)); this plugin opens a new NETCONF
    session on it through the gateway's per-device endpoint C(RUN_DIR/devices/NAME/netconf.sock).
  - It is a drop-in for C(ansible.netcommon.netconf), so C(ansible.netcommon.netconf_get),
    C(ansible.netcommon.netconf_config) and C(ansible.netcommon.netconf_rpc) work unchanged.
  - No credential is configured here. The gateway has already validated the device's host key or
    certificate and authenticated with that device's own credentials (RFC 8071 s5).
  - A device that has not called home yet is waited for (the deferral of the call-home draft) for
    at most O(wait_timeout) seconds. That wait happens inside the first module call and so inside
    O(persistent_command_timeout), so O(wait_timeout) must be shorter than it; the plugin fails at
    once if it is not.
  - Set C(ansible_network_os) to a netconf sub-plugin name (for example C(junipernetworks.junos.junos))
    for vendor-specific behaviour. When it is not set the plugin uses C(default) and never guesses the
    platform, because guessing opens a forward connection to the device, which a call-home device
    does not accept.
version_added: 0.1.0
requirements:
  - callhome-transport (the Python package of this project) on the controller
  - ncclient
extends_documentation_fragment:
  - ansible.netcommon.connection_persistent
  - callhome.network.gateway.connection
options:
  network_os:
    description:
      - The netconf sub-plugin to load (for example C(junipernetworks.junos.junos)). C(default) when
        not set; never guessed.
    type: string
    vars:
      - name: ansible_network_os
"""

EXAMPLES = r"""
# inventory: one host per device, named as in the gateway's inventory
# [callhome]
# SN-0001
# [callhome:vars]
# ansible_connection=callhome.network.netconf
# ansible_callhome_run_dir=/run/callhome

- name: Read the running configuration of a call-home device
  ansible.netcommon.netconf_get:
    source: running
    filter: <system xmlns="urn:ietf:params:xml:ns:yang:ietf-system"/>
"""

import time

from ansible.errors import AnsibleConnectionFailure
from ansible.module_utils.common.text.converters import to_bytes
from ansible_collections.ansible.netcommon.plugins.connection.netconf import Connection as NetconfConnection
from ansible_collections.ansible.netcommon.plugins.plugin_utils.connection_base import NetworkConnectionBase

try:
    from ncclient import NCClientError
except ImportError:  # netcommon reports a missing ncclient itself

    class NCClientError(Exception):
        """ncclient.NCClientError (ncclient missing)."""


from ansible_collections.callhome.network.plugins.plugin_utils.gateway import DeviceTarget, callhome_errors


class Connection(NetconfConnection):
    """ansible.netcommon's netconf connection, reaching call-home devices
    through the gateway instead of dialling out to port 830."""

    transport = "callhome.network.netconf"

    def __init__(self, play_context, new_stdin, *args, **kwargs):
        super().__init__(play_context, new_stdin, *args, **kwargs)
        if self._network_os == "auto":
            # netcommon would guess the platform by connecting forward: never here.
            # Its __init__ has already fallen back to the default sub-plugin.
            self._network_os = "default"

    def _session_closed(self):
        # the device re-called, the gateway restarted, or the session died: the
        # next task connects again (netcommon's ensure_connected reads this flag)
        self._connected = False

    def _connect(self):
        if self._connected and self._manager is not None and self._manager.connected:
            return 0, to_bytes(self._manager.session_id, errors="surrogate_or_strict"), b""
        started = time.monotonic()
        target = DeviceTarget(self, self.transport)
        device, client = target.name, target.client
        try:
            ncclient_device_handler = self.netconf.get_option("ncclient_device_handler")
        except KeyError:
            ncclient_device_handler = "default"
        try:
            with callhome_errors():
                self._manager = client.netconf_manager(
                    device,
                    wait=target.wait,
                    timeout=target.command_timeout,
                    device_params={"name": ncclient_device_handler},
                    on_close=self._session_closed,
                )
        except (NCClientError, OSError) as exc:
            # connected, but the NETCONF session itself failed (hello refused, dropped)
            raise AnsibleConnectionFailure(
                "callhome: NETCONF session with device %s through %s failed: %s"
                % (device, client.endpoint(device, "netconf"), exc or type(exc).__name__)
            ) from None
        self.queue_message(
            "vvv",
            "NETCONF session %s with call-home device %s through %s after %.3fs"
            % (self._manager.session_id, device, client.endpoint(device, "netconf"), time.monotonic() - started),
        )
        self._connected = True
        NetworkConnectionBase._connect(self)
        return 0, to_bytes(self._manager.session_id, errors="surrogate_or_strict"), b""

    def commit(self, *args, **kwargs):
        """The netconf sub-plugin's commit, with the confirm timeout as text:
        ncclient puts it in an XML element as given and lxml refuses an int,
        so ``netconf_config: confirm: N`` fails with "Argument must be bytes
        or unicode, got 'int'" on every connection (ansible.netcommon issue
        551). Other arguments pass through, for vendor sub-plugins."""
        if kwargs.get("timeout") is not None:
            kwargs["timeout"] = str(kwargs["timeout"])
        return self.netconf.commit(*args, **kwargs)
