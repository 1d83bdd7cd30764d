"""Juniper outbound-ssh against real peers: a device-side script sends Junos's
initiation sequence, then splices the connection to OpenSSH's sshd in front
of yuma123 netconfd (``junos_peer.py``).  The library server and the gateway
accept it on their outbound-ssh port; RFC 8071 devices on 4334 are unaffected."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from callhome_transport import CallHomeServer, Inventory
from callhome_transport.errors import PreambleHMACError
from callhome_transport.transports.outbound_ssh import OutboundSSHConfig
from callhome_transport.transports.proxy import ProxyProtocolConfig, build_v2

from .cluster_peers import HAProxy, haproxy_available
from .junos_peer import JunosOutboundSSH
from .netconfd_peer import NACM_GROUP_FILTER, NetconfdDevice, ReverseRelay, free_port, wait_rejected
from .test_gateway import GatewayProcess

pytestmark = pytest.mark.integration

SECRET = "junos-ossh-secret-1"  # a throwaway test secret


def junos_entry(device: NetconfdDevice, device_id: str, secret: str | None = None) -> dict[str, Any]:
    entry = device.inventory_entry()
    entry["outbound_ssh"] = {"device_id": device_id, **({"secret": secret} if secret else {})}
    return entry


def server_for(devices: dict[str, Any], **kwargs: Any) -> CallHomeServer:
    return CallHomeServer(
        Inventory.from_dict({"devices": devices}),
        listen_address="127.0.0.1",
        listen_port=0,
        outbound_ssh_listen_port=0,
        **kwargs,
    )


def junos(
    port: int,
    sshd: NetconfdDevice,
    device_id: str = "mx-a",
    *,
    secret: str | None = SECRET,
    host_key_of: NetconfdDevice | None = None,
    host_key_kind: str | None = None,
    colon_form: bool = False,
) -> JunosOutboundSSH:
    """A Junos device calling ``port`` with ``sshd`` behind it; with a secret
    it sends a HOST-KEY line: sshd's own (ed25519) key, or ``host_key_of``'s,
    or its key of ``host_key_kind`` (rsa, ecdsa)."""
    host_key = None
    if secret is not None:
        keys_of = host_key_of or sshd
        host_key = keys_of.host_keys[host_key_kind].public_line if host_key_kind else keys_of.host_key_public_line
    return JunosOutboundSSH(
        manager_port=port,
        sshd_port=sshd.ssh_port,
        device_id=device_id,
        host_key=host_key,
        secret=secret,
        colon_form=colon_form,
    )


def has_group_filter_answer(m: Any) -> bool:
    return "<data" in m.get_config(source="running", filter=NACM_GROUP_FILTER).xml


@pytest.fixture
def device_b(make_netconfd: Callable[..., NetconfdDevice]) -> NetconfdDevice:
    return make_netconfd()


def test_preamble_without_secret_then_netconf(netconfd: NetconfdDevice) -> None:
    with server_for({"MX-A": junos_entry(netconfd, "mx-a")}) as server:
        with junos(server.outbound_ssh_listen_port, netconfd, secret=None), server.netconf("MX-A", timeout=15) as m:
            assert has_group_filter_answer(m)
            event = server.wait_for("MX-A", 1)
        assert event.fingerprint == netconfd.host_key_fingerprint
        assert server.rejected() == []
        assert server.aio.metrics.value("callhome_handshakes_total", transport="ssh", result="ok") == 1


def test_preamble_with_secret_and_colon_form_then_netconf(netconfd: NetconfdDevice) -> None:
    with server_for({"MX-A": junos_entry(netconfd, "mx-a", SECRET)}) as server:
        with (
            junos(server.outbound_ssh_listen_port, netconfd, colon_form=True),
            server.netconf("MX-A", timeout=15) as m,
        ):
            assert has_group_filter_answer(m)
        assert server.rejected() == []


def test_a_device_pinned_by_its_rsa_key_presents_it(netconfd: NetconfdDevice, device_b: NetconfdDevice) -> None:
    """The sshd has RSA, ECDSA and ed25519 keys; the inventory also pins an
    ed25519 key (device B), so the offer made to unknown callers starts with
    ssh-ed25519.  Once the DEVICE-ID names A, only A's RSA algorithms are
    offered and its sshd presents the RSA key."""
    rsa = netconfd.host_keys["rsa"]
    entry = junos_entry(netconfd, "mx-a", SECRET)
    entry["ssh"]["host_keys"] = [rsa.public_line]
    with server_for({"MX-A": entry, "R-B": device_b.inventory_entry()}) as server:
        with junos(server.outbound_ssh_listen_port, netconfd, host_key_kind="rsa"):
            event = server.wait_for("MX-A", 15)
        assert event.fingerprint == rsa.fingerprint
        assert server.rejected() == []


def test_wrong_hmac_is_refused_before_ssh(netconfd: NetconfdDevice, caplog: pytest.LogCaptureFixture) -> None:
    before = netconfd.auth_attempts()
    with server_for({"MX-A": junos_entry(netconfd, "mx-a", SECRET)}) as server:
        with junos(server.outbound_ssh_listen_port, netconfd, secret="not-the-secret") as device:
            # a caller waiting for MX-A gets the refusal, not "did not call home" (issue 15 item 11)
            with pytest.raises(PreambleHMACError) as refused:
                server.netconf("MX-A", timeout=5)
            assert refused.value.device == "MX-A" and refused.value.refused_at > 0  # type: ignore[attr-defined]
            (attempt,) = wait_rejected(server)
            assert device.wait(10) == 0  # the manager hung up; the device script ended
        assert attempt.reason == "hmac-mismatch"
        assert attempt.device_id == "mx-a" and attempt.device == "MX-A"  # the device the DEVICE-ID named
        assert attempt.fingerprint == netconfd.host_key_fingerprint  # from the HOST-KEY line
        assert server.connected() == []
        metrics = server.aio.metrics
        assert metrics.value("callhome_handshakes_total", transport="outbound-ssh", result="hmac-mismatch") == 1
    assert netconfd.auth_attempts() == before
    assert SECRET not in caplog.text and "not-the-secret" not in caplog.text


def test_device_id_of_a_with_the_host_key_of_b_is_refused(netconfd: NetconfdDevice, device_b: NetconfdDevice) -> None:
    # 1. no secret for A, so no HOST-KEY line: B's sshd behind A's DEVICE-ID presents B's key
    #    in the SSH handshake, which is not pinned for A
    without_secret = {"MX-A": junos_entry(netconfd, "mx-a"), "MX-B": junos_entry(device_b, "mx-b")}
    with server_for(without_secret) as server:
        with junos(server.outbound_ssh_listen_port, device_b, secret=None):
            (first,) = wait_rejected(server)
        assert server.connected() == []
    assert (first.reason, first.device_id, first.fingerprint) == (
        "host-key-mismatch",
        "mx-a",
        device_b.host_key_fingerprint,
    )
    assert "no authentication was attempted" in first.detail
    with_secret = {"MX-A": junos_entry(netconfd, "mx-a", SECRET), "MX-B": junos_entry(device_b, "mx-b")}
    with server_for(with_secret) as server:
        port = server.outbound_ssh_listen_port
        # 2. B's own HOST-KEY line with a right HMAC (A's secret leaked): not pinned for A
        with junos(port, device_b):
            (second,) = wait_rejected(server)
        assert (second.reason, second.fingerprint) == ("host-key-mismatch", device_b.host_key_fingerprint)
        assert "not pinned for device MX-A" in second.detail
        # 3. A's HOST-KEY line copied, HMAC right, but B's sshd answers: the key presented in
        #    the handshake is not the HOST-KEY line's
        with junos(port, device_b, host_key_of=netconfd):
            third = wait_rejected(server, 2)[-1]
        assert (third.reason, third.fingerprint) == ("host-key-mismatch", device_b.host_key_fingerprint)
        assert server.connected() == []
    assert device_b.auth_attempts() == 0  # nothing was ever sent to B's sshd beyond key exchange


def test_garbage_overlong_silent_and_rfc8071_callers_are_refused_quickly(
    netconfd: NetconfdDevice, tmp_path: Path
) -> None:
    with server_for(
        {"MX-A": junos_entry(netconfd, "mx-a")},
        outbound_ssh=OutboundSSHConfig(preamble_timeout=1.0),
    ) as server:
        port = server.outbound_ssh_listen_port

        def refused_within(payload: bytes) -> float:
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(payload)
                try:
                    while sock.recv(4096):  # until the manager closes
                        pass
                except ConnectionResetError:  # closed with our bytes unread
                    pass
            return time.monotonic() - started

        assert refused_within(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") < 0.5
        assert refused_within(b"A" * 5000) < 0.5  # no line end: refused at 4096 bytes
        assert refused_within(b"MSG-ID: DEVICE-CONN-INFO\r\nMSG-VER: V1\r\nDEVICE-ID: mx-zz\r\n" + b"S") < 0.5
        assert 0.9 < refused_within(b"MSG-ID: DEVICE-CONN-INFO\r\n") < 3  # silent: the preamble timeout
        assert 0.9 < refused_within(b"") < 3  # silent from the start (its startup slot, then the same bound)
        # an RFC 8071 device dialling the outbound-ssh port by mistake
        with ReverseRelay(listener_port=port, device_port=netconfd.ssh_port):
            attempts = wait_rejected(server, 6)
        reasons = [(a.reason, a.device_id) for a in attempts]
        assert reasons == [
            ("malformed-preamble", None),
            ("malformed-preamble", None),
            ("unknown-device-id", "mx-zz"),
            ("preamble-timeout", None),
            ("preamble-timeout", None),
            ("malformed-preamble", None),
        ]
        assert "longer than 4096 bytes" in attempts[1].detail
        assert "RFC 8071 device calling the outbound-ssh port" in attempts[5].detail
        assert server.connected() == []


def test_a_junos_device_through_haproxy_and_a_spoofed_header(netconfd: NetconfdDevice, tmp_path: Path) -> None:
    """PROXY protocol v2 on the outbound-ssh listener: a Junos device behind
    HAProxy (``send-proxy-v2`` from 127.0.0.2) is recorded with its own
    address; a header sent by a device itself, before its preamble, is refused."""
    reason = haproxy_available()
    if reason:
        pytest.skip(reason)
    proxy = ProxyProtocolConfig(trusted=("127.0.0.2/32",), listeners=frozenset({"outbound-ssh"}))
    with server_for({"MX-A": junos_entry(netconfd, "mx-a", SECRET)}, proxy_protocol=proxy) as server:
        port = server.outbound_ssh_listen_port
        balancer = HAProxy(
            tmp_path, bind=("127.0.0.1", free_port()), backends=[("127.0.0.1", port)], source="127.0.0.2"
        )
        balancer.start()
        try:
            with junos(balancer.bind[1], netconfd), server.netconf("MX-A", timeout=15) as m:
                assert has_group_filter_answer(m)
                event = server.wait_for("MX-A", 1)
            assert event.peer_address[0] == "127.0.0.1"  # the device's address, not HAProxy's 127.0.0.2
            assert server.rejected() == []  # HAProxy's health checks (LOCAL headers) are no refusals
        finally:
            balancer.stop()
        spoof = build_v2(("203.0.113.9", 4242), ("127.0.0.1", port))
        preamble = b"MSG-ID: DEVICE-CONN-INFO\r\nMSG-VER: V1\r\nDEVICE-ID: mx-a\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(spoof + preamble)
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(4096):  # until the manager closes
                    pass
        (attempt,) = wait_rejected(server)
        assert attempt.reason == "proxy-header"
        assert attempt.peer_address[0] == "127.0.0.1"  # the connection's own source, not the header's
        metrics = server.aio.metrics
        assert metrics.value("callhome_handshakes_total", transport="outbound-ssh", result="proxy-header") == 1


def test_rfc8071_device_on_the_normal_port_is_unaffected(netconfd: NetconfdDevice, device_b: NetconfdDevice) -> None:
    inventory = {"MX-A": junos_entry(netconfd, "mx-a", SECRET), "R-B": device_b.inventory_entry()}
    with server_for(inventory) as server:
        assert server.listen_port != server.outbound_ssh_listen_port
        with (
            junos(server.outbound_ssh_listen_port, netconfd),
            ReverseRelay(listener_port=server.listen_port, device_port=device_b.ssh_port),
            server.netconf("MX-A", timeout=15) as junos_m,
            server.netconf("R-B", timeout=15) as plain,
        ):
            assert has_group_filter_answer(junos_m) and has_group_filter_answer(plain)
            assert sorted(e.device for e in server.connected()) == ["MX-A", "R-B"]
        assert server.rejected() == []


@pytest.fixture
def junos_gateway(tmp_path: Path, netconfd: NetconfdDevice) -> Iterator[tuple[GatewayProcess, int]]:
    gateway = GatewayProcess(tmp_path, {"devices": {"MX-A": junos_entry(netconfd, "mx-a", SECRET)}})
    config = yaml.safe_load(gateway.config_path.read_text())
    port = free_port()
    config["listen"]["outbound_ssh_port"] = port
    gateway.config_path.write_text(yaml.safe_dump(config))
    gateway.start()
    yield gateway, port
    assert gateway.stop() == 0, gateway.log.read_text()[-3000:]


def test_junos_device_through_the_gateway_netconf_sock(
    junos_gateway: tuple[GatewayProcess, int], netconfd: NetconfdDevice
) -> None:
    gateway, port = junos_gateway
    with (
        junos(port, netconfd),
        gateway.netconf("MX-A") as m,
    ):
        assert has_group_filter_answer(m)
        status, record = gateway.get("/devices/MX-A")
        assert status == 200 and record["state"] == "connected"  # type: ignore[index]
        assert record["identity"] == netconfd.host_key_fingerprint  # type: ignore[index]
    # a wrong secret: a local client waiting for MX-A learns why it is refused
    with junos(port, netconfd, secret="not-the-secret"):
        status, body = gateway.get("/devices/MX-A/wait?timeout=5")
    assert status == 502 and body["refusal"]["type"] == "PreambleHMACError"  # type: ignore[index]
    assert body["refusal"]["device_id"] == "mx-a"  # type: ignore[index]
    with junos(port, netconfd, "mx-nope", secret=None):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            _, rejected = gateway.get("/rejected")
            if len(rejected) == 2:  # type: ignore[arg-type]
                break
            time.sleep(0.05)
    assert [(r["reason"], r["device_id"]) for r in rejected] == [  # type: ignore[index, union-attr]
        ("hmac-mismatch", "mx-a"),
        ("unknown-device-id", "mx-nope"),
    ]
    assert SECRET not in gateway.log.read_text()


def test_listener_runs_only_with_outbound_ssh_devices_and_a_reload_says_so(
    netconfd: NetconfdDevice, caplog: pytest.LogCaptureFixture
) -> None:
    with server_for({"R-A": netconfd.inventory_entry()}) as server:
        with pytest.raises(RuntimeError, match="no outbound-ssh listener"):
            server.outbound_ssh_listen_port  # noqa: B018
        junos_inventory = Inventory.from_dict({"devices": {"MX-A": junos_entry(netconfd, "mx-a")}})
        server._engine.run(_replace(server, junos_inventory))
    assert "no outbound-ssh listener runs" in caplog.text


async def _replace(server: CallHomeServer, inventory: Inventory) -> None:
    server.aio.replace_inventory(inventory)
