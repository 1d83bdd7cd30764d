# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The call-home subtree of ietf-netconf-server and ietf-restconf-server,
built from the roles' variables and written as XML (a NETCONF <config>) or
RFC 7951 JSON (RESTCONF).

One tree builder, two serialisers; what differs between module revisions is
said in one place each (``_ssh_server``, ``_tls_server``, ``_client``):

- 2023-12-28 and 2025-04-24 (draft-ietf-netconf-netconf-client-server -30 and
  -39) take the same call-home payload for everything set here, except the SSH
  user's password (a leaf in 2023-12-28, ``password/hashed-password`` in
  2025-04-24);
- 2019-07-02 (-14, netopeer2 1.x/2.0-2.1) names keystore references
  ``keystore-reference``, lists SSH keys as ``authorized-key`` with
  ``supported-authentication-methods``, takes the TLS client CA certificates
  from the truststore (the payload then carries a truststore bag), puts
  cert-to-name under ``client-authentication/cert-maps`` (fingerprint
  mandatory), and has no ``reconnect-strategy/max-wait``;
- ietf-restconf-server 2024-08-14 (draft-ietf-netconf-restconf-client-server
  -38) uses the 2024-10-10 TLS groupings, like netconf-server 2025-04-24.

Errors name the role variable and the key path (``AnsibleFilterError``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from xml.sax.saxutils import escape, quoteattr

from ansible.errors import AnsibleFilterError

NETCONF_SERVER_REVISIONS = ("2025-04-24", "2023-12-28", "2019-07-02")
RESTCONF_SERVER_REVISIONS = ("2024-08-14",)

NS_NETCONF_SERVER = "urn:ietf:params:xml:ns:yang:ietf-netconf-server"
NS_RESTCONF_SERVER = "urn:ietf:params:xml:ns:yang:ietf-restconf-server"
NS_TRUSTSTORE = "urn:ietf:params:xml:ns:yang:ietf-truststore"
NS_KEYSTORE = "urn:ietf:params:xml:ns:yang:ietf-keystore"
NS_NETCONF_BASE = "urn:ietf:params:xml:ns:netconf:base:1.0"
NS_CRYPTO_TYPES = "urn:ietf:params:xml:ns:yang:ietf-crypto-types"
NS_CERT_TO_NAME = "urn:ietf:params:xml:ns:yang:ietf-x509-cert-to-name"

# RFC 8071 s6: the IANA ports, and the model's own defaults for remote-port
DEFAULT_PORTS = {"ssh": 4334, "tls": 4335, "https": 4336}
MAP_TYPES = ("specified", "san-rfc822-name", "san-dns-name", "san-ip-address", "san-any", "common-name")
START_WITH = ("first-listed", "last-connected", "random-selection")
# the truststore bag a 2019-07-02 payload carries for the manager's CA certificates
TRUSTSTORE_BAG_2019 = "callhome-manager-ca"
TRUSTSTORE_BAG_2019_EE = "callhome-manager-certs"
_NAME = re.compile(r"^\S.{0,254}$")


class Identity(object):
    """An identityref value: module name, namespace and identity name."""

    def __init__(self, module, namespace, name, prefix):
        self.module, self.namespace, self.name, self.prefix = module, namespace, name, prefix


CRYPTO = "ietf-crypto-types"
SSH_PUBLIC_KEY_FORMAT = Identity(CRYPTO, NS_CRYPTO_TYPES, "ssh-public-key-format", "ct")
SPKI_FORMAT = Identity(CRYPTO, NS_CRYPTO_TYPES, "subject-public-key-info-format", "ct")
EMPTY = object()  # a leaf of type empty


class Node(object):
    """A data node: a container/list entry (``children``) or a leaf (``value``)."""

    def __init__(self, name, value=None, children=None, remove=False):
        self.name = name
        self.value = value
        self.children = [c for c in (children or ()) if c is not None]
        self.remove = remove  # nc:operation="remove" on this node (XML only)

    def is_leaf(self):
        return self.value is not None


def node(name, *children, **kwargs):
    return Node(name, children=children, remove=kwargs.get("remove", False))


def leaf(name, value):
    return None if value is None else Node(name, value=value)


# -- serialisers ---------------------------------------------------------------


def to_xml(root, namespace, indent="  "):
    """``root`` (a top-level node of the module whose namespace is given) as XML text."""
    lines = []

    def text_of(n, attrs):
        value = n.value
        if value is EMPTY:
            return ""
        if isinstance(value, Identity):
            attrs.append("xmlns:%s=%s" % (value.prefix, quoteattr(value.namespace)))
            return "%s:%s" % (value.prefix, value.name)
        if isinstance(value, bool):
            return "true" if value else "false"
        return escape(str(value))

    def walk(n, depth, top):
        attrs = ["xmlns=%s" % quoteattr(namespace)] if top else []
        if n.remove:
            attrs += ["xmlns:nc=%s" % quoteattr(NS_NETCONF_BASE), 'nc:operation="remove"']
        pad = indent * depth
        if n.is_leaf():
            text = text_of(n, attrs)
            head = " ".join([n.name] + attrs)
            lines.append("%s<%s/>" % (pad, head) if text == "" else "%s<%s>%s</%s>" % (pad, head, text, n.name))
            return
        head = " ".join([n.name] + attrs)
        if not n.children:
            lines.append("%s<%s/>" % (pad, head))
            return
        lines.append("%s<%s>" % (pad, head))
        for child in n.children:
            walk(child, depth + 1, False)
        lines.append("%s</%s>" % (pad, n.name))

    walk(root, 0, True)
    return "\n".join(lines) + "\n"


def to_json_value(root, module):
    """``root`` as RFC 7951 JSON data (a dict with the module-qualified top name)."""

    def value_of(n):
        if n.value is EMPTY:
            return [None]
        if isinstance(n.value, Identity):
            return "%s:%s" % (n.value.module, n.value.name)
        return n.value

    def members(n):
        out = {}
        for child in n.children:
            if child.is_leaf():
                out[child.name] = value_of(child)
            elif getattr(child, "list_entry", False):
                out.setdefault(child.name, []).append(members(child))
            else:
                out[child.name] = members(child)
        return out

    return {"%s:%s" % (module, root.name): members(root)}


def entry(name, *children):
    """A list entry (serialised as one element of a JSON array)."""
    n = node(name, *children)
    n.list_entry = True
    return n


# -- input checks ----------------------------------------------------------------


class Checker(object):
    """Reads the role variables, failing with the variable name and key path."""

    def __init__(self, variable):
        self.variable = variable

    def fail(self, where, expected):
        raise AnsibleFilterError("%s%s: expected %s" % (self.variable, where, expected))

    def mapping(self, value, where, allowed):
        if not isinstance(value, dict):
            self.fail(where, "a mapping")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            self.fail("%s.%s" % (where, unknown[0]), "one of the keys %s (unknown key)" % ", ".join(allowed))
        return value

    def listing(self, value, where, minimum=0):
        if value is None:
            value = []
        if not isinstance(value, list) or len(value) < minimum:
            self.fail(where, "a list" + (" of at least %d" % minimum if minimum else ""))
        return value

    def name(self, value, where):
        if not isinstance(value, str) or not _NAME.match(value):
            self.fail(where, "a name (non-empty text)")
        return value

    def integer(self, value, where, low, high, default=None):
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                value = int(str(value), 10)
            except ValueError:
                self.fail(where, "an integer %d..%d" % (low, high))
        if not low <= value <= high:
            self.fail(where, "an integer %d..%d" % (low, high))
        return value

    def choice(self, value, where, choices, default=None):
        if value is None:
            return default
        if value not in choices:
            self.fail(where, "one of %s" % ", ".join(choices))
        return value

    def text(self, value, where, required=False):
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            self.fail(where, "text")
        return value

    def unique_names(self, items, where, key="name"):
        seen = set()
        for i, item in enumerate(items):
            if item[key] in seen:
                self.fail("%s[%d].%s" % (where, i, key), "a %s not used twice (%s)" % (key, item[key]))
            seen.add(item[key])


def ssh_public_key(checker, line, where):
    """(algorithm, base64 blob) of an OpenSSH public key line."""
    parts = line.split() if isinstance(line, str) else []
    if len(parts) < 2:
        checker.fail(where, "an OpenSSH public key line (TYPE BASE64 [comment])")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        checker.fail(where, "an OpenSSH public key line with valid base64")
    name_length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if blob[4 : 4 + name_length] != parts[0].encode():
        checker.fail(where, "an OpenSSH public key line whose key type (%s) matches its key data" % parts[0])
    return parts[0], parts[1]


def certificate_der(checker, pem, where):
    """The DER bytes of a PEM certificate."""
    match = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", pem or "", re.S)
    if not isinstance(pem, str) or match is None:
        checker.fail(where, "a PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        return base64.b64decode("".join(match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        checker.fail(where, "a PEM certificate with valid base64")


def tls_fingerprint(der):
    """ietf-x509-cert-to-name tls-fingerprint of a certificate: the TLS
    HashAlgorithm octet of SHA-256 (4, RFC 5246 s7.4.1.4.1), then the digest."""
    digest = hashlib.sha256(der).hexdigest()
    return ":".join(["04"] + [digest[i : i + 2] for i in range(0, len(digest), 2)])


def b64(data):
    return base64.b64encode(data).decode("ascii")


def dumps_json(value):
    return json.dumps(value, indent=2, sort_keys=False) + "\n"


# -- the call-home subtree ---------------------------------------------------------

_CLIENT_KEYS = (
    "name",
    "transport",
    "endpoints",
    "connection_type",
    "period",
    "anchor_time",
    "idle_timeout",
    "reconnect_strategy",
    "keepalives",
)
_ENDPOINT_KEYS = ("name", "address", "port", "tcp_keepalives")


class CallHome(object):
    """Builds one module's call-home subtree from the roles' variables.

    ``kind`` is ``netconf`` (ietf-netconf-server, transports ssh and tls) or
    ``restconf`` (ietf-restconf-server, transport https).
    """

    def __init__(self, kind, revision, variable_prefix):
        self.kind = kind
        self.revision = revision
        self.prefix = variable_prefix
        revisions = NETCONF_SERVER_REVISIONS if kind == "netconf" else RESTCONF_SERVER_REVISIONS
        if revision not in revisions:
            raise AnsibleFilterError(
                "%s_yang_revision: expected one of %s, got %r" % (variable_prefix, ", ".join(revisions), revision)
            )
        self.old = revision == "2019-07-02"
        self.truststore = []  # (bag name, [(name, base64 DER)]) for 2019-07-02 TLS client auth

    def check(self, name):
        return Checker("%s_%s" % (self.prefix, name))

    # -- pieces shared by every transport ------------------------------------------

    def tcp_client(self, endpoint, where, transport):
        checker = self.check("clients")
        keepalives = None
        if endpoint.get("tcp_keepalives") is not None:
            ka = checker.mapping(
                endpoint["tcp_keepalives"], where + ".tcp_keepalives", ("idle_time", "max_probes", "probe_interval")
            )
            values = [
                leaf("idle-time", checker.integer(ka.get("idle_time"), where + ".tcp_keepalives.idle_time", 1, 65535)),
                leaf(
                    "max-probes", checker.integer(ka.get("max_probes"), where + ".tcp_keepalives.max_probes", 1, 65535)
                ),
                leaf(
                    "probe-interval",
                    checker.integer(ka.get("probe_interval"), where + ".tcp_keepalives.probe_interval", 1, 65535),
                ),
            ]
            if self.old and any(v is None for v in values):
                checker.fail(where + ".tcp_keepalives", "idle_time, max_probes and probe_interval (all three in 2019-07-02)")
            keepalives = node("keepalives", *values)
        return node(
            "tcp-client-parameters",
            leaf("remote-address", checker.text(endpoint.get("address"), where + ".address", required=True)),
            leaf("remote-port", checker.integer(endpoint.get("port"), where + ".port", 1, 65535)),
            keepalives,
        )

    def connection_type(self, client, where):
        checker = self.check("clients")
        kind = checker.choice(client.get("connection_type"), where + ".connection_type", ("persistent", "periodic"), "persistent")
        if kind == "persistent":
            for key in ("period", "anchor_time", "idle_timeout"):
                if client.get(key) is not None:
                    checker.fail("%s.%s" % (where, key), "no %s with connection_type persistent" % key)
            return node("connection-type", node("persistent"))
        return node(
            "connection-type",
            node(
                "periodic",
                leaf("period", checker.integer(client.get("period"), where + ".period", 1, 65535)),
                leaf("anchor-time", checker.text(client.get("anchor_time"), where + ".anchor_time")),
                leaf("idle-timeout", checker.integer(client.get("idle_timeout"), where + ".idle_timeout", 0, 65535)),
            ),
        )

    def reconnect_strategy(self, client, where):
        checker = self.check("clients")
        if client.get("reconnect_strategy") is None:
            return None
        rs = checker.mapping(client["reconnect_strategy"], where + ".reconnect_strategy", ("start_with", "max_wait", "max_attempts"))
        if self.old and rs.get("max_wait") is not None:
            checker.fail(where + ".reconnect_strategy.max_wait", "no max_wait: revision 2019-07-02 has none")
        return node(
            "reconnect-strategy",
            leaf("start-with", checker.choice(rs.get("start_with"), where + ".reconnect_strategy.start_with", START_WITH)),
            leaf("max-wait", checker.integer(rs.get("max_wait"), where + ".reconnect_strategy.max_wait", 1, 65535)),
            leaf("max-attempts", checker.integer(rs.get("max_attempts"), where + ".reconnect_strategy.max_attempts", 1, 255)),
        )

    def keepalives(self, client, where):
        """The SSH or TLS layer's keepalives (max-wait, max-attempts), or None."""
        checker = self.check("clients")
        if client.get("keepalives") is None:
            return None
        ka = checker.mapping(client["keepalives"], where + ".keepalives", ("max_wait", "max_attempts"))
        return [
            leaf("max-wait", checker.integer(ka.get("max_wait"), where + ".keepalives.max_wait", 1, 65535)),
            leaf("max-attempts", checker.integer(ka.get("max_attempts"), where + ".keepalives.max_attempts", 1, 255)),
        ]

    # -- the SSH server side (netconf only) -------------------------------------------

    def ssh_server(self, ssh, client, where):
        checker = self.check("ssh_host_key")
        host_key = ssh.get("host_key")
        if not host_key:
            checker.fail("", "the name of the device's host key in its keystore (a client calls home over ssh)")
        if self.old:
            identity = entry("host-key", leaf("name", host_key), node("public-key", leaf("keystore-reference", host_key)))
        else:
            identity = entry(
                "host-key", leaf("name", host_key), node("public-key", leaf("central-keystore-reference", host_key))
            )
        users = self.ssh_users(ssh.get("users") or [])
        keepalives = self.keepalives(client, where)
        return node(
            "ssh-server-parameters",
            node("server-identity", identity),
            users,
            node("keepalives", *keepalives) if keepalives else None,
        )

    def ssh_users(self, users):
        checker = self.check("ssh_users")
        checker.listing(users, "")
        entries = []
        for i, user in enumerate(users):
            where = "[%d]" % i
            checker.mapping(user, where, ("name", "public_keys", "password", "password_hash"))
            name = checker.name(user.get("name"), where + ".name")
            if user.get("password") is not None and user.get("password_hash") is not None:
                checker.fail(where, "password or password_hash, not both")
            password = user.get("password_hash")
            if password is not None and not re.match(r"^\$[0156]\$", str(password)):
                checker.fail(where + ".password_hash", "a crypt hash ($1$, $5$ or $6$...)")
            if user.get("password") is not None:
                password = "$0$" + checker.text(user["password"], where + ".password")  # hashed by the device
            keys = []
            for k, line in enumerate(checker.listing(user.get("public_keys"), where + ".public_keys")):
                algorithm, data = ssh_public_key(checker, line, "%s.public_keys[%d]" % (where, k))
                keys.append((("%s-%d" % (name, k + 1)), algorithm, data))
            entries.append((name, password, keys))
        checker.unique_names([{"name": e[0]} for e in entries], "")
        if not entries:
            return node("client-authentication")
        if self.old:
            methods = [leaf("publickey", EMPTY) if any(e[2] for e in entries) else None]
            methods.append(leaf("passsword", EMPTY) if any(e[1] for e in entries) else None)  # sic, 2019-07-02
            return node(
                "client-authentication",
                node("supported-authentication-methods", *methods),
                node(
                    "users",
                    *[
                        entry(
                            "user",
                            leaf("name", name),
                            leaf("password", password),
                            *[entry("authorized-key", leaf("name", kn), leaf("algorithm", alg), leaf("key-data", data)) for kn, alg, data in keys]
                        )
                        for name, password, keys in entries
                    ]
                ),
            )
        user_nodes = []
        for name, password, keys in entries:
            public_keys = None
            if keys:
                public_keys = node(
                    "public-keys",
                    node(
                        "inline-definition",
                        *[
                            entry(
                                "public-key",
                                leaf("name", kn),
                                leaf("public-key-format", SSH_PUBLIC_KEY_FORMAT),
                                leaf("public-key", data),
                            )
                            for kn, _alg, data in keys
                        ]
                    ),
                )
            if password is None:
                password_node = None
            elif self.revision == "2023-12-28":
                password_node = leaf("password", password)
            else:
                password_node = node("password", leaf("hashed-password", password))
            user_nodes.append(entry("user", leaf("name", name), public_keys, password_node))
        return node("client-authentication", node("users", *user_nodes))

    # -- the TLS server side -----------------------------------------------------------

    def tls_server(self, tls, client, where):
        checker = self.check("tls")
        key, cert = tls.get("asymmetric_key"), tls.get("certificate")
        if not key or not cert:
            raise AnsibleFilterError(
                "%s_tls_asymmetric_key and %s_tls_certificate: expected the names of the device's TLS key and "
                "certificate in its keystore (a client calls home over TLS)" % (self.prefix, self.prefix)
            )
        reference = node(
            "keystore-reference" if self.old else "central-keystore-reference",
            leaf("asymmetric-key", key),
            leaf("certificate", cert),
        )
        identity = node("server-identity", reference if self.old else node("certificate", reference))
        cas = self.pems(tls.get("client_ca_certificates"), "tls_client_ca_certificates")
        ees = self.pems(tls.get("client_certificates"), "tls_client_certificates")
        maps = self.cert_to_name(tls.get("cert_to_name"))
        if not cas and not ees:
            raise AnsibleFilterError(
                "%s_tls_client_ca_certificates or %s_tls_client_certificates: expected the manager's CA or its own "
                "certificate (PEM): the device authenticates the manager by it" % (self.prefix, self.prefix)
            )
        keepalives = self.keepalives(client, where)
        if self.old:
            auth = node(
                "client-authentication",
                leaf("required", EMPTY),
                leaf("ca-certs", self.truststore_bag(TRUSTSTORE_BAG_2019, cas)) if cas else None,
                leaf("client-certs", self.truststore_bag(TRUSTSTORE_BAG_2019_EE, ees)) if ees else None,
                node("cert-maps", *maps),
            )
            return node(
                "tls-server-parameters", identity, auth, node("keepalives", *keepalives) if keepalives else None
            ), None
        auth = node(
            "client-authentication",
            self.inline_certificates("ca-certs", cas, "manager-ca"),
            self.inline_certificates("ee-certs", ees, "manager"),
        )
        server = node(
            "tls-server-parameters",
            identity,
            auth,
            node("keepalives", node("test-peer-aliveness", *keepalives)) if keepalives else None,
        )
        mappings = node(self.kind + "-server-parameters", node("client-identity-mappings", *maps))
        return server, mappings

    def pems(self, value, variable):
        checker = Checker("%s_%s" % (self.prefix, variable))
        return [b64(certificate_der(checker, pem, "[%d]" % i)) for i, pem in enumerate(checker.listing(value, ""))]

    def inline_certificates(self, name, certificates, stem):
        if not certificates:
            return None
        return node(
            name,
            node(
                "inline-definition",
                *[
                    entry("certificate", leaf("name", "%s-%d" % (stem, i + 1)), leaf("cert-data", data))
                    for i, data in enumerate(certificates)
                ]
            ),
        )

    def truststore_bag(self, bag, certificates):
        self.truststore.append((bag, certificates))
        return bag

    def cert_to_name(self, value):
        checker = Checker("%s_tls_cert_to_name" % self.prefix)
        maps = []
        for i, item in enumerate(checker.listing(value, "", minimum=1)):
            where = "[%d]" % i
            checker.mapping(item, where, ("id", "fingerprint", "certificate", "map_type", "name"))
            fingerprint = item.get("fingerprint")
            if item.get("certificate") is not None:
                if fingerprint is not None:
                    checker.fail(where, "fingerprint or certificate, not both")
                fingerprint = tls_fingerprint(certificate_der(checker, item["certificate"], where + ".certificate"))
            elif fingerprint is not None and not re.match(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){0,254}$", fingerprint):
                checker.fail(where + ".fingerprint", "a tls-fingerprint (04:AB:CD...: hash algorithm octet, then the hash)")
            if fingerprint is None and self.old:
                checker.fail(where, "a fingerprint or certificate (mandatory in 2019-07-02)")
            map_type = checker.choice(item.get("map_type"), where + ".map_type", MAP_TYPES, "specified")
            name = item.get("name")
            if map_type == "specified" and not name:
                checker.fail(where + ".name", "the NETCONF username (map_type specified)")
            if map_type != "specified" and name:
                checker.fail(where + ".name", "no name with map_type %s (the name comes from the certificate)" % map_type)
            maps.append(
                entry(
                    "cert-to-name",
                    leaf("id", checker.integer(item.get("id"), where + ".id", 1, 4294967295, default=i + 1)),
                    leaf("fingerprint", fingerprint),
                    leaf("map-type", Identity("ietf-x509-cert-to-name", NS_CERT_TO_NAME, map_type, "x509c2n")),
                    leaf("name", name if map_type == "specified" else None),  # when map-type = specified
                )
            )
        return maps

    # -- the whole subtree --------------------------------------------------------------

    def client(self, client, index, ssh, tls):
        checker = self.check("clients")
        where = "[%d]" % index
        checker.mapping(client, where, _CLIENT_KEYS)
        name = checker.name(client.get("name"), where + ".name")
        transports = ("ssh", "tls") if self.kind == "netconf" else ("https",)
        transport = checker.choice(client.get("transport"), where + ".transport", transports, transports[0])
        endpoints = []
        for e, endpoint in enumerate(checker.listing(client.get("endpoints"), where + ".endpoints", minimum=1)):
            ewhere = "%s.endpoints[%d]" % (where, e)
            checker.mapping(endpoint, ewhere, _ENDPOINT_KEYS)
            ename = checker.name(endpoint.get("name"), ewhere + ".name")
            tcp = self.tcp_client(endpoint, ewhere, transport)
            if transport == "ssh":
                body = node("ssh", tcp, self.ssh_server(ssh, client, where))
            else:
                server, mappings = self.tls_server(tls, client, where)
                body = node(transport, tcp, server, self.http_server(where) if transport == "https" else None, mappings)
            endpoints.append((ename, entry("endpoint", leaf("name", ename), body)))
        checker.unique_names([{"name": pair[0]} for pair in endpoints], where + ".endpoints")
        return entry(
            self.kind + "-client",
            leaf("name", name),
            node("endpoints", *[pair[1] for pair in endpoints]),
            self.connection_type(client, where),
            self.reconnect_strategy(client, where),
        )

    def http_server(self, where):
        return None  # RESTCONF's HTTP layer keeps its defaults; users authenticate by certificate

    def tree(self, clients, ssh=None, tls=None, remove=False, present=None):
        """The ``<netconf-server>`` (``<restconf-server>``) node with its call-home subtree.

        ``remove``: only the clients' names, each with ``nc:operation="remove"``;
        given the names ``present`` on the device, only those, and when they
        are all of them the ``call-home`` container instead (a presence
        container whose client list has min-elements 1), or None when none is."""
        checker = self.check("clients")
        clients = checker.listing(clients, "")
        if not remove:
            entries = [self.client(c, i, ssh or {}, tls or {}) for i, c in enumerate(clients)]
            checker.unique_names([{"name": e.children[0].value} for e in entries], "")
            return node(self.kind + "-server", node("call-home", *entries))
        names = []
        for i, client in enumerate(clients):
            name = client.get("name") if isinstance(client, dict) else client
            names.append(checker.name(name, "[%d].name" % i))
        if present is not None:
            names = [n for n in names if n in present]
            if not names:
                return None
            if set(present) <= set(names):
                return node(self.kind + "-server", node("call-home", remove=True))
        entries = [entry(self.kind + "-client", leaf("name", n)) for n in names]
        for e in entries:
            e.remove = True
        return node(self.kind + "-server", node("call-home", *entries))

    def truststore_tree(self):
        """2019-07-02 only: the truststore bags the TLS client authentication names."""
        if not self.truststore:
            return None
        return node(
            "truststore",
            *[
                entry(
                    "certificates",
                    leaf("name", bag),
                    *[entry("certificate", leaf("name", "%s-%d" % (bag, i + 1)), leaf("cert", data)) for i, data in enumerate(certs)]
                )
                for bag, certs in self.truststore
            ]
        )

    @property
    def namespace(self):
        return NS_NETCONF_SERVER if self.kind == "netconf" else NS_RESTCONF_SERVER

    @property
    def module(self):
        return "ietf-%s-server" % self.kind


def render(kind, clients, revision, prefix, ssh=None, tls=None, output="xml", operation="merge", present=None):
    """The call-home configuration as XML (the children of a NETCONF <config>)
    or RFC 7951 JSON; "" when a removal has nothing to remove."""
    if output not in ("xml", "json"):
        raise AnsibleFilterError("output: expected xml or json, got %r" % (output,))
    if operation not in ("merge", "remove"):
        raise AnsibleFilterError("operation: expected merge or remove, got %r" % (operation,))
    builder = CallHome(kind, revision, prefix)
    root = builder.tree(clients, ssh, tls, remove=operation == "remove", present=present)
    if root is None:
        return ""
    truststore = builder.truststore_tree()
    if output == "xml":
        text = to_xml(root, builder.namespace)
        if truststore is not None:
            text += to_xml(truststore, NS_TRUSTSTORE)
        return text
    if operation == "remove":
        raise AnsibleFilterError("operation remove: XML only (nc:operation); over RESTCONF, DELETE the client's URL")
    data = to_json_value(root, builder.module)
    if truststore is not None:
        data.update(to_json_value(truststore, "ietf-truststore"))
    return dumps_json(data)


def render_keystore_stub(kind, clients, revision, prefix, ssh=None, tls=None):
    """A keystore with placeholder keys under the names the payload references,
    so that yanglint can resolve them (the device's own keystore holds the real
    keys; the controller never sees them)."""
    builder = CallHome(kind, revision, prefix)
    builder.tree(clients, ssh, tls)  # the same checks as render()
    transports = set(c.get("transport") or ("ssh" if kind == "netconf" else "https") for c in clients)
    keys = []
    if "ssh" in transports:
        keys.append(_stub_key((ssh or {}).get("host_key"), None, builder.old, ssh_key=True))
    if transports & {"tls", "https"}:
        keys.append(_stub_key((tls or {}).get("asymmetric_key"), (tls or {}).get("certificate"), builder.old))
    return to_xml(node("keystore", node("asymmetric-keys", *keys)), NS_KEYSTORE)


_PLACEHOLDER = b64(b"\x00" * 32)


def _stub_key(name, certificate, old, ssh_key=False):
    certificates = None
    if certificate:
        cert_leaf = "cert" if old else "cert-data"
        certificates = node("certificates", entry("certificate", leaf("name", certificate), leaf(cert_leaf, _PLACEHOLDER)))
    if old:
        return entry(
            "asymmetric-key",
            leaf("name", name),
            leaf("algorithm", "secp256r1"),
            leaf("public-key", _PLACEHOLDER),
            leaf("hidden-private-key", EMPTY),
            certificates,
        )
    return entry(
        "asymmetric-key",
        leaf("name", name),
        leaf("public-key-format", SSH_PUBLIC_KEY_FORMAT if ssh_key else SPKI_FORMAT),
        leaf("public-key", _PLACEHOLDER),
        leaf("hidden-private-key", EMPTY),
        certificates,
    )


# -- validation with yanglint ----------------------------------------------------------


def yanglint_validate(payload, keystore, yang_dir, module, revision, yanglint="yanglint", output="xml"):
    """Validate ``payload`` (XML or JSON text) as configuration data of
    ``module@revision`` from ``yang_dir``, merged with ``keystore`` (XML text)
    so that key references resolve.  Returns yanglint's complaint, or "" when
    the payload is valid.  Raises AnsibleFilterError when it cannot run."""
    import glob
    import os
    import shutil
    import subprocess
    import tempfile

    main = os.path.join(yang_dir, "%s@%s.yang" % (module, revision))
    if not os.path.isfile(main):
        raise AnsibleFilterError("yanglint: %s is not there (the module set of revision %s)" % (main, revision))
    program = shutil.which(yanglint)
    if program is None:
        raise AnsibleFilterError("yanglint: %s not found on the controller (Debian package libyang2-tools)" % yanglint)
    modules = [main]
    for name in ("ietf-keystore", "ietf-truststore"):
        modules += sorted(glob.glob(os.path.join(yang_dir, name + "@*.yang")))[-1:]
    scratch = tempfile.mkdtemp(prefix="callhome-yanglint.")
    try:
        data_file = os.path.join(scratch, "payload." + output)
        keystore_file = os.path.join(scratch, "keystore.xml")
        with open(data_file, "w") as handle:
            handle.write(payload)
        with open(keystore_file, "w") as handle:
            handle.write(keystore)
        # config data, every feature enabled, the files merged so that references resolve
        argv = [program, "-t", "config", "-ii", "-m", "-p", yang_dir] + modules + [keystore_file, data_file]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AnsibleFilterError("yanglint: could not run %s: %s" % (program, exc))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if result.returncode == 0:
        return ""
    return (result.stderr or result.stdout or "yanglint exited with %d" % result.returncode).replace(scratch, "").strip()
