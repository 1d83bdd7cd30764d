"""Small HTTP/1.1 pieces on h11 (sans I/O) over asyncio streams: a server loop
for the control socket and the per-device RESTCONF sockets, and a client
connection for the device side of the RESTCONF relay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import h11

__all__ = ["HTTPClient", "Request", "Response", "json_response", "serve_http"]

MAX_BODY = 64 * 1024 * 1024  # bounded memory per request body (DoS guard)
READ_SIZE = 65536


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    # True once the local client has hung up (so a deferred request is not sent late)
    client_gone: Callable[[], bool] = field(default=lambda: False, repr=False)

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None  # instead of body, for large responses
    done: Callable[[], Awaitable[None]] | None = None  # after the body was sent
    send_timeout: float | None = None  # stream: a client that reads nothing this long is cut off


def json_response(status: int, data: Any) -> Response:
    body = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    return Response(status, [("Content-Type", "application/json")], body)


Handler = Callable[[Request], Awaitable[Response]]


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(READ_SIZE)
            conn.receive_data(data)
            continue
        return event


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


async def serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handle: Handler) -> None:
    """Serve requests on one connection (keep-alive) until the peer closes.
    A request h11 refuses, or one with both Content-Length and
    Transfer-Encoding, gets a 4xx/5xx answer and the connection is closed."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    try:
        while True:
            event = await _next_event(conn, reader)
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):
                return
            names = {name.lower() for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                # a request smuggling vector: answer 400 and close (RFC 9112 s6.1)
                raise h11.RemoteProtocolError(
                    "a request with both Content-Length and Transfer-Encoding is refused (RFC 9112 s6.1)",
                    error_status_hint=400,
                )
            body = bytearray()
            while True:
                part = await _next_event(conn, reader)
                if isinstance(part, h11.Data):
                    body += part.data
                    if len(body) > MAX_BODY:
                        raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
                elif isinstance(part, h11.EndOfMessage):
                    break
                else:
                    return
            request = Request(
                event.method.decode(), event.target.decode(), list(event.headers), bytes(body), reader.at_eof
            )
            response = await handle(request)
            try:
                headers = list(response.headers)
                if response.stream is None:
                    headers.append(("Content-Length", str(len(response.body))))
                writer.write(
                    conn.send(
                        h11.Response(status_code=response.status, headers=headers, reason=_reason(response.status))
                    )
                )
                if response.stream is not None:
                    async for chunk in response.stream:
                        writer.write(conn.send(h11.Data(data=chunk)))
                        try:
                            await asyncio.wait_for(writer.drain(), response.send_timeout)
                        except TimeoutError:
                            raise ConnectionError("the client stopped reading") from None
                elif response.body:
                    writer.write(conn.send(h11.Data(data=response.body)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
            finally:
                # also when the local client or the device went away mid-body:
                # the handler's resources (the device connection) are released
                if response.done is not None:
                    await response.done()
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = exc.error_status_hint or 400
            message = f"{exc}\n".encode()
            try:
                writer.write(
                    conn.send(
                        h11.Response(
                            status_code=status,
                            headers=[("Content-Length", str(len(message))), ("Connection", "close")],
                            reason=_reason(status),
                        )
                    )
                )
                writer.write(conn.send(h11.Data(data=message)))
                writer.write(conn.send(h11.EndOfMessage()))
            except h11.LocalProtocolError:
                pass
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


class HTTPClient:
    """One HTTP/1.1 client connection (keep-alive) over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host
        self.conn = h11.Connection(h11.CLIENT)

    @property
    def usable(self) -> bool:
        return self.conn.our_state is h11.IDLE and not self.writer.is_closing() and not self.reader.at_eof()

    async def request(
        self, request: Request, authorization: str | None = None
    ) -> tuple[int, list[tuple[str, str]], AsyncIterator[bytes]]:
        """Send ``request``; return the status, headers and a body iterator
        (which must be consumed before the next request). ``authorization``
        replaces any ``Authorization`` header of the request."""
        # the gateway holds the whole body already: no 100-continue toward the device
        dropped = {b"host", b"content-length", b"connection", b"transfer-encoding", b"callhome-wait", b"expect"}
        if authorization is not None:
            dropped.add(b"authorization")
        headers = [(k, v) for k, v in request.headers if k.lower() not in dropped]
        if authorization is not None:
            headers.append((b"Authorization", authorization.encode("latin-1")))
        headers = [(b"Host", self.host.encode()), *headers, (b"Content-Length", str(len(request.body)).encode())]
        self.writer.write(self.conn.send(h11.Request(method=request.method, target=request.target, headers=headers)))
        if request.body:
            self.writer.write(self.conn.send(h11.Data(data=request.body)))
        self.writer.write(self.conn.send(h11.EndOfMessage()))
        await self.writer.drain()
        event = await _next_event(self.conn, self.reader)
        while isinstance(event, h11.InformationalResponse):  # 1xx before the answer
            event = await _next_event(self.conn, self.reader)
        if isinstance(event, h11.ConnectionClosed):
            raise ConnectionError("the device closed the connection")
        if not isinstance(event, h11.Response):
            raise ConnectionError(f"unexpected HTTP event from the device: {type(event).__name__}")
        out_headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in event.headers
            if k.lower() not in (b"content-length", b"transfer-encoding", b"connection", b"keep-alive")
        ]
        return event.status_code, out_headers, self._body()

    async def _body(self) -> AsyncIterator[bytes]:
        while True:
            event = await _next_event(self.conn, self.reader)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                    self.conn.start_next_cycle()
                return
            else:
                raise ConnectionError("the device closed the connection mid-response")

    def close(self) -> None:
        self.writer.close()
