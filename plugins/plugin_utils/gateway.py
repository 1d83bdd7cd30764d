# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the callhome.network connection plugins share: find the device in
the gateway's registry, check the wait fits the command timeout, and turn
callhome errors into Ansible connection failures."""

from __future__ import annotations

from ansible.errors import AnsibleConnectionFailure
from ansible.module_utils.basic import missing_required_lib

try:
    from callhome_transport.errors import CallHomeError
    from callhome_transport.gateway.client import GatewayClient, cluster_client
    from callhome_transport.gateway.remote import SSHGateway
except ImportError as exc:  # the plugins must still load for ansible-doc and sanity
    HAS_CALLHOME = False
    CALLHOME_IMPORT_ERROR = exc

    class CallHomeError(Exception):
        """callhome_transport.errors.CallHomeError (library missing)."""

else:
    HAS_CALLHOME = True
    CALLHOME_IMPORT_ERROR = None

# Seconds of persistent_command_timeout kept for the session set-up and the first request.
SETUP_MARGIN = 5

# Which connection plugin serves a device, by the transport it calls home over.
PLUGIN_FOR_TRANSPORT = {
    "ssh": "callhome.network.netconf",
    "tls": "callhome.network.netconf",
    "restconf": "callhome.network.restconf",
}


class DeviceTarget:
    """The device a connection plugin is about to use, found in the registry."""

    def __init__(self, connection, plugin_name):
        if not HAS_CALLHOME:
            raise AnsibleConnectionFailure(
                "%s: %s" % (missing_required_lib("callhome-transport"), CALLHOME_IMPORT_ERROR)
            )
        self.name = connection.get_option("callhome_device") or connection._play_context.remote_addr
        self.wait = float(connection.get_option("wait_timeout"))
        self.command_timeout = int(connection.get_option("persistent_command_timeout"))
        if self.wait > self.command_timeout - SETUP_MARGIN:
            raise AnsibleConnectionFailure(
                "callhome wait_timeout (%gs) must be at least %ds shorter than persistent_command_timeout (%ds): "
                "the wait for device %s happens inside the first command; lower ansible_callhome_wait_timeout or "
                "raise ansible_command_timeout" % (self.wait, SETUP_MARGIN, self.command_timeout, self.name)
            )
        run_dir = connection.get_option("callhome_run_dir")
        try:
            gateways = connection.get_option("callhome_gateways")
        except KeyError:  # a plugin without the option
            gateways = None
        with callhome_errors():
            if gateways:
                self.client = cluster_client(run_dir, gateway_remotes(gateways), timeout=self.command_timeout)
            else:
                self.client = GatewayClient(run_dir, timeout=self.command_timeout)
            self.info = self.client.device(self.name)
        wanted = PLUGIN_FOR_TRANSPORT.get(self.info.transport)
        if wanted != plugin_name:
            raise AnsibleConnectionFailure(
                "device %s calls home over %s: use ansible_connection=%s" % (self.name, self.info.transport, wanted)
            )
        if not self.info.connected:
            if self.wait <= 0:
                raise AnsibleConnectionFailure(
                    "callhome: device %s is %s and wait_timeout is 0" % (self.name, self.info.state)
                )
            connection.queue_message(
                "vvv", "device %s is %s: waiting up to %gs for it to call home" % (self.name, self.info.state, self.wait)
            )


def gateway_remotes(gateways):
    """The C(gateways) option (host name -> SSH settings) as the client's
    remotes: an SSHGateway per host, None for this host."""
    remotes = {}
    for host, entry in (gateways or {}).items():
        entry = entry or {}
        if not isinstance(entry, dict):
            raise AnsibleConnectionFailure("callhome gateways.%s: expected a mapping of SSH settings" % host)
        unknown = set(entry) - set(GATEWAY_KEYS)
        if unknown:
            raise AnsibleConnectionFailure(
                "callhome gateways.%s: unknown keys %s (known: %s)"
                % (host, ", ".join(sorted(unknown)), ", ".join(GATEWAY_KEYS))
            )
        if not entry.get("ssh_host"):
            remotes[host] = None
            continue
        try:
            remotes[host] = SSHGateway(
                host=entry["ssh_host"],
                port=int(entry.get("ssh_port", 22)),
                username=entry.get("ssh_user"),
                key_file=entry.get("ssh_key"),
                known_hosts=entry.get("known_hosts"),
                run_dir=entry.get("run_dir", "/run/callhome"),
            )
        except (TypeError, ValueError) as exc:
            raise AnsibleConnectionFailure("callhome gateways.%s: %s" % (host, exc)) from None
    return remotes


GATEWAY_KEYS = ("ssh_host", "ssh_port", "ssh_user", "ssh_key", "known_hosts", "run_dir")


class callhome_errors:  # noqa: N801 - used as a statement: "with callhome_errors():"
    """Turn a callhome error into an AnsibleConnectionFailure with its message
    alone (the cause chain would only repeat it)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, CallHomeError):
            raise AnsibleConnectionFailure("callhome: %s" % exc) from None
        return False
