# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""callhome.network.gateway_events: an ansible-rulebook event source for the
events of a call-home gateway (``callhome serve``).

It reads the gateway's ``GET /events`` stream (NDJSON) on its control socket
(HTTP/1.1 over a Unix socket) with the standard library only: it runs in
ansible-rulebook's Python, which need not have ``callhome_transport``.  The
HTTP response and the resume position are parsed and kept without I/O
(:class:`ResponseParser`, :class:`Cursor`), so that they are unit-tested byte
by byte; :func:`main` only connects, reads and retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from urllib.parse import urlencode

DOCUMENTATION = r"""
---
short_description: Events of a call-home gateway (devices calling home, refused, blocked; local sessions)
description:
  - An ansible-rulebook event source for the events of a C(callhome serve) gateway (RFC 8071 call home) - a device
    connected (first call or reconnect), disconnected, was rejected or failed authentication, a source address or a
    device was blocked, a local session opened or closed. Each event is put on the queue as the gateway sends it - a
    dict with C(id), C(type), C(time) and the fields of its type (docs/events.md in the collection's repository).
  - It reads the gateway's control socket (C(RUN_DIR/control.sock), HTTP over a Unix socket) with the Python
    standard library only, so it needs nothing installed in the rulebook's Python.
  - After a lost connection or a gateway restart it connects again (waiting for the gateway) and resumes after the
    last event it put on the queue. The gateway holds its recent events in a bounded buffer; if events this source
    wanted were overwritten meanwhile, it puts an event of type C(events-dropped) on the queue (C(missed) counts
    them) before the ones that follow. A restarted gateway numbers its events from 1 again; the source then puts an
    event of type C(gateway-restarted) and continues with the new gateway's events from its first.
options:
  run_dir:
    description:
      - The gateway's run directory (holds C(control.sock)).
      - Default - the environment variable C(CALLHOME_RUN_DIR), else C(/run/callhome).
    type: str
  types:
    description:
      - Only events of these types (a list, or a comma-separated string) - C(device-connected),
        C(device-disconnected), C(device-rejected), C(device-auth-failed), C(source-blocked), C(device-blocked),
        C(local-session-opened), C(local-session-closed). The notices C(events-dropped) and C(gateway-restarted)
        always come.
      - Default - every type.
    type: list
    elements: str
  since:
    description:
      - At start, take the events after this id (the last one already handled).
      - Default - every event the gateway holds (so that devices that called home just before the rulebook
        started are not missed; make the actions idempotent, or use O(state_file)).
    type: int
  state_file:
    description:
      - A file where the source keeps its position (the gateway's epoch and the last event id put on the queue),
        so that a restarted rulebook resumes after it instead of O(since). Written atomically after each batch of
        events. An event put on the queue but not yet acted on when the rulebook stops is not delivered again.
    type: str
  reconnect_delay:
    description:
      - Longest wait, in seconds, between two attempts to reach a gateway that is not there (the first retry is
        after 0.1 s, then twice as long each time up to this).
    type: float
    default: 5
"""

EXAMPLES = r"""
- name: Zero-touch onboarding
  hosts: all
  sources:
    - callhome.network.gateway_events:
        run_dir: /run/callhome
        types: [device-connected]
        state_file: /var/lib/callhome-eda/position.json
  rules:
    - name: A device called home for the first time
      condition: event.type == "device-connected" and event.first_call == true
      action:
        run_playbook:
          name: onboard.yml
          extra_vars:
            device: "{{ event.device }}"
    - name: The gateway overwrote events before they were read
      condition: event.type == "events-dropped"
      action:
        debug:
          msg: "{{ event.missed }} gateway events were missed"
"""

logger = logging.getLogger(__name__)

EVENT_TYPES = (
    "device-connected",
    "device-disconnected",
    "device-rejected",
    "device-auth-failed",
    "source-blocked",
    "device-blocked",
    "local-session-opened",
    "local-session-closed",
)
EPOCH_HEADER = "callhome-events-epoch"
FIRST_RETRY = 0.1  # seconds
MAX_HEAD = 64 * 1024  # a status line and headers longer than this are not the gateway's
MAX_LINE = 1024 * 1024  # one event; longer is not the gateway's
MAX_ERROR_BODY = 64 * 1024
READ_SIZE = 65536


class GatewayEventsError(Exception):
    """The gateway answered something this source cannot use."""


class GatewayRefused(GatewayEventsError):
    """The gateway answered the request with an error status."""

    def __init__(self, status, detail):
        super().__init__("the gateway answered %s to GET /events: %s" % (status, detail))
        self.status = status
        self.detail = detail


class BadArguments(ValueError):
    """The source's arguments in the rulebook are wrong."""


class Options:
    """The source's arguments, checked (:class:`BadArguments` names the wrong one)."""

    KNOWN = ("run_dir", "types", "since", "state_file", "reconnect_delay")

    def __init__(self, args, environ=None):
        environ = os.environ if environ is None else environ
        unknown = sorted(set(args) - set(self.KNOWN))
        if unknown:
            raise BadArguments(
                "callhome.network.gateway_events: unknown argument %s (known: %s)"
                % (", ".join(unknown), ", ".join(self.KNOWN))
            )
        run_dir = args.get("run_dir") or environ.get("CALLHOME_RUN_DIR") or "/run/callhome"
        if not isinstance(run_dir, str):
            raise BadArguments("callhome.network.gateway_events: run_dir must be a directory path")
        self.socket_path = os.path.join(run_dir, "control.sock")
        self.types = parse_types(args.get("types"))
        since = args.get("since")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
            raise BadArguments(
                "callhome.network.gateway_events: since must be an event id (a whole number >= 0), not %r" % (since,)
            )
        self.since = since
        state_file = args.get("state_file")
        if state_file is not None and (not isinstance(state_file, str) or not state_file):
            raise BadArguments("callhome.network.gateway_events: state_file must be a file path")
        self.state_file = state_file
        delay = args.get("reconnect_delay", 5)
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay <= 0:
            raise BadArguments(
                "callhome.network.gateway_events: reconnect_delay must be a number of seconds > 0, not %r" % (delay,)
            )
        self.reconnect_delay = float(delay)


def parse_types(value):
    """``types`` as a list or a comma-separated string -> a tuple of known types
    (empty: all)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise BadArguments("callhome.network.gateway_events: types must be a list of event types")
    names = [name.strip() for item in value for name in item.split(",") if name.strip()]
    for name in names:
        if name not in EVENT_TYPES:
            raise BadArguments(
                "callhome.network.gateway_events: unknown event type %r in types (known: %s)"
                % (name, ", ".join(EVENT_TYPES))
            )
    return tuple(dict.fromkeys(names))


class Cursor:
    """Where the source is: the last event id put on the queue and the gateway
    process (epoch) it came from.

    An answer's epoch is adopted with its first line: if the gateway
    restarted, that line is a ``gateway-restarted`` notice, and the old id
    must not be asked for again under the new epoch should the connection
    drop before the notice was read."""

    def __init__(self, since=None, epoch=None):
        self.since = since
        self.epoch = epoch
        self._answer_epoch = None
        self._adopted = True

    def request(self, types=()):
        """The HTTP request for the events after the cursor (one stream, then close)."""
        query = [("follow", "true")]
        if self.since is not None:
            query.append(("since", str(self.since)))
        if self.epoch is not None:
            query.append(("epoch", self.epoch))
        if types:
            query.append(("types", ",".join(types)))
        lines = [
            "GET /events?%s HTTP/1.1" % urlencode(query),
            "Host: callhome-gateway",
            "Accept: application/x-ndjson",
            "Connection: close",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")

    def begin(self, headers):
        """A new answer started, with these (lower-case) headers."""
        self._answer_epoch = headers.get(EPOCH_HEADER) or self.epoch
        self._adopted = False

    def accept(self, item):
        """``item`` (one line of the answer) is about to be put on the queue:
        move past it."""
        if not self._adopted:
            self._adopted = True
            self.epoch = self._answer_epoch
        if item.get("type") == "gateway-restarted":
            self.since, self.epoch = 0, item.get("epoch", self._answer_epoch)
        elif isinstance(item.get("id"), int) and not isinstance(item.get("id"), bool):
            self.since = item["id"]

    def finished(self):
        """The answer ended cleanly (the gateway stopped): an answer with no
        line said nothing about a restart, so its epoch is the cursor's."""
        if not self._adopted:
            self._adopted = True
            self.epoch = self._answer_epoch

    def to_json(self):
        return {"epoch": self.epoch, "since": self.since}

    @classmethod
    def from_json(cls, data):
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        since, epoch = data.get("since"), data.get("epoch")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
            raise ValueError("since is not an event id")
        if epoch is not None and not isinstance(epoch, str):
            raise ValueError("epoch is not a string")
        return cls(since, epoch)


class ResponseParser:
    """An HTTP/1.1 response to ``GET /events``, fed bytes as they come: the
    status and headers, then the body (chunked, sized or until close) cut into
    NDJSON lines.  :meth:`feed` returns the lines (as dicts) now complete."""

    def __init__(self):
        self.status = None
        self.headers = {}
        self._buffer = b""
        self._mode = "head"  # head, chunk-size, chunk-data, chunk-end, trailer, sized, close, done
        self._left = 0  # bytes left in the current chunk or sized body
        self._body = b""  # body bytes not yet cut into lines
        self.error_body = b""

    @property
    def done(self):
        return self._mode == "done"

    def feed(self, data):
        """Bytes received; returns the complete lines (decoded JSON objects).
        Raises :class:`GatewayEventsError` on anything not the gateway's."""
        self._buffer += data
        lines = []
        while True:
            progressed = self._step()
            lines.extend(self._lines())
            if not progressed:
                return lines

    def eof(self):
        """The connection ended: returns the last lines; raises if it ended
        before the answer did (a body with a length or chunks cut short)."""
        if self._mode == "close":
            self._body += self._buffer
            self._buffer = b""
            self._mode = "done"
            tail = self._lines()
            if self._body.strip():
                raise GatewayEventsError("the event stream ended in the middle of a line")
            return tail
        if self._mode == "done":
            return []
        raise GatewayEventsError("the gateway closed the connection in the middle of an answer")

    def _step(self):
        mode = self._mode
        if mode == "head":
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise GatewayEventsError("an answer whose headers never end")
                return False
            head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            self._head(head)
            return True
        if mode == "chunk-size":
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) > 1024:
                    raise GatewayEventsError("a chunk size line that never ends")
                return False
            size_line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            try:
                self._left = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise GatewayEventsError("a chunk size that is not hexadecimal: %r" % size_line[:40]) from None
            self._mode = "chunk-data" if self._left else "trailer"
            return True
        if mode in ("chunk-data", "sized"):
            if not self._buffer and self._left:
                return False
            take = self._buffer[: self._left]
            self._buffer = self._buffer[len(take) :]
            self._left -= len(take)
            self._body_bytes(take)
            if self._left:
                return False
            self._mode = "chunk-end" if mode == "chunk-data" else "done"
            return True
        if mode == "chunk-end":
            if len(self._buffer) < 2:
                return False
            if self._buffer[:2] != b"\r\n":
                raise GatewayEventsError("a chunk not followed by CRLF")
            self._buffer = self._buffer[2:]
            self._mode = "chunk-size"
            return True
        if mode == "trailer":
            end = self._buffer.find(b"\r\n")
            if end < 0:
                return False
            line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            if not line:
                self._mode = "done"
            return True
        if mode == "close":
            if not self._buffer:
                return False
            data, self._buffer = self._buffer, b""
            self._body_bytes(data)
            return True
        return False  # done

    def _head(self, head):
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise GatewayEventsError("not an HTTP answer: %r" % lines[0][:80])
        self.status = int(parts[1])
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise GatewayEventsError("a malformed header line: %r" % line[:80])
            self.headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            self._mode = "chunk-size"
        elif "content-length" in self.headers:
            try:
                self._left = int(self.headers["content-length"])
            except ValueError:
                raise GatewayEventsError("a Content-Length that is not a number") from None
            self._mode = "sized" if self._left else "done"
        else:
            self._mode = "close"

    def _body_bytes(self, data):
        if self.status != 200:
            self.error_body = (self.error_body + data)[:MAX_ERROR_BODY]
            return
        self._body += data
        if len(self._body) > MAX_LINE and b"\n" not in self._body:
            raise GatewayEventsError("an event line longer than %d bytes" % MAX_LINE)

    def _lines(self):
        if b"\n" not in self._body:
            return []
        *complete, self._body = self._body.split(b"\n")
        out = []
        for raw in complete:
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
            except ValueError:
                raise GatewayEventsError("an event line that is not JSON: %r" % raw[:80]) from None
            if not isinstance(item, dict) or not isinstance(item.get("type"), str):
                raise GatewayEventsError("an event line that is not an event: %r" % raw[:80])
            out.append(item)
        return out

    def refusal(self):
        """A non-200 answer as an error, with the reason from its JSON body."""
        text = self.error_body.decode("utf-8", "replace").strip()
        try:
            text = json.loads(text).get("error", text)
        except (ValueError, AttributeError):
            pass
        return GatewayRefused(self.status, text)


def load_position(path, fallback):
    """The cursor kept in ``path``, or ``fallback`` if there is none yet."""
    try:
        with open(path, "rb") as handle:
            return Cursor.from_json(json.loads(handle.read()))
    except FileNotFoundError:
        return fallback
    except (OSError, ValueError) as exc:
        raise BadArguments("callhome.network.gateway_events: state_file %s is unreadable: %s" % (path, exc)) from None


def save_position(path, cursor):
    """Write the cursor to ``path`` atomically (a new file renamed over it)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".gateway_events.", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(cursor.to_json(), handle)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


async def stream_once(queue, options, cursor):
    """One connection: put each line of the answer on ``queue`` until it ends.
    Returns whether the gateway answered (to reset the retry delay).
    Raises ``OSError`` when the gateway is not reachable, and
    :class:`GatewayEventsError` when it refused the request or broke off."""
    reader, writer = await asyncio.open_unix_connection(options.socket_path)
    try:
        writer.write(cursor.request(options.types))
        await writer.drain()
        parser = ResponseParser()
        began = False
        while True:
            data = await reader.read(READ_SIZE)
            items = parser.feed(data) if data else parser.eof()
            if parser.status is not None and not began:
                if parser.status != 200:
                    if not parser.done and data:
                        continue  # the rest of the error body
                    raise parser.refusal()
                began = True
                cursor.begin(parser.headers)
            for item in items:
                cursor.accept(item)
                await queue.put(item)
            if items and options.state_file:
                save_position(options.state_file, cursor)
            if not data or parser.done:
                cursor.finished()
                if options.state_file:
                    save_position(options.state_file, cursor)
                return began
    finally:
        writer.close()


async def main(queue, args):
    """Put the gateway's events on ``queue`` until cancelled (ansible-rulebook's
    source entry point)."""
    options = Options(args)
    cursor = Cursor(options.since)
    if options.state_file:
        cursor = load_position(options.state_file, cursor)
    delay = FIRST_RETRY
    reported = False
    while True:
        try:
            if await stream_once(queue, options, cursor):
                delay, reported = FIRST_RETRY, False
                logger.info("the gateway's event stream ended (last id %s): connecting again", cursor.since)
        except (OSError, GatewayEventsError) as exc:
            if isinstance(exc, GatewayRefused) and 400 <= exc.status < 500:
                raise  # a request the gateway refuses will not succeed later
            if not reported:
                logger.warning("no call-home gateway events at %s (%s): retrying", options.socket_path, exc)
                reported = True
        await asyncio.sleep(delay)
        delay = min(delay * 2, options.reconnect_delay)
