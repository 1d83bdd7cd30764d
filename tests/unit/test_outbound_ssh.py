"""Juniper outbound-ssh: the preamble parser (fed one byte at a time and in
random splits), the identification rules, the inventory and gateway settings,
and the socket reader on a real socketpair."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import pickle
import re
import socket
import time
from pathlib import Path

import asyncssh
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from callhome_transport import errors
from callhome_transport.gateway.config import GatewayConfig
from callhome_transport.identity.inventory import (
    Device,
    HostKeyPin,
    Inventory,
    OutboundSSH,
    SSHCredentials,
    TLSIdentity,
    Transport,
)
from callhome_transport.transports.outbound_ssh import (
    JUNOS_OUTBOUND_SSH_PORT,
    MAX_PREAMBLE_LINE,
    MAX_PREAMBLE_LINES,
    OutboundSSHConfig,
    Preamble,
    PreambleFormatError,
    PreambleParser,
    identify_caller,
    preamble_hmac,
    read_preamble,
)

from ..pki import _issue, _name

PEER = ("192.0.2.7", 53122)
BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
ED25519_B64 = b"AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture(scope="module")
def keys() -> list[asyncssh.SSHKey]:
    return [asyncssh.generate_private_key("ssh-ed25519") for _ in range(2)]


def key_text(key: asyncssh.SSHKey) -> str:
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def junos_hmac(secret: str, host_key: str) -> str:
    # written out here, independently of preamble_hmac: what Juniper's YAPT checks
    return hmac.new(secret.encode(), host_key.encode(), hashlib.sha1).hexdigest()


def wire(device_id: str = "mx-1", host_key: str | None = None, secret: str = "s3cret", eol: bytes = b"\r\n") -> bytes:
    lines = [b"MSG-ID: DEVICE-CONN-INFO", b"MSG-VER: V1", b"DEVICE-ID: " + device_id.encode()]
    if host_key is not None:
        lines += [b"HOST-KEY: " + host_key.encode(), b"HMAC: " + junos_hmac(secret, host_key).encode()]
    return b"".join(line + eol for line in lines)


def feed_bytewise(data: bytes) -> tuple[PreambleParser, int]:
    parser = PreambleParser()
    used = 0
    for i in range(len(data)):
        used += parser.feed(data[i : i + 1])
        if parser.done:
            break
    return parser, used


# -- the parser ------------------------------------------------------------------


def test_without_secret_the_ssh_version_string_ends_the_preamble_one_byte_at_a_time() -> None:
    preamble = wire()
    parser, used = feed_bytewise(preamble + BANNER)
    assert parser.done and used == len(preamble)  # the banner stays for SSH
    assert parser.preamble == Preamble(device_id="mx-1")


def test_with_secret_the_hmac_line_ends_it(keys: list[asyncssh.SSHKey]) -> None:
    text = key_text(keys[0])
    preamble = wire(host_key=text)
    parser, used = feed_bytewise(preamble + BANNER)
    assert parser.done and used == len(preamble)
    got = parser.preamble
    assert got.device_id == "mx-1" and got.host_key == text
    assert got.host_key_fingerprint == keys[0].get_fingerprint("sha256")
    assert got.hmac == junos_hmac("s3cret", text)
    # in one piece: the same, and nothing after the HMAC line is taken
    whole = PreambleParser()
    assert whole.feed(preamble + b"\r\n" + BANNER) == len(preamble)
    assert whole.preamble == got


def test_tolerated_variants(keys: list[asyncssh.SSHKey]) -> None:
    text = key_text(keys[0])
    mac = junos_hmac("x", text).upper().encode()
    data = (
        b"\r\nMSG-ID: DEVICE-CONN-INFO\nMSG-VER:V1\r\n"  # a blank line first, LF only, no space
        b"DEVICE-ID: : mx-1\r\n"  # the form one Junos guide prints
        + b"HOST-KEY: "
        + text.encode()
        + b"\x00\r\n"  # a C string's NUL
        + b"HMAC:"
        + mac
        + b"\r\n"
    )
    parser, used = feed_bytewise(data)
    assert parser.done and used == len(data)
    assert parser.preamble.device_id == "mx-1"
    assert parser.preamble.host_key == text
    assert parser.preamble.hmac == mac.decode().lower()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (BANNER, "an SSH version string where the MSG-ID line was expected"),
        (b"GET / HTTP/1.1\r\n", "where MSG-ID was expected"),
        (b"MSG-ID: DEVICE-CONN-INFO\r\nMSG-VER: V2\r\n", "MSG-VER 'V2'"),
        (b"MSG-ID: HELLO\r\n", "only DEVICE-CONN-INFO"),
        (b"MSG-ID: DEVICE-CONN-INFO\r\nMSG-VER: V1\r\nDEVICE-ID: a b\r\n", "visible ASCII"),
        (b"MSG-ID: DEVICE-CONN-INFO\r\nMSG-VER: V1\r\nDEVICE-ID: \r\n", "visible ASCII"),
        (wire() + b"HMAC: " + b"0" * 40 + b"\r\n", "where HOST-KEY or the SSH version string was expected"),
        (wire() + b"HOST-KEY: ssh-ed25519 !!!\r\n", "not base64"),
        (
            wire() + b"HOST-KEY: ssh-rsa " + ED25519_B64 + b"\r\n",
            "type",
        ),
        (
            wire() + b"HOST-KEY: ssh-ed25519 " + ED25519_B64 + b"\r\n" + BANNER,
            "HMAC (after HOST-KEY) was expected",
        ),
        (
            wire() + b"HOST-KEY: ssh-ed25519 " + ED25519_B64 + b"\r\nHMAC: xyz\r\n",
            "40 hexadecimal",
        ),
        (b"MSG-ID: DEVICE-CONN-INFO\xff\r\n", "non-ASCII"),
        (b"MSG-ID: DEVICE\x1b[2J\r\n", "control characters"),
        (b"\r\n" * (MAX_PREAMBLE_LINES + 1), f"more than {MAX_PREAMBLE_LINES} lines"),
    ],
)
def test_malformed_preambles_say_what_was_wrong(data: bytes, expected: str) -> None:
    parser = PreambleParser()
    with pytest.raises(PreambleFormatError, match=re.escape(expected)):
        for i in range(len(data)):
            parser.feed(data[i : i + 1])


def test_an_overlong_line_is_refused_before_its_end_arrives() -> None:
    parser = PreambleParser()
    parser.feed(b"MSG-ID: " + b"A" * (MAX_PREAMBLE_LINE - 9))  # still in bounds
    with pytest.raises(PreambleFormatError, match=f"longer than {MAX_PREAMBLE_LINE} bytes"):
        parser.feed(b"AA")


def test_the_connection_closing_early_is_an_error_naming_what_was_missing() -> None:
    parser = PreambleParser()
    parser.feed(b"MSG-ID: DEVICE-CONN-INFO\r\nMSG-VER: V1\r\nDEVICE-ID: mx")
    with pytest.raises(PreambleFormatError, match="waiting for the DEVICE-ID line"):
        parser.eof()
    with pytest.raises(RuntimeError):
        parser.preamble  # noqa: B018


@given(
    device_id=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=255),
    with_key=st.booleans(),
    colon_form=st.booleans(),
    cuts=st.lists(st.integers(0, 2000), max_size=12),
)
def test_any_split_gives_the_same_preamble_and_leaves_the_banner(
    device_id: str, with_key: bool, colon_form: bool, cuts: list[int]
) -> None:
    host_key = "ssh-ed25519 " + ED25519_B64.decode()
    if device_id.startswith(":"):  # read as the "DEVICE-ID: : <id>" form
        device_id = "x" + device_id
    preamble = wire(device_id=(": " if colon_form else "") + device_id, host_key=host_key if with_key else None)
    data = preamble + BANNER
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    parser = PreambleParser()
    used = 0
    for start, end in itertools.pairwise(points):
        if not parser.done:
            used += parser.feed(data[start:end])
    assert parser.done and used == len(preamble)
    assert parser.preamble.device_id == device_id
    assert (parser.preamble.host_key is not None) == with_key


@given(st.binary(max_size=3000))
def test_garbage_only_ever_raises_the_parser_error_within_bounds(data: bytes) -> None:
    parser = PreambleParser()
    try:
        used = parser.feed(data)
    except PreambleFormatError:
        return
    assert used <= len(data)
    assert used <= MAX_PREAMBLE_LINE * MAX_PREAMBLE_LINES


# -- HMAC and identification --------------------------------------------------------


def test_hmac_is_hmac_sha1_keyed_by_the_secret() -> None:
    # RFC 2202 test case 2 for HMAC-SHA1
    assert preamble_hmac("Jefe", "what do ya want for nothing?") == "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"


def make_inventory(keys: list[asyncssh.SSHKey], secret: str | None = "s3cret") -> Inventory:
    creds = SSHCredentials(username="netconf", password="pw")
    return Inventory(
        [
            Device(
                name="MX-A",
                host_keys=(HostKeyPin.parse(key_text(keys[0])),),
                credentials=creds,
                outbound_ssh=OutboundSSH(device_id="mx-a", secret=secret),
            ),
            Device(
                name="MX-B",
                host_keys=(HostKeyPin.parse(key_text(keys[1])),),
                credentials=creds,
                outbound_ssh=OutboundSSH(device_id="mx-b"),
            ),
            Device(name="PLAIN", host_keys=(HostKeyPin.parse("SHA256:" + "A" * 43),), credentials=creds),
        ]
    )


def parsed(data: bytes) -> Preamble:
    parser = PreambleParser()
    parser.feed(data + BANNER)
    return parser.preamble


def test_identification_by_device_id_checks_hmac_and_host_key_line(keys: list[asyncssh.SSHKey]) -> None:
    inv = make_inventory(keys)
    a_key, b_key = key_text(keys[0]), key_text(keys[1])
    assert identify_caller(parsed(wire("mx-a", a_key)), inv, PEER).name == "MX-A"
    assert identify_caller(parsed(wire("mx-b")), inv, PEER).name == "MX-B"  # no secret: the pin decides later
    assert identify_caller(parsed(wire("mx-b", b_key, secret="any")), inv, PEER).name == "MX-B"

    cases: list[tuple[bytes, type[errors.OutboundSSHRefusedError], str]] = [
        (wire("mx-z"), errors.UnknownDeviceIDError, "unknown-device-id"),
        (wire("PLAIN"), errors.UnknownDeviceIDError, "unknown-device-id"),  # a name, not a device_id
        (wire("mx-a"), errors.PreambleHMACError, "hmac-mismatch"),  # secret configured, none sent
        (wire("mx-a", a_key, secret="wrong"), errors.PreambleHMACError, "hmac-mismatch"),
        (wire("mx-a", b_key), errors.OutboundSSHKeyMismatchError, "host-key-mismatch"),  # B's key, A's secret
    ]
    for data, kind, reason in cases:
        with pytest.raises(kind) as info:
            identify_caller(parsed(data), inv, PEER)
        err = info.value
        assert err.reason == reason and err.peer_address == PEER
        assert err.device_id == parsed(data).device_id
        assert "s3cret" not in str(err) and "wrong" not in str(err)
        copy = pickle.loads(pickle.dumps(err))
        assert type(copy) is kind and vars(copy) == vars(err)
    with pytest.raises(errors.OutboundSSHKeyMismatchError) as mismatch:
        identify_caller(parsed(wire("mx-a", b_key)), inv, PEER)
    assert mismatch.value.fingerprint == keys[1].get_fingerprint("sha256")
    assert mismatch.value.device == "MX-A"


# -- the socket reader ------------------------------------------------------------------


def test_reader_takes_exactly_the_preamble_off_the_socket() -> None:
    async def run() -> tuple[Preamble, bytes]:
        ours, device = socket.socketpair()
        ours.setblocking(False)
        with ours, device:
            data = wire("mx-1") + BANNER
            device.sendall(data[:10])
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, device.sendall, data[10:])
            preamble = await read_preamble(ours, PEER, timeout=5)
            ours.setblocking(True)
            return preamble, ours.recv(1000)

    preamble, rest = asyncio.run(run())
    assert preamble.device_id == "mx-1"
    assert rest == BANNER


def test_reader_refuses_garbage_at_once_and_silence_after_the_timeout() -> None:
    async def run(data: bytes, timeout: float) -> tuple[errors.MalformedPreambleError, float]:
        ours, device = socket.socketpair()
        ours.setblocking(False)
        with ours, device:
            device.sendall(data)
            started = time.monotonic()
            with pytest.raises(errors.MalformedPreambleError) as info:
                await read_preamble(ours, PEER, timeout=timeout)
            return info.value, time.monotonic() - started

    garbage, took = asyncio.run(run(b"x" * (MAX_PREAMBLE_LINE + 1), 30))
    assert garbage.reason == "malformed-preamble" and "longer than" in garbage.detail and took < 1
    silent, took = asyncio.run(run(b"MSG-ID: DEVICE-CONN-INFO\r\n", 0.2))
    assert silent.reason == "preamble-timeout" and 0.15 < took < 2


def test_reader_reports_a_close_mid_preamble() -> None:
    async def run() -> errors.MalformedPreambleError:
        ours, device = socket.socketpair()
        ours.setblocking(False)
        with ours:
            device.sendall(b"MSG-ID: DEVICE-CONN-INFO\r\nMSG-VER: V1\r\nDEVICE-ID: mx-9\r\n")
            device.close()
            with pytest.raises(errors.MalformedPreambleError) as info:
                await read_preamble(ours, PEER, timeout=5)
            return info.value

    err = asyncio.run(run())
    assert err.device_id == "mx-9" and "closed while waiting for the HOST-KEY line" in err.detail


# -- configuration ------------------------------------------------------------------


def test_inventory_outbound_ssh_section(tmp_path: Path, keys: list[asyncssh.SSHKey]) -> None:
    (tmp_path / "mx2.secret").write_text("from-a-file\n")
    data = {
        "devices": {
            "MX-1": {
                "ssh": {"host_keys": [key_text(keys[0])], "username": "u", "password": "p"},
                "outbound_ssh": {"secret_env": "MX1_SECRET"},
            },
            "MX-2": {
                "ssh": {"host_keys": [key_text(keys[1])], "username": "u", "password": "p"},
                "outbound_ssh": {"device_id": 1234, "secret_file": "mx2.secret"},
            },
        }
    }
    inv = Inventory.from_dict(data, base_dir=tmp_path, environ={"MX1_SECRET": "from-env"})
    mx1, mx2 = inv["MX-1"].outbound_ssh, inv["MX-2"].outbound_ssh
    assert mx1 == OutboundSSH(device_id="MX-1", secret="from-env")  # device_id defaults to the name
    assert mx2 == OutboundSSH(device_id="1234", secret="from-a-file")
    assert "from-env" not in repr(inv["MX-1"]) and "from-a-file" not in repr(mx2)
    assert inv.device_for_outbound_ssh_id("1234") is inv["MX-2"]
    assert inv.device_for_outbound_ssh_id("MX-9") is None


@pytest.mark.parametrize(
    ("outbound", "transport", "key_path", "expected"),
    [
        ({"device_id": "MX-2"}, "ssh", "devices.MX-1.outbound_ssh.device_id", "not already used by device MX-2"),
        ({"secret": "a", "secret_env": "B"}, "ssh", "devices.MX-1.outbound_ssh.secret_env", "only one of"),
        ({"secret_env": "NOPE"}, "ssh", "devices.MX-1.outbound_ssh.secret_env", "NOPE to be set"),
        ({"device_id": "has space"}, "ssh", "devices.MX-1.outbound_ssh", "visible ASCII"),
        ({"hmac": "x"}, "ssh", "devices.MX-1.outbound_ssh.hmac", "one of the keys"),
    ],
)
def test_inventory_outbound_ssh_errors_name_the_key(
    keys: list[asyncssh.SSHKey], outbound: dict[str, object], transport: str, key_path: str, expected: str
) -> None:
    ssh = {"host_keys": [key_text(keys[0])], "username": "u", "password": "p"}
    data = {
        "devices": {
            "MX-2": {"ssh": {**ssh, "host_keys": [key_text(keys[1])]}, "outbound_ssh": {}},
            "MX-1": {"transport": transport, "ssh": ssh, "outbound_ssh": outbound},
        }
    }
    with pytest.raises(errors.InventoryError, match=expected) as info:
        Inventory.from_dict(data, environ={})
    assert info.value.key_path == key_path


def test_outbound_ssh_only_on_ssh_devices() -> None:
    tls = TLSIdentity(pinned_certificates=(_issue(_name("mx-1"), None, ca=False).cert,))
    with pytest.raises(ValueError, match="only on a transport: ssh device"):
        Device(name="X", transport=Transport.TLS, tls=tls, outbound_ssh=OutboundSSH(device_id="x"))


def test_gateway_config_port_and_preamble_timeout(tmp_path: Path) -> None:
    (tmp_path / "devices.yml").write_text("devices: {}\n")
    path = tmp_path / "gateway.yml"
    path.write_text(yaml.safe_dump({"inventory": "devices.yml"}))
    config = GatewayConfig.from_file(path)
    assert config.outbound_ssh_port == JUNOS_OUTBOUND_SSH_PORT == 7804
    assert config.outbound_ssh == OutboundSSHConfig()
    path.write_text(
        yaml.safe_dump(
            {"inventory": "devices.yml", "listen": {"outbound_ssh_port": 2200}, "outbound_ssh": {"preamble_timeout": 3}}
        )
    )
    config = GatewayConfig.from_file(path)
    assert config.outbound_ssh_port == 2200 and config.outbound_ssh.preamble_timeout == 3
    path.write_text(yaml.safe_dump({"inventory": "devices.yml", "outbound_ssh": {"preamble_timeout": 0}}))
    with pytest.raises(errors.InventoryError, match=r"outbound_ssh\.preamble_timeout"):
        GatewayConfig.from_file(path)
