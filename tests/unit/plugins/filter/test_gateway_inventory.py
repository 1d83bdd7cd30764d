# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""callhome.network.gateway_inventory: secrets become 0600 files the inventory
names, PEM text becomes shared files, and the gateway's own parser accepts
what the role would write."""

from __future__ import annotations

import copy
import os

import asyncssh
import pytest
import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.callhome.network.plugins.filter.gateway_inventory import FilterModule
from callhome_transport import Inventory, Transport
from callhome_transport.sim.tls_device import SimPKI

gateway_inventory = FilterModule().filters()["gateway_inventory"]


def _host_key():
    return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()


def _write(rendered, root):
    """What the role's configure stage does: the files, then the inventory."""
    for item in rendered["files"]:
        assert item["path"].startswith(str(root))
        with open(item["path"], "w") as handle:
            handle.write(item["content"])
        os.chmod(item["path"], 0o600 if item["secret"] else 0o644)
    path = root / "devices.yml"
    path.write_text(yaml.safe_dump(rendered["inventory"], sort_keys=False))
    return path


@pytest.fixture
def dirs(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "pki").mkdir()
    return {"secrets_dir": str(tmp_path / "secrets"), "pki_dir": str(tmp_path / "pki")}


def test_ssh_secrets_become_files_the_gateway_reads(tmp_path, dirs):
    key = asyncssh.generate_private_key("ssh-ed25519")
    devices = {
        "SN-0001": {"ssh": {"host_keys": [_host_key()], "password": "s3cret-one"}},
        "SN-0002": {"ssh": {"host_keys": [_host_key()], "username": "ops", "private_key": key.export_private_key().decode()}},
        "SN-0005": {"ssh": {"host_keys": [_host_key()]}},
    }
    defaults = {"ssh": {"username": "netconf", "password": "default-pw"}}
    original = copy.deepcopy(devices)

    rendered = gateway_inventory(devices, defaults=defaults, **dirs)

    assert devices == original  # the role's variables are not modified
    text = yaml.safe_dump(rendered["inventory"])
    for secret in ("s3cret-one", "default-pw", "PRIVATE KEY"):
        assert secret not in text
    paths = {f["path"]: f for f in rendered["files"]}
    assert set(paths) == {
        dirs["secrets_dir"] + "/device.SN-0001.ssh.password",
        dirs["secrets_dir"] + "/device.SN-0002.ssh.private_key",
        dirs["secrets_dir"] + "/defaults.ssh.password",
    }
    assert all(f["secret"] for f in rendered["files"])

    inventory = Inventory.from_file(_write(rendered, tmp_path))
    assert inventory["SN-0001"].credentials.password == "s3cret-one"
    assert inventory["SN-0001"].credentials.username == "netconf"
    assert inventory["SN-0002"].credentials.private_key == tmp_path / "secrets" / "device.SN-0002.ssh.private_key"
    assert inventory["SN-0005"].credentials.password == "default-pw"  # from the defaults' file


def test_pem_text_becomes_one_file_per_distinct_certificate(tmp_path, dirs):
    pki = SimPKI(tmp_path / "sim-pki")
    issuer = pki.ca_file.read_text()
    devices = {
        "SN-0003": {"transport": "tls", "tls": {"issuers": [issuer], "identifier": "SN-0003"}},
        "SN-0004": {
            "transport": "restconf",
            "tls": {"issuers": issuer, "identifier": "SN-0004"},
            "restconf": {"basic_auth": {"username": "admin", "password": "rc-pw"}},
        },
    }

    rendered = gateway_inventory(devices, **dirs)

    pems = [f for f in rendered["files"] if not f["secret"]]
    assert len(pems) == 1  # the shared issuer is written once
    issuers = {name: d["tls"]["issuers"] for name, d in rendered["inventory"]["devices"].items()}
    assert issuers["SN-0003"] == issuers["SN-0004"] == [pems[0]["path"]]
    assert rendered["inventory"]["devices"]["SN-0004"]["restconf"]["basic_auth"] == {
        "username": "admin",
        "password_file": dirs["secrets_dir"] + "/device.SN-0004.restconf.password",
    }
    inventory = Inventory.from_file(_write(rendered, tmp_path))
    assert inventory["SN-0003"].transport is Transport.TLS
    assert inventory["SN-0004"].http_auth.password == "rc-pw"


def test_outbound_ssh_secret_becomes_a_file_the_gateway_reads(tmp_path, dirs):
    """A Junos outbound-ssh stanza's secret (the preamble's HMAC key) is a credential like a password."""
    devices = {
        "MX-0001": {
            "ssh": {"host_keys": [_host_key()], "username": "netconf", "password": "pw"},
            "outbound_ssh": {"device_id": "mx-0001", "secret": "hmac-s3cret"},
        },
        "MX-0002": {"ssh": {"host_keys": [_host_key()], "username": "netconf", "password": "pw"}, "outbound_ssh": {}},
    }

    rendered = gateway_inventory(devices, **dirs)

    assert "hmac-s3cret" not in yaml.safe_dump(rendered["inventory"])
    secret_file = dirs["secrets_dir"] + "/device.MX-0001.outbound_ssh.secret"
    assert rendered["inventory"]["devices"]["MX-0001"]["outbound_ssh"] == {"device_id": "mx-0001", "secret_file": secret_file}
    assert [f["secret"] for f in rendered["files"] if f["path"] == secret_file] == [True]
    inventory = Inventory.from_file(_write(rendered, tmp_path))
    assert inventory["MX-0001"].outbound_ssh.secret == "hmac-s3cret"
    assert inventory["MX-0001"].outbound_ssh.device_id == "mx-0001"
    assert inventory["MX-0002"].outbound_ssh.secret is None


def test_other_keys_pass_through_and_the_output_is_stable(dirs):
    devices = {"B": {"ssh": {"host_keys": ["SHA256:abc"], "password_env": "PW"}}, "A": {}}
    first = gateway_inventory(devices, **dirs)
    assert list(first["inventory"]["devices"]) == ["A", "B"]
    assert first["inventory"]["devices"]["B"] == devices["B"]
    assert first["files"] == []
    assert gateway_inventory(devices, **dirs) == first


@pytest.mark.parametrize(
    ("devices", "kwargs", "message"),
    [
        (["SN-0001"], {}, "must be a mapping"),
        ({"../x": {}}, {}, "not a device name"),
        ({"A": "ssh"}, {}, "devices.A: expected a mapping"),
        ({"A": {"tls": {"issuers": ["not a certificate"]}}}, {}, "devices.A.tls.issuers[0]: expected PEM text"),
        ({"A": {"tls": {"crls": {"x": 1}}}}, {}, "devices.A.tls.crls: expected a list"),
        ({"A": {"ssh": {"password": ""}}}, {}, "expected text"),
        ({}, {"secrets_dir": "relative/secrets"}, "secrets_dir must be an absolute path"),
    ],
)
def test_bad_input_names_the_key(dirs, devices, kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        gateway_inventory(devices, **dict(dirs, **kwargs))
