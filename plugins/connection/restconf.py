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
  - callhome.network.gateway.connection
options:
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

from ansible.module_utils.connection import ConnectionError as AnsibleConnectionError
from ansible_collections.ansible.netcommon.plugins.plugin_utils.connection_base import NetworkConnectionBase

from ansible_collections.callhome.network.plugins.plugin_utils.gateway import DeviceTarget, callhome_errors

try:
    from callhome_transport.gateway.client import UnixHTTPConnection
except ImportError:  # DeviceTarget reports the missing library
    UnixHTTPConnection = None

YANG_JSON = "application/yang-data+json"
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
        started = time.monotonic()
        target = DeviceTarget(self, self.transport)
        info = target.info
        with callhome_errors():
            if not info.connected:
                info = target.client.wait(target.name, target.wait)
            self._client = target.client.for_device(info)  # in a cluster: the gateway holding it
        self._device = target.name
        self.queue_message("vvv", "RESTCONF device %s ready after %.3fs" % (target.name, time.monotonic() - started))
        self._connected = True
        super()._connect()

    def _open_http(self):
        path = str(self._client.endpoint(self._device, "restconf"))
        # answer before netcommon's command alarm does, with a message that names the device
        return UnixHTTPConnection(
            path, max(1.0, float(self.get_option("persistent_command_timeout")) - 1), opener=self._client.opener
        )

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
