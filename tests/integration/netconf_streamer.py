"""A scripted NETCONF server for the flow-control and message-size tests: a
device that answers with replies of any size, or with bytes that are not
UTF-8.  Standard library only: sshd runs it as the ``netconf`` subsystem
(``Subsystem netconf /usr/bin/python3 netconf_streamer.py``) and stunnel as
its ``exec`` program, so the manager meets it behind real OpenSSH and real TLS.

It sends its hello (base:1.0 and base:1.1, RFC 6242 s4.1), reads the client's
and then answers every ``<rpc>``: ``<close-session>`` with ``<ok/>`` (and
ends), an RPC that carries ``<stream xmlns="urn:callhome:test:stream"
size="N"/>`` (e.g. as a get filter) with an ``<rpc-reply>`` of about N bytes,
streamed in 1 MiB pieces (``encoding="invalid-utf8"`` puts bytes 0xFF 0xFE
in it), anything else with ``<ok/>``.
"""

from __future__ import annotations

import os
import re
import sys

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
EOM = b"]]>]]>"
BLOCK = 1 << 20
_MESSAGE_ID = re.compile(rb'message-id="([^"]*)"')
_STREAM = re.compile(rb"<stream\b[^>]*urn:callhome:test:stream[^>]*>")
_SIZE = re.compile(rb'size="(\d+)"')


def write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


class Reader:
    def __init__(self) -> None:
        self.buffer = b""

    def more(self) -> None:
        data = os.read(0, 65536)
        if not data:
            sys.exit(0)
        self.buffer += data

    def eom_message(self) -> bytes:
        while EOM not in self.buffer:
            self.more()
        message, _, self.buffer = self.buffer.partition(EOM)
        return message

    def chunked_message(self) -> bytes:
        message = b""
        while True:
            while not re.match(rb"\n#(\d+|#)\n", self.buffer):
                self.more()
            header = re.match(rb"\n#(\d+|#)\n", self.buffer)
            assert header is not None
            self.buffer = self.buffer[header.end() :]
            if header.group(1) == b"#":
                return message
            size = int(header.group(1))
            while len(self.buffer) < size:
                self.more()
            message += self.buffer[:size]
            self.buffer = self.buffer[size:]


def send(message: bytes, chunked: bool) -> None:
    write(b"\n#%d\n%s\n##\n" % (len(message), message) if chunked else message + EOM)


def stream_reply(message_id: bytes, size: int, invalid: bool, chunked: bool) -> None:
    """About ``size`` bytes of reply, one chunk (or write) per 1 MiB piece."""
    head = b'<rpc-reply xmlns="%s" message-id="%s"><data><stream xmlns="urn:callhome:test:stream">%s' % (
        NC.encode(),
        message_id,
        b"\xff\xfe" if invalid else b"",
    )
    tail = b"</stream></data></rpc-reply>"
    block = b"0123456789abcdef" * (BLOCK // 16)

    def piece(data: bytes) -> None:
        write(b"\n#%d\n%s" % (len(data), data) if chunked else data)

    piece(head)
    left = max(0, size - len(head) - len(tail))
    while left > 0:
        piece(block[: min(left, BLOCK)])
        left -= BLOCK
    write(b"\n#%d\n%s\n##\n" % (len(tail), tail) if chunked else tail + EOM)


def main() -> None:
    hello = (
        b'<?xml version="1.0" encoding="UTF-8"?><hello xmlns="%s"><capabilities>'
        b"<capability>urn:ietf:params:netconf:base:1.0</capability>"
        b"<capability>urn:ietf:params:netconf:base:1.1</capability>"
        b"</capabilities><session-id>%d</session-id></hello>" % (NC.encode(), os.getpid())
    )
    send(hello, chunked=False)
    reader = Reader()
    client_hello = reader.eom_message()
    chunked = b"urn:ietf:params:netconf:base:1.1" in client_hello
    while True:
        rpc = reader.chunked_message() if chunked else reader.eom_message()
        found = _MESSAGE_ID.search(rpc)
        message_id = found.group(1) if found else b""
        stream = _STREAM.search(rpc)
        if stream is not None:
            size = _SIZE.search(stream.group(0))
            invalid = b'encoding="invalid-utf8"' in stream.group(0)
            stream_reply(message_id, int(size.group(1)) if size else BLOCK, invalid, chunked)
            continue
        ok = b'<rpc-reply xmlns="%s" message-id="%s"><ok/></rpc-reply>' % (NC.encode(), message_id)
        send(ok, chunked)
        if b"close-session" in rpc:
            return


if __name__ == "__main__":
    main()
