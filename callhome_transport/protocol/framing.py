"""NETCONF message framing, sans I/O.

Two framings exist (RFC 6242 s4): end-of-message (``]]>]]>``, base:1.0, always
used for ``<hello>``) and chunked (base:1.1, ``\\n#<len>\\n<data>...\\n##\\n``).
:class:`FrameDecoder` takes bytes as they arrive, in any split, and returns
the complete messages; it owns no socket, clock or thread, so it is tested one
byte at a time.  The simulated device uses it for what it receives, and
:class:`~callhome_transport.integrations.netconf.StreamSession` for what devices send to
ncclient: a message larger than ``max_message_size`` is refused while it
arrives, before it is held whole in memory.
"""

from __future__ import annotations

import enum

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "EOM",
    "FrameDecoder",
    "Framing",
    "FramingError",
    "MessageSizeExceeded",
    "encode",
]

EOM = b"]]>]]>"  # RFC 6242 s4.3
_END_OF_CHUNKS = b"\n##\n"  # RFC 6242 s4.2
MAX_CHUNK_SIZE = 4294967295  # RFC 6242 s4.2: chunk-size 1..4294967295
# No RFC bounds a NETCONF message; this is a memory guard (a whole
# configuration of a large device is tens of MB).
DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024 * 1024


class Framing(enum.Enum):
    """Which framing a session uses."""

    END_OF_MESSAGE = "base:1.0"
    CHUNKED = "base:1.1"


class FramingError(ValueError):
    """The peer sent bytes that violate RFC 6242 framing (the peer's fault)."""


class MessageSizeExceeded(FramingError):
    """A message grew past the decoder's ``max_message_size`` (``limit``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"message exceeds {limit} bytes")
        self.limit = limit

    def __reduce__(self) -> tuple[type[MessageSizeExceeded], tuple[int]]:
        return (type(self), (self.limit,))


def encode(message: bytes, framing: Framing) -> bytes:
    """Frame one message for sending."""
    if framing is Framing.END_OF_MESSAGE:
        return message + EOM
    if not message:
        raise ValueError("a chunked message needs at least one byte")
    return b"\n#%d\n%s%s" % (len(message), message, _END_OF_CHUNKS)


class _State(enum.Enum):
    EOM_BODY = enum.auto()
    CHUNK_HEADER = enum.auto()  # expecting "\n#" then digits or "#"
    CHUNK_DATA = enum.auto()


class FrameDecoder:
    """Incremental decoder for one direction of a NETCONF session.

    ``max_message_size`` bounds memory per message (a DoS guard): a message
    that grows past it raises :class:`FramingError`.
    """

    def __init__(
        self, framing: Framing = Framing.END_OF_MESSAGE, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    ) -> None:
        if max_message_size < 1:
            raise ValueError(f"max_message_size must be >= 1, not {max_message_size}")
        self._buffer = bytearray()
        self._message = bytearray()
        self._chunk_left = 0
        self._scan_from = 0  # end-of-message framing: where to look for EOM next (no rescans)
        self._max = max_message_size
        self._framing = framing
        self._state = _State.EOM_BODY if framing is Framing.END_OF_MESSAGE else _State.CHUNK_HEADER

    @property
    def framing(self) -> Framing:
        return self._framing

    def switch(self, framing: Framing) -> None:
        """Change framing between messages (after the hello exchange,
        RFC 6242 s4.1).  Bytes already buffered are decoded with the new framing."""
        if self._message or self._chunk_left:
            raise FramingError("cannot switch framing in the middle of a message")
        self._framing = framing
        self._scan_from = 0
        self._state = _State.EOM_BODY if framing is Framing.END_OF_MESSAGE else _State.CHUNK_HEADER

    @property
    def pending(self) -> int:
        """Bytes held: a message not yet complete, and what follows it."""
        return len(self._buffer) + len(self._message)

    def clear(self) -> None:
        """Drop every byte buffered (the stream ended mid-message); the memory
        is released even while something still refers to the decoder."""
        self._buffer = bytearray()
        self._message = bytearray()
        self._chunk_left = 0
        self._scan_from = 0

    def feed(self, data: bytes, limit: int | None = None) -> list[bytes]:
        """Add received bytes; return the messages they complete, at most
        ``limit`` (the rest stay buffered: feed ``b""`` to get them, e.g. after
        :meth:`switch`)."""
        self._buffer += data
        messages: list[bytes] = []
        while limit is None or len(messages) < limit:
            message = self._step()
            if message is None:
                if len(self._buffer) + len(self._message) > self._max + len(EOM):
                    raise MessageSizeExceeded(self._max)
                return messages
            messages.append(message)
        return messages

    def _step(self) -> bytes | None:
        """Consume as much of the buffer as makes progress; return a message
        when one completes, ``None`` when more bytes are needed."""
        while True:
            if self._state is _State.EOM_BODY:
                index = self._buffer.find(EOM, self._scan_from)
                if index < 0:
                    self._scan_from = max(0, len(self._buffer) - len(EOM) + 1)
                    return None
                with memoryview(self._buffer) as view, view[:index] as body:
                    message = bytes(body)  # one copy, not two (a slice of a bytearray is a bytearray)
                del self._buffer[: index + len(EOM)]
                self._scan_from = 0
                return message
            if self._state is _State.CHUNK_DATA:
                if not self._buffer:
                    return None
                take = min(self._chunk_left, len(self._buffer))
                self._message += self._buffer[:take]
                del self._buffer[:take]
                self._chunk_left -= take
                if len(self._message) > self._max:
                    raise MessageSizeExceeded(self._max)
                if self._chunk_left:
                    return None
                self._state = _State.CHUNK_HEADER
                continue
            # CHUNK_HEADER: "\n#" followed by "#\n" (end of chunks) or digits "\n"
            if len(self._buffer) < 3:
                if self._buffer and not b"\n#".startswith(bytes(self._buffer[:2])):
                    raise FramingError(f"expected chunk header, got {bytes(self._buffer[:2])!r}")
                return None
            if self._buffer[:2] != b"\n#":
                raise FramingError(f"expected chunk header, got {bytes(self._buffer[:2])!r}")
            if self._buffer[2:3] == b"#":
                if len(self._buffer) < 4:
                    return None
                if self._buffer[3:4] != b"\n":
                    raise FramingError("malformed end-of-chunks marker")
                if not self._message:
                    raise FramingError("end-of-chunks with no chunk")
                del self._buffer[:4]
                message = bytes(self._message)
                self._message.clear()
                return message
            newline = self._buffer.find(b"\n", 2)
            if newline < 0:
                if len(self._buffer) > 2 + 10 or not bytes(self._buffer[2:]).isdigit():
                    raise FramingError("malformed chunk size")
                return None
            digits = bytes(self._buffer[2:newline])
            if not digits.isdigit() or digits.startswith(b"0") or len(digits) > 10:
                raise FramingError(f"malformed chunk size {digits!r}")
            size = int(digits)
            if size > MAX_CHUNK_SIZE:
                raise FramingError(f"chunk size {size} out of range")
            del self._buffer[: newline + 1]
            self._chunk_left = size
            self._state = _State.CHUNK_DATA
