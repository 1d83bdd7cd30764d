# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""callhome.network.netconf_capabilities: modules from hello capability URIs."""

from __future__ import annotations

from ansible_collections.callhome.network.plugins.modules import netconf_capabilities

NCS = "urn:ietf:params:xml:ns:yang:ietf-netconf-server"


def test_modules_from_capability_uris():
    modules = netconf_capabilities.modules_of(
        [
            "urn:ietf:params:netconf:base:1.1",
            "urn:ietf:params:netconf:capability:candidate:1.0",
            NCS + "?module=ietf-netconf-server&revision=2019-07-02&features=ssh-call-home,central-netconf-server-supported",
            "urn:ietf:params:xml:ns:yang:ietf-netconf-acm?module=ietf-netconf-acm&revision=2018-02-14"
            "&deviations=vendor-acm-deviations",
            "http://example.net/ns/no-revision?module=example",
            " urn:x?revision=2020-01-01 ",  # a query without a module is not a module
        ]
    )
    assert sorted(modules) == ["example", "ietf-netconf-acm", "ietf-netconf-server"]
    assert modules["ietf-netconf-server"] == {
        "namespace": NCS,
        "revision": "2019-07-02",
        "features": ["ssh-call-home", "central-netconf-server-supported"],
        "deviations": [],
    }
    assert modules["ietf-netconf-acm"]["deviations"] == ["vendor-acm-deviations"]
    assert modules["example"]["revision"] is None


def test_without_a_netconf_connection_it_says_so(run_module):
    status, result = run_module(netconf_capabilities.main, {})
    assert status == 1
    assert "needs a NETCONF connection" in result["msg"]
