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
options:
  callhome_run_dir:
    description:
      - Run directory of the callhome gateway (its C(run_dir) setting), holding C(control.sock) and
        C(devices/NAME/netconf.sock).
    type: path
    default: /run/callhome
    ini:
      - section: callhome
        key: run_dir
    env:
      - name: CALLHOME_RUN_DIR
    vars:
      - name: ansible_callhome_run_dir
  callhome_device:
    description:
      - Name of the device in the gateway's inventory (a device is named by its identity, not by its
        address). Defaults to the inventory host name.
    type: string
    vars:
      - name: inventory_hostname
      - name: ansible_callhome_device
  wait_timeout:
    description:
      - Seconds to wait for the device to call home when it is not connected yet. C(0) fails at once
        when the device is not connected.
      - Must be at least 5 seconds shorter than O(persistent_command_timeout), which also covers the
        NETCONF hello and the first RPC.
    type: float
    default: 20
    ini:
      - section: callhome
        key: wait_timeout
    env:
      - name: CALLHOME_WAIT_TIMEOUT
    vars:
      - name: ansible_callhome_wait_timeout
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
from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.common.text.converters import to_bytes
from ansible_collections.ansible.netcommon.plugins.connection.netconf import Connection as NetconfConnection
from ansible_collections.ansible.netcommon.plugins.plugin_utils.connection_base import NetworkConnectionBase

try:
    from ncclient import NCClientError
except ImportError:  # netcommon reports a missing ncclient itself

    class NCClientError(Exception):
        """ncclient.NCClientError (ncclient missing)."""


try:
    from callhome_transport.errors import CallHomeError
    from callhome_transport.gateway.client import GatewayClient
except ImportError as exc:  # the plugin must still load for ansible-doc and sanity
    HAS_CALLHOME = False
    CALLHOME_IMPORT_ERROR: ImportError | None = exc
else:
    HAS_CALLHOME = True
    CALLHOME_IMPORT_ERROR = None

# Seconds of persistent_command_timeout kept for the NETCONF hello and the first RPC.
HELLO_MARGIN = 5

# Transports whose devices speak NETCONF through netconf.sock.
NETCONF_TRANSPORTS = ("ssh", "tls")


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
        if not HAS_CALLHOME:
            raise AnsibleConnectionFailure(
                "%s: %s" % (missing_required_lib("callhome-transport"), CALLHOME_IMPORT_ERROR)
            )
        device = self.get_option("callhome_device") or self._play_context.remote_addr
        run_dir = self.get_option("callhome_run_dir")
        wait = float(self.get_option("wait_timeout"))
        command_timeout = int(self.get_option("persistent_command_timeout"))
        if wait > command_timeout - HELLO_MARGIN:
            raise AnsibleConnectionFailure(
                "callhome wait_timeout (%gs) must be at least %ds shorter than persistent_command_timeout (%ds): the wait "
                "for device %s happens inside the first command; lower ansible_callhome_wait_timeout or raise "
                "ansible_command_timeout" % (wait, HELLO_MARGIN, command_timeout, device)
            )
        try:
            ncclient_device_handler = self.netconf.get_option("ncclient_device_handler")
        except KeyError:
            ncclient_device_handler = "default"

        client = GatewayClient(run_dir, timeout=command_timeout)
        started = time.monotonic()
        try:
            info = client.device(device)
            if info.transport not in NETCONF_TRANSPORTS:
                raise AnsibleConnectionFailure(
                    "device %s calls home over %s, not NETCONF: use ansible_connection=callhome.network.restconf"
                    % (device, info.transport)
                )
            if not info.connected and wait <= 0:
                raise AnsibleConnectionFailure(
                    "callhome: device %s is %s and wait_timeout is 0" % (device, info.state)
                )
            if not info.connected:
                self.queue_message(
                    "vvv", "device %s is %s: waiting up to %gs for it to call home" % (device, info.state, wait)
                )
            self._manager = client.netconf_manager(
                device,
                wait=wait,
                timeout=command_timeout,
                device_params={"name": ncclient_device_handler},
                on_close=self._session_closed,
            )
        except CallHomeError as exc:
            # the message is complete: no cause chain (it would repeat it)
            raise AnsibleConnectionFailure("callhome: %s" % exc) from None
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
