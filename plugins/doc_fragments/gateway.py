# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Options shared by the callhome.network plugins and modules."""

    # the connection plugins: which gateway, which device, how long to wait for it
    CONNECTION = r"""
options:
  callhome_run_dir:
    description:
      - Run directory of the callhome gateway (its C(run_dir) setting), holding C(control.sock) and
        C(devices/NAME/*.sock).
    type: path
    default: /run/callhome
    ini:
      - section: callhome
        key: run_dir
    env:
      - name: CALLHOME_RUN_DIR
    vars:
      - name: ansible_callhome_run_dir
  callhome_gateways:
    description:
      - The hosts of a gateway cluster (docs/scale.md), by the host name each gateway announces
        (its C(cluster.host) setting), and how to reach the sockets of each over SSH. A device is
        then reached on whichever gateway holds it now, through that host's sshd (a stream-local
        channel to C(RUN_DIR/devices/NAME/netconf.sock)); a device held by the gateway of this host
        keeps the direct socket.
      - 'Each entry: C(ssh_host) (address; an entry without it is this host), C(ssh_port) (22),
        C(ssh_user), C(ssh_key) (a private key file), C(known_hosts) (default: OpenSSH''s),
        C(run_dir) (/run/callhome).'
      - The gateway host's sshd needs C(AllowStreamLocalForwarding yes) and C(AllowTcpForwarding)
        not C(no).
      - The C(callhome.network.gateway) inventory plugin sets it from its own C(gateways) option.
    type: dict
    vars:
      - name: ansible_callhome_gateways
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
        session set-up and the first request.
    type: float
    default: 20
    ini:
      - section: callhome
        key: wait_timeout
    env:
      - name: CALLHOME_WAIT_TIMEOUT
    vars:
      - name: ansible_callhome_wait_timeout
"""

    # the modules: which gateway
    MODULE = r"""
options:
  run_dir:
    description:
      - Run directory of the gateway (its C(run_dir) setting), holding C(control.sock).
      - Falls back to the E(CALLHOME_RUN_DIR) environment variable.
    type: path
    default: /run/callhome
requirements:
  - callhome-transport (the Python package of this project)
notes:
  - Run it where the gateway runs (usually C(delegate_to) the gateway host, or C(localhost) when
    Ansible runs there), with a Python that has the callhome-transport package.
"""
