"""The callhome.network.restconf_server_callhome role applied over RESTCONF
(``restconf_server_callhome_apply_with: restconf``) for real: ansible-playbook
runs the role through ``callhome.network.restconf`` against the gateway
(``callhome serve``, started here) and a simulated RESTCONF device that has
called home and stores ietf-restconf-server (RFC 8040 data resources over its
NETCONF datastore, RFC 7951 JSON translated with yanglint against
../shared/yang).  The same device's NETCONF interface (an SSH twin sharing
that datastore, also calling home) reads back what RESTCONF wrote."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from callhome_transport.engine import EventLoopThread
from callhome_transport.sim.device import SimulatedDevice
from callhome_transport.sim.restconf import YangSchema
from callhome_transport.sim.tls_device import SimPKI, SimulatedTLSDevice

from .test_ansible import Playbook, assert_ok, collections_path, play, save  # noqa: F401 (a fixture)
from .test_gateway import GatewayProcess

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
YANG = REPO.parent / "shared" / "yang" / "restconf-server-2024-08-14"
RCS = "urn:ietf:params:xml:ns:yang:ietf-restconf-server"

if not YANG.is_dir():
    pytest.skip(f"no YANG module set at {YANG} (../shared/yang beside the checkout)", allow_module_level=True)
if shutil.which("yanglint") is None:
    pytest.skip("yanglint not installed (Debian package libyang2-tools)", allow_module_level=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The gateway, RC1 (RESTCONF over TLS, port 4336 role) and RC1-NETCONF (its
    NETCONF interface over SSH), both called home."""
    tmp = tmp_path_factory.mktemp("rcs-role")
    pki = SimPKI(tmp / "pki")
    twin = SimulatedDevice("RC1-NETCONF", username="admin", password="admin-pw")
    schema = YangSchema(search_dir=YANG, modules=(YANG / "ietf-restconf-server@2024-08-14.yang",))
    device = SimulatedTLSDevice("RC1", pki, protocol="restconf", datastores=twin.datastores, schema=schema)
    inventory = {
        "devices": {
            "RC1": {"transport": "restconf", "tls": {"issuers": [str(pki.ca_file)], "identifier": "RC1"}},
            "RC1-NETCONF": {
                "ssh": {"host_keys": [twin.host_key_line], "username": "admin", "password": "admin-pw"},
            },
        }
    }
    gateway = GatewayProcess(
        tmp, inventory, tls={"certfile": str(pki.manager_cert), "keyfile": str(pki.manager_key)}
    ).start()
    loop = EventLoopThread(name="rcs-role-devices")
    try:
        loop.run(device.call_home("127.0.0.1", gateway.restconf_port), timeout=15)
        loop.run(twin.call_home("127.0.0.1", gateway.ssh_port), timeout=15)
        for name in ("RC1", "RC1-NETCONF"):
            status, _ = gateway.get(f"/devices/{name}/wait?timeout=15", 20)
            assert status == 200, gateway.log.read_text()[-3000:]
        yield {"gateway": gateway, "device": device, "twin": twin, "pki": pki, "dir": tmp}
    finally:
        try:

            async def hang_up() -> None:
                device.close()
                twin.close()

            loop.run(hang_up(), timeout=5)
        finally:
            loop.stop()
            assert gateway.stop() == 0, gateway.log.read_text()[-3000:]


def role_vars(lab: dict[str, Any], **extra: Any) -> Path:
    pki: SimPKI = lab["pki"]
    values = {
        "restconf_server_callhome_apply_with": "restconf",
        "restconf_server_callhome_clients": [
            {
                "name": "manager",
                "endpoints": [
                    {"name": "primary", "address": "192.0.2.10", "port": 4336},
                    {"name": "backup", "address": "manager-b.example.net", "port": 14336},
                ],
                "reconnect_strategy": {"start_with": "last-connected", "max_attempts": 3},
            },
            {
                "name": "audit",
                "endpoints": [{"name": "only", "address": "2001:db8::7"}],
                "connection_type": "periodic",
                "period": 60,
            },
        ],
        "restconf_server_callhome_tls_asymmetric_key": "tls-key",
        "restconf_server_callhome_tls_certificate": "tls-cert",
        "restconf_server_callhome_tls_client_ca_certificates": [pki.manager_ca_file.read_text()],
        "restconf_server_callhome_tls_cert_to_name": [{"map_type": "common-name"}],
        **extra,
    }
    path = lab["dir"] / "role-vars.yml"
    path.write_text(yaml.safe_dump(values))
    return path


ROLE_PLAY = """
- name: Provision call home over RESTCONF
  hosts: RC1
  gather_facts: false
  roles:
    - callhome.network.restconf_server_callhome
"""


def recap(proc: Any, host: str) -> dict[str, int]:
    line = re.search(rf"^{re.escape(host)}\s+:\s+(.*)$", proc.stdout, re.MULTILINE)
    assert line, proc.stdout[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line[1])}


@pytest.fixture
def book(tmp_path: Path, collections_path: Path, lab: dict[str, Any]) -> Playbook:  # noqa: F811
    return Playbook(tmp_path, collections_path, lab["gateway"].run_dir)


def test_role_applies_over_restconf_idempotently_reads_back_and_removes(book: Playbook, lab: dict[str, Any]) -> None:
    """Three ansible-playbook runs (each costs seconds): apply; apply again
    (nothing changes); read back over RESTCONF and NETCONF, send a body that
    does not fit the schema, remove the clients."""
    inventory = book.inventory({"RC1": "callhome.network.restconf", "RC1-NETCONF": "callhome.network.netconf"})
    variables = role_vars(lab)
    first = book.run(ROLE_PLAY, inventory, "-e", f"@{variables}")
    assert_ok(first)
    assert recap(first, "RC1")["changed"] >= 1, first.stdout[-3000:]
    again = book.run(ROLE_PLAY, inventory, "-e", f"@{variables}")
    assert_ok(again)
    assert recap(again, "RC1")["changed"] == 0, again.stdout[-4000:]  # idempotence

    bogus = json.dumps({"ietf-restconf-server:restconf-client": [{"name": "x", "bogus": 1}]})
    tasks = f"""
    - name: Read the call-home subtree over RESTCONF
      ansible.netcommon.restconf_get:
        path: /data/ietf-restconf-server:restconf-server/call-home
        content: config
      register: restconf_read
      when: inventory_hostname == 'RC1'
{save("restconf_read")}
    - name: Read it over NETCONF (the same device's other interface)
      ansible.netcommon.netconf_get:
        source: running
        filter: <restconf-server xmlns="{RCS}"><call-home/></restconf-server>
      register: netconf_read
      when: inventory_hostname == 'RC1-NETCONF'
{save("netconf_read")}
    - name: PUT a client with an unknown leaf
      ansible.netcommon.restconf_config:
        path: /data/ietf-restconf-server:restconf-server/call-home/restconf-client=x
        method: put
        content: '{bogus}'
      register: refused
      ignore_errors: true
      when: inventory_hostname == 'RC1'
{save("refused")}
    - name: Remove the clients with the role
      ansible.builtin.include_role:
        name: callhome.network.restconf_server_callhome
      vars:
        restconf_server_callhome_state: absent
      when: inventory_hostname == 'RC1'
"""
    third = book.run(play(tasks), inventory, "-e", f"@{variables}")
    assert_ok(third)

    call_home = book.result("RC1", "restconf_read")["response"]["ietf-restconf-server:call-home"]
    clients = {c["name"]: c for c in call_home["restconf-client"]}
    assert set(clients) == {"manager", "audit"}
    endpoints = clients["manager"]["endpoints"]["endpoint"]
    assert [e["name"] for e in endpoints] == ["primary", "backup"]
    assert endpoints[1]["https"]["tcp-client-parameters"]["remote-port"] == 14336  # a number (RFC 7951 uint16)
    assert clients["audit"]["connection-type"]["periodic"]["period"] == 60
    netconf = book.result("RC1-NETCONF", "netconf_read")["stdout"]
    assert "<remote-address>manager-b.example.net</remote-address>" in netconf, netconf
    assert "<period>60</period>" in netconf, netconf

    refused = book.result("RC1", "refused")
    assert refused["failed"] is True and refused["code"] == 400, refused
    assert 'Node "bogus" not found' in refused["msg"], refused

    # removed: the clients and, as they were all of them, the call-home presence container
    running = lab["twin"].datastores.running
    assert running.find(f"{{{RCS}}}restconf-server") is not None
    assert running.find(f"{{{RCS}}}restconf-server/{{{RCS}}}call-home") is None
    assert "changed: [RC1] => (item=call-home)" in third.stdout, third.stdout[-3000:]
