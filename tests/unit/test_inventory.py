"""Inventory parsing, identity indexing and error messages."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from callhome_transport import Device, HoldPolicy, HostKeyPin, Inventory, InventoryError, SSHCredentials
from callhome_transport.identity.inventory import fingerprint_of_blob


@pytest.fixture(scope="module")
def keys() -> list[asyncssh.SSHKey]:
    return [asyncssh.generate_private_key("ssh-ed25519") for _ in range(3)]


def line(key: asyncssh.SSHKey, comment: str = "") -> str:
    return (
        key.export_public_key("openssh").decode().split()[0]
        + " "
        + key.export_public_key("openssh").decode().split()[1]
        + (" " + comment if comment else "")
    ).strip()


def test_fingerprint_matches_openssh_format(keys: list[asyncssh.SSHKey]) -> None:
    # asyncssh implements ssh-keygen's SHA256 format independently of us
    assert fingerprint_of_blob(keys[0].public_data) == keys[0].get_fingerprint("sha256")


def test_pin_from_public_key_line_and_from_fingerprint_agree(keys: list[asyncssh.SSHKey]) -> None:
    from_line = HostKeyPin.parse(line(keys[0], "router one"))
    from_fp = HostKeyPin.parse(keys[0].get_fingerprint("sha256"))
    assert from_line.fingerprint == from_fp.fingerprint
    assert from_line.key_type == "ssh-ed25519"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ssh-ed25519", "OpenSSH public key line"),
        ("ssh-ed25519 !!!notbase64", "valid base64"),
        ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", "embedded type"),
        ("SHA256:tooshort", "OpenSSH public key line"),
    ],
)
def test_bad_pins_say_what_was_expected(text: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        HostKeyPin.parse(text)


def test_load_yaml_file_and_index_by_identity(tmp_path: Path, keys: list[asyncssh.SSHKey]) -> None:
    keyfile = tmp_path / "id_manager"
    keyfile.write_bytes(keys[2].export_private_key())
    (tmp_path / "pw").write_text("s3cret\n")
    inv_file = tmp_path / "inventory.yml"
    inv_file.write_text(
        f"""
version: 1
defaults:
  ssh:
    username: admin
devices:
  SN-0001:
    ssh:
      host_keys:
        - {line(keys[0], "sn-0001")}
      password_env: SN1_PW
  SN-0002:
    transport: ssh
    ssh:
      host_keys: {keys[1].get_fingerprint("sha256")}
      username: netops
      private_key: id_manager
      password_file: pw
"""
    )
    inv = Inventory.from_dict(
        __import__("yaml").safe_load(inv_file.read_text()),
        source=str(inv_file),
        base_dir=tmp_path,
        environ={"SN1_PW": "from-env"},
    )
    assert len(inv) == 2
    sn1 = inv["SN-0001"]
    assert sn1.credentials == SSHCredentials(username="admin", password="from-env")
    sn2 = inv.device_for_fingerprint(keys[1].get_fingerprint("sha256"))
    assert sn2 is not None and sn2.name == "SN-0002"
    assert sn2.credentials is not None
    assert sn2.credentials.username == "netops"
    assert sn2.credentials.private_key == keyfile
    assert sn2.credentials.password == "s3cret"
    assert inv.device_for_fingerprint(keys[2].get_fingerprint("sha256")) is None


def test_from_file_reads_yaml(tmp_path: Path, keys: list[asyncssh.SSHKey]) -> None:
    path = tmp_path / "inv.yml"
    path.write_text(
        f"devices:\n  R1:\n    ssh:\n      host_keys: ['{line(keys[0])}']\n      username: u\n      password: p\n"
    )
    assert [d.name for d in Inventory.from_file(path)] == ["R1"]


def test_secrets_stay_out_of_repr() -> None:
    creds = SSHCredentials(username="admin", password="hunter2-secret")
    assert "hunter2-secret" not in repr(creds)
    assert "hunter2-secret" not in repr(
        Device(name="R1", host_keys=(HostKeyPin(fingerprint="SHA256:" + "A" * 43),), credentials=creds)
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.yml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "key_path", "expected"),
    [
        ("devices: [a, b]\n", "devices", "a mapping of device name"),
        ("version: 2\n", "version", "1"),
        ("devices:\n  R1:\n    colour: red\n", "devices.R1.colour", "one of the keys"),
        ("devices:\n  R1:\n    transport: telnet\n", "devices.R1.transport", "one of ssh, tls, restconf"),
        (
            "devices:\n  R1:\n    ssh:\n      host_keys: [nonsense]\n      username: u\n      password: p\n",
            "devices.R1.ssh.host_keys[0]",
            "OpenSSH public key line",
        ),
        (
            "devices:\n  R1:\n    ssh:\n      host_keys: ['SHA256:" + "A" * 43 + "']\n      password: p\n",
            "devices.R1.ssh.username",
            "a non-empty string",
        ),
        (
            "devices:\n  R1:\n    ssh:\n      host_keys: ['SHA256:" + "A" * 43 + "']\n      username: u\n",
            "devices.R1.ssh",
            "one of password, password_env, password_file or private_key",
        ),
        (
            "devices:\n  R1:\n    ssh:\n      host_keys: ['SHA256:"
            + "A" * 43
            + "']\n      username: u\n      password_env: NOPE_NOT_SET\n",
            "devices.R1.ssh.password_env",
            "environment variable NOPE_NOT_SET",
        ),
        (
            "devices:\n  R1:\n    ssh:\n      username: u\n      password: p\n",
            "devices.R1",
            "at least one pinned host key",
        ),
        (
            "devices:\n  'bad/name':\n    ssh:\n      host_keys: ['SHA256:"
            + "A" * 43
            + "']\n      username: u\n      password: p\n",
            "devices.bad/name",
            "a device name of letters",
        ),
        (
            "devices:\n  R1:\n    ssh:\n      host_keys: ['SHA256:"
            + "A" * 43
            + "']\n      username: u\n      private_key: missing\n",
            "devices.R1.ssh.private_key",
            "an existing private key file",
        ),
        (
            "devices:\n  R1:\n    hold_session: sometimes\n    ssh:\n      host_keys: ['SHA256:"
            + "A" * 43
            + "']\n      username: u\n      password: p\n",
            "devices.R1.hold_session",
            "one of auto, always, never",
        ),
    ],
)
def test_bad_inventory_names_file_key_path_and_expectation(
    tmp_path: Path, text: str, key_path: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InventoryError) as info:
        Inventory.from_file(path)
    err = info.value
    assert err.source == str(path)
    assert err.key_path == key_path
    assert expected in err.expected
    assert str(path) in str(err) and key_path in str(err)


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "devices:\n  R1: [unclosed\n")
    with pytest.raises(InventoryError, match=r"valid YAML \(line \d+, column \d+\)"):
        Inventory.from_file(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="a readable file"):
        Inventory.from_file(tmp_path / "nope.yml")


def test_same_key_for_two_devices_is_rejected(tmp_path: Path) -> None:
    fp = "SHA256:" + "B" * 43
    path = write(
        tmp_path,
        f"devices:\n  R1:\n    ssh: {{host_keys: ['{fp}'], username: u, password: p}}\n"
        f"  R2:\n    ssh: {{host_keys: ['{fp}'], username: u, password: p}}\n",
    )
    with pytest.raises(InventoryError) as info:
        Inventory.from_file(path)
    assert info.value.key_path == "devices.R2.ssh.host_keys[0]"
    assert "already pinned for device R1" in info.value.expected


def test_device_password_overrides_default_secret_kind(tmp_path: Path) -> None:
    fp = "SHA256:" + "C" * 43
    inv = Inventory.from_dict(
        {
            "defaults": {"ssh": {"username": "admin", "password_env": "X"}},
            "devices": {"R1": {"ssh": {"host_keys": [fp], "password": "direct"}}},
        },
        environ={},
    )
    assert inv["R1"].credentials == SSHCredentials(username="admin", password="direct")


SSH_ENTRY = "    ssh: {host_keys: ['SHA256:" + "D" * 43 + "'], username: u, password: p}\n"


def test_a_device_listed_twice_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "devices:\n  R1:\n" + SSH_ENTRY + "  R2:\n    transport: ssh\n  R1:\n" + SSH_ENTRY)
    with pytest.raises(InventoryError) as info:
        Inventory.from_file(path)
    assert info.value.source == str(path)
    assert info.value.key_path == "devices.R1"
    assert "line 2 and again at line 6" in info.value.expected


def test_a_key_repeated_inside_a_device_is_an_error(tmp_path: Path) -> None:
    text = "devices:\n  R1:\n    ssh:\n      username: u\n      password: p\n      username: v\n"
    with pytest.raises(InventoryError) as info:
        Inventory.from_file(write(tmp_path, text))
    assert info.value.key_path == "devices.R1.ssh.username"


def test_yaml_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    fp1, fp2 = "SHA256:" + "E" * 43, "SHA256:" + "G" * 43
    text = (
        f"devices:\n  R1:\n    ssh: &creds {{host_keys: ['{fp1}'], username: u, password: p}}\n"
        f"  R2:\n    ssh:\n      <<: *creds\n      host_keys: ['{fp2}']\n"
    )
    inventory = Inventory.from_file(write(tmp_path, text))
    assert inventory["R2"].fingerprints == {fp2}
    assert inventory["R2"].credentials == SSHCredentials(username="u", password="p")


@pytest.mark.parametrize("name", ["R1\n", "R1\r\n", "R1 ", ".hidden", "a" * 129])
def test_device_names_are_matched_whole(name: str) -> None:
    fp = "SHA256:" + "F" * 43
    data = {"devices": {name: {"ssh": {"host_keys": [fp], "username": "u", "password": "p"}}}}
    with pytest.raises(InventoryError, match="a device name of letters"):
        Inventory.from_dict(data)


def test_a_file_that_is_not_utf8_is_an_inventory_error(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yml"
    path.write_bytes(b"devices:\n  R\xe9:\n")
    with pytest.raises(InventoryError, match="a UTF-8 text file"):
        Inventory.from_file(path)


def test_an_empty_file_is_an_error_but_devices_empty_is_explicit(tmp_path: Path) -> None:
    for text in ("", "# nothing yet\n"):
        with pytest.raises(InventoryError, match="the file is empty"):
            Inventory.from_file(write(tmp_path, text))
    assert Inventory.from_file(write(tmp_path, "devices: {}\n")).explicitly_empty
    assert not Inventory.from_file(write(tmp_path, "devices:\n")).explicitly_empty
    assert not Inventory.from_file(write(tmp_path, "version: 1\n")).explicitly_empty


def test_hold_session_per_device_and_from_defaults(tmp_path: Path) -> None:
    pin = "['SHA256:" + "A" * 43 + "']"
    other = "['SHA256:" + "B" * 43 + "']"
    text = (
        "defaults:\n  hold_session: never\n  ssh: {username: u, password: p}\n"
        f"devices:\n  R1:\n    ssh: {{host_keys: {pin}}}\n"
        f"  R2:\n    hold_session: always\n    ssh: {{host_keys: {other}}}\n"
    )
    inventory = Inventory.from_file(write(tmp_path, text))
    assert inventory["R1"].hold_session is HoldPolicy.NEVER
    assert inventory["R2"].hold_session is HoldPolicy.ALWAYS
    assert (
        Device(
            name="R3", host_keys=(HostKeyPin.parse(pin[2:-2]),), credentials=SSHCredentials(username="u", password="p")
        ).hold_session
        is HoldPolicy.AUTO
    )


def test_quirks_per_device_and_by_default() -> None:
    from callhome_transport.identity.inventory import Quirk

    def ssh(letter: str) -> dict[str, object]:
        return {"host_keys": ["SHA256:" + letter * 43], "username": "u", "password": "p"}

    inventory = Inventory.from_dict(
        {
            "defaults": {"quirks": ["hello-settle"]},
            "devices": {"A": {"ssh": ssh("A")}, "B": {"ssh": ssh("B"), "quirks": []}},
        }
    )
    assert inventory["A"].quirks == frozenset({Quirk.HELLO_SETTLE})
    assert inventory["B"].quirks == frozenset()
    with pytest.raises(InventoryError) as info:
        Inventory.from_dict({"devices": {"C": {"ssh": ssh("C"), "quirks": ["slow"]}}})
    assert info.value.key_path == "devices.C.quirks" and "hello-settle" in info.value.expected
