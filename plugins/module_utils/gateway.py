# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the callhome.network modules share: the gateway's options, a client for
its control API (from the callhome_transport library), and how a device
record and an error become module results."""

from __future__ import annotations

import datetime

from ansible.module_utils.basic import env_fallback, missing_required_lib

try:
    from callhome_transport.errors import CallHomeError, DeviceNotConnectedError, UnknownGatewayDeviceError
    from callhome_transport.gateway.client import DEFAULT_RUN_DIR, GatewayClient
except ImportError as exc:
    HAS_CALLHOME = False
    CALLHOME_IMPORT_ERROR = exc
    DEFAULT_RUN_DIR = "/run/callhome"

    # stand-ins so that except clauses evaluate; gateway_client() fails first
    class CallHomeError(Exception):
        """callhome_transport.errors.CallHomeError (library missing)."""

    class DeviceNotConnectedError(CallHomeError):
        """callhome_transport.errors.DeviceNotConnectedError (library missing)."""

    class UnknownGatewayDeviceError(CallHomeError):
        """callhome_transport.errors.UnknownGatewayDeviceError (library missing)."""

else:
    HAS_CALLHOME = True
    CALLHOME_IMPORT_ERROR = None

__all__ = [
    "CALLHOME_IMPORT_ERROR",
    "GATEWAY_ARGUMENT_SPEC",
    "HAS_CALLHOME",
    "CallHomeError",
    "DeviceNotConnectedError",
    "UnknownGatewayDeviceError",
    "device_result",
    "fail_with",
    "gateway_client",
]

GATEWAY_ARGUMENT_SPEC = {
    "run_dir": {"type": "path", "default": DEFAULT_RUN_DIR, "fallback": (env_fallback, ["CALLHOME_RUN_DIR"])},
}


def gateway_client(module):
    """A client for the gateway named by the module's ``run_dir``, or fail the
    module when the callhome_transport library is missing."""
    if not HAS_CALLHOME:
        module.fail_json(msg=missing_required_lib("callhome-transport"), exception=str(CALLHOME_IMPORT_ERROR))
    return GatewayClient(module.params["run_dir"], timeout=30.0)


def _iso(ts):
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).isoformat()


def device_result(info):
    """A device record as module output (timestamps also as ISO 8601 UTC)."""
    data = info.as_dict()
    data["connected"] = info.connected
    data["connected_since_iso"] = _iso(info.connected_since)
    data["last_seen_iso"] = _iso(info.last_seen)
    return data


def fail_with(module, exc, **extra):
    """Fail the module from a callhome error: its message, its class name and
    its data attributes (device, timeout, socket_path...)."""
    details = {k: v for k, v in getattr(exc, "_attrs", {}).items() if isinstance(v, (str, int, float, bool))}
    module.fail_json(msg=str(exc), error=type(exc).__name__, details=details, **extra)
