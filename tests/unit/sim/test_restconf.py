"""The simulated device's RESTCONF data resources (sans I/O) over its NETCONF
datastore: RFC 8040 GET/PUT/PATCH/DELETE, RFC 7951 JSON as yanglint
translates it, errors bodies, NETCONF locks and read-back over NETCONF."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from callhome_transport.sim.datastore import Datastores
from callhome_transport.sim.restconf import RestconfData, YangSchema

from .test_datastore import Client

REPO = Path(__file__).resolve().parents[3]
YANG = REPO.parent / "shared" / "yang" / "restconf-server-2024-08-14"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
RCS = "urn:ietf:params:xml:ns:yang:ietf-restconf-server"
TOP = "/restconf/data/ietf-restconf-server:restconf-server"
CLIENT = f"{TOP}/call-home/restconf-client=manager"

if not YANG.is_dir():
    pytest.skip(f"no YANG module set at {YANG} (../shared/yang beside the checkout)", allow_module_level=True)
if shutil.which("yanglint") is None:
    pytest.skip("yanglint not installed (Debian package libyang2-tools)", allow_module_level=True)


def client_entry(port: int = 4336, name: str = "manager") -> dict[str, Any]:
    return {
        "name": name,
        "endpoints": {
            "endpoint": [
                {
                    "name": "primary",
                    "https": {"tcp-client-parameters": {"remote-address": "192.0.2.10", "remote-port": port}},
                }
            ]
        },
        "connection-type": {"persistent": {}},
    }


def body(entry: dict[str, Any]) -> bytes:
    return json.dumps({"ietf-restconf-server:restconf-client": [entry]}).encode()


@pytest.fixture
def resources() -> RestconfData:
    schema = YangSchema(search_dir=YANG, modules=(YANG / "ietf-restconf-server@2024-08-14.yang",))
    return RestconfData(Datastores(hostname="sn-1"), schema)


def error(answer: tuple[int, bytes]) -> dict[str, str]:
    return dict(json.loads(answer[1])["ietf-restconf:errors"]["error"][0])


def test_put_creates_then_replaces_and_get_returns_rfc7951(resources: RestconfData) -> None:
    assert resources.request("GET", CLIENT, b"")[0] == 404
    assert resources.request("PUT", CLIENT, body(client_entry())) == (201, b"")
    assert resources.request("PUT", CLIENT, body(client_entry(14336))) == (204, b"")
    status, data = resources.request("GET", CLIENT + "?content=config", b"")
    assert status == 200
    assert json.loads(data) == {"ietf-restconf-server:restconf-client": [client_entry(14336)]}  # port a number
    status, data = resources.request("GET", TOP, b"")
    assert json.loads(data)["ietf-restconf-server:restconf-server"]["call-home"]["restconf-client"][0]["name"] == (
        "manager"
    )


def test_written_over_restconf_reads_back_over_netconf(resources: RestconfData) -> None:
    assert resources.request("PUT", CLIENT, body(client_entry(14336)))[0] == 201
    reply = Client(resources.stores).rpc(
        f'<get-config><source><running/></source><filter><restconf-server xmlns="{RCS}"/></filter></get-config>'
    )
    port = reply.find(f".//{{{RCS}}}remote-port")
    assert port is not None and port.text == "14336"
    assert resources.stores.candidate is not resources.stores.running
    assert etree.tostring(resources.stores.candidate) == etree.tostring(resources.stores.running)


def test_patch_merges_delete_removes(resources: RestconfData) -> None:
    assert resources.request("PATCH", CLIENT, body(client_entry()))[0] == 404  # RFC 8040 s4.6.1: never creates
    resources.request("PUT", CLIENT, body(client_entry()))
    second = {"name": "manager", "endpoints": {"endpoint": [{"name": "backup", "https": {}}]}}
    assert resources.request("PATCH", CLIENT, body(second)) == (204, b"")
    data = json.loads(resources.request("GET", CLIENT, b"")[1])
    endpoints = data["ietf-restconf-server:restconf-client"][0]["endpoints"]["endpoint"]
    assert [e["name"] for e in endpoints] == ["primary", "backup"]
    assert resources.request("DELETE", CLIENT, b"") == (204, b"")
    assert error(resources.request("DELETE", CLIENT, b"")) == {
        "error-type": "application",
        "error-tag": "data-missing",
        "error-path": CLIENT,
        "error-message": "the resource does not exist",
    }


@pytest.mark.parametrize(
    ("payload", "tag", "words"),
    [
        (b"{not json", "malformed-message", "not JSON"),
        (body({**client_entry(), "bogus": 1}), "invalid-value", 'Node "bogus" not found'),
        (body(client_entry(port="4336")), "invalid-value", "uint16"),  # type: ignore[arg-type]
        (body(client_entry(name="other")), "invalid-value", "key values"),
        (json.dumps({"ietf-restconf-server:call-home": {}}).encode(), "invalid-value", "exactly the target"),
    ],
)
def test_a_bad_body_gets_an_rfc8040_errors_body(resources: RestconfData, payload: bytes, tag: str, words: str) -> None:
    status, _ = answer = resources.request("PUT", CLIENT, payload)
    assert status == 400
    assert error(answer)["error-tag"] == tag and words in error(answer)["error-message"], answer
    assert resources.stores.running.find(f"{{{RCS}}}restconf-server") is None  # nothing stored


def test_a_netconf_lock_holds_restconf_edits_off(resources: RestconfData) -> None:
    netconf = Client(resources.stores)
    assert netconf.rpc("<lock><target><running/></target></lock>").find(f"{{{NC}}}ok") is not None
    status, _ = answer = resources.request("PUT", CLIENT, body(client_entry()))
    assert status == 409 and error(answer)["error-tag"] == "in-use"
    assert netconf.rpc("<unlock><target><running/></target></unlock>").find(f"{{{NC}}}ok") is not None
    assert resources.request("PUT", CLIENT, body(client_entry()))[0] == 201


def test_paths_and_queries_it_refuses(resources: RestconfData) -> None:
    assert resources.handles(CLIENT) and not resources.handles("/restconf/data/ietf-system:system")
    assert resources.request("GET", CLIENT + "?depth=1", b"")[0] == 400
    assert resources.request("POST", CLIENT, b"{}")[0] == 405
    assert resources.request("GET", "/restconf/data/ietf-restconf-server:restconf-server/", b"")[0] == 400
