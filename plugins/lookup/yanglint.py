# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: yanglint
short_description: Validate configuration data with yanglint on the controller
version_added: 0.1.0
author:
  - callhome developers (@callhome)
description:
  - Runs C(yanglint) (libyang, Debian package C(libyang2-tools)) on the controller to validate configuration data
    (XML or RFC 7951 JSON) against one module revision from a directory of YANG modules, merged with a keystore so
    that key references resolve. Every feature is enabled.
  - Returns one string per term - empty when the data is valid, else what yanglint said.
  - The C(netconf_server_callhome) and C(restconf_server_callhome) roles use it before they send a payload.
options:
  _terms:
    description: The data to validate.
    type: list
    elements: str
    required: true
  yang_dir:
    description: Directory with the module set (the module, its imports, C(ietf-keystore), C(ietf-truststore)).
    type: path
    required: true
  module:
    description: The module the data belongs to.
    type: str
    required: true
  revision:
    description: The module's revision (the file C(MODULE@REVISION.yang) must be in O(yang_dir)).
    type: str
    required: true
  keystore:
    description: The keystore (C(ietf-keystore) XML) the data references.
    type: str
    default: ""
  format:
    description: The data's format.
    type: str
    choices: [xml, json]
    default: xml
  yanglint:
    description: The yanglint program.
    type: str
    default: yanglint
"""

EXAMPLES = r"""
- name: Fail unless the payload is valid for the device's revision
  ansible.builtin.assert:
    that: complaint == ''
    fail_msg: "{{ complaint }}"
  vars:
    complaint: >-
      {{ lookup('callhome.network.yanglint', payload, yang_dir='/usr/share/yang/netconf-server-2023-12-28',
                module='ietf-netconf-server', revision='2023-12-28', keystore=keystore_xml) }}
"""

RETURN = r"""
_raw:
  description: Per term, an empty string (valid) or yanglint's messages.
  type: list
  elements: str
"""

from ansible.plugins.lookup import LookupBase

from ansible_collections.callhome.network.plugins.plugin_utils.callhome_model import yanglint_validate


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        return [
            yanglint_validate(
                term,
                self.get_option("keystore"),
                self.get_option("yang_dir"),
                self.get_option("module"),
                self.get_option("revision"),
                self.get_option("yanglint"),
                self.get_option("format"),
            )
            for term in terms
        ]
