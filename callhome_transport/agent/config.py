"""Read the call-home subtree of ``ietf-netconf-server`` (RFC 7951 JSON or
XML), exactly the payload a native device takes, for revisions 2019-07-02,
2023-12-28 and 2025-04-24.

A small schema of the nodes the agent acts on is walked over the input; every
key is checked against it, so a mistyped or unknown key is an
:class:`~callhome_transport.errors.AgentConfigError` naming its instance path
(in libyang's form, ``/ietf-netconf-server:netconf-server/call-home/
netconf-client[name='nms']/...``).  Subtrees that belong to the real server
(the children of ``ssh-server-parameters``, ``tls-server-parameters`` and
``netconf-server-parameters``: server-identity, client-authentication...;
``listen``; the keystore and truststore) are not inspected below their names:
they are returned as :class:`~.model.IgnoredPart` so the agent logs one INFO
line for each.  Validating them is the real server's job (and
``yanglint``'s: the tests run it on every fixture).

Besides the standard modules, one agent-only top-level container may be
present, ``callhome-agent:agent`` (module ``callhome-agent``, shipped next to
this file), for the addresses of the device's own servers.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lxml import etree

from ..errors import AgentConfigError
from .model import (
    NETCONF_CH_SSH_PORT,
    NETCONF_CH_TLS_PORT,
    REVISIONS,
    AgentConfig,
    Endpoint,
    HostPort,
    IgnoredPart,
    LocalServers,
    NetconfClient,
    Periodic,
    Persistent,
    ReconnectStrategy,
    StartWith,
    TcpKeepalives,
    Transport,
)

__all__ = [
    "AGENT_MODULE",
    "AGENT_NS",
    "DEFAULT_REVISION",
    "NCS_NS",
    "load_config",
    "parse_config",
    "parse_host_port",
    "parse_netconf_server_element",
    "render_json",
    "render_xml",
    "xml_roots",
    "yang_dir",
]

DEFAULT_REVISION = "2025-04-24"
NCS_MODULE = "ietf-netconf-server"
NCS_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-server"
AGENT_MODULE = "callhome-agent"
AGENT_NS = "urn:callhome:params:xml:ns:yang:callhome-agent"
_NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
_OTHER_TOP = {  # top-level data of other modules a device payload carries along
    ("ietf-keystore", "urn:ietf:params:xml:ns:yang:ietf-keystore", "keystore"),
    ("ietf-truststore", "urn:ietf:params:xml:ns:yang:ietf-truststore", "truststore"),
}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)
_ALL = frozenset(REVISIONS)
_NEW = frozenset({"2023-12-28", "2025-04-24"})  # draft -30 and -39: the same shape for what the agent reads
_OLD = frozenset({"2019-07-02"})  # draft -14


def yang_dir() -> Path:
    """The directory holding ``callhome-agent@<revision>.yang`` (for yanglint)."""
    return Path(__file__).parent


# -- the schema of what the agent reads -----------------------------------------------


class _Bad(Exception):
    """A value does not fit its leaf; ``expected`` says what would."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


Value = str | int | None


@dataclass(frozen=True)
class _Leaf:
    check: Callable[[Value, bool], Any]  # (raw value, from JSON) -> typed value, or raise _Bad
    mandatory: frozenset[str] = frozenset()  # revisions where the leaf is mandatory
    revisions: frozenset[str] = _ALL


@dataclass(frozen=True)
class _Choice:
    name: str
    cases: tuple[frozenset[str], ...]  # the child names of each case
    mandatory: bool = True


@dataclass(frozen=True)
class _Container:
    children: Mapping[str, _Node]
    presence: bool = False
    choices: tuple[_Choice, ...] = ()
    revisions: frozenset[str] = _ALL


@dataclass(frozen=True)
class _List:
    key: str
    children: Mapping[str, _Node]
    min_elements: int = 0
    choices: tuple[_Choice, ...] = ()
    revisions: frozenset[str] = _ALL


@dataclass(frozen=True)
class _Ignored:
    """A subtree the real server owns: accepted unread, reported."""

    reason: str
    revisions: frozenset[str] = _ALL


@dataclass(frozen=True)
class _Refused:
    """Valid in the model, but honouring it is the agent's job and it cannot:
    refused rather than silently dialled around."""

    reason: str
    revisions: frozenset[str] = _ALL


_Node = _Leaf | _Container | _List | _Ignored | _Refused


def _text(raw: Value, from_json: bool, what: str) -> str:
    if from_json and not isinstance(raw, str):
        raise _Bad(f"{what} (a JSON string)")
    if raw is None:
        raise _Bad(what)
    return str(raw).strip() if not from_json else str(raw)


def _string(raw: Value, from_json: bool) -> str:
    return _text(raw, from_json, "a string")


def _uint(low: int, high: int) -> Callable[[Value, bool], int]:
    def check(raw: Value, from_json: bool) -> int:
        what = f"an integer in {low}..{high}"
        if from_json:
            # RFC 7951 s6.1: 8- to 32-bit integers are JSON numbers, not strings
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise _Bad(f"{what} (a JSON number)")
            value = raw
        else:
            text = _text(raw, False, what)
            if not re.fullmatch(r"[+]?[0-9]+", text):
                raise _Bad(what)
            value = int(text)
        if not low <= value <= high:
            raise _Bad(what)
        return value

    return check


def _enum(*names: str) -> Callable[[Value, bool], str]:
    def check(raw: Value, from_json: bool) -> str:
        text = _text(raw, from_json, "one of " + ", ".join(names))
        if text not in names:
            raise _Bad("one of " + ", ".join(names))
        return text

    return check


# ietf-inet-types domain-name, and ip-address with an optional zone
_DOMAIN = re.compile(
    r"((([a-zA-Z0-9_]([a-zA-Z0-9\-_]){0,61})?[a-zA-Z0-9]\.)*([a-zA-Z0-9_]([a-zA-Z0-9\-_]){0,61})?[a-zA-Z0-9]\.?)|\."
)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _ip_address(raw: Value, from_json: bool) -> str:
    text = _text(raw, from_json, "an IPv4 or IPv6 address")
    if not _is_ip(text):
        raise _Bad("an IPv4 or IPv6 address")
    return text


def _host(raw: Value, from_json: bool) -> str:
    what = "an IP address or a domain name (inet:host)"
    text = _text(raw, from_json, what)
    if _is_ip(text) or (1 <= len(text) <= 253 and _DOMAIN.fullmatch(text)):
        return text
    raise _Bad(what)


# anchor-time: yang:date-and-time restricted to whole minutes; -14 and -30 differ in the pattern
_ANCHOR_NEW = re.compile(
    r"[0-9]{4}-(1[0-2]|0[1-9])-(0[1-9]|[1-2][0-9]|3[0-1])T(0[0-9]|1[0-9]|2[0-3]):[0-5][0-9]:00"
    r"(Z|[\+\-]((1[0-3]|0[0-9]):([0-5][0-9])|14:00))"
)
_ANCHOR_OLD = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:00(Z|[\+\-][0-9]{2}:[0-9]{2})")


def _anchor(pattern: re.Pattern[str]) -> Callable[[Value, bool], datetime.datetime]:
    def check(raw: Value, from_json: bool) -> datetime.datetime:
        what = "a date-and-time on a whole minute with a time zone, e.g. 2026-01-01T00:15:00Z"
        text = _text(raw, from_json, what)
        if not pattern.fullmatch(text):
            raise _Bad(what)
        try:
            return datetime.datetime.fromisoformat(text)
        except ValueError:
            raise _Bad(what) from None

    return check


_UINT8 = _uint(1, 255)
_UINT16_1 = _uint(1, 65535)
_UINT16 = _uint(0, 65535)
_PORT = _uint(0, 65535)

_KEEPALIVES = _Container(
    {
        "idle-time": _Leaf(_UINT16_1, mandatory=_OLD),
        "max-probes": _Leaf(_UINT16_1, mandatory=_OLD),
        "probe-interval": _Leaf(_UINT16_1, mandatory=_OLD),
    },
    presence=True,  # a presence container in -14 and -39; -30 has defaults instead (see _endpoint)
)
_PROXY = _Refused(
    "a SOCKS proxy (proxy-server) is not supported: the agent dials the manager directly",
    revisions=_NEW,
)


def _tcp_client() -> _Container:
    return _Container(
        {
            "remote-address": _Leaf(_host, mandatory=_ALL),
            "remote-port": _Leaf(_PORT),
            "local-address": _Leaf(_ip_address),
            "local-port": _Leaf(_PORT),
            "proxy-server": _PROXY,
            "keepalives": _KEEPALIVES,
        }
    )


# The server parameters are the real server's: their children are named
# (a typo is still an error) and each is reported once, unread.
_SSH_SERVER_PARAMETERS = _Container(
    {
        "server-identity": _Ignored("the host keys are the real SSH server's"),
        "client-authentication": _Ignored("the real SSH server authenticates the manager"),
        "transport-params": _Ignored("the real SSH server negotiates the SSH algorithms"),
        "keepalives": _Ignored("SSH keep-alives are the real SSH server's (the agent sets TCP keepalives)"),
    }
)
_TLS_SERVER_PARAMETERS = _Container(
    {
        "server-identity": _Ignored("the certificate is the real TLS server's"),
        "client-authentication": _Ignored("the real TLS server authenticates the manager"),
        "hello-params": _Ignored("the real TLS server negotiates TLS versions and cipher suites"),
        "keepalives": _Ignored("TLS keep-alives are the real TLS server's (the agent sets TCP keepalives)"),
    }
)
_NETCONF_PARAMS = _Container(
    {"client-identity-mappings": _Ignored("the real NETCONF server maps the manager's certificate to a user name")},
    revisions=_NEW,
)
_ENDPOINT = _List(
    "name",
    {
        "name": _Leaf(_string, mandatory=_ALL),
        "ssh": _Container(
            {
                "tcp-client-parameters": _Container(_tcp_client().children),
                "ssh-server-parameters": _SSH_SERVER_PARAMETERS,
                "netconf-server-parameters": _NETCONF_PARAMS,
            }
        ),
        "tls": _Container(
            {
                "tcp-client-parameters": _Container(_tcp_client().children),
                "tls-server-parameters": _TLS_SERVER_PARAMETERS,
                "netconf-server-parameters": _NETCONF_PARAMS,
            }
        ),
    },
    min_elements=1,
    choices=(_Choice("transport", (frozenset({"ssh"}), frozenset({"tls"}))),),
)


def _periodic(revisions: frozenset[str], anchor: re.Pattern[str]) -> _Container:
    return _Container(
        {
            "period": _Leaf(_UINT16),
            "anchor-time": _Leaf(_anchor(anchor)),
            "idle-timeout": _Leaf(_UINT16),
        },
        presence=True,
        revisions=revisions,
    )


_NETCONF_CLIENT = _List(
    "name",
    {
        "name": _Leaf(_string, mandatory=_ALL),
        "endpoints": _Container({"endpoint": _ENDPOINT}),
        "connection-type": _Container(
            {"persistent": _Container({}, presence=True), "periodic": _periodic(_ALL, _ANCHOR_NEW)},
            choices=(_Choice("connection-type", (frozenset({"persistent"}), frozenset({"periodic"}))),),
        ),
        "reconnect-strategy": _Container(
            {
                "start-with": _Leaf(_enum(*(s.value for s in StartWith))),
                "max-wait": _Leaf(_UINT16_1, revisions=_NEW),
                "max-attempts": _Leaf(_UINT8),
            }
        ),
    },
    min_elements=1,
)
_NETCONF_SERVER = _Container(
    {
        "listen": _Ignored("listening endpoints belong to the real NETCONF server"),
        "call-home": _Container({"netconf-client": _NETCONF_CLIENT}, presence=True),
    }
)


_LOCAL_SERVER = _Container({"address": _Leaf(_host), "port": _Leaf(_uint(1, 65535))})  # defaults: LocalServers
_AGENT = _Container({"local-ssh": _LOCAL_SERVER, "local-tls": _LOCAL_SERVER})


# -- one walker over two syntaxes -----------------------------------------------------------


class _Input:
    """A node of the input, XML element or JSON value, seen through the schema."""

    def members(self, path: str) -> Iterator[tuple[str, list[_Input], bool]]:
        """(name, occurrences, given as a JSON array) for each child name."""
        raise NotImplementedError

    def value(self, path: str) -> Value:
        raise NotImplementedError

    def is_object(self) -> bool:
        """False if JSON says this is not an object (XML cannot say)."""
        return True


class _XmlInput(_Input):
    def __init__(self, element: etree._Element, namespace: str, source: str) -> None:
        self.element = element
        self.namespace = namespace
        self.source = source

    def members(self, path: str) -> Iterator[tuple[str, list[_Input], bool]]:
        if (self.element.text or "").strip():
            raise AgentConfigError(self.source, path, "child elements, not text")
        groups: dict[str, list[_Input]] = {}
        for child in self.element:
            if not isinstance(child.tag, str):
                continue
            qname = etree.QName(child)
            if qname.namespace != self.namespace:
                raise AgentConfigError(
                    self.source,
                    f"{path}/{qname.localname}",
                    f"an element of this module (namespace {self.namespace}), not {qname.namespace or 'no namespace'}",
                )
            groups.setdefault(qname.localname, []).append(_XmlInput(child, self.namespace, self.source))
        for name, items in groups.items():
            yield name, items, False

    def value(self, path: str) -> Value:
        if len(self.element):
            raise AgentConfigError(self.source, path, "a value, not child elements")
        return self.element.text or ""


class _JsonInput(_Input):
    def __init__(self, value: Any, module: str, source: str) -> None:
        self.raw = value
        self.module = module
        self.source = source

    def members(self, path: str) -> Iterator[tuple[str, list[_Input], bool]]:
        if not isinstance(self.raw, dict):
            raise AgentConfigError(self.source, path, "a JSON object")
        for key, value in self.raw.items():
            module, _, name = key.rpartition(":")
            if module and module != self.module:
                raise AgentConfigError(
                    self.source, f"{path}/{key}", f"a member of module {self.module} ({module} has no node here)"
                )
            if isinstance(value, list):
                yield name, [_JsonInput(item, self.module, self.source) for item in value], True
            else:
                yield name, [_JsonInput(value, self.module, self.source)], False

    def value(self, path: str) -> Value:
        if isinstance(self.raw, dict | list):
            raise AgentConfigError(self.source, path, "a JSON scalar (string or number)")
        value: Value = self.raw
        return value

    def is_object(self) -> bool:
        return isinstance(self.raw, dict)


@dataclass
class _Walker:
    revision: str
    source: str
    ignored: list[IgnoredPart] = field(default_factory=list)

    def container(self, schema: _Container, data: _Input, path: str) -> dict[str, Any]:
        if not data.is_object():
            raise AgentConfigError(self.source, path, "a JSON object (a container)")
        out: dict[str, Any] = {}
        for name, items, array in data.members(path):
            here = f"{path}/{name}"
            node = schema.children.get(name)
            if node is None or self.revision not in node.revisions:
                raise AgentConfigError(self.source, here, self._unknown(schema, name, node))
            if isinstance(node, _Ignored):
                self.ignored.append(IgnoredPart(key_path=here, reason=node.reason))
                continue
            if isinstance(node, _Refused):
                raise AgentConfigError(self.source, here, node.reason)
            if isinstance(node, _List):
                if isinstance(data, _JsonInput) and not array:
                    raise AgentConfigError(self.source, here, "a JSON array (a list)")
                out[name] = self.list(node, items, here)
            elif len(items) != 1 or array:
                raise AgentConfigError(self.source, here, "a single node, not a list")
            elif isinstance(node, _Container):
                out[name] = self.container(node, items[0], here)
            else:
                out[name] = self.leaf(node, items[0], here)
        self._check(schema, out, path)
        return out

    def list(self, schema: _List, items: list[_Input], path: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        seen: set[str] = set()
        for position, item in enumerate(items, 1):
            if not item.is_object():
                raise AgentConfigError(self.source, f"{path}[{position}]", "a JSON object (a list entry)")
            key_node = schema.children[schema.key]
            key = self._key_of(item, schema.key, key_node, f"{path}[{position}]")
            here = f"{path}[{schema.key}='{key}']"
            if key in seen:
                raise AgentConfigError(self.source, here, f"a unique {schema.key} (this one appears twice)")
            seen.add(key)
            entries.append(self.container(_Container(schema.children, choices=schema.choices), item, here))
        if len(entries) < schema.min_elements:
            raise AgentConfigError(self.source, path, f"at least {schema.min_elements} entry")
        return entries

    def _key_of(self, item: _Input, key: str, node: _Node, path: str) -> str:
        for name, values, array in item.members(path):
            if name == key and len(values) == 1 and not array and isinstance(node, _Leaf):
                return str(self.leaf(node, values[0], f"{path}/{key}"))
        raise AgentConfigError(self.source, path, f"the list key '{key}'")

    def leaf(self, schema: _Leaf, data: _Input, path: str) -> Any:
        try:
            return schema.check(data.value(path), isinstance(data, _JsonInput))
        except _Bad as bad:
            raise AgentConfigError(self.source, path, bad.expected) from None

    def _check(self, schema: _Container, out: dict[str, Any], path: str) -> None:
        for name, node in schema.children.items():
            if isinstance(node, _Leaf) and self.revision in node.mandatory and name not in out:
                raise AgentConfigError(self.source, f"{path}/{name}", "missing: a value is mandatory")
            if isinstance(node, _List) and node.min_elements and name not in out:
                raise AgentConfigError(self.source, f"{path}/{name}", f"at least {node.min_elements} entry")
        for choice in schema.choices:
            present = [case for case in choice.cases if case & out.keys()]
            if len(present) > 1:
                raise AgentConfigError(self.source, path, f"one case of choice {choice.name}, not several")
            if choice.mandatory and not present:
                names = " or ".join(sorted(n for case in choice.cases for n in case))
                raise AgentConfigError(self.source, path, f"{names} (choice {choice.name} is mandatory)")

    def _unknown(self, schema: _Container, name: str, node: _Node | None) -> str:
        if node is not None:
            return f"unknown node: {NCS_MODULE}@{self.revision} has no such node here"
        known = sorted(n for n, c in schema.children.items() if self.revision in c.revisions)
        return "unknown node; expected one of " + ", ".join(known) if known else "unknown node: no child node here"


# -- from the walked tree to the model ---------------------------------------------------------


def _keepalives(tcp: dict[str, Any], revision: str) -> TcpKeepalives | None:
    given = tcp.get("keepalives")
    if given is None and revision != "2023-12-28":
        return None  # a presence container in -14 and -39: keepalives are off unless configured
    given = given or {}  # -30: a non-presence container, so its defaults always apply
    return TcpKeepalives(
        idle_time=given.get("idle-time", 7200),
        max_probes=given.get("max-probes", 9),
        probe_interval=given.get("probe-interval", 75),
    )


def _endpoint(entry: dict[str, Any], path: str, source: str, revision: str) -> Endpoint:
    transport = Transport.SSH if "ssh" in entry else Transport.TLS
    stack = entry[transport.value]
    tcp = stack.get("tcp-client-parameters")
    if tcp is None:
        raise AgentConfigError(
            source, f"{path}/{transport.value}/tcp-client-parameters/remote-address", "missing: a value is mandatory"
        )
    default_port = NETCONF_CH_SSH_PORT if transport is Transport.SSH else NETCONF_CH_TLS_PORT
    remote_port = tcp.get("remote-port", default_port)
    if remote_port == 0:
        raise AgentConfigError(
            source, f"{path}/{transport.value}/tcp-client-parameters/remote-port", "a port to dial (1..65535)"
        )
    return Endpoint(
        name=entry["name"],
        transport=transport,
        remote_address=tcp["remote-address"],
        remote_port=remote_port,
        local_address=tcp.get("local-address"),
        local_port=tcp.get("local-port", 0),
        keepalives=_keepalives(tcp, revision),
    )


def _client(entry: dict[str, Any], path: str, source: str, revision: str) -> NetconfClient:
    here = f"{path}[name='{entry['name']}']"
    endpoints = tuple(
        _endpoint(e, f"{here}/endpoints/endpoint[name='{e['name']}']", source, revision)
        for e in entry.get("endpoints", {}).get("endpoint", [])
    )
    if not endpoints:
        raise AgentConfigError(source, f"{here}/endpoints/endpoint", "at least 1 entry")
    kind = entry["connection-type"]
    connection: Persistent | Periodic
    if "persistent" in kind:
        connection = Persistent()
    else:
        periodic = kind["periodic"]
        period = periodic.get("period", 60)
        if period == 0:
            raise AgentConfigError(
                source, f"{here}/connection-type/periodic/period", "a period of at least 1 minute (0 calls never)"
            )
        connection = Periodic(
            period=period,
            anchor_time=periodic.get("anchor-time"),
            idle_timeout=periodic.get("idle-timeout", 120 if revision == "2019-07-02" else 180),
        )
    strategy = entry.get("reconnect-strategy", {})
    return NetconfClient(
        name=entry["name"],
        endpoints=endpoints,
        connection=connection,
        reconnect=ReconnectStrategy(
            start_with=StartWith(strategy.get("start-with", StartWith.FIRST_LISTED.value)),
            max_wait=strategy.get("max-wait", 5),  # -14 has no max-wait: the later default
            max_attempts=strategy.get("max-attempts", 3),
        ),
    )


def _clients(server: dict[str, Any], source: str, revision: str) -> tuple[NetconfClient, ...]:
    path = f"/{NCS_MODULE}:netconf-server/call-home/netconf-client"
    return tuple(_client(e, path, source, revision) for e in server.get("call-home", {}).get("netconf-client", []))


def _local(agent: dict[str, Any]) -> LocalServers:
    base = LocalServers()
    ssh, tls = agent.get("local-ssh", {}), agent.get("local-tls", {})
    return LocalServers(
        ssh=HostPort(host=ssh.get("address", base.ssh.host), port=ssh.get("port", base.ssh.port)),
        tls=HostPort(host=tls.get("address", base.tls.host), port=tls.get("port", base.tls.port)),
    )


# -- entry points ---------------------------------------------------------------------------------


def _check_revision(revision: str) -> None:
    if revision not in REVISIONS:
        raise ValueError(f"revision must be one of {', '.join(REVISIONS)}, not {revision!r}")


def xml_roots(text: bytes, source: str) -> list[etree._Element]:
    """Top-level elements: one or several (as yanglint takes them), or the
    children of a NETCONF ``<config>``/``<data>`` wrapper."""
    body = re.sub(rb"^\s*<\?xml[^>]*\?>", b"", text)
    try:
        holder = etree.fromstring(b"<callhome-agent-file>" + body + b"</callhome-agent-file>", _PARSER)
    except etree.XMLSyntaxError as exc:
        raise AgentConfigError(source, "", f"well-formed XML ({exc})") from None
    roots = [el for el in holder if isinstance(el.tag, str)]
    if (holder.text or "").strip() or any((el.tail or "").strip() for el in roots):
        raise AgentConfigError(source, "", "XML elements only (text found outside them)")
    if (
        len(roots) == 1
        and etree.QName(roots[0]).namespace == _NC_NS
        and etree.QName(roots[0]).localname
        in (
            "config",
            "data",
        )
    ):
        roots = [el for el in roots[0] if isinstance(el.tag, str)]
    return roots


def _assemble(
    walker: _Walker,
    server: dict[str, Any] | None,
    agent: dict[str, Any],
    source: str,
) -> AgentConfig:
    if server is None:
        raise AgentConfigError(source, f"/{NCS_MODULE}:netconf-server", "the netconf-server container")
    return AgentConfig(
        revision=walker.revision,
        clients=_clients(server, source, walker.revision),
        local=_local(agent),
        ignored=tuple(walker.ignored),
        source=source,
    )


def _parse_xml(text: bytes, walker: _Walker, source: str) -> AgentConfig:
    server: dict[str, Any] | None = None
    agent: dict[str, Any] = {}
    for root in xml_roots(text, source):
        qname = etree.QName(root)
        if qname.namespace == NCS_NS and qname.localname == "netconf-server":
            if server is not None:
                raise AgentConfigError(source, f"/{NCS_MODULE}:netconf-server", "a single netconf-server")
            server = walker.container(_NETCONF_SERVER, _XmlInput(root, NCS_NS, source), f"/{NCS_MODULE}:netconf-server")
        elif qname.namespace == AGENT_NS and qname.localname == "agent":
            agent = walker.container(_AGENT, _XmlInput(root, AGENT_NS, source), f"/{AGENT_MODULE}:agent")
        elif any(qname.namespace == ns and qname.localname == name for _, ns, name in _OTHER_TOP):
            module = next(m for m, ns, _ in _OTHER_TOP if ns == qname.namespace)
            walker.ignored.append(
                IgnoredPart(key_path=f"/{module}:{qname.localname}", reason="keys and certificates of the real server")
            )
        else:
            raise AgentConfigError(source, f"/{qname.localname}", _TOP_EXPECTED + f" (namespace {qname.namespace})")
    return _assemble(walker, server, agent, source)


_TOP_EXPECTED = (
    "ietf-netconf-server:netconf-server, callhome-agent:agent, ietf-keystore:keystore or ietf-truststore:truststore"
)


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Bad(f"member {key!r} appears twice in one JSON object")
        out[key] = value
    return out


def _parse_json(text: bytes, walker: _Walker, source: str) -> AgentConfig:
    try:
        document = json.loads(text, object_pairs_hook=_unique_members)
    except _Bad as bad:
        raise AgentConfigError(source, "", bad.expected) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise AgentConfigError(source, "", f"valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise AgentConfigError(source, "", "a JSON object with module-qualified members (RFC 7951)")
    server: dict[str, Any] | None = None
    agent: dict[str, Any] = {}
    for key, value in document.items():
        module, _, name = key.partition(":")
        if not name:
            raise AgentConfigError(source, f"/{key}", "a module-qualified member name (RFC 7951 s4)")
        if module == NCS_MODULE and name == "netconf-server":
            server = walker.container(_NETCONF_SERVER, _JsonInput(value, NCS_MODULE, source), f"/{key}")
        elif module == AGENT_MODULE and name == "agent":
            agent = walker.container(_AGENT, _JsonInput(value, AGENT_MODULE, source), f"/{key}")
        elif (module, name) in {(m, n) for m, _, n in _OTHER_TOP}:
            walker.ignored.append(IgnoredPart(key_path=f"/{key}", reason="keys and certificates of the real server"))
        else:
            raise AgentConfigError(source, f"/{key}", _TOP_EXPECTED)
    return _assemble(walker, server, agent, source)


def parse_config(
    data: bytes | str,
    *,
    revision: str = DEFAULT_REVISION,
    source: str = "<config>",
    syntax: Literal["xml", "json"] | None = None,
) -> AgentConfig:
    """Parse a call-home payload (XML or RFC 7951 JSON; ``syntax=None`` looks
    at the first character) for ``revision`` of ietf-netconf-server.

    Raises :class:`~callhome_transport.errors.AgentConfigError` with the key
    path of the first problem."""
    _check_revision(revision)
    text = data.encode() if isinstance(data, str) else data
    if syntax is None:
        syntax = "json" if text.lstrip()[:1] in (b"{", b"[") else "xml"
    walker = _Walker(revision=revision, source=source)
    return _parse_json(text, walker, source) if syntax == "json" else _parse_xml(text, walker, source)


def parse_netconf_server_element(
    element: etree._Element | None, *, revision: str = DEFAULT_REVISION, source: str = "<running>"
) -> AgentConfig:
    """The call-home configuration in an ``ietf-netconf-server``
    ``<netconf-server>`` element (a device's running datastore); ``None``
    (no such element) is no call home."""
    _check_revision(revision)
    walker = _Walker(revision=revision, source=source)
    if element is None:
        return AgentConfig(revision=revision, clients=(), source=source)
    server = walker.container(_NETCONF_SERVER, _XmlInput(element, NCS_NS, source), f"/{NCS_MODULE}:netconf-server")
    return _assemble(walker, server, {}, source)


def parse_host_port(text: str, what: str = "HOST:PORT") -> HostPort:
    """``HOST:PORT`` or ``[V6]:PORT`` (a ``--local-ssh`` value)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if host.startswith("[") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{what} must be HOST:PORT (IPv6 as [ADDR]:PORT), not {text!r}")
    return HostPort(host=host, port=int(port))


def load_config(
    path: str | Path,
    *,
    revision: str = DEFAULT_REVISION,
    local_ssh: HostPort | None = None,
    local_tls: HostPort | None = None,
) -> AgentConfig:
    """Read a configuration file (``.json`` is JSON, anything else is looked
    at); ``local_ssh``/``local_tls`` override the file's agent section."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise AgentConfigError(path, "", f"a readable file ({exc.strerror or exc})") from None
    syntax: Literal["xml", "json"] | None = "json" if path.suffix == ".json" else None
    config = parse_config(text, revision=revision, source=str(path), syntax=syntax)
    if local_ssh is None and local_tls is None:
        return config
    local = LocalServers(ssh=local_ssh or config.local.ssh, tls=local_tls or config.local.tls)
    return AgentConfig(
        revision=config.revision, clients=config.clients, local=local, ignored=config.ignored, source=config.source
    )


# -- back to the model's syntax (round trips, the simulated device's running datastore) ---------


def _anchor_text(value: datetime.datetime) -> str:
    text = value.isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _client_json(client: NetconfClient, revision: str) -> dict[str, Any]:
    endpoints = []
    for e in client.endpoints:
        tcp: dict[str, Any] = {"remote-address": e.remote_address, "remote-port": e.remote_port}
        if e.local_address is not None:
            tcp["local-address"] = e.local_address
        if e.local_port:
            tcp["local-port"] = e.local_port
        if e.keepalives is not None:
            tcp["keepalives"] = {
                "idle-time": e.keepalives.idle_time,
                "max-probes": e.keepalives.max_probes,
                "probe-interval": e.keepalives.probe_interval,
            }
        endpoints.append({"name": e.name, e.transport.value: {"tcp-client-parameters": tcp}})
    connection: dict[str, Any]
    if isinstance(client.connection, Periodic):
        periodic: dict[str, Any] = {"period": client.connection.period, "idle-timeout": client.connection.idle_timeout}
        if client.connection.anchor_time is not None:
            periodic["anchor-time"] = _anchor_text(client.connection.anchor_time)
        connection = {"periodic": periodic}
    else:
        connection = {"persistent": {}}
    strategy: dict[str, Any] = {"start-with": client.reconnect.start_with.value}
    if revision != "2019-07-02":
        strategy["max-wait"] = client.reconnect.max_wait
    strategy["max-attempts"] = client.reconnect.max_attempts
    return {
        "name": client.name,
        "endpoints": {"endpoint": endpoints},
        "connection-type": connection,
        "reconnect-strategy": strategy,
    }


def render_json(config: AgentConfig) -> dict[str, Any]:
    """The RFC 7951 JSON of what the agent honours (ignored subtrees are not
    kept): ``parse_config(json.dumps(render_json(c)))`` equals ``c`` but for
    ``ignored`` and ``source``."""
    out: dict[str, Any] = {
        f"{NCS_MODULE}:netconf-server": {
            "call-home": {"netconf-client": [_client_json(c, config.revision) for c in config.clients]}
        }
    }
    local = config.local
    out[f"{AGENT_MODULE}:agent"] = {
        "local-ssh": {"address": local.ssh.host, "port": local.ssh.port},
        "local-tls": {"address": local.tls.host, "port": local.tls.port},
    }
    return out


def _to_xml(parent: etree._Element, name: str, value: Any, ns: str) -> None:
    if isinstance(value, list):
        for item in value:
            _to_xml(parent, name, item, ns)
    elif isinstance(value, dict):
        child = etree.SubElement(parent, f"{{{ns}}}{name}")
        for key, item in value.items():
            _to_xml(child, key, item, ns)
    else:
        etree.SubElement(parent, f"{{{ns}}}{name}").text = str(value)


def render_xml(config: AgentConfig) -> list[etree._Element]:
    """The XML form of :func:`render_json`: a ``<netconf-server>`` and an ``<agent>`` element."""
    document = render_json(config)
    out = []
    for key, ns in ((f"{NCS_MODULE}:netconf-server", NCS_NS), (f"{AGENT_MODULE}:agent", AGENT_NS)):
        holder = etree.Element("holder", nsmap={None: ns})
        _to_xml(holder, key.split(":", 1)[1], document[key], ns)
        out.append(holder[0])
    return out


def describe(config: AgentConfig) -> Iterable[str]:
    """Human-readable lines: what the agent will do with ``config``."""
    yield f"{config.source}: ietf-netconf-server@{config.revision}, {len(config.clients)} netconf-client(s)"
    for c in config.clients:
        if isinstance(c.connection, Periodic):
            anchor = _anchor_text(c.connection.anchor_time) if c.connection.anchor_time else "when started"
            how = f"periodic every {c.connection.period} min from {anchor}, idle-timeout {c.connection.idle_timeout} s"
        else:
            how = "persistent"
        r = c.reconnect
        yield (
            f"  client {c.name}: {how}; start-with {r.start_with.value}, max-wait {r.max_wait} s, "
            f"max-attempts {r.max_attempts}"
        )
        for e in c.endpoints:
            local = config.local.for_transport(e.transport)
            ka = (
                f"keepalives {e.keepalives.idle_time}/{e.keepalives.max_probes}/{e.keepalives.probe_interval}"
                if e.keepalives
                else "no keepalives"
            )
            bind = f" from {e.local_address or '*'}:{e.local_port}" if e.local_address or e.local_port else ""
            yield f"    endpoint {e.name}: {e.transport.value} to {e.remote}{bind} -> local {local}; {ka}"
