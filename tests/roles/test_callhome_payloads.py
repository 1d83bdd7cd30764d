"""The call-home payloads the netconf_server_callhome, restconf_server_callhome
and callhome_agent roles render, validated with yanglint (libyang) against the
module sets in ../shared/yang/: every revision, XML and JSON, SSH and TLS,
persistent and periodic; a payload is valid for its own revision only; broken
payloads are refused by yanglint and bad variables by the renderer (with the
variable and key path)."""

from __future__ import annotations

import base64
import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
YANG = REPO.parent / "shared" / "yang"
MODULE_SETS = {
    ("netconf", "2025-04-24"): "netconf-server-2025-04-24",
    ("netconf", "2023-12-28"): "netconf-server-2023-12-28",
    ("netconf", "2019-07-02"): "netconf-server-2019-07-02",
    ("restconf", "2024-08-14"): "restconf-server-2024-08-14",
}
NETCONF_REVISIONS = ("2025-04-24", "2023-12-28", "2019-07-02")

if not YANG.is_dir():
    pytest.skip(f"no YANG module sets at {YANG} (../shared/yang beside the checkout)", allow_module_level=True)
if shutil.which("yanglint") is None:
    pytest.skip("yanglint not installed (Debian package libyang2-tools)", allow_module_level=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The collection's renderer, imported as Ansible imports it."""
    tree = tmp_path_factory.mktemp("collections")
    (tree / "ansible_collections" / "callhome").mkdir(parents=True)
    (tree / "ansible_collections" / "callhome" / "network").symlink_to(REPO)
    sys.path.insert(0, str(tree))
    try:
        from ansible_collections.callhome.network.plugins.plugin_utils import callhome_model
    finally:
        sys.path.remove(str(tree))
    return callhome_model


def _ca_pem(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


MANAGER_KEY = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip() + " manager"
MANAGER_CA = _ca_pem("manager CA")
MANAGER_CERT = _ca_pem("manager")
SSH = {"host_key": "genkey", "users": [{"name": "netconf", "public_keys": [MANAGER_KEY], "password": "pw"}]}
TLS = {
    "asymmetric_key": "tls-key",
    "certificate": "tls-cert",
    "client_ca_certificates": [MANAGER_CA],
    "client_certificates": [MANAGER_CERT],
    "cert_to_name": [
        {"certificate": MANAGER_CERT, "map_type": "specified", "name": "netconf"},
        {"fingerprint": "04:" + ":".join(["ab"] * 32), "map_type": "common-name"},
    ],
}

# variable sets the roles' users write; every one must be valid for every revision
CASES: dict[str, list[dict[str, Any]]] = {
    "minimal-ssh": [{"name": "manager", "endpoints": [{"name": "primary", "address": "192.0.2.10"}]}],
    "full-ssh": [
        {
            "name": "manager",
            "endpoints": [
                {
                    "name": "primary",
                    "address": "192.0.2.10",
                    "port": 4334,
                    "tcp_keepalives": {"idle_time": 15, "max_probes": 3, "probe_interval": 5},
                },
                {"name": "backup", "address": "manager-b.example.net", "port": 14334},
            ],
            "reconnect_strategy": {"start_with": "last-connected", "max_attempts": 3},
            "keepalives": {"max_wait": 30, "max_attempts": 3},
        },
        {
            "name": "audit",
            "endpoints": [{"name": "only", "address": "2001:db8::7"}],
            "connection_type": "periodic",
            "period": 60,
            "anchor_time": "2025-01-01T00:00:00Z",
            "idle_timeout": 120,
        },
    ],
    "tls": [
        {
            "name": "manager-tls",
            "transport": "tls",
            "endpoints": [{"name": "primary", "address": "192.0.2.10"}],
            "reconnect_strategy": {"start_with": "random-selection"},
            "keepalives": {"max_wait": 30, "max_attempts": 2},
        }
    ],
}


def _yanglint(kind: str, revision: str, files: list[Path], *extra: str) -> subprocess.CompletedProcess[str]:
    directory = YANG / MODULE_SETS[(kind, revision)]
    modules = [directory / f"ietf-{kind}-server@{revision}.yang"]
    for name in ("ietf-keystore", "ietf-truststore"):
        modules += sorted(directory.glob(f"{name}@*.yang"))[-1:]
    argv = ["yanglint", *extra, "-t", "config", "-ii", "-m", "-p", str(directory), *map(str, modules), *map(str, files)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _validate(model: Any, kind: str, revision: str, payload: str, keystore: str, tmp: Path, fmt: str = "xml") -> str:
    (tmp / "keystore.xml").write_text(keystore)
    (tmp / f"payload.{fmt}").write_text(payload)
    result = _yanglint(kind, revision, [tmp / "keystore.xml", tmp / f"payload.{fmt}"])
    return "" if result.returncode == 0 else result.stderr


def _render(model: Any, clients: list[dict[str, Any]], revision: str, **kwargs: Any) -> str:
    return model.render("netconf", clients, revision, "netconf_server_callhome", SSH, TLS, **kwargs)


@pytest.mark.parametrize("fmt", ["xml", "json"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("revision", NETCONF_REVISIONS)
def test_netconf_server_payload_is_valid(model: Any, tmp_path: Path, revision: str, case: str, fmt: str) -> None:
    clients = CASES[case]
    payload = _render(model, clients, revision, output=fmt)
    stub = model.render_keystore_stub("netconf", clients, revision, "netconf_server_callhome", SSH, TLS)
    assert _validate(model, "netconf", revision, payload, stub, tmp_path, fmt) == ""
    # the plugin the roles use says the same
    assert (
        model.yanglint_validate(
            payload, stub, str(YANG / MODULE_SETS[("netconf", revision)]), "ietf-netconf-server", revision, output=fmt
        )
        == ""
    )


@pytest.mark.parametrize("revision", NETCONF_REVISIONS)
def test_json_and_xml_are_the_same_data(model: Any, tmp_path: Path, revision: str) -> None:
    """Our RFC 7951 JSON and our XML mean the same data: libyang prints both
    (in its canonical JSON form) alike."""
    clients = CASES["full-ssh"] + CASES["tls"]
    stub = model.render_keystore_stub("netconf", clients, revision, "netconf_server_callhome", SSH, TLS)
    (tmp_path / "keystore.xml").write_text(stub)
    printed = []
    for fmt in ("xml", "json"):
        (tmp_path / f"payload.{fmt}").write_text(_render(model, clients, revision, output=fmt))
        result = _yanglint("netconf", revision, [tmp_path / "keystore.xml", tmp_path / f"payload.{fmt}"], "-f", "json")
        assert result.returncode == 0, result.stderr
        printed.append(json.loads(result.stdout))
    assert printed[0] == printed[1]
    assert "ietf-netconf-server:netconf-server" in printed[0]


@pytest.mark.parametrize("written_for", NETCONF_REVISIONS)
def test_a_payload_is_valid_for_its_own_revision_only(model: Any, tmp_path: Path, written_for: str) -> None:
    clients = CASES["full-ssh"] + CASES["tls"]
    payload = _render(model, clients, written_for)
    for revision in NETCONF_REVISIONS:
        stub = model.render_keystore_stub("netconf", clients, revision, "netconf_server_callhome", SSH, TLS)
        complaint = _validate(model, "netconf", revision, payload, stub, tmp_path)
        assert (complaint == "") == (revision == written_for), (written_for, revision, complaint)


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_restconf_server_payload_is_valid(model: Any, tmp_path: Path, fmt: str) -> None:
    clients = [dict(c, transport="https") for c in CASES["full-ssh"]]
    payload = model.render("restconf", clients, "2024-08-14", "restconf_server_callhome", None, TLS, output=fmt)
    stub = model.render_keystore_stub("restconf", clients, "2024-08-14", "restconf_server_callhome", None, TLS)
    assert "https" in payload
    assert _validate(model, "restconf", "2024-08-14", payload, stub, tmp_path, fmt) == ""


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (("<connection-type>\n        <persistent/>\n      </connection-type>\n", ""), "connection-type"),  # mandatory
        (("<idle-time>15</idle-time>", "<idle-time>70000</idle-time>"), "70000"),  # uint16
        (("<remote-port>14334</remote-port>", "<remote-port>70000</remote-port>"), "70000"),  # inet:port-number
        (("<start-with>last-connected</start-with>", "<start-with>newest</start-with>"), "newest"),  # enumeration
        (("<remote-port>4334</remote-port>", "<remote-port>4334</remote-port><colour>red</colour>"), "colour"),
    ],
)
def test_yanglint_refuses_a_broken_payload(
    model: Any, tmp_path: Path, breakage: tuple[str, str], expected: str
) -> None:
    """The validation would catch a renderer bug: hand-broken payloads fail."""
    clients = CASES["full-ssh"]
    good = _render(model, clients, "2023-12-28")
    assert breakage[0] in good
    stub = model.render_keystore_stub("netconf", clients, "2023-12-28", "netconf_server_callhome", SSH, TLS)
    complaint = _validate(model, "netconf", "2023-12-28", good.replace(breakage[0], breakage[1], 1), stub, tmp_path)
    assert expected in complaint


def test_a_reference_to_a_missing_key_is_refused(model: Any, tmp_path: Path) -> None:
    clients = CASES["minimal-ssh"]
    payload = _render(model, clients, "2023-12-28")
    empty = '<keystore xmlns="urn:ietf:params:xml:ns:yang:ietf-keystore"/>\n'
    assert "genkey" in _validate(model, "netconf", "2023-12-28", payload, empty, tmp_path)


@pytest.mark.parametrize(
    ("clients", "revision", "ssh", "tls", "message"),
    [
        (
            [{"name": "m", "endpoints": [{"name": "a", "address": "x", "port": 70000}]}],
            "2023-12-28",
            SSH,
            None,
            "netconf_server_callhome_clients[0].endpoints[0].port: expected an integer 1..65535",
        ),
        (
            [{"name": "m", "endpoints": []}],
            "2023-12-28",
            SSH,
            None,
            "netconf_server_callhome_clients[0].endpoints: expected a list of at least 1",
        ),
        (
            [{"name": "m", "endpoints": [{"name": "a", "address": "x"}], "reconnect_strategy": {"max_wait": 5}}],
            "2019-07-02",
            SSH,
            None,
            "reconnect_strategy.max_wait: expected no max_wait",
        ),
        (
            [{"name": "m", "endpoints": [{"name": "a", "address": "x"}], "colour": "red"}],
            "2023-12-28",
            SSH,
            None,
            "netconf_server_callhome_clients[0].colour: expected one of the keys",
        ),
        (
            [{"name": "m", "endpoints": [{"name": "a", "address": "x"}], "period": 60}],
            "2023-12-28",
            SSH,
            None,
            "period: expected no period with connection_type persistent",
        ),
        (
            [{"name": "m", "endpoints": [{"name": "a", "address": "x"}, {"name": "a", "address": "y"}]}],
            "2023-12-28",
            SSH,
            None,
            "endpoints[1].name: expected a name not used twice (a)",
        ),
        (
            [{"name": "m", "endpoints": [{"name": "a", "address": "x"}]}],
            "2023-12-28",
            {},
            None,
            "netconf_server_callhome_ssh_host_key: expected the name of the device's host key",
        ),
        (
            [{"name": "m", "endpoints": [{"name": "a", "address": "x"}]}],
            "2023-12-28",
            {"host_key": "k", "users": [{"name": "u", "public_keys": ["ssh-ed25519 AAAAnot-a-key"]}]},
            None,
            "netconf_server_callhome_ssh_users[0].public_keys[0]: expected an OpenSSH public key line",
        ),
        (
            [{"name": "m", "transport": "tls", "endpoints": [{"name": "a", "address": "x"}]}],
            "2023-12-28",
            SSH,
            {},
            "netconf_server_callhome_tls_asymmetric_key and netconf_server_callhome_tls_certificate",
        ),
        (
            [{"name": "m", "transport": "tls", "endpoints": [{"name": "a", "address": "x"}]}],
            "2019-07-02",
            SSH,
            dict(TLS, cert_to_name=[{"map_type": "san-any"}]),
            "tls_cert_to_name[0]: expected a fingerprint or certificate (mandatory in 2019-07-02)",
        ),
        (
            [{"name": "m", "transport": "tls", "endpoints": [{"name": "a", "address": "x"}]}],
            "2023-12-28",
            SSH,
            dict(TLS, cert_to_name=[{"map_type": "common-name", "name": "netconf"}]),
            "tls_cert_to_name[0].name: expected no name with map_type common-name",
        ),
        (
            [{"name": "m", "endpoints": [{"name": "a", "address": "x"}]}],
            "2020-01-01",
            SSH,
            None,
            "netconf_server_callhome_yang_revision: expected one of 2025-04-24, 2023-12-28, 2019-07-02",
        ),
    ],
)
def test_bad_variables_name_the_variable_and_key(
    model: Any, clients: list[dict[str, Any]], revision: str, ssh: Any, tls: Any, message: str
) -> None:
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError) as caught:
        model.render("netconf", clients, revision, "netconf_server_callhome", ssh, tls)
    assert message in str(caught.value)


def test_remove_names_only_the_clients(model: Any) -> None:
    from lxml import etree

    payload = model.render(
        "netconf", [{"name": "manager"}, {"name": "audit"}], "2023-12-28", "netconf_server_callhome", operation="remove"
    )
    root = etree.fromstring(payload)
    nc = "{urn:ietf:params:xml:ns:netconf:base:1.0}operation"
    clients = root.findall(".//{urn:ietf:params:xml:ns:yang:ietf-netconf-server}netconf-client")
    assert [c.get(nc) for c in clients] == ["remove", "remove"]
    assert [[child.text for child in c] for c in clients] == [["manager"], ["audit"]]


def test_fingerprint_of_a_certificate(model: Any) -> None:
    der = base64.b64decode("".join(MANAGER_CERT.splitlines()[1:-1]))
    cert = x509.load_der_x509_certificate(der)
    expected = "04:" + ":".join(f"{b:02x}" for b in cert.fingerprint(hashes.SHA256()))
    assert model.tls_fingerprint(der) == expected
