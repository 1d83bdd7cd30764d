"""The gateway's terminal endpoint (``terminal.sock``): an interactive shell
with a PTY on an SSH device's call-home connection (the call-home draft's
remote terminal access), relayed to the local client.  An optional first
line from the client sets the PTY: ``\0CALLHOME-TERM <type> <cols> <rows>``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass

from ..addresses import format_peer
from ..errors import CallHomeError
from ..server.core import AsyncCallHomeServer

__all__ = ["TerminalRequest", "parse_terminal_preamble", "serve_terminal"]

log = logging.getLogger(__name__)

TERMINAL_PREAMBLE = b"\0CALLHOME-TERM "
TERMINAL_PREAMBLE_WAIT = 0.3  # seconds a terminal client has to send its preamble


@dataclass(frozen=True)
class TerminalRequest:
    type: str = "xterm"
    cols: int = 80
    rows: int = 24
    rest: bytes = b""  # bytes after the preamble (or all of them, without one)


def parse_terminal_preamble(data: bytes) -> TerminalRequest:
    """``\0CALLHOME-TERM <type> <cols> <rows>\n`` at the start of ``data``
    sets the PTY; anything else is keyboard input for the device."""
    if not data.startswith(TERMINAL_PREAMBLE) or b"\n" not in data:
        return TerminalRequest(rest=data)
    line, _, rest = data.partition(b"\n")
    fields = line[len(TERMINAL_PREAMBLE) :].decode("ascii", "replace").split()
    try:
        term, cols, rows = fields[0], int(fields[1]), int(fields[2])
    except (IndexError, ValueError):
        return TerminalRequest(rest=rest)
    if not term.replace("-", "").replace(".", "").isalnum() or not (0 < cols <= 1000 and 0 < rows <= 1000):
        return TerminalRequest(rest=rest)
    return TerminalRequest(type=term[:64], cols=cols, rows=rows, rest=rest)


async def serve_terminal(server: AsyncCallHomeServer, device: str, wait: float, local: socket.socket) -> None:
    """Relay a shell on ``device`` (waited for up to ``wait`` seconds) to ``local``."""
    loop = asyncio.get_running_loop()
    local.setblocking(False)
    # an optional first line from the client: "\0CALLHOME-TERM <type> <cols> <rows>\n"
    # (callhome terminal sends it; with socat the defaults apply)
    first = b""
    with contextlib.suppress(TimeoutError):
        first = await asyncio.wait_for(loop.sock_recv(local, 256), TERMINAL_PREAMBLE_WAIT)
        # a preamble split across writes: read on to its newline (bounded)
        until = loop.time() + TERMINAL_PREAMBLE_WAIT * 3
        while (
            first
            and b"\n" not in first
            and len(first) < 256
            and (TERMINAL_PREAMBLE.startswith(first) or first.startswith(TERMINAL_PREAMBLE))
        ):
            more = await asyncio.wait_for(loop.sock_recv(local, 256), max(0.01, until - loop.time()))
            if not more:
                break
            first += more
    term = parse_terminal_preamble(first)
    try:
        conn, relay = await server.open_terminal(
            device, wait, local, term_type=term.type, cols=term.cols, rows=term.rows
        )
    except CallHomeError as exc:
        log.warning("device=%s event=terminal-failed reason=%s", device, exc)
        local.close()
        return
    if term.rest:
        relay.from_local(term.rest)  # what the client sent with (or instead of) the preamble
    server.metrics.inc("callhome_local_sessions_total", endpoint="terminal")
    log.info("device=%s peer=%s event=terminal-opened term=%s", device, format_peer(conn.peer_address), term.type)
    try:
        with server.registry.local_session(device, "terminal"):
            await asyncio.shield(relay.closed)  # the relay closes when either side does
    finally:
        log.info("device=%s event=terminal-closed", device)
