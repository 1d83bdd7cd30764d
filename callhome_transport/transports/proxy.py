"""The PROXY protocol (versions 1 and 2, HAProxy's ``proxy-protocol.txt``):
the device's real source address behind an L4 balancer.

In call home the device is the SSH or TLS *server*, so a balancer in front of
a gateway cluster can only be pure L4 (there is no SNI, no ClientHello to
route on).  The gateway then sees the balancer's address on every
connection; with ``send-proxy-v2`` (HAProxy) or ``proxy_protocol on`` (nginx
stream, v1) the balancer prepends a header carrying the device's address.

Two parts:

- :func:`parse_proxy_header`, sans I/O: bytes in, a :class:`ProxyHeader`
  (with the number of bytes it occupies), :class:`NeedMore` or a
  :class:`~callhome_transport.errors.ProxyProtocolError` out.  It never looks
  past the header, so the I/O side can *peek* at the socket, parse, and then
  consume exactly the header: the device's own first bytes stay in the
  kernel for the SSH or TLS client.
- :class:`ProxyProtocol`, the listener's policy: only the balancers listed
  (``trusted``, CIDRs) may send a header, and they must (a connection from a
  balancer without one is refused).  A header from any other source is never
  honoured: a device's first bytes that carry one are refused by the SSH
  accept path (:func:`starts_with_proxy_header`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..addresses import PeerAddress
from ..errors import ProxyProtocolError

__all__ = [
    "PROXY_V1_MAX",
    "PROXY_V2_SIGNATURE",
    "NeedMore",
    "ProxyCommand",
    "ProxyHeader",
    "ProxyProtocol",
    "ProxyProtocolConfig",
    "build_v1",
    "build_v2",
    "parse_proxy_header",
    "starts_with_proxy_header",
]

log = logging.getLogger(__name__)


PROXY_V1_PREFIX = b"PROXY "
PROXY_V1_MAX = 107  # proxy-protocol.txt s2.1: the longest v1 line, CRLF included
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"  # s2.2: 12 bytes
PROXY_V2_FIXED = 16  # signature, version/command, family/protocol, length
PROXY_V2_MAX = PROXY_V2_FIXED + 2048  # our bound on address block + TLVs (HAProxy sends < 300 in TCP mode)

_V2_ADDRESS_SIZE = {1: 12, 2: 36, 3: 216}  # s2.2: AF_INET, AF_INET6, AF_UNIX address blocks
PP2_TYPE_CRC32C = 0x03  # s2.2.5


class ProxyCommand(enum.Enum):
    """v2 command (v1 headers are always ``PROXY``)."""

    LOCAL = 0  # sent by the balancer itself (health checks): no client behind it
    PROXY = 1  # relayed for a client: the addresses are the client's


@dataclass(frozen=True)
class NeedMore:
    """Not a whole header yet: try again once ``at_least`` bytes are there."""

    at_least: int


@dataclass(frozen=True, kw_only=True)
class ProxyHeader:
    """One parsed header.  ``source`` is ``None`` when it carries no usable
    address (v1 ``UNKNOWN``, v2 ``LOCAL``, ``AF_UNSPEC`` or ``AF_UNIX``): the
    receiver then keeps the connection's own addresses (s2.1, s2.2)."""

    version: int
    command: ProxyCommand
    source: PeerAddress | None
    destination: PeerAddress | None
    length: int  # bytes the header occupies at the start of the stream
    tlvs: tuple[tuple[int, bytes], ...] = field(default=())


def starts_with_proxy_header(data: bytes) -> bool:
    """Whether ``data`` (the first bytes of a stream) begins with a PROXY
    header signature: ``PROXY `` (v1) or the 12-byte v2 signature."""
    return data.startswith(PROXY_V1_PREFIX) or data.startswith(PROXY_V2_SIGNATURE)


def parse_proxy_header(data: bytes) -> ProxyHeader | NeedMore:
    """Parse the PROXY header at the start of ``data`` (v1 or v2), reading
    nothing past it.  Raises :class:`ProxyProtocolError` (with ``reason``) as
    soon as ``data`` cannot be the start of a valid header."""
    if not data:
        return NeedMore(1)
    if data[0] == PROXY_V1_PREFIX[0]:
        return _parse_v1(data)
    if data[0] == PROXY_V2_SIGNATURE[0]:
        return _parse_v2(data)
    raise ProxyProtocolError(reason="no PROXY protocol header (the stream does not start with one)")


def _check_prefix(data: bytes, prefix: bytes, what: str) -> bool:
    """True when ``data`` holds all of ``prefix``; False when it is a proper
    prefix of it; raises when it differs."""
    if not prefix.startswith(data[: len(prefix)]):
        raise ProxyProtocolError(reason=f"no PROXY protocol header (the stream does not start with {what})")
    return len(data) >= len(prefix)


def _parse_v1(data: bytes) -> ProxyHeader | NeedMore:
    if not _check_prefix(data, PROXY_V1_PREFIX, "'PROXY '"):
        return NeedMore(len(data) + 1)
    window = data[:PROXY_V1_MAX]
    end = window.find(b"\r\n")
    if end < 0:
        bare = window.find(b"\n")
        if bare >= 0 or (b"\r" in window[:-1]):
            raise ProxyProtocolError(reason="PROXY v1 line not terminated by CRLF")
        if len(window) >= PROXY_V1_MAX:
            raise ProxyProtocolError(reason=f"PROXY v1 line longer than {PROXY_V1_MAX} bytes")
        return NeedMore(len(data) + 1)
    try:
        line = window[len(PROXY_V1_PREFIX) : end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError(reason="PROXY v1 line is not ASCII") from None
    if "\n" in line or "\r" in line:
        raise ProxyProtocolError(reason="PROXY v1 line not terminated by CRLF")
    fields = line.split(" ")
    length = end + 2
    if fields[0] == "UNKNOWN":  # s2.1: the rest of the line is ignored
        return ProxyHeader(version=1, command=ProxyCommand.PROXY, source=None, destination=None, length=length)
    if fields[0] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(reason=f"PROXY v1: unknown protocol {fields[0][:8]!r} (TCP4, TCP6 or UNKNOWN)")
    if len(fields) != 5:
        raise ProxyProtocolError(reason="PROXY v1: expected 'TCP4|TCP6 SRC DST SPORT DPORT'")
    version = 4 if fields[0] == "TCP4" else 6
    source = (_v1_address(fields[1], version), _v1_port(fields[3]))
    destination = (_v1_address(fields[2], version), _v1_port(fields[4]))
    return ProxyHeader(version=1, command=ProxyCommand.PROXY, source=source, destination=destination, length=length)


def _v1_address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(reason=f"PROXY v1: {text[:45]!r} is not an IPv{version} address") from None
    if address.version != version:
        raise ProxyProtocolError(reason=f"PROXY v1: {text!r} is not an IPv{version} address")
    return str(address)


def _v1_port(text: str) -> int:
    # s2.1: decimal, 0..65535, no leading zero
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyProtocolError(reason=f"PROXY v1: {text[:8]!r} is not a port number")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | NeedMore:
    if not _check_prefix(data, PROXY_V2_SIGNATURE, "the PROXY v2 signature"):
        return NeedMore(len(data) + 1)
    if len(data) < PROXY_V2_FIXED:
        return NeedMore(PROXY_V2_FIXED)
    version_command, family_protocol, body_length = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2:
        raise ProxyProtocolError(reason=f"PROXY v2: version {version_command >> 4}, expected 2")
    try:
        command = ProxyCommand(version_command & 0x0F)
    except ValueError:
        raise ProxyProtocolError(reason=f"PROXY v2: unknown command {version_command & 0x0F}") from None
    length = PROXY_V2_FIXED + body_length
    if length > PROXY_V2_MAX:
        raise ProxyProtocolError(reason=f"PROXY v2: header of {length} bytes (at most {PROXY_V2_MAX} accepted)")
    if len(data) < length:
        return NeedMore(length)
    body = data[PROXY_V2_FIXED:length]
    family, protocol = family_protocol >> 4, family_protocol & 0x0F
    if family > 3 or protocol > 2:
        raise ProxyProtocolError(reason=f"PROXY v2: unknown address family/protocol 0x{family_protocol:02x}")
    address_size = _V2_ADDRESS_SIZE.get(family, 0)
    if body_length < address_size:
        raise ProxyProtocolError(
            reason=f"PROXY v2: {body_length} bytes cannot hold the address block ({address_size} bytes)"
        )
    tlvs = _v2_tlvs(body[address_size:])
    _check_crc32c(data[:length], tlvs)
    source = destination = None
    if command is ProxyCommand.PROXY and family in (1, 2):
        if protocol == 2:
            raise ProxyProtocolError(reason="PROXY v2: a datagram (UDP) header on a stream connection")
        size = 4 if family == 1 else 16
        src = ipaddress.ip_address(body[:size])
        dst = ipaddress.ip_address(body[size : 2 * size])
        sport, dport = struct.unpack_from("!HH", body, 2 * size)
        source, destination = (str(src), sport), (str(dst), dport)
    return ProxyHeader(
        version=2, command=command, source=source, destination=destination, length=length, tlvs=tuple(tlvs)
    )


def _v2_tlvs(data: bytes) -> list[tuple[int, bytes]]:
    tlvs: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 3:
            raise ProxyProtocolError(reason="PROXY v2: truncated TLV")
        kind, size = struct.unpack_from("!BH", data, offset)
        if offset + 3 + size > len(data):
            raise ProxyProtocolError(reason=f"PROXY v2: TLV 0x{kind:02x} longer than the header")
        tlvs.append((kind, data[offset + 3 : offset + 3 + size]))
        offset += 3 + size
    return tlvs


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as PP2_TYPE_CRC32C uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _check_crc32c(header: bytes, tlvs: list[tuple[int, bytes]]) -> None:
    """s2.2.5: the checksum is computed over the whole header with its own
    value zeroed."""
    sums = [value for kind, value in tlvs if kind == PP2_TYPE_CRC32C]
    if not sums:
        return
    if len(sums) > 1 or len(sums[0]) != 4:
        raise ProxyProtocolError(reason="PROXY v2: malformed CRC32C TLV")
    at = header.rfind(bytes([PP2_TYPE_CRC32C, 0, 4]) + sums[0])
    zeroed = header[: at + 3] + b"\0\0\0\0" + header[at + 7 :]
    if crc32c(zeroed) != struct.unpack("!I", sums[0])[0]:
        raise ProxyProtocolError(reason="PROXY v2: CRC32C mismatch")


def build_v1(source: PeerAddress | None, destination: PeerAddress | None) -> bytes:
    """A v1 line (``UNKNOWN`` without addresses).  For tests, the simulated
    device and relays."""
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    version = ipaddress.ip_address(source[0]).version
    return f"PROXY TCP{version} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode("ascii")


def build_v2(
    source: PeerAddress | None,
    destination: PeerAddress | None,
    *,
    command: ProxyCommand = ProxyCommand.PROXY,
    tlvs: Iterable[tuple[int, bytes]] = (),
    checksum: bool = False,
) -> bytes:
    """A v2 header (``AF_UNSPEC`` without addresses); ``checksum`` appends a
    PP2_TYPE_CRC32C TLV."""
    if source is None or destination is None:
        family, block = 0x00, b""
    else:
        src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
        family = 0x11 if src.version == 4 else 0x21
        block = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    extra = b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in tlvs)
    if checksum:
        extra += struct.pack("!BH", PP2_TYPE_CRC32C, 4) + b"\0\0\0\0"
    body = block + extra
    header = PROXY_V2_SIGNATURE + struct.pack("!BBH", 0x20 | command.value, family, len(body)) + body
    if checksum:
        header = header[:-4] + struct.pack("!I", crc32c(header))
    return header


# -- the listener's policy -------------------------------------------------------------

LISTENER_KINDS = ("ssh", "tls", "restconf", "tls-strict", "outbound-ssh")


@dataclass(frozen=True, kw_only=True)
class ProxyProtocolConfig:
    """PROXY protocol on the call-home listeners (opt in).

    ``trusted``: the balancers' addresses or networks (CIDRs); only they may
    send a header, and every connection from them must start with one.
    ``listeners``: which listeners expect it (``ssh``, ``tls``, ``restconf``,
    ``tls-strict``, ``outbound-ssh``).  ``timeout``: seconds a balancer has to send its header
    (HAProxy sends it at once)."""

    trusted: tuple[str, ...]
    listeners: frozenset[str] = frozenset(LISTENER_KINDS)
    timeout: float = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "trusted", tuple(self.trusted))
        object.__setattr__(self, "listeners", frozenset(self.listeners))
        if not self.trusted:
            raise ValueError("trusted: at least one balancer address or network (CIDR)")
        for cidr in self.trusted:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"trusted: {cidr!r} is not an address or network (CIDR)") from None
        unknown = sorted(self.listeners - set(LISTENER_KINDS))
        if unknown:
            raise ValueError(f"listeners: {', '.join(unknown)} (known: {', '.join(LISTENER_KINDS)})")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0, not {self.timeout}")


class ProxyProtocol:
    """The I/O side: reads the header of a connection from a trusted balancer."""

    def __init__(self, config: ProxyProtocolConfig) -> None:
        self.config = config
        self._networks = [ipaddress.ip_network(cidr, strict=False) for cidr in config.trusted]

    def trusts(self, address: str) -> bool:
        """Whether ``address`` is one of the balancers allowed to send a header."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)

    async def resolve(self, sock: socket.socket, peer: PeerAddress) -> PeerAddress | None:
        """The device's address for a connection from ``peer``: ``peer``
        itself when it is not a trusted balancer; the header's source when it
        is (the header consumed, the device's bytes left unread); ``None`` for
        the balancer's own connections (``LOCAL``: health checks, nothing to
        serve).  Raises :class:`ProxyProtocolError` when a balancer's
        connection has no valid header in time."""
        if not self.trusts(peer[0]):
            return peer
        try:
            header = await read_proxy_header(sock, self.config.timeout)
        except ProxyProtocolError as exc:
            raise ProxyProtocolError(reason=exc.reason, peer_address=peer) from None
        if header.command is ProxyCommand.LOCAL:
            log.debug("balancer=%s PROXY v%d LOCAL (health check)", _fmt(peer), header.version)
            return None
        if header.source is None:
            # v1 UNKNOWN, v2 AF_UNSPEC/AF_UNIX: s2 says keep the connection's addresses, but that would make
            # the balancer the source every penalty charges: refuse instead
            raise ProxyProtocolError(reason="the PROXY header carries no source address", peer_address=peer)
        log.debug("balancer=%s PROXY v%d source %s", _fmt(peer), header.version, _fmt(header.source))
        return header.source


def _fmt(peer: PeerAddress) -> str:
    return f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"


async def read_proxy_header(sock: socket.socket, timeout: float) -> ProxyHeader:
    """Read the PROXY header at the start of ``sock`` (non-blocking) and
    nothing more: peek, parse, then consume exactly the header.  Raises
    :class:`ProxyProtocolError`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    fd = sock.fileno()
    seen = -1  # bytes peeked when the socket last woke us
    try:
        while True:
            try:
                data = sock.recv(PROXY_V2_MAX, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError as exc:
                raise ProxyProtocolError(reason=f"connection failed before the PROXY header: {exc}") from None
            if data == b"":
                raise ProxyProtocolError(reason="closed before sending a PROXY header")
            if data is not None:
                result = parse_proxy_header(data)
                if isinstance(result, ProxyHeader):
                    _consume(sock, result.length)
                    return result
                if len(data) == seen:  # woken with nothing new: the peer closed mid-header
                    raise ProxyProtocolError(reason="closed in the middle of the PROXY header")
                with contextlib.suppress(OSError):  # wake us only when the rest may be there
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, min(result.at_least, PROXY_V2_MAX))
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ProxyProtocolError(reason=f"no complete PROXY header within {timeout:g} s")
            waiter: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _wake, waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                raise ProxyProtocolError(reason=f"no complete PROXY header within {timeout:g} s") from None
            finally:
                loop.remove_reader(fd)
            seen = len(data) if data else 0
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


def _consume(sock: socket.socket, length: int) -> None:
    """Read the header's bytes, which the peek showed are all in the kernel."""
    while length:
        chunk = sock.recv(length)
        if not chunk:
            raise ProxyProtocolError(reason="closed in the middle of the PROXY header")
        length -= len(chunk)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
