# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
author:
  - callhome developers (@callhome)
name: restconf
short_description: RESTCONF to call-home devices through the callhome gateway
description:
  - A persistent RESTCONF connection to a device that calls home over TLS (RFC 8071, port 4336).
    Requests go through the gateway's per-device endpoint C(RUN_DIR/devices/NAME/restconf.sock),
    HTTP/1.1 over a Unix socket, and the gateway relays them on the TLS connection the device
    opened. The device is never dialled.
  - It implements C(send_request) as C(ansible.netcommon.httpapi) with the C(restconf) API does, so
    C(ansible.netcommon.restconf_get) and C(ansible.netcommon.restconf_config) work unchanged. An
    HTTP error becomes a C(ConnectionError) whose C(code) is the HTTP status (404 means absent to
    C(restconf_config)).
  - The gateway has already validated the device's certificate and sends the device's own
    credentials (RFC 8071 s5); none are configured here.
  - A device that has not called home yet is waited for at most O(wait_timeout) seconds, inside
    O(persistent_command_timeout), so O(wait_timeout) must be shorter than it.
version_added: 0.1.0
requirements:
  - callhome-transport (the Python package of this project) on the controller
extends_documentation_fragment:
  - ansible.netcommon.connection_persistent
options:
  callhome_run_dir:
    description:
      - Run directory of the callhome gateway (its C(run_dir) setting).
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
      - Name of the device in the gateway's inventory. Defaults to the inventory host name.
    type: string
    vars:
      - name: inventory_hostname
      - name: ansible_callhome_device
  wait_timeout:
    description:
      - Seconds to wait for the device to call home when it is not connected yet. C(0) fails at once
        when the device is not connected.
      - Must be at least 5 seconds shorter than O(persistent_command_timeout), which also covers the
        first request.
    type: float
    default: 20
    ini:
      - section: callhome
        key: wait_timeout
    env:
      - name: CALLHOME_WAIT_TIMEOUT
    vars:
      - name: ansible_callhome_wait_timeout
  root_path:
    description:
      - The RESTCONF root on the device (RFC 8040 s3.1), prefixed to every request path.
    type: string
    default: /restconf
    vars:
      - name: ansible_httpapi_restconf_root
      - name: ansible_callhome_restconf_root
"""

EXAMPLES = r"""
# inventory
# [rc_devices]
# SN-0004 ansible_connection=callhome.network.restconf ansible_callhome_run_dir=/run/callhome

- name: Read the system container
  ansible.netcommon.restconf_get:
    path: /data/ietf-system:system
"""

import http.client
import json
import socket
import time

from ansible.errors import AnsibleConnectionFailure
from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.connection import ConnectionError as AnsibleConnectionError
from ansible_collections.ansible.netcommon.plugins.plugin_utils.connection_base import NetworkConnectionBase

try:
    from callhome_transport.errors import CallHomeError
    from callhome_transport.gateway.client import GatewayClient, UnixHTTPConnection
except ImportError as exc:  # the plugin must still load for ansible-doc and sanity
    HAS_CALLHOME = False
    CALLHOME_IMPORT_ERROR: ImportError | None = exc
else:
    HAS_CALLHOME = True
    CALLHOME_IMPORT_ERROR = None

YANG_JSON = "application/yang-data+json"
REQUEST_MARGIN = 5  # seconds of persistent_command_timeout kept for the first request
IDEMPOTENT = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")  # safe to resend on a fresh connection


def error_text(status, reason, body):
    """The message of an HTTP error: the RFC 8040 error-messages when the body
    carries ietf-restconf:errors, else the body, else the reason phrase."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        errors = data.get("ietf-restconf:errors", data.get("errors"))
        if isinstance(errors, dict):
            items = errors.get("error", [])
            messages = [e.get("error-message") or e.get("error-tag") or "" for e in items if isinstance(e, dict)]
            if any(messages):
                return "\n".join(m for m in messages if m)
    text = body.decode("utf-8", "replace").strip() if body else ""
    return text or "HTTP %d %s" % (status, reason)


def parse_body(body, content_type=None):
    """A 2xx response body as the modules expect it: parsed JSON, or text.
    (``content_type`` is not trusted: devices label XML and JSON loosely.)"""
    if not body:
        return {}
    text = body.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text  # not JSON (or malformed JSON): the module gets the text


class Connection(NetworkConnectionBase):
    """RESTCONF requests to one call-home device through the gateway."""

    transport = "callhome.network.restconf"
    has_pipelining = False

    def __init__(self, play_context, new_stdin, *args, **kwargs):
        super().__init__(play_context, new_stdin, *args, **kwargs)
        self._http = None
        self._device = None
        self._client = None

    def _connect(self):
        if self._connected:
            return
        if not HAS_CALLHOME:
            raise AnsibleConnectionFailure(
                "%s: %s" % (missing_required_lib("callhome-transport"), CALLHOME_IMPORT_ERROR)
            )
        device = self.get_option("callhome_device") or self._play_context.remote_addr
        wait = float(self.get_option("wait_timeout"))
        command_timeout = int(self.get_option("persistent_command_timeout"))
        if wait > command_timeout - REQUEST_MARGIN:
            raise AnsibleConnectionFailure(
                "callhome wait_timeout (%gs) must be at least %ds shorter than persistent_command_timeout (%ds): the wait "
                "for device %s happens inside the first command; lower ansible_callhome_wait_timeout or raise "
                "ansible_command_timeout" % (wait, REQUEST_MARGIN, command_timeout, device)
            )
        client = GatewayClient(self.get_option("callhome_run_dir"), timeout=command_timeout)
        started = time.monotonic()
        try:
            info = client.device(device)
            if info.transport != "restconf":
                raise AnsibleConnectionFailure(
                    "device %s calls home over %s, not RESTCONF: use ansible_connection=callhome.network.netconf"
                    % (device, info.transport)
                )
            if not info.connected:
                if wait <= 0:
                    raise AnsibleConnectionFailure(
                        "callhome: device %s is %s and wait_timeout is 0" % (device, info.state)
                    )
                self.queue_message(
                    "vvv", "device %s is %s: waiting up to %gs for it to call home" % (device, info.state, wait)
                )
                client.wait(device, wait)
        except CallHomeError as exc:
            # the message is complete: no cause chain (it would repeat it)
            raise AnsibleConnectionFailure("callhome: %s" % exc) from None
        self._client = client
        self._device = device
        self.queue_message(
            "vvv", "RESTCONF device %s ready after %.3fs" % (device, time.monotonic() - started)
        )
        self._connected = True
        super()._connect()

    def _open_http(self):
        path = str(self._client.endpoint(self._device, "restconf"))
        # answer before netcommon's command alarm does, with a message that names the device
        return UnixHTTPConnection(path, max(1.0, float(self.get_option("persistent_command_timeout")) - 1))

    def send_request(self, data, path="", method="GET", accept=None, content_type=None):
        """Send one RESTCONF request; return the parsed JSON (or text) body, or
        raise ConnectionError(message, code=<HTTP status>)."""
        self._connect()
        url = "/".join([self.get_option("root_path").rstrip("/"), (path or "").lstrip("/")])
        headers = {
            "Host": self._device,
            "Accept": accept or YANG_JSON,
            # a device that dropped: the gateway waits this long for it, then answers 504
            "Callhome-Wait": "%g" % float(self.get_option("wait_timeout")),
        }
        body = None
        if data is not None and data != "":
            body = (data if isinstance(data, str) else json.dumps(data)).encode("utf-8")
            headers["Content-Type"] = content_type or YANG_JSON
        method = (method or "GET").upper()
        self.queue_message("vvvv", "RESTCONF %s %s on %s" % (method, url, self._device))
        attempts = (1, 2) if method in IDEMPOTENT else (2,)
        for attempt in attempts:
            if self._http is None:
                self._http = self._open_http()
            try:
                self._http.request(method, url, body=body, headers=headers)
                response = self._http.getresponse()
                payload = response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                # a kept-alive connection the gateway closed: resend an idempotent request once
                self._http.close()
                self._http = None
                if isinstance(exc, socket.timeout):
                    raise AnsibleConnectionError(
                        "callhome: no answer from device %s to %s %s in time (the gateway waits up to its "
                        "deferral_timeout for a device that dropped; 'callhome device %s' shows its state)"
                        % (self._device, method, url, self._device),
                        code=504,
                    ) from None
                if attempt == 2 or isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
                    raise AnsibleConnectionError(
                        "callhome: RESTCONF %s %s on device %s failed: %s" % (method, url, self._device, exc)
                    ) from None
        if response.will_close:
            self._http.close()
            self._http = None
        if response.status >= 400:
            raise AnsibleConnectionError(
                error_text(response.status, response.reason, payload), code=response.status
            )
        return parse_body(payload, response.getheader("Content-Type"))

    def close(self):
        if self._http is not None:
            self._http.close()
            self._http = None
        super().close()
