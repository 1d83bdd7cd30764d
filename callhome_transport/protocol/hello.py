"""The NETCONF ``<hello>`` exchange, sans I/O (RFC 6241 s8.1, RFC 6242 s4.1).

Each side sends a ``<hello>`` listing its capabilities as soon as the session
opens; the server's also carries the ``session-id``.  Hellos always use
end-of-message framing; afterwards both sides use chunked framing (base:1.1)
when both listed ``urn:ietf:params:netconf:base:1.1``, else end-of-message
(base:1.0) (RFC 6242 s4.1).

The call-home server exchanges hellos with a device itself (so that a device
which drops a connection with no NETCONF session, as libnetconf2 does, keeps
one ready), then lends the session: to ncclient with the hello already parsed,
or to a local client to which it replays the device's hello and whose own hello
it answers.  Nothing here owns a socket, a clock or a thread.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from xml.sax.saxutils import escape

from .framing import EOM, Framing

__all__ = [
    "BASE_10",
    "BASE_11",
    "DEFAULT_CLIENT_CAPABILITIES",
    "HELLO_SETTLE",
    "MAX_HELLO_SIZE",
    "Hello",
    "HelloError",
    "HelloReader",
    "encode_hello",
    "hello_settle_for",
    "needs_hello_settle",
    "negotiate",
    "parse_hello",
]

NETCONF_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"  # RFC 6241 s3.1
BASE_10 = "urn:ietf:params:netconf:base:1.0"  # RFC 6241 s8.1
BASE_11 = "urn:ietf:params:netconf:base:1.1"
# A device's hello lists every YANG module it implements: a few KiB on small
# servers, some hundred KiB on large routers.
MAX_HELLO_SIZE = 8 * 1024 * 1024

# What we say in our hello: the capabilities stock ncclient sends with its
# default device handler (tests/unit/test_hello.py checks they agree).
DEFAULT_CLIENT_CAPABILITIES: tuple[str, ...] = (
    BASE_10,
    BASE_11,
    "urn:ietf:params:netconf:capability:writable-running:1.0",
    "urn:ietf:params:netconf:capability:candidate:1.0",
    "urn:ietf:params:netconf:capability:confirmed-commit:1.0",
    "urn:ietf:params:netconf:capability:rollback-on-error:1.0",
    "urn:ietf:params:netconf:capability:startup:1.0",
    "urn:ietf:params:netconf:capability:url:1.0?scheme=http,ftp,file,https,sftp",
    "urn:ietf:params:netconf:capability:validate:1.0",
    "urn:ietf:params:netconf:capability:xpath:1.0",
    "urn:ietf:params:netconf:capability:notification:1.0",
    "urn:ietf:params:netconf:capability:interleave:1.0",
    "urn:ietf:params:netconf:capability:with-defaults:1.0",
)

# For a server that needs it, the first RPC leaves at least this long after
# our hello.  Measured here: yuma123 netconfd 2.13 drops an RPC that it reads
# in the same buffer as the client's hello (a device bug that stock ncclient's
# 100 ms send tick hides, and that a client sending at once exposes when the
# device reads late).  Every other server gets its first RPC at once
# (:func:`needs_hello_settle`); a session greeted ahead of time (held) is long
# past it anyway.
HELLO_SETTLE = 0.1

# yuma123 netconfd announces its own modules: yuma-ncx is loaded by every
# netconfd (namespaces from the yuma123 module set, /usr/share/yuma/modules).
_YUMA_CAPABILITY_PREFIXES = ("http://netconfcentral.org/ns/yuma-ncx?", "http://yuma123.org/ns/")


def needs_hello_settle(hello: Hello) -> bool:
    """Whether the server that sent ``hello`` must get its first RPC
    :data:`HELLO_SETTLE` after our hello rather than at once: yuma123
    netconfd, recognised by the modules it announces.  A device of another
    family with the same bug is named in the inventory (``quirks:
    [hello-settle]``)."""
    return any(c.startswith(_YUMA_CAPABILITY_PREFIXES) for c in hello.capabilities)


def hello_settle_for(hello: Hello, forced: bool = False) -> float:
    """The settle before the first RPC to the server that sent ``hello``
    (seconds): :data:`HELLO_SETTLE` where it is needed or ``forced``, else 0."""
    return HELLO_SETTLE if forced or needs_hello_settle(hello) else 0.0


class HelloError(ValueError):
    """A ``<hello>`` that is not one (the sender's fault): not XML, another
    element, a DTD, or too large."""


@dataclass(frozen=True)
class Hello:
    """What a ``<hello>`` says: the sender's capabilities and, from a server,
    the session-id."""

    capabilities: tuple[str, ...]
    session_id: str | None = None

    @property
    def bases(self) -> frozenset[str]:
        return frozenset(c for c in self.capabilities if c in (BASE_10, BASE_11))


def encode_hello(capabilities: Iterable[str], session_id: str | None = None) -> bytes:
    """A ``<hello>`` message with end-of-message framing (RFC 6242 s4.1)."""
    if session_id is None:
        return _client_hello(tuple(capabilities))
    return _encode_hello(capabilities, session_id)


@functools.lru_cache(maxsize=32)
def _client_hello(capabilities: tuple[str, ...]) -> bytes:
    """Ours: the same few capability lists for every session."""
    return _encode_hello(capabilities, None)


def _encode_hello(capabilities: Iterable[str], session_id: str | None) -> bytes:
    caps = "".join(f"<capability>{escape(c)}</capability>" for c in capabilities)
    sid = f"<session-id>{escape(session_id)}</session-id>" if session_id is not None else ""
    text = f'<?xml version="1.0" encoding="UTF-8"?><hello xmlns="{NETCONF_NS}"><capabilities>{caps}</capabilities>'
    return (text + sid + "</hello>").encode() + EOM


def _local(tag: str) -> tuple[str, str]:
    """``(namespace, local name)`` of an ElementTree tag."""
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return "", tag


# Devices of one model send the same hello but for its session-id, and a
# client the same hello every time: a hello parsed before is recognised by its
# bytes with the session-id's digits left out.
_SESSION_ID = re.compile(rb"<session-id>([0-9]{1,10})</session-id>")
_PARSED_MAX = 256
_PARSED_BYTES_MAX = 16 * 1024 * 1024  # of hellos kept as keys, all together
_parsed: dict[bytes, tuple[str, ...]] = {}
_parsed_bytes = 0


def parse_hello(message: bytes) -> Hello:
    """Parse one ``<hello>`` message (without its ``]]>]]>``).  Raises
    :class:`HelloError`.

    A hello whose bytes, but for the digits of its one ``<session-id>``, were
    parsed before is not parsed again (a few KiB of XML per session on a
    fleet of one model)."""
    key, session_id = _recognisable(message)
    capabilities = _parsed.get(key) if key is not None else None
    if capabilities is not None:
        return Hello(capabilities=capabilities, session_id=session_id)
    hello = _parse_hello(message)
    global _parsed_bytes
    if (
        key is not None
        and hello.session_id == session_id  # the one <session-id> there is, the one parsing found
        and len(_parsed) < _PARSED_MAX
        and _parsed_bytes + len(key) <= _PARSED_BYTES_MAX
    ):
        _parsed[key] = hello.capabilities
        _parsed_bytes += len(key)
    return hello


def _recognisable(message: bytes) -> tuple[bytes | None, str | None]:
    """The key of ``message`` in the parsed hellos and its session-id, or
    ``(None, None)`` when its session-id is not one plain number."""
    count = message.count(b"session-id>")
    if count == 0:
        return message, None  # a client's hello
    if count != 2:  # one element, opened and closed
        return None, None
    found = _SESSION_ID.search(message)
    if found is None:
        return None, None
    return message[: found.start(1)] + message[found.end(1) :], found.group(1).decode()


def _parse_hello(message: bytes) -> Hello:
    if len(message) > MAX_HELLO_SIZE:
        raise HelloError(f"hello of {len(message)} bytes exceeds {MAX_HELLO_SIZE}")
    if b"<!DOCTYPE" in message or b"<!ENTITY" in message:
        raise HelloError("a hello must not carry a DTD")
    try:
        root = ET.fromstring(message)
    except ET.ParseError as exc:
        raise HelloError(f"hello is not well-formed XML: {exc}") from None
    ns, name = _local(root.tag)
    if name != "hello" or ns not in (NETCONF_NS, ""):
        raise HelloError(f"expected <hello xmlns={NETCONF_NS!r}>, got <{name}> in {ns!r}")
    capabilities: list[str] = []
    session_id: str | None = None
    for child in root:
        child_ns, child_name = _local(child.tag)
        if child_ns not in (NETCONF_NS, ""):
            continue
        if child_name == "capabilities":
            for cap in child:
                if _local(cap.tag)[1] == "capability" and cap.text and cap.text.strip():
                    capabilities.append(cap.text.strip())
        elif child_name == "session-id" and child.text and child.text.strip():
            session_id = child.text.strip()
    return Hello(capabilities=tuple(capabilities), session_id=session_id)


def negotiate(ours: Iterable[str], theirs: Iterable[str]) -> Framing | None:
    """The framing two hellos lead to (RFC 6242 s4.1): chunked when both list
    base:1.1, end-of-message when both list base:1.0 (and not both base:1.1),
    ``None`` when they share no base version."""
    common = set(ours) & set(theirs)
    if BASE_11 in common:
        return Framing.CHUNKED
    if BASE_10 in common:
        return Framing.END_OF_MESSAGE
    return None


class HelloReader:
    """Collects the first message of a stream (the hello, always
    end-of-message framed) from bytes in any split; what follows it is
    :attr:`rest`."""

    def __init__(self, max_size: int = MAX_HELLO_SIZE) -> None:
        self._buffer = bytearray()
        self._max = max_size
        self.message: bytes | None = None
        self.rest = b""

    def feed(self, data: bytes) -> bytes | None:
        """Add received bytes; the hello once it is complete (then and
        afterwards), else ``None``.  Raises :class:`HelloError` when the
        message grows past ``max_size`` without its end."""
        if self.message is not None:
            self.rest += data
            return self.message
        start = max(0, len(self._buffer) - len(EOM) + 1)
        self._buffer += data
        index = self._buffer.find(EOM, start)
        if index < 0:
            if len(self._buffer) > self._max + len(EOM):
                raise HelloError(f"no end of hello within {self._max} bytes")
            return None
        self.message = bytes(self._buffer[:index])
        self.rest = bytes(self._buffer[index + len(EOM) :])
        self._buffer = bytearray()
        return self.message
