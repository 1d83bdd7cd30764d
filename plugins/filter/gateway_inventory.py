# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: gateway_inventory
short_description: The gateway's device inventory, and the files it names, from role variables
version_added: 0.1.0
author:
  - callhome developers (@callhome)
description:
  - Turns the C(gateway_devices) and C(gateway_inventory_defaults) variables of the
    C(callhome.network.gateway) role into the gateway's inventory (the format of docs/inventory.md)
    plus the files that inventory points at. The role writes the files, then the inventory.
  - V(ssh.password), V(ssh.private_key), V(restconf.basic_auth.password) and V(outbound_ssh.secret) (a Junos
    outbound-ssh stanza's secret) hold the secret itself (from Ansible Vault). Each becomes a file under
    O(secrets_dir) (the role writes it 0600) and the inventory names that file (C(password_file),
    C(private_key), C(secret_file)); no secret is ever in the inventory.
  - V(tls.issuers), V(tls.crls) and V(tls.pinned_certificates) hold PEM text. Each becomes a file
    under O(pki_dir) named by a digest of its content, so devices that share an issuer share one file.
  - Every other key passes through unchanged; the gateway's own parser checks the result.
options:
  _input:
    description: Device name to settings (C(gateway_devices)).
    type: dict
    required: true
  defaults:
    description: The inventory's C(defaults) section (C(gateway_inventory_defaults)), same rules.
    type: dict
    default: {}
  secrets_dir:
    description: Absolute directory for the secret files.
    type: path
    required: true
  pki_dir:
    description: Absolute directory for the certificate and CRL files.
    type: path
    required: true
"""

EXAMPLES = r"""
- name: Inventory and files for two devices
  ansible.builtin.set_fact:
    _gateway_rendered: >-
      {{ gateway_devices | callhome.network.gateway_inventory(defaults=gateway_inventory_defaults,
         secrets_dir='/etc/callhome/secrets', pki_dir='/etc/callhome/pki') }}
  vars:
    gateway_inventory_defaults: {ssh: {username: netconf}}
    gateway_devices:
      SN-0001:
        ssh: {host_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK5...], password: "{{ vault_sn_0001 }}"}
      SN-0003:
        transport: tls
        tls: {issuers: ["{{ lookup('ansible.builtin.file', 'pki/vendor-a-root.pem') }}"], identifier: SN-0003}
"""

RETURN = r"""
_value:
  description: The inventory and the files to write.
  type: dict
  contains:
    inventory:
      description: The inventory, as the gateway reads it (C(version), C(defaults), C(devices)).
      type: dict
    files:
      description: One entry per file, sorted by path; C(secret) files must be written 0600 without logging.
      type: list
      elements: dict
      contains:
        path:
          description: Absolute path.
          type: str
        content:
          description: What to write.
          type: str
        secret:
          description: Whether the content is a credential.
          type: bool
"""

import copy
import hashlib
import posixpath

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_bytes

# (section, key) holding a secret -> the inventory key that names its file
_SSH_SECRETS = (("password", "password_file"), ("private_key", "private_key"))
_CERTIFICATE_LISTS = ("issuers", "crls", "pinned_certificates")


class _Renderer:
    def __init__(self, secrets_dir, pki_dir):
        for name, value in (("secrets_dir", secrets_dir), ("pki_dir", pki_dir)):
            if not isinstance(value, str) or not posixpath.isabs(value):
                raise AnsibleFilterError("gateway_inventory: %s must be an absolute path, got %r" % (name, value))
        self.secrets_dir = secrets_dir
        self.pki_dir = pki_dir
        self.files = {}

    def _add(self, path, content, secret):
        if not isinstance(content, str) or not content:
            raise AnsibleFilterError("gateway_inventory: %s: expected text" % path)
        if not content.endswith("\n"):
            content += "\n"
        self.files[path] = {"path": path, "content": content, "secret": secret}
        return path

    def entry(self, settings, where, owner):
        """One device (or the defaults): a copy with secrets and PEM text replaced by file paths."""
        if settings is None:
            return None
        if not isinstance(settings, dict):
            raise AnsibleFilterError("gateway_inventory: %s: expected a mapping" % where)
        out = copy.deepcopy(settings)
        ssh = out.get("ssh")
        if isinstance(ssh, dict):
            for secret, key in _SSH_SECRETS:
                if secret in ssh:
                    value = ssh.pop(secret)
                    ssh[key] = self._add(posixpath.join(self.secrets_dir, owner + ".ssh." + secret), value, True)
        restconf = out.get("restconf")
        if isinstance(restconf, dict) and isinstance(restconf.get("basic_auth"), dict):
            auth = restconf["basic_auth"]
            if "password" in auth:
                path = posixpath.join(self.secrets_dir, owner + ".restconf.password")
                auth["password_file"] = self._add(path, auth.pop("password"), True)
        outbound = out.get("outbound_ssh")
        if isinstance(outbound, dict) and "secret" in outbound:
            path = posixpath.join(self.secrets_dir, owner + ".outbound_ssh.secret")
            outbound["secret_file"] = self._add(path, outbound.pop("secret"), True)
        tls = out.get("tls")
        if isinstance(tls, dict):
            for key in _CERTIFICATE_LISTS:
                if key not in tls:
                    continue
                pems = tls[key]
                if isinstance(pems, str):
                    pems = [pems]
                if not isinstance(pems, list):
                    raise AnsibleFilterError("gateway_inventory: %s.tls.%s: expected a list of PEM texts" % (where, key))
                tls[key] = [self._pem(pem, "%s.tls.%s[%d]" % (where, key, i), key) for i, pem in enumerate(pems)]
        return out

    def _pem(self, text, where, kind):
        if not isinstance(text, str) or "-----BEGIN " not in text:
            raise AnsibleFilterError("gateway_inventory: %s: expected PEM text (-----BEGIN ...)" % where)
        digest = hashlib.sha256(to_bytes(text.strip())).hexdigest()[:16]
        suffix = ".crl" if kind == "crls" else ".pem"
        return self._add(posixpath.join(self.pki_dir, digest + suffix), text.strip(), False)


def gateway_inventory(devices, defaults=None, secrets_dir=None, pki_dir=None):
    """The inventory dict and the files it names (see DOCUMENTATION)."""
    if not isinstance(devices, dict):
        raise AnsibleFilterError("gateway_inventory: gateway_devices must be a mapping of device name to settings")
    renderer = _Renderer(secrets_dir, pki_dir)
    inventory = {"version": 1}
    if defaults:
        inventory["defaults"] = renderer.entry(defaults, "defaults", "defaults")
    inventory["devices"] = {}
    for name in sorted(devices):
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise AnsibleFilterError("gateway_inventory: %r is not a device name" % (name,))
        entry = renderer.entry(devices[name], "devices." + name, "device." + name)
        inventory["devices"][name] = entry if entry is not None else {}
    files = [renderer.files[path] for path in sorted(renderer.files)]
    return {"inventory": inventory, "files": files}


class FilterModule(object):
    """callhome.network filters for the gateway role."""

    def filters(self):
        return {"gateway_inventory": gateway_inventory}
