"""The agent's configuration: the ietf-netconf-server call-home subtree in
three revisions, from XML and RFC 7951 JSON, with key-path errors."""

from __future__ import annotations

import copy
import datetime
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from callhome_transport.agent.config import (
    parse_config,
    parse_host_port,
    parse_netconf_server_element,
    render_json,
    render_xml,
)
from callhome_transport.agent.model import (
    REVISIONS,
    AgentConfig,
    Endpoint,
    HostPort,
    LocalServers,
    NetconfClient,
    Periodic,
    Persistent,
    ReconnectStrategy,
    StartWith,
    TcpKeepalives,
    Transport,
)
from callhome_transport.agent.runner import log_config
from callhome_transport.errors import AgentConfigError

FIXTURES = Path(__file__).parent / "fixtures"
NEW = "callhome-2023-2025"
CLIENT = "/ietf-netconf-server:netconf-server/call-home/netconf-client[name='nms']"
PRIMARY = f"{CLIENT}/endpoints/endpoint[name='primary']"
TCP = f"{PRIMARY}/ssh/tcp-client-parameters"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def load_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fixture(name))
    return data


def same(a: AgentConfig, b: AgentConfig) -> bool:
    return (a.revision, a.clients, a.local) == (b.revision, b.clients, b.local)


# -- the three revisions, XML and JSON -------------------------------------------------------------


@pytest.mark.parametrize("revision", ["2023-12-28", "2025-04-24"])
def test_drafts_30_and_39_from_xml_and_json(revision: str) -> None:
    xml = parse_config(fixture(f"{NEW}.xml"), revision=revision)
    from_json = parse_config(fixture(f"{NEW}.json"), revision=revision)
    assert same(xml, from_json)
    nms, audit = xml.clients
    assert nms.name == "nms"
    assert isinstance(nms.connection, Persistent)
    assert nms.reconnect == ReconnectStrategy(start_with=StartWith.LAST_CONNECTED, max_wait=10, max_attempts=2)
    primary, backup = nms.endpoints
    assert primary == Endpoint(
        name="primary",
        transport=Transport.SSH,
        remote_address="192.0.2.10",
        remote_port=4334,  # the model's default for SSH (RFC 8071 s6)
        keepalives=TcpKeepalives(idle_time=15, max_probes=3, probe_interval=5),
    )
    assert (backup.transport, backup.remote_address, backup.remote_port) == (
        Transport.TLS,
        "nms-backup.example.net",
        14335,
    )
    assert backup.local_address == "0.0.0.0"
    assert audit.connection == Periodic(
        period=1440,
        anchor_time=datetime.datetime(2026, 1, 1, 2, 30, tzinfo=datetime.UTC),
        idle_timeout=300,
    )
    assert audit.reconnect == ReconnectStrategy()  # defaults: first-listed, 5 s, 3
    assert audit.endpoints[0].remote_address == "2001:db8::20"
    assert xml.local == LocalServers(ssh=HostPort(host="127.0.0.1", port=830), tls=HostPort(host="::1", port=6513))


def test_keepalives_default_on_in_2023_and_off_in_2025() -> None:
    """-30 has a non-presence keepalives container with defaults; -39 made it
    a presence container ("keepalives are off by default", RFC 9293)."""
    backup_2023 = parse_config(fixture(f"{NEW}.xml"), revision="2023-12-28").clients[0].endpoints[1]
    backup_2025 = parse_config(fixture(f"{NEW}.xml"), revision="2025-04-24").clients[0].endpoints[1]
    assert backup_2023.keepalives == TcpKeepalives(idle_time=7200, max_probes=9, probe_interval=75)
    assert backup_2025.keepalives is None


def test_draft_14_from_xml_and_json() -> None:
    xml = parse_config(fixture("callhome-2019.xml"), revision="2019-07-02")
    assert same(xml, parse_config(fixture("callhome-2019.json"), revision="2019-07-02"))
    (nms,) = xml.clients
    assert nms.reconnect == ReconnectStrategy(start_with=StartWith.RANDOM_SELECTION, max_wait=5, max_attempts=5)
    assert nms.connection == Periodic(period=15, anchor_time=None, idle_timeout=120)  # -14's idle default
    primary, secondary = nms.endpoints
    assert primary.keepalives == TcpKeepalives(idle_time=30, max_probes=4, probe_interval=10)
    assert secondary.keepalives is None
    assert xml.local == LocalServers()  # no agent section: 127.0.0.1:830 and :6513


def test_parts_of_the_real_server_are_ignored_with_one_info_line_each(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config(fixture("callhome-2019.xml"), revision="2019-07-02", source="f.xml")
    paths = [p.key_path for p in config.ignored]
    assert paths == [
        "/ietf-keystore:keystore",
        "/ietf-netconf-server:netconf-server/listen",
        f"{PRIMARY}/ssh/ssh-server-parameters/server-identity",
        f"{PRIMARY}/ssh/ssh-server-parameters/client-authentication",
        f"{CLIENT}/endpoints/endpoint[name='secondary']/ssh/ssh-server-parameters/server-identity",
    ]
    with caplog.at_level(logging.INFO, logger="callhome_transport.agent.runner"):
        log_config(config)
    ignored = [r for r in caplog.records if r.getMessage().startswith("ignored ")]
    assert [r.levelno for r in ignored] == [logging.INFO] * 5
    assert [r.getMessage().split(":", 1)[0] for r in ignored] == [f"ignored {p.split(':', 1)[0]}" for p in paths]


def test_a_netconf_config_wrapper_and_a_single_root_are_accepted() -> None:
    body = fixture(f"{NEW}.xml").split(b"?>", 1)[1]
    wrapped = b'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">' + body + b"</config>"
    assert same(parse_config(wrapped), parse_config(fixture(f"{NEW}.xml")))
    server = next(
        el
        for el in etree.fromstring(wrapped)
        if el.tag == "{urn:ietf:params:xml:ns:yang:ietf-netconf-server}netconf-server"
    )
    alone = parse_config(etree.tostring(server))
    assert alone.clients == parse_config(fixture(f"{NEW}.xml")).clients


def test_the_simulated_device_parses_its_running_datastore_element() -> None:
    wrapped = b"<data xmlns='urn:ietf:params:xml:ns:netconf:base:1.0'>" + fixture(f"{NEW}.xml").split(b"?>")[1]
    server = etree.fromstring(wrapped + b"</data>").find(
        "{urn:ietf:params:xml:ns:yang:ietf-netconf-server}netconf-server"
    )
    config = parse_netconf_server_element(server, revision="2023-12-28")
    assert [c.name for c in config.clients] == ["nms", "audit"]
    assert parse_netconf_server_element(None).clients == ()


# -- errors name the key path ----------------------------------------------------------------------------


def json_case(mutate: Any) -> bytes:
    data = load_json(f"{NEW}.json")
    mutate(data)
    return json.dumps(data).encode()


def nms(data: dict[str, Any]) -> dict[str, Any]:
    client: dict[str, Any] = data["ietf-netconf-server:netconf-server"]["call-home"]["netconf-client"][0]
    return client


def tcp(data: dict[str, Any], index: int = 0) -> dict[str, Any]:
    endpoint = nms(data)["endpoints"]["endpoint"][index]
    params: dict[str, Any] = endpoint.get("ssh", endpoint.get("tls"))["tcp-client-parameters"]
    return params


JSON_ERRORS = [
    (
        "typo",
        lambda d: tcp(d).update({"remote-adress": tcp(d).pop("remote-address")}),
        f"{TCP}/remote-adress",
        "unknown node; expected one of keepalives, local-address",
    ),
    ("missing mandatory", lambda d: tcp(d).pop("remote-address"), f"{TCP}/remote-address", "mandatory"),
    ("port as string", lambda d: tcp(d).update({"remote-port": "4334"}), f"{TCP}/remote-port", "(a JSON number)"),
    ("port range", lambda d: tcp(d).update({"remote-port": 70000}), f"{TCP}/remote-port", "0..65535"),
    ("port zero", lambda d: tcp(d).update({"remote-port": 0}), f"{TCP}/remote-port", "a port to dial"),
    ("bad host", lambda d: tcp(d).update({"remote-address": "nms .example"}), f"{TCP}/remote-address", "inet:host"),
    (
        "local-address is an address",
        lambda d: tcp(d).update({"local-address": "eth0"}),
        f"{TCP}/local-address",
        "IPv4 or IPv6",
    ),
    (
        "max-attempts 0",
        lambda d: nms(d)["reconnect-strategy"].update({"max-attempts": 0}),
        f"{CLIENT}/reconnect-strategy/max-attempts",
        "1..255",
    ),
    (
        "start-with",
        lambda d: nms(d)["reconnect-strategy"].update({"start-with": "last-listed"}),
        f"{CLIENT}/reconnect-strategy/start-with",
        "one of first-listed, last-connected, random-selection",
    ),
    (
        "two connection types",
        lambda d: nms(d)["connection-type"].update({"periodic": {}}),
        f"{CLIENT}/connection-type",
        "one case of choice connection-type",
    ),
    (
        "no connection type",
        lambda d: nms(d).update({"connection-type": {}}),
        f"{CLIENT}/connection-type",
        "choice connection-type is mandatory",
    ),
    ("no transport", lambda d: nms(d)["endpoints"]["endpoint"][0].pop("ssh"), PRIMARY, "choice transport is mandatory"),
    (
        "duplicate endpoint",
        lambda d: nms(d)["endpoints"]["endpoint"][1].update({"name": "primary"}),
        PRIMARY,
        "unique name",
    ),
    (
        "no list key",
        lambda d: nms(d)["endpoints"]["endpoint"][0].pop("name"),
        f"{CLIENT}/endpoints/endpoint[1]",
        "the list key 'name'",
    ),
    (
        "no endpoints",
        lambda d: nms(d)["endpoints"].update({"endpoint": []}),
        f"{CLIENT}/endpoints/endpoint",
        "at least 1 entry",
    ),
    (
        "list as object",
        lambda d: nms(d)["endpoints"].update({"endpoint": nms(d)["endpoints"]["endpoint"][0]}),
        f"{CLIENT}/endpoints/endpoint",
        "a JSON array",
    ),
    (
        "container as array",
        lambda d: nms(d).update({"reconnect-strategy": [{}]}),
        f"{CLIENT}/reconnect-strategy",
        "a single node",
    ),
    (
        "proxy",
        lambda d: tcp(d).update({"proxy-server": {"socks5-parameters": {"remote-address": "proxy"}}}),
        f"{TCP}/proxy-server",
        "SOCKS proxy",
    ),
    (
        "foreign module",
        lambda d: nms(d).update({"acme-ext:retry": 3}),
        f"{CLIENT}/acme-ext:retry",
        "a member of module ietf-netconf-server",
    ),
    (
        "period 0",
        lambda d: nms(d).update({"connection-type": {"periodic": {"period": 0}}}),
        f"{CLIENT}/connection-type/periodic/period",
        "at least 1 minute",
    ),
    (
        "anchor with seconds",
        lambda d: nms(d).update({"connection-type": {"periodic": {"anchor-time": "2026-01-01T00:00:30Z"}}}),
        f"{CLIENT}/connection-type/periodic/anchor-time",
        "whole minute",
    ),
    (
        "anchor without zone",
        lambda d: nms(d).update({"connection-type": {"periodic": {"anchor-time": "2026-01-01T00:00:00"}}}),
        f"{CLIENT}/connection-type/periodic/anchor-time",
        "time zone",
    ),
    ("unqualified top", lambda d: d.update({"netconf-server": {}}), "/netconf-server", "module-qualified"),
    (
        "other module at the top",
        lambda d: d.update({"ietf-system:system": {}}),
        "/ietf-system:system",
        "ietf-netconf-server:netconf-server, callhome-agent:agent",
    ),
    (
        "agent section typo",
        lambda d: d["callhome-agent:agent"].update({"local-sh": {}}),
        "/callhome-agent:agent/local-sh",
        "local-ssh, local-tls",
    ),
    (
        "agent port",
        lambda d: d["callhome-agent:agent"]["local-ssh"].update({"port": 0}),
        "/callhome-agent:agent/local-ssh/port",
        "1..65535",
    ),
]


@pytest.mark.parametrize(("mutate", "path", "says"), [c[1:] for c in JSON_ERRORS], ids=[c[0] for c in JSON_ERRORS])
def test_json_errors_name_the_key_path(mutate: Any, path: str, says: str) -> None:
    with pytest.raises(AgentConfigError) as info:
        parse_config(json_case(mutate), source="callhome.json")
    assert info.value.key_path == path
    assert says in info.value.expected
    assert str(info.value) == f"callhome.json: {path}: {info.value.expected}"


def xml_case(old: str, new: str) -> bytes:
    text = fixture(f"{NEW}.xml").decode()
    assert old in text
    return text.replace(old, new, 1).encode()


XML_ERRORS = [
    (
        "typo",
        "<max-attempts>2</max-attempts>",
        "<max-atempts>2</max-atempts>",
        f"{CLIENT}/reconnect-strategy/max-atempts",
    ),
    ("value", "<max-wait>10<", "<max-wait>ten<", f"{CLIENT}/reconnect-strategy/max-wait"),
    ("namespace", "<persistent/>", '<persistent xmlns="urn:example:other"/>', f"{CLIENT}/connection-type/persistent"),
    (
        "leaf with children",
        "<remote-address>192.0.2.10</remote-address>",
        "<remote-address><ip>192.0.2.10</ip></remote-address>",
        f"{TCP}/remote-address",
    ),
    ("text in a container", "<keepalives>", "<keepalives>on", f"{TCP}/keepalives"),
    (
        "leaf twice",
        "<max-wait>10</max-wait>",
        "<max-wait>10</max-wait><max-wait>11</max-wait>",
        f"{CLIENT}/reconnect-strategy/max-wait",
    ),
    ("duplicate client", "<name>audit</name>\n      <endpoints>", "<name>nms</name>\n      <endpoints>", CLIENT),
]


@pytest.mark.parametrize(("old", "new", "path"), [c[1:] for c in XML_ERRORS], ids=[c[0] for c in XML_ERRORS])
def test_xml_errors_name_the_key_path(old: str, new: str, path: str) -> None:
    with pytest.raises(AgentConfigError) as info:
        parse_config(xml_case(old, new), revision="2023-12-28", source="callhome.xml")
    assert info.value.key_path == path


def test_a_typo_inside_the_server_parameters_is_still_an_error() -> None:
    text = fixture(f"{NEW}.xml").decode().replace("server-identity>", "server-identiy>", 2)
    with pytest.raises(AgentConfigError) as info:
        parse_config(text, revision="2023-12-28")
    assert info.value.key_path == f"{TCP.rsplit('/', 1)[0]}/ssh-server-parameters/server-identiy"
    assert "unknown node; expected one of client-authentication, keepalives, server-identity" in info.value.expected


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("invalid-2019-max-wait.xml", f"{CLIENT}/reconnect-strategy/max-wait"),
        ("invalid-2019-keepalives.xml", f"{TCP}/keepalives/max-probes"),
    ],
)
def test_payloads_invalid_for_2019_are_refused_for_2019_only(name: str, path: str) -> None:
    with pytest.raises(AgentConfigError) as info:
        parse_config(fixture(name), revision="2019-07-02")
    assert info.value.key_path == path
    assert parse_config(fixture(name), revision="2023-12-28").clients


def test_syntax_errors_and_missing_netconf_server() -> None:
    with pytest.raises(AgentConfigError, match="well-formed XML"):
        parse_config(b"<netconf-server>")
    with pytest.raises(AgentConfigError, match="valid JSON"):
        parse_config(b"{", syntax="json")
    with pytest.raises(AgentConfigError, match="appears twice"):
        parse_config(b'{"callhome-agent:agent": {}, "callhome-agent:agent": {}}')
    with pytest.raises(AgentConfigError) as info:
        parse_config(b'{"callhome-agent:agent": {}}')
    assert info.value.key_path == "/ietf-netconf-server:netconf-server"
    with pytest.raises(ValueError, match="revision must be one of"):
        parse_config(fixture(f"{NEW}.xml"), revision="2024-01-01")


def test_error_pickles_with_its_attributes() -> None:
    err = AgentConfigError("f.json", f"{CLIENT}/x", "unknown node")
    copy_ = pickle.loads(pickle.dumps(err))
    assert (type(copy_), copy_.source, copy_.key_path, copy_.expected, str(copy_)) == (
        AgentConfigError,
        "f.json",
        f"{CLIENT}/x",
        "unknown node",
        str(err),
    )


def test_parse_host_port() -> None:
    assert parse_host_port("127.0.0.1:830") == HostPort(host="127.0.0.1", port=830)
    assert parse_host_port("[::1]:6513") == HostPort(host="::1", port=6513)
    assert parse_host_port("netconf.local:2022") == HostPort(host="netconf.local", port=2022)
    for bad in ("127.0.0.1", ":830", "host:0", "host:http"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_host_port(bad)


# -- round trips: what we render, we read back ----------------------------------------------------------

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)
HOSTS = st.sampled_from(["192.0.2.7", "2001:db8::1", "nms.example.net", "localhost", "fe80::1%eth0"])


@st.composite
def configs(draw: st.DrawFn, revision: str) -> AgentConfig:
    clients = []
    for name in draw(st.lists(NAMES, min_size=1, max_size=3, unique=True)):
        endpoints = []
        for endpoint_name in draw(st.lists(NAMES, min_size=1, max_size=3, unique=True)):
            keepalives = draw(
                st.builds(
                    TcpKeepalives,
                    idle_time=st.integers(1, 65535),
                    max_probes=st.integers(1, 65535),
                    probe_interval=st.integers(1, 65535),
                )
                if revision == "2023-12-28"
                else st.none()
                | st.builds(
                    TcpKeepalives,
                    idle_time=st.integers(1, 65535),
                    max_probes=st.integers(1, 65535),
                    probe_interval=st.integers(1, 65535),
                )
            )
            endpoints.append(
                Endpoint(
                    name=endpoint_name,
                    transport=draw(st.sampled_from(Transport)),
                    remote_address=draw(HOSTS),
                    remote_port=draw(st.integers(1, 65535)),
                    local_address=draw(st.none() | st.sampled_from(["0.0.0.0", "::", "192.0.2.99"])),
                    local_port=draw(st.integers(0, 65535)),
                    keepalives=keepalives,
                )
            )
        anchor = draw(
            st.none()
            | st.datetimes(min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2099, 1, 1)).map(
                lambda d: d.replace(second=0, microsecond=0, tzinfo=datetime.UTC)
            )
        )
        connection = draw(
            st.just(Persistent())
            | st.builds(
                Periodic, period=st.integers(1, 65535), anchor_time=st.just(anchor), idle_timeout=st.integers(0, 65535)
            )
        )
        clients.append(
            NetconfClient(
                name=name,
                endpoints=tuple(endpoints),
                connection=connection,
                reconnect=ReconnectStrategy(
                    start_with=draw(st.sampled_from(StartWith)),
                    max_wait=5 if revision == "2019-07-02" else draw(st.integers(1, 65535)),
                    max_attempts=draw(st.integers(1, 255)),
                ),
            )
        )
    local = LocalServers(
        ssh=HostPort(host=draw(HOSTS), port=draw(st.integers(1, 65535))),
        tls=HostPort(host=draw(HOSTS), port=draw(st.integers(1, 65535))),
    )
    return AgentConfig(revision=revision, clients=tuple(clients), local=local)


@pytest.mark.parametrize("revision", REVISIONS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_render_then_parse_is_the_identity(revision: str, data: st.DataObject) -> None:
    config = data.draw(configs(revision))
    from_json = parse_config(json.dumps(render_json(config)), revision=revision)
    assert same(from_json, config)
    xml = b"".join(etree.tostring(el) for el in render_xml(config))
    assert same(parse_config(xml, revision=revision), config)


def test_render_json_of_a_fixture_is_stable() -> None:
    config = parse_config(fixture(f"{NEW}.json"), revision="2025-04-24")
    once = render_json(config)
    twice = render_json(parse_config(json.dumps(once), revision="2025-04-24"))
    assert once == twice
    assert copy.deepcopy(once)["ietf-netconf-server:netconf-server"]["call-home"]["netconf-client"][0]["name"] == "nms"
