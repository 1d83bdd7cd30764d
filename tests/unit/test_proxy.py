"""PROXY protocol v1/v2 (HAProxy's proxy-protocol.txt): the sans-I/O parser
one byte at a time and with generated headers, and the listener reading a
balancer's header on real loopback sockets."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callhome_transport.addresses import PeerAddress
from callhome_transport.errors import ProxyProtocolError
from callhome_transport.transports.listener import Listener
from callhome_transport.transports.proxy import (
    PROXY_V1_MAX,
    PROXY_V2_MAX,
    PROXY_V2_SIGNATURE,
    NeedMore,
    ProxyCommand,
    ProxyHeader,
    ProxyProtocol,
    ProxyProtocolConfig,
    build_v1,
    build_v2,
    crc32c,
    parse_proxy_header,
    starts_with_proxy_header,
)

SSH_BANNER = b"SSH-2.0-OpenSSH_9.2\r\n"

# -- what HAProxy 2.6 sends (send-proxy-v2, captured on loopback) and the spec's examples --------

HAPROXY_V2_TCP4 = bytes.fromhex(
    "0d0a0d0a000d0a515549540a"  # signature
    "21"  # v2, PROXY
    "11"  # AF_INET, STREAM
    "000c"  # 12 bytes
    "c0000205"  # 192.0.2.5
    "7f000001"  # 127.0.0.1
    "d1a6"  # 53670
    "10ee"  # 4334
)


def test_haproxy_v2_tcp4() -> None:
    header = parse_proxy_header(HAPROXY_V2_TCP4 + SSH_BANNER)
    assert header == ProxyHeader(
        version=2,
        command=ProxyCommand.PROXY,
        source=("192.0.2.5", 53670),
        destination=("127.0.0.1", 4334),
        length=28,
    )


def test_v1_examples_from_the_spec() -> None:
    line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    header = parse_proxy_header(line + b"GET / HTTP/1.1\r\n")
    assert isinstance(header, ProxyHeader)
    assert (header.version, header.source, header.destination, header.length) == (
        1,
        ("192.168.0.1", 56324),
        ("192.168.0.11", 443),
        len(line),
    )
    v6 = parse_proxy_header(b"PROXY TCP6 2001:DB8::1 2001:db8::2 1 65535\r\n")
    assert isinstance(v6, ProxyHeader)
    assert v6.source == ("2001:db8::1", 1)  # canonical form
    unknown = parse_proxy_header(b"PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 65535 65535\r\n")
    assert isinstance(unknown, ProxyHeader)
    assert unknown.source is None


def test_v2_local_and_unspec_carry_no_source() -> None:
    local = parse_proxy_header(build_v2(("192.0.2.1", 1), ("192.0.2.2", 2), command=ProxyCommand.LOCAL))
    assert isinstance(local, ProxyHeader)
    assert (local.command, local.source) == (ProxyCommand.LOCAL, None)
    unspec = parse_proxy_header(build_v2(None, None))
    assert isinstance(unspec, ProxyHeader)
    assert unspec.source is None


@pytest.mark.parametrize(
    "header",
    [
        HAPROXY_V2_TCP4,
        build_v2(("2001:db8::7", 40000), ("2001:db8::1", 4334), tlvs=[(0x05, b"unique-id")], checksum=True),
        b"PROXY TCP4 203.0.113.9 10.0.0.1 65535 4334\r\n",
        b"PROXY UNKNOWN\r\n",
    ],
)
def test_one_byte_at_a_time_needs_more_until_complete_and_never_reads_past(header: bytes) -> None:
    parsed = None
    for end in range(len(header)):
        result = parse_proxy_header(header[:end])
        assert isinstance(result, NeedMore), end
        assert end < result.at_least <= len(header)
    parsed = parse_proxy_header(header)
    assert isinstance(parsed, ProxyHeader)
    assert parsed.length == len(header)
    with_data = parse_proxy_header(header + SSH_BANNER)
    assert with_data == parsed


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (SSH_BANNER, "does not start with"),
        (b"PROXX", "does not start with"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "CRLF"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "CRLF"),
        (b"PROXY " + b"A" * PROXY_V1_MAX, "longer than 107"),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "expected"),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "expected"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "IPv4"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "IPv6"),
        (b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", "IPv4"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xd9\xa3\r\n", "ASCII"),
        (PROXY_V2_SIGNATURE[:5] + b"X", "signature"),
        (PROXY_V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), "version 1"),
        (PROXY_V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12), "unknown command"),
        (PROXY_V2_SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12), "family"),
        (PROXY_V2_SIGNATURE + b"\x21\x11\x00\x08" + bytes(8), "address block"),
        (PROXY_V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12), "address block"),
        (PROXY_V2_SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12), "datagram"),
        (PROXY_V2_SIGNATURE + b"\x21\x11\x00\x0e" + bytes(14), "truncated TLV"),
        (PROXY_V2_SIGNATURE + b"\x21\x11\x00\x10" + bytes(12) + b"\x05\x00\x09\x00", "longer than the header"),
        (PROXY_V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", PROXY_V2_MAX), "at most"),
    ],
)
def test_malformed_headers_are_typed_errors_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyProtocolError, match=reason) as info:
        parse_proxy_header(data)
    assert reason in info.value.reason


def test_a_wrong_crc32c_is_refused_and_a_right_one_accepted() -> None:
    header = bytearray(build_v2(("192.0.2.1", 1000), ("192.0.2.2", 4334), checksum=True))
    assert isinstance(parse_proxy_header(bytes(header)), ProxyHeader)
    header[20] ^= 0x01  # the source address changed in transit
    with pytest.raises(ProxyProtocolError, match="CRC32C mismatch"):
        parse_proxy_header(bytes(header))


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C


def test_signature_detection() -> None:
    assert starts_with_proxy_header(b"PROXY TCP4 ...")
    assert starts_with_proxy_header(HAPROXY_V2_TCP4)
    assert not starts_with_proxy_header(SSH_BANNER)
    assert not starts_with_proxy_header(b"\r\n\r\n")  # empty lines a server may send before its banner


ports = st.integers(min_value=0, max_value=65535)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
endpoints = st.one_of(st.tuples(ipv4, ports, ipv4, ports), st.tuples(ipv6, ports, ipv6, ports))
tlv_lists = st.lists(
    st.tuples(st.integers(min_value=0xE0, max_value=0xEF), st.binary(max_size=40)), max_size=4
)  # PP2_TYPE_MIN_CUSTOM..MAX


@given(endpoints, tlv_lists, st.booleans(), st.binary(max_size=64))
def test_v2_round_trip(
    addresses: tuple[str, int, str, int], tlvs: list[tuple[int, bytes]], checksum: bool, rest: bytes
) -> None:
    src, sport, dst, dport = addresses
    header = build_v2((src, sport), (dst, dport), tlvs=tlvs, checksum=checksum)
    parsed = parse_proxy_header(header + rest)
    assert isinstance(parsed, ProxyHeader)
    assert parsed.source == (str(ipaddress.ip_address(src)), sport)
    assert parsed.destination == (dst, dport)
    assert parsed.length == len(header)
    assert [tlv for tlv in parsed.tlvs if tlv[0] != 0x03] == tlvs


@given(endpoints, st.binary(max_size=64))
def test_v1_round_trip(addresses: tuple[str, int, str, int], rest: bytes) -> None:
    src, sport, dst, dport = addresses
    header = build_v1((src, sport), (dst, dport))
    parsed = parse_proxy_header(header + rest)
    assert isinstance(parsed, ProxyHeader)
    assert (parsed.source, parsed.destination, parsed.length) == ((src, sport), (dst, dport), len(header))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_parser(data: bytes) -> None:
    try:
        result = parse_proxy_header(data)
    except ProxyProtocolError:
        return
    if isinstance(result, NeedMore):
        assert result.at_least > len(data)
    else:
        assert result.length <= len(data)


@given(st.binary(min_size=1, max_size=120), st.sampled_from([HAPROXY_V2_TCP4, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"]))
def test_a_valid_header_parses_the_same_whatever_follows(rest: bytes, header: bytes) -> None:
    assert parse_proxy_header(header + rest) == parse_proxy_header(header)


def test_config_is_checked_when_built() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ProxyProtocolConfig(trusted=())
    with pytest.raises(ValueError, match="not an address"):
        ProxyProtocolConfig(trusted=("10.0.0.300",))
    with pytest.raises(ValueError, match="listeners: ftp"):
        ProxyProtocolConfig(trusted=("10.0.0.1",), listeners=frozenset({"ftp"}))
    with pytest.raises(ValueError, match="timeout"):
        ProxyProtocolConfig(trusted=("10.0.0.1",), timeout=0)


def test_trusted_sources() -> None:
    proxy = ProxyProtocol(ProxyProtocolConfig(trusted=("127.0.0.2/32", "2001:db8::/64")))
    assert proxy.trusts("127.0.0.2")
    assert proxy.trusts("::ffff:127.0.0.2")  # a dual-stack socket's view of an IPv4 balancer
    assert proxy.trusts("2001:db8::10")
    assert not proxy.trusts("127.0.0.3")
    assert not proxy.trusts("fe80::1%eth0")
    assert not proxy.trusts("not-an-address")


# -- the listener, on real loopback sockets ---------------------------------------------------


class _Seen:
    def __init__(self) -> None:
        self.peers: list[PeerAddress] = []
        self.first: list[bytes] = []
        self.refused: list[tuple[PeerAddress, str]] = []
        self.event = asyncio.Event()

    async def handler(self, sock: socket.socket, peer: PeerAddress) -> None:
        loop = asyncio.get_running_loop()
        self.peers.append(peer)
        self.first.append(await asyncio.wait_for(loop.sock_recv(sock, 100), 5))
        sock.close()
        self.event.set()

    def on_refused(self, peer: PeerAddress, reason: str) -> None:
        self.refused.append((peer, reason))
        self.event.set()


async def _listener(seen: _Seen, trusted: str, timeout: float = 5.0) -> Listener:
    proxy = ProxyProtocol(ProxyProtocolConfig(trusted=(trusted,), timeout=timeout))
    listener = Listener(
        seen.handler, listen_address="127.0.0.1", listen_port=0, proxy=proxy, on_refused=seen.on_refused
    )
    await listener.start()
    return listener


async def _send_from(source: str, port: int, chunks: list[bytes], *, close: bool = False) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    await loop.sock_connect(sock, ("127.0.0.1", port))
    for chunk in chunks:
        await loop.sock_sendall(sock, chunk)
        await asyncio.sleep(0)  # separate segments, most of the time
    if close:
        sock.shutdown(socket.SHUT_WR)
    return sock


async def test_a_trusted_balancers_header_gives_the_device_address_and_leaves_its_bytes() -> None:
    seen = _Seen()
    listener = await _listener(seen, "127.0.0.2/32")
    header = build_v2(("198.51.100.7", 40001), ("127.0.0.1", listener.listen_port))
    try:
        # split inside the header and glued to the device's banner: both must work
        sock = await _send_from("127.0.0.2", listener.listen_port, [header[:7], header[7:20], header[20:] + SSH_BANNER])
        await asyncio.wait_for(seen.event.wait(), 5)
        sock.close()
    finally:
        await listener.close()
    assert seen.peers == [("198.51.100.7", 40001)]
    assert seen.first == [SSH_BANNER]
    assert seen.refused == []


async def test_a_v1_header_byte_by_byte() -> None:
    seen = _Seen()
    listener = await _listener(seen, "127.0.0.0/8")
    header = build_v1(("203.0.113.1", 1234), ("127.0.0.1", listener.listen_port))
    try:
        sock = await _send_from("127.0.0.2", listener.listen_port, [bytes([b]) for b in header] + [SSH_BANNER])
        await asyncio.wait_for(seen.event.wait(), 5)
        sock.close()
    finally:
        await listener.close()
    assert seen.peers == [("203.0.113.1", 1234)]
    assert seen.first == [SSH_BANNER]


async def test_untrusted_sources_pass_through_untouched() -> None:
    seen = _Seen()
    listener = await _listener(seen, "127.0.0.2/32")
    try:
        sock = await _send_from("127.0.0.3", listener.listen_port, [SSH_BANNER])
        await asyncio.wait_for(seen.event.wait(), 5)
        sock.close()
    finally:
        await listener.close()
    assert seen.peers[0][0] == "127.0.0.3"
    assert seen.first == [SSH_BANNER]


@pytest.mark.parametrize(
    ("chunks", "close", "reason"),
    [
        ([SSH_BANNER], False, "does not start with"),  # the balancer forgot send-proxy
        ([HAPROXY_V2_TCP4[:10]], True, "closed in the middle"),
        ([], True, "closed before"),
        ([build_v1(None, None)], False, "no source address"),
    ],
)
async def test_a_balancer_connection_without_a_valid_header_is_refused(
    chunks: list[bytes], close: bool, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen = _Seen()
    listener = await _listener(seen, "127.0.0.2/32")
    try:
        sock = await _send_from("127.0.0.2", listener.listen_port, chunks, close=close)
        await asyncio.wait_for(seen.event.wait(), 5)
        sock.close()
    finally:
        await listener.close()
    assert seen.peers == []
    assert seen.refused == [(seen.refused[0][0], "proxy-header")]
    assert seen.refused[0][0][0] == "127.0.0.2"
    assert any(reason in r.getMessage() and "peer=127.0.0.2:" in r.getMessage() for r in caplog.records)


async def test_a_silent_balancer_connection_times_out() -> None:
    seen = _Seen()
    listener = await _listener(seen, "127.0.0.2/32", timeout=0.2)
    try:
        sock = await _send_from("127.0.0.2", listener.listen_port, [HAPROXY_V2_TCP4[:3]])
        await asyncio.wait_for(seen.event.wait(), 5)
        sock.close()
    finally:
        await listener.close()
    assert [reason for _, reason in seen.refused] == ["proxy-header"]


async def test_a_health_check_local_header_is_closed_quietly(caplog: pytest.LogCaptureFixture) -> None:
    seen = _Seen()
    listener = await _listener(seen, "127.0.0.2/32")
    loop = asyncio.get_running_loop()
    try:
        sock = await _send_from("127.0.0.2", listener.listen_port, [build_v2(None, None, command=ProxyCommand.LOCAL)])
        assert await asyncio.wait_for(loop.sock_recv(sock, 10), 5) == b""  # closed by the listener
        sock.close()
    finally:
        await listener.close()
    assert seen.peers == []
    assert seen.refused == []
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
