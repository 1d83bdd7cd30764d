"""The simulated device takes the call-home model through NETCONF: edit-config
on candidate, commit validates with the agent's parser and reconfigures the
scheduler (sans I/O: the NETCONF session is driven through bytes and the
driver is not started, so nothing dials)."""

from __future__ import annotations

import pytest

from callhome_transport.agent.model import Persistent
from callhome_transport.sim.callhome import ModelCallHome
from callhome_transport.sim.device import SimulatedDevice

from .test_datastore import Client, error_tag, text

NCS = "urn:ietf:params:xml:ns:yang:ietf-netconf-server"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"


def payload(client: str = "nms", port: int = 4334, extra: str = "", transport: str = "ssh") -> str:
    return (
        f'<netconf-server xmlns="{NCS}"><call-home><netconf-client><name>{client}</name>'
        f"<endpoints><endpoint><name>gw</name><{transport}><tcp-client-parameters>"
        f"<remote-address>127.0.0.1</remote-address><remote-port>{port}</remote-port>{extra}"
        f"</tcp-client-parameters></{transport}></endpoint></endpoints>"
        "<connection-type><persistent/></connection-type></netconf-client></call-home></netconf-server>"
    )


def edit(body: str) -> str:
    return f"<edit-config><target><candidate/></target><config>{body}</config></edit-config>"


@pytest.fixture
def device() -> tuple[ModelCallHome, Client]:
    sim = SimulatedDevice("PROV-1")
    model = ModelCallHome(sim)
    return model, Client(sim.datastores)


def test_the_device_advertises_ietf_netconf_server_with_ssh_call_home(device: tuple[ModelCallHome, Client]) -> None:
    _, client = device
    hello = client.session.start().decode()
    assert "module=ietf-netconf-server&amp;revision=2023-12-28&amp;features=ssh-call-home" in hello


def test_commit_applies_the_call_home_configuration(device: tuple[ModelCallHome, Client]) -> None:
    model, client = device
    assert model.config.clients == ()
    assert error_tag(client.rpc(edit(payload(port=4444)))) is None
    assert model.config.clients == ()  # candidate only
    assert error_tag(client.rpc("<commit/>")) is None
    (nms,) = model.config.clients
    assert (nms.name, nms.endpoints[0].remote_port, nms.connection) == ("nms", 4444, Persistent())
    running = client.rpc(
        f'<get-config><source><running/></source><filter><netconf-server xmlns="{NCS}"/></filter></get-config>'
    )
    assert text(running, f".//{{{NCS}}}remote-port") == ["4444"]
    # the model keeps at least one netconf-client under a call-home container
    # (min-elements 1): deleting the last one alone is refused, as libyang does
    delete_client = (
        f'<netconf-server xmlns="{NCS}"><call-home><netconf-client '
        'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0" nc:operation="delete"><name>nms</name>'
        "</netconf-client></call-home></netconf-server>"
    )
    assert error_tag(client.rpc(edit(delete_client))) is None
    refused = client.rpc("<commit/>")
    assert error_tag(refused) == "invalid-value"
    assert text(refused, f".//{{{NC}}}error-path")[0].endswith("call-home/netconf-client")
    client.rpc("<discard-changes/>")
    delete_call_home = (
        f'<netconf-server xmlns="{NCS}"><call-home xmlns:nc="{NC}" nc:operation="delete"/></netconf-server>'
    )
    assert error_tag(client.rpc(edit(delete_call_home))) is None
    assert error_tag(client.rpc("<commit/>")) is None
    assert model.config.clients == ()


def test_commit_of_an_invalid_payload_is_refused_with_the_key_path(device: tuple[ModelCallHome, Client]) -> None:
    model, client = device
    bad = payload().replace("remote-address", "remote-adress")
    assert error_tag(client.rpc(edit(bad))) is None  # candidate is not validated before commit
    reply = client.rpc("<commit/>")
    assert error_tag(reply) == "invalid-value"
    [path] = text(reply, f".//{{{NC}}}error-path")
    assert path.endswith("endpoint[name='gw']/ssh/tcp-client-parameters/remote-adress")
    assert "unknown node" in text(reply, f".//{{{NC}}}error-message")[0]
    assert model.config.clients == ()
    # <validate> says the same before a commit
    assert error_tag(client.rpc("<validate><source><candidate/></source></validate>")) == "invalid-value"


def test_tls_endpoints_are_refused_this_device_has_ssh_call_home_only(device: tuple[ModelCallHome, Client]) -> None:
    _, client = device
    client.rpc(edit(payload(transport="tls")))
    reply = client.rpc("<commit/>")
    assert error_tag(reply) == "invalid-value"
    assert "ssh-call-home only" in text(reply, f".//{{{NC}}}error-message")[0]


def test_writable_running_is_validated_too(device: tuple[ModelCallHome, Client]) -> None:
    model, client = device
    body = payload(extra="<keepalives><idle-time>0</idle-time></keepalives>")
    reply = client.rpc(f"<edit-config><target><running/></target><config>{body}</config></edit-config>")
    assert error_tag(reply) == "invalid-value"
    ok = client.rpc(f"<edit-config><target><running/></target><config>{payload(port=5555)}</config></edit-config>")
    assert error_tag(ok) is None
    assert model.config.clients[0].endpoints[0].remote_port == 5555


def test_provisioning_from_a_file_fills_running_and_candidate(device: tuple[ModelCallHome, Client]) -> None:
    model, client = device
    model.provision(payload(port=6000))
    assert model.config.clients[0].endpoints[0].remote_port == 6000
    candidate = client.rpc(
        f'<get-config><source><candidate/></source><filter><netconf-server xmlns="{NCS}"/></filter></get-config>'
    )
    assert text(candidate, f".//{{{NCS}}}remote-port") == ["6000"]
    json_payload = (
        '{"ietf-netconf-server:netconf-server": {"call-home": {"netconf-client": [{"name": "j", "endpoints": '
        '{"endpoint": [{"name": "e", "ssh": {"tcp-client-parameters": {"remote-address": "::1"}}}]}, '
        '"connection-type": {"persistent": {}}}]}}}'
    )
    model.provision(json_payload)
    assert [c.name for c in model.config.clients] == ["j"]
    running = client.rpc(
        f'<get-config><source><running/></source><filter><netconf-server xmlns="{NCS}"/></filter></get-config>'
    )
    assert text(running, f".//{{{NCS}}}name") == ["j", "e"]
