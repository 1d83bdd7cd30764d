"""The gateway's configuration file: errors name the file, the key path and
what was expected; the inventory is checked against the run directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from callhome_transport import InventoryError
from callhome_transport.gateway.config import AF_UNIX_PATH_MAX, GatewayConfig

FP = "SHA256:" + "H" * 43


def write_config(tmp_path: Path, text: str, devices: str = "devices: {}\n") -> Path:
    (tmp_path / "devices.yml").write_text(devices)
    path = tmp_path / "gateway.yml"
    path.write_text(text)
    return path


def test_a_repeated_key_is_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "inventory: devices.yml\nlisten:\n  ssh_port: 1\n  ssh_port: 2\n")
    with pytest.raises(InventoryError) as info:
        GatewayConfig.from_file(path)
    assert info.value.source == str(path)
    assert info.value.key_path == "listen.ssh_port"
    assert "line 3 and again at line 4" in info.value.expected


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    path.write_bytes(b"inventory: d\xe9vices.yml\n")
    with pytest.raises(InventoryError, match="a UTF-8 text file"):
        GatewayConfig.from_file(path)


def device(name: str) -> str:
    return f"devices:\n  {name}:\n    ssh: {{host_keys: ['{FP}'], username: u, password: p}}\n"


def test_a_name_whose_socket_path_is_too_long_is_refused_with_the_length(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    name = "N" * 128
    path = write_config(tmp_path, f"inventory: devices.yml\nrun_dir: {run_dir}\n", device(name))
    config = GatewayConfig.from_file(path)
    with pytest.raises(InventoryError) as info:
        config.load_inventory()
    socket_path = run_dir / "devices" / name / "netconf.sock"
    assert info.value.key_path == f"devices.{name}"
    assert f"{socket_path} is {len(str(socket_path))} bytes" in info.value.expected
    assert f"at most {AF_UNIX_PATH_MAX}" in info.value.expected


def test_the_longest_name_that_fits_is_accepted(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    room = AF_UNIX_PATH_MAX - len(str(run_dir / "devices" / "x" / "netconf.sock")) + 1
    if room < 1:
        pytest.skip("the temporary directory is too deep for this test")
    name = "n" * min(room, 128)
    config = GatewayConfig.from_file(
        write_config(tmp_path, f"inventory: devices.yml\nrun_dir: {run_dir}\n", device(name))
    )
    assert name in config.load_inventory()


def test_a_run_dir_too_long_for_control_sock_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / ("r" * 120)
    with pytest.raises(InventoryError) as info:
        GatewayConfig.from_file(write_config(tmp_path, f"inventory: devices.yml\nrun_dir: {run_dir}\n"))
    assert info.value.key_path == "run_dir"
    assert "control.sock is" in info.value.expected


def test_events_section(tmp_path: Path) -> None:
    config = GatewayConfig.from_file(write_config(tmp_path, "inventory: devices.yml\n"))
    assert (config.events_buffer, config.events_max_followers) == (10_000, 32)
    path = write_config(tmp_path, "inventory: devices.yml\nevents: {buffer: 500, max_followers: 0}\n")
    config = GatewayConfig.from_file(path)
    assert (config.events_buffer, config.events_max_followers) == (500, 0)
    for text, key, expected in (
        ("events: {buffer: 0}", "events.buffer", "a whole number >= 1"),
        ("events: {buffer: 2.5}", "events.buffer", "a whole number >= 1"),
        ("events: {max_followers: -1}", "events.max_followers", "a non-negative number"),
        ("events: {size: 3}", "events.size", "one of the keys buffer, max_followers"),
    ):
        with pytest.raises(InventoryError) as info:
            GatewayConfig.from_file(write_config(tmp_path, f"inventory: devices.yml\n{text}\n"))
        assert (info.value.key_path, info.value.expected) == (key, expected)


def test_proxy_protocol_is_off_by_default_and_parsed_when_given(tmp_path: Path) -> None:
    assert GatewayConfig.from_file(write_config(tmp_path, "inventory: devices.yml\n")).proxy_protocol is None
    path = write_config(
        tmp_path,
        "inventory: devices.yml\nlisten:\n  proxy_protocol:\n    from: [192.0.2.10/32, '2001:db8::7']\n"
        "    listeners: [ssh]\n    timeout: 2\n",
    )
    proxy = GatewayConfig.from_file(path).proxy_protocol
    assert proxy is not None
    assert proxy.trusted == ("192.0.2.10/32", "2001:db8::7")
    assert proxy.listeners == frozenset({"ssh"})
    assert proxy.timeout == 2.0
    every = write_config(tmp_path, "inventory: devices.yml\nlisten:\n  proxy_protocol: {from: [10.0.0.1]}\n")
    config = GatewayConfig.from_file(every).proxy_protocol
    assert config is not None
    assert config.listeners == frozenset({"ssh", "tls", "restconf", "tls-strict", "outbound-ssh"})


@pytest.mark.parametrize(
    ("section", "key_path", "expected"),
    [
        ("{from: []}", "listen.proxy_protocol.from", "at least one balancer"),
        ("{from: [10.0.0.300]}", "listen.proxy_protocol.from[0]", "not '10.0.0.300'"),
        ("{from: 10.0.0.1}", "listen.proxy_protocol.from", "a list of addresses"),
        ("{from: [10.0.0.1], listeners: [ftp]}", "listen.proxy_protocol.listeners", "among ssh, tls"),
        ("{from: [10.0.0.1], timeout: 0}", "listen.proxy_protocol.timeout", "> 0"),
        ("{from: [10.0.0.1], version: 2}", "listen.proxy_protocol.version", "one of the keys"),
    ],
)
def test_proxy_protocol_errors_name_the_key(tmp_path: Path, section: str, key_path: str, expected: str) -> None:
    path = write_config(tmp_path, f"inventory: devices.yml\nlisten:\n  proxy_protocol: {section}\n")
    with pytest.raises(InventoryError) as info:
        GatewayConfig.from_file(path)
    assert info.value.key_path == key_path
    assert expected in info.value.expected


def test_ssh_algorithm_lists_in_order_and_their_errors(tmp_path: Path) -> None:
    text = (
        "inventory: devices.yml\n"
        "ssh:\n  kex_algorithms: [curve25519-sha256, mlkem768x25519-sha256]\n"
        "  encryption_algorithms: [aes128-gcm@openssh.com]\n  host_key_algorithms: [ssh-ed25519]\n"
    )
    ssh = GatewayConfig.from_file(write_config(tmp_path, text)).ssh
    assert ssh.kex_algs == ("curve25519-sha256", "mlkem768x25519-sha256")
    assert ssh.encryption_algs == ("aes128-gcm@openssh.com",)
    assert ssh.mac_algs == ()  # asyncssh's defaults
    assert ssh.server_host_key_algs == ("ssh-ed25519",)
    with pytest.raises(InventoryError) as info:
        GatewayConfig.from_file(write_config(tmp_path, "inventory: devices.yml\nssh: {mac_algorithms: hmac-sha1}\n"))
    assert info.value.key_path == "ssh.mac_algorithms" and "a list of algorithm names" in info.value.expected
    with pytest.raises(InventoryError, match="kex_algs: diffie-hellman-group0 not supported"):
        GatewayConfig.from_file(
            write_config(tmp_path, "inventory: devices.yml\nssh: {kex_algorithms: [diffie-hellman-group0]}\n")
        )


def test_ssh_keepalive_jitter_defaults_on_and_is_checked(tmp_path: Path) -> None:
    assert GatewayConfig.from_file(write_config(tmp_path, "inventory: devices.yml\n")).ssh.keepalive_jitter == 1.0
    text = "inventory: devices.yml\nssh: {keepalive_interval: 20, keepalive_jitter: 0.25}\n"
    ssh = GatewayConfig.from_file(write_config(tmp_path, text)).ssh
    assert (ssh.keepalive_interval, ssh.keepalive_jitter) == (20.0, 0.25)
    with pytest.raises(InventoryError, match="keepalive_jitter must be between 0 and 1"):
        GatewayConfig.from_file(write_config(tmp_path, "inventory: devices.yml\nssh: {keepalive_jitter: 2}\n"))


def test_hold_idle_defaults_to_a_minute_and_is_checked(tmp_path: Path) -> None:
    assert GatewayConfig.from_file(write_config(tmp_path, "inventory: devices.yml\n")).hold_idle == 60.0
    assert GatewayConfig.from_file(write_config(tmp_path, "inventory: devices.yml\nhold_idle: 0\n")).hold_idle == 0
    with pytest.raises(InventoryError) as info:
        GatewayConfig.from_file(write_config(tmp_path, "inventory: devices.yml\nhold_idle: -1\n"))
    assert info.value.key_path == "hold_idle"
    with pytest.raises(InventoryError, match="seconds >= 0"):
        GatewayConfig.from_file(write_config(tmp_path, "inventory: devices.yml\nhold_idle: .nan\n"))
