"""Juniper outbound-ssh: the Junos device's own call home, before RFC 8071.

A Junos device configured with ``set system services outbound-ssh client
NAME device-id ID [secret S] address A port P services netconf`` opens a TCP
connection to the manager and, before its SSH server speaks, sends an
initiation sequence of CRLF-terminated lines (Junos NETCONF guide, "outbound
SSH initiation sequence")::

    MSG-ID: DEVICE-CONN-INFO
    MSG-VER: V1
    DEVICE-ID: <device-id>                # one Junos guide prints "DEVICE-ID: : <id>"
    HOST-KEY: <public host key>           # only with a secret
    HMAC: <HMAC-SHA1 of HOST-KEY, keyed by the secret>

Then the device runs the SSH *server* role, as in RFC 8071 s4.1 S3, and the
manager runs the SSH client and the ``netconf`` subsystem.

What the HMAC covers is not spelled out in Juniper's guides; Juniper's own
open-source provisioning server (Juniper/YAPT, ``lib/services/ossh.py``)
checks ``HMAC-SHA1(key=secret, msg=HOST-KEY value)`` as lower-case hex, where
the value is the OpenSSH public-key text (``ssh-rsa AAAA...``, algorithm name
included) with NUL bytes stripped.  We do the same, compare in constant time
and accept upper-case hex.

Identity stays the pinned host key (RFC 8071 s5): the DEVICE-ID only says
which inventory device's pins the SSH handshake must present, and the HOST-KEY
line, when sent, must be one of them and the very key presented.  A device is
never identified by its DEVICE-ID alone.

Rooms: :class:`PreambleParser` and :func:`identify_caller` are sans I/O;
:func:`read_preamble` and :func:`outbound_ssh_handshake` do the socket work.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import hmac
import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..addresses import PeerAddress, format_peer
from ..errors import (
    CallHomeError,
    MalformedPreambleError,
    OutboundSSHKeyMismatchError,
    OutboundSSHRefusedError,
    PreambleHMACError,
    UnknownDeviceError,
    UnknownDeviceIDError,
)
from ..identity.inventory import Device, Inventory, Transport, fingerprint_of_blob
from ..identity.trust import Identity, PresentedKey, Trust
from .contract import DeviceConnection
from .preauth import PendingConnection
from .ssh import (
    ClientKeys,
    SSHAcceptor,
    SSHClientConfig,
    SSHDeviceConnection,
    SSHHost,
    host_key_algorithms,
    ssh_handshake,
)

__all__ = [
    "JUNOS_OUTBOUND_SSH_PORT",
    "MAX_PREAMBLE_LINE",
    "MAX_PREAMBLE_LINES",
    "OutboundSSHAcceptor",
    "OutboundSSHConfig",
    "OutboundSSHHost",
    "Preamble",
    "PreambleFormatError",
    "PreambleParser",
    "identify_caller",
    "outbound_ssh_handshake",
    "preamble_hmac",
    "read_preamble",
]

log = logging.getLogger(__name__)

# IANA assigned no port to outbound-ssh: each Junos stanza names one
# (``address A port P``).  7804 is the port Junos Space listens on for
# device-initiated connections, so fleets set up for it need no change.
JUNOS_OUTBOUND_SSH_PORT = 7804

# Bounds: the longest legitimate line is HOST-KEY with an RSA key (about 750
# characters for 4096 bits, 1,400 for 8192); the sequence has 5 lines, plus a
# few blank ones some implementations add.
MAX_PREAMBLE_LINE = 4096  # bytes, with the line end
MAX_PREAMBLE_LINES = 16

_DEVICE_ID = re.compile(r"^[\x21-\x7e]{1,255}$")
_HMAC_HEX = re.compile(r"^[0-9a-f]{40}$")  # SHA-1
_VALUE_STRIP = " \t\x00"  # Junos may end a value with its C string's NUL (YAPT strips it)


@dataclass(frozen=True, kw_only=True)
class OutboundSSHConfig:
    """Options of the outbound-ssh listener.  ``preamble_timeout`` bounds
    accept -> complete preamble (a short grace, separate from the SSH
    ``handshake_timeout`` that follows it)."""

    preamble_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.preamble_timeout > 0:
            raise ValueError(f"preamble_timeout must be > 0, not {self.preamble_timeout}")


@dataclass(frozen=True, kw_only=True)
class Preamble:
    """A complete, well-formed initiation sequence."""

    device_id: str
    host_key: str | None = None  # the HOST-KEY value as sent: "ssh-ed25519 AAAA..."
    host_key_fingerprint: str | None = None  # SHA256 of its key blob
    hmac: str | None = None  # lower-case hex

    @property
    def fingerprint(self) -> str:
        return self.host_key_fingerprint or ""


class PreambleFormatError(ValueError):
    """The bytes are not an outbound-ssh initiation sequence (the parser's own
    error; :func:`read_preamble` turns it into :class:`MalformedPreambleError`)."""

    def __init__(self, message: str, device_id: str | None = None) -> None:
        super().__init__(message)
        self.device_id = device_id


class _State(enum.Enum):
    MSG_ID = "MSG-ID"
    MSG_VER = "MSG-VER"
    DEVICE_ID = "DEVICE-ID"
    HOST_KEY = "HOST-KEY"  # optional: a HOST-KEY line, or the SSH version string ends the preamble
    HMAC = "HMAC"
    DONE = "done"


# state -> the state after its line; every legal transition is here
_NEXT = {
    _State.MSG_ID: _State.MSG_VER,
    _State.MSG_VER: _State.DEVICE_ID,
    _State.DEVICE_ID: _State.HOST_KEY,
    _State.HOST_KEY: _State.HMAC,
    _State.HMAC: _State.DONE,
}


class PreambleParser:
    """Sans-I/O parser of the initiation sequence.

    :meth:`feed` takes bytes and returns how many of them belong to the
    preamble; the rest (from the SSH version string on) belongs to SSH and
    must be left for it.  The preamble ends after the HMAC line, or before a
    line starting with ``S`` (``SSH-2.0-...``) where HOST-KEY could start.
    Lines end in LF, optionally CRLF; blank lines are skipped; values may
    carry NUL bytes at either end.  Raises :class:`PreambleFormatError` as soon
    as the input cannot be a preamble: a line longer than
    :data:`MAX_PREAMBLE_LINE`, more than :data:`MAX_PREAMBLE_LINES` lines,
    non-ASCII bytes, a missing or unexpected field.
    """

    def __init__(self) -> None:
        self._state = _State.MSG_ID
        self._line = bytearray()
        self._lines = 0
        self._device_id: str | None = None
        self._host_key: str | None = None
        self._fingerprint: str | None = None
        self._hmac: str | None = None

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    @property
    def device_id(self) -> str | None:
        """The DEVICE-ID once its line was read."""
        return self._device_id

    @property
    def preamble(self) -> Preamble:
        """The parsed preamble (only once :attr:`done`)."""
        if not self.done or self._device_id is None:
            raise RuntimeError("the preamble is not complete")
        return Preamble(
            device_id=self._device_id,
            host_key=self._host_key,
            host_key_fingerprint=self._fingerprint,
            hmac=self._hmac,
        )

    def feed(self, data: bytes) -> int:
        """Consume ``data``; return the number of bytes that belong to the
        preamble (all of them until it is complete)."""
        pos = 0
        while pos < len(data) and not self.done:
            if not self._line and self._state is _State.HOST_KEY and data[pos] == ord("S"):
                self._state = _State.DONE  # the device's SSH version string: not ours
                break
            newline = data.find(b"\n", pos)
            end = len(data) if newline < 0 else newline + 1
            if len(self._line) + end - pos > MAX_PREAMBLE_LINE:
                raise self._error(f"a line longer than {MAX_PREAMBLE_LINE} bytes")
            self._line += data[pos:end]
            pos = end
            if newline >= 0:
                line = bytes(self._line)
                self._line.clear()
                self._take_line(line)
        return pos

    def eof(self) -> None:
        """The connection closed: an error unless the preamble is complete."""
        if not self.done:
            raise self._error(f"the connection closed while waiting for the {self._state.value} line")

    def _error(self, what: str) -> PreambleFormatError:
        return PreambleFormatError(what, self._device_id)

    def _take_line(self, raw: bytes) -> None:
        self._lines += 1
        if self._lines > MAX_PREAMBLE_LINES:
            raise self._error(f"more than {MAX_PREAMBLE_LINES} lines")
        body = raw[:-1]
        if body.endswith(b"\r"):
            body = body[:-1]
        if not body.strip(_VALUE_STRIP.encode()):
            return  # a blank line
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            raise self._error("non-ASCII bytes") from None
        if any(ch < " " and ch not in _VALUE_STRIP for ch in text) or "\x7f" in text:
            raise self._error("control characters")
        expected = self._state.value
        key, colon, value = text.partition(":")
        if not colon or key.strip() != expected:
            if text.startswith("SSH-") and self._state is _State.MSG_ID:
                raise self._error(
                    "an SSH version string where the MSG-ID line was expected "
                    "(an RFC 8071 device calling the outbound-ssh port?)"
                )
            wanted = {
                _State.HOST_KEY: "HOST-KEY or the SSH version string",
                _State.HMAC: "HMAC (after HOST-KEY)",
            }.get(self._state, expected)
            raise self._error(f"a line {_shown(text)} where {wanted} was expected")
        value = value.strip(_VALUE_STRIP)
        if self._state is _State.MSG_ID and value != "DEVICE-CONN-INFO":
            raise self._error(f"MSG-ID {_shown(value)} (only DEVICE-CONN-INFO is known)")
        if self._state is _State.MSG_VER and value != "V1":
            raise self._error(f"MSG-VER {_shown(value)} (only V1 is known)")
        if self._state is _State.DEVICE_ID:
            self._device_id = self._parse_device_id(value)
        if self._state is _State.HOST_KEY:
            self._host_key, self._fingerprint = self._parse_host_key(value)
        if self._state is _State.HMAC:
            self._hmac = self._parse_hmac(value)
        self._state = _NEXT[self._state]

    def _parse_device_id(self, value: str) -> str:
        if value.startswith(":"):  # "DEVICE-ID: : <id>", as one Junos guide prints it
            value = value[1:].strip(_VALUE_STRIP)
        if not _DEVICE_ID.match(value):
            raise self._error(f"DEVICE-ID {_shown(value)}: expected 1 to 255 visible ASCII characters")
        return value

    def _parse_host_key(self, value: str) -> tuple[str, str]:
        parts = value.split()
        if not 1 <= len(parts) <= 3:
            raise self._error("a HOST-KEY that is not 'TYPE BASE64' (an OpenSSH public key)")
        key_type, b64 = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        try:
            blob = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise self._error("a HOST-KEY whose key data is not base64") from None
        embedded = _ssh_string(blob)
        if not embedded or (key_type and embedded != key_type.encode()):
            raise self._error(f"a HOST-KEY whose key data does not carry its type {_shown(key_type)}")
        return value, fingerprint_of_blob(blob)

    def _parse_hmac(self, value: str) -> str:
        digest = value.lower()
        if not _HMAC_HEX.match(digest):
            raise self._error("an HMAC that is not 40 hexadecimal digits (HMAC-SHA1)")
        return digest


def _ssh_string(blob: bytes) -> bytes:
    """The first SSH ``string`` of a key blob: its algorithm (RFC 4253 s6.6)."""
    if len(blob) < 4:
        return b""
    length = int.from_bytes(blob[:4], "big")
    return blob[4 : 4 + length] if 0 < length <= min(len(blob) - 4, 64) else b""


def _shown(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def preamble_hmac(secret: str, host_key: str) -> str:
    """The HMAC a Junos device with ``secret`` sends for its HOST-KEY value
    (lower-case hex of HMAC-SHA1 keyed by the secret)."""
    return hmac.new(secret.encode("utf-8"), host_key.encode("ascii"), hashlib.sha1).hexdigest()


# -- identification (sans I/O) ----------------------------------------------------


def identify_caller(preamble: Preamble, inventory: Inventory, peer: PeerAddress) -> Device:
    """The inventory device the preamble names, after its checks: the
    DEVICE-ID must be configured, the HMAC must match the device's secret when
    it has one, and a HOST-KEY line must be a key pinned for that device.
    The SSH handshake must then present a pinned key (:func:`outbound_ssh_handshake`).

    Raises :class:`UnknownDeviceIDError`, :class:`PreambleHMACError` or
    :class:`OutboundSSHKeyMismatchError`.
    """
    device = inventory.device_for_outbound_ssh_id(preamble.device_id)

    def refused(kind: type[OutboundSSHRefusedError], detail: str) -> OutboundSSHRefusedError:
        return kind(
            peer_address=peer,
            device_id=preamble.device_id,
            device=device.name if device else None,
            fingerprint=preamble.fingerprint,
            detail=detail,
        )

    if device is None or device.outbound_ssh is None:
        raise refused(
            UnknownDeviceIDError,
            "no device has this outbound_ssh.device_id in the inventory "
            "(set devices.<name>.outbound_ssh.device_id to onboard it)",
        )
    secret = device.outbound_ssh.secret
    if secret is not None:
        if preamble.host_key is None or preamble.hmac is None:
            raise refused(
                PreambleHMACError,
                "a secret is configured for this device but it sent no HOST-KEY and HMAC "
                "(set the same secret in its outbound-ssh client stanza)",
            )
        expected = preamble_hmac(secret, preamble.host_key)
        if not hmac.compare_digest(expected.encode("ascii"), preamble.hmac.encode("ascii")):
            raise refused(PreambleHMACError, "the HMAC of its HOST-KEY does not match the secret configured for it")
    if preamble.host_key_fingerprint is not None and preamble.host_key_fingerprint not in device.fingerprints:
        raise refused(
            OutboundSSHKeyMismatchError,
            f"its HOST-KEY {preamble.host_key_fingerprint} is not pinned for device {device.name}",
        )
    return device


class _NamedDeviceTrust:
    """Trust for the SSH handshake after the preamble: only the keys pinned
    for the device the DEVICE-ID named, and only the HOST-KEY line's key
    when one was sent."""

    def __init__(self, device: Device, host_key_fingerprint: str | None) -> None:
        self.device = device
        self.host_key_fingerprint = host_key_fingerprint

    def identify(self, presented: PresentedKey) -> Identity | None:
        if presented.fingerprint not in self.device.fingerprints:
            return None
        if self.host_key_fingerprint is not None and presented.fingerprint != self.host_key_fingerprint:
            return None
        assert self.device.credentials is not None  # an SSH device has them
        return Identity(device=self.device.name, credentials=self.device.credentials, fingerprint=presented.fingerprint)


# -- I/O ------------------------------------------------------------------------


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def _wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, _wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def read_preamble(
    sock: socket.socket, peer: PeerAddress, timeout: float, reported_timeout: float | None = None
) -> Preamble:
    """Read the initiation sequence from ``sock`` (non-blocking), taking
    exactly its bytes off the socket: it peeks, lets the parser say how much
    is preamble, and receives only that, so the SSH version string stays in
    the socket for the SSH client.

    Raises :class:`MalformedPreambleError` (reason ``preamble-timeout`` when
    ``timeout`` seconds pass first; the message names ``reported_timeout``,
    default ``timeout``: the bound counted from the accept)."""
    parser = PreambleParser()
    try:
        async with asyncio.timeout(timeout):
            while not parser.done:
                await _readable(sock)
                try:
                    data = sock.recv(MAX_PREAMBLE_LINE, socket.MSG_PEEK)
                except (BlockingIOError, InterruptedError):
                    continue
                if not data:
                    parser.eof()
                used = parser.feed(data)
                _discard(sock, used)
    except PreambleFormatError as exc:
        raise MalformedPreambleError(peer_address=peer, device_id=exc.device_id, detail=str(exc)) from None
    except TimeoutError:
        raise MalformedPreambleError(
            peer_address=peer,
            device_id=parser.device_id,
            reason="preamble-timeout",
            detail=f"no complete preamble within {reported_timeout or timeout:g} s",
        ) from None
    except OSError as exc:
        raise MalformedPreambleError(
            peer_address=peer, device_id=parser.device_id, detail=f"connection failed: {exc.strerror or exc}"
        ) from None
    return parser.preamble


def _discard(sock: socket.socket, count: int) -> None:
    """Receive ``count`` bytes already peeked (they are in the socket buffer)."""
    while count > 0:
        count -= len(sock.recv(count))


async def outbound_ssh_handshake(
    sock: socket.socket,
    peer: PeerAddress,
    inventory: Inventory,
    ssh_config: SSHClientConfig,
    config: OutboundSSHConfig,
    *,
    accepted_at: float | None = None,
    guard: Callable[[Trust], Trust] | None = None,
    client_keys: ClientKeys | None = None,
) -> SSHDeviceConnection:
    """Accept one Junos outbound-ssh call: read and check the preamble, then
    run the SSH client role (RFC 8071 C3-C7) trusting only the keys pinned for
    the device the DEVICE-ID named.

    ``accepted_at`` (``time.monotonic()`` of the TCP accept; default: now)
    starts both bounds: ``config.preamble_timeout`` for the preamble, and
    ``ssh_config.handshake_timeout`` for the whole, preamble included.
    ``guard`` wraps the trust of the SSH handshake (the server refuses blocked
    devices there).  Raises the
    :class:`~callhome_transport.errors.OutboundSSHRefusedError` family, or
    what :func:`~callhome_transport.transports.ssh.ssh_handshake` raises once the device
    is identified.  ``sock`` is closed on failure.
    """
    if accepted_at is None:
        accepted_at = time.monotonic()
    try:
        preamble_left = config.preamble_timeout - (time.monotonic() - accepted_at)
        preamble = await read_preamble(sock, peer, max(0.001, preamble_left), config.preamble_timeout)
        device = identify_caller(preamble, inventory, peer)
    except BaseException:
        sock.close()
        raise
    log.debug(
        "peer=%s outbound-ssh DEVICE-ID %r names device %s%s",
        format_peer(peer),
        preamble.device_id,
        device.name,
        f", HOST-KEY {preamble.host_key_fingerprint}" if preamble.host_key_fingerprint else "",
    )
    if preamble.hmac is not None and device.outbound_ssh is not None and device.outbound_ssh.secret is None:
        log.debug("peer=%s device %s sent an HMAC; no secret is configured to check it", format_peer(peer), device.name)
    # the device is known before key exchange: offer only its pinned keys' algorithms, so a
    # Junos device (RSA, ECDSA and ed25519 host keys) presents a key pinned for it
    options = ssh_config.options(host_key_algorithms(pin.key_type for pin in device.host_keys))
    trust: Trust = _NamedDeviceTrust(device, preamble.host_key_fingerprint)
    if guard is not None:
        trust = guard(trust)
    left = max(0.1, ssh_config.handshake_timeout - (time.monotonic() - accepted_at))
    try:
        conn = await ssh_handshake(sock, peer, trust, ssh_config, options, client_keys, timeout=left)
    except UnknownDeviceError as exc:
        expected = preamble.host_key_fingerprint or ", ".join(sorted(device.fingerprints))
        raise OutboundSSHKeyMismatchError(
            peer_address=peer,
            device_id=preamble.device_id,
            device=device.name,
            fingerprint=exc.fingerprint,
            detail=f"the SSH handshake presented host key {exc.key_type} {exc.fingerprint}, "
            f"expected {expected}; no authentication was attempted",
        ) from exc
    conn.accepted_at = accepted_at
    conn.handshake_seconds = time.monotonic() - accepted_at
    return conn


class OutboundSSHHost(SSHHost, Protocol):
    """What :class:`OutboundSSHAcceptor` reads from the server beside :class:`SSHHost`."""

    inventory: Inventory
    outbound_ssh_config: OutboundSSHConfig

    def guard(self, trust: Trust) -> Trust:
        """``trust``, refusing blocked devices before any credential is sent."""
        ...


class OutboundSSHAcceptor(SSHAcceptor):
    """Junos outbound-ssh (port 7804): its preamble, then SSH."""

    label = kind = "outbound-ssh"
    transports: tuple[Transport, ...] = ()  # Junos devices are SSH devices; this listener runs beside theirs

    def __init__(self, host: OutboundSSHHost) -> None:
        super().__init__(host)
        self.host: OutboundSSHHost = host

    def _first_line_bounds(self) -> list[tuple[float, str]]:
        return [*super()._first_line_bounds(), (self.host.outbound_ssh_config.preamble_timeout, "preamble-timeout")]

    async def handshake(self, pending: PendingConnection) -> DeviceConnection:
        return await outbound_ssh_handshake(
            pending.sock,
            pending.peer,
            self.host.inventory,
            self.host.ssh_config,
            self.host.outbound_ssh_config,
            accepted_at=pending.accepted_at,
            guard=self.host.guard,
            client_keys=self.host.client_keys,
        )

    def refusal_kind(self, exc: CallHomeError) -> str:
        # a refusal of the preamble is this listener's; one of the SSH handshake after it, SSH's
        return self.kind if isinstance(exc, OutboundSSHRefusedError) else "ssh"
