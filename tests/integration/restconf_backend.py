"""A small RESTCONF server (RFC 8040) for the tests: the HTTP side of a device.

There is no installable third-party RESTCONF server here, so the device is
Debian's stunnel4 (the real TLS server, mutual TLS) in front of this backend.
It speaks HTTP/1.1 with keep-alive, serves ``/.well-known/host-meta``, GET
(JSON or XML by ``Accept``), PUT, PATCH, POST and DELETE on a small datastore,
answers errors with RFC 8040 ``ietf-restconf:errors`` bodies, requires HTTP
Basic when configured, and streams a large resource.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

JSON = "application/yang-data+json"
XML = "application/yang-data+xml"
NAMESPACES = {"ietf-system": "urn:ietf:params:xml:ns:yang:ietf-system", "example-big": "urn:example:big"}
BIG_CHUNK = b"0123456789abcdef" * 4096  # 64 KiB


def initial_data(hostname: str) -> dict[str, Any]:
    return {
        "ietf-system:system": {"hostname": hostname, "contact": "noc@example.net", "location": "lab"},
        "ietf-system:system-state": {"platform": {"os-name": "restconf-test-backend", "os-release": "1.0"}},
    }


def to_xml(name: str, value: Any, namespace: str | None = None) -> str:
    attrs = f' xmlns="{namespace}"' if namespace else ""
    if isinstance(value, dict):
        inner = "".join(to_xml(k.split(":")[-1], v) for k, v in value.items())
        return f"<{name}{attrs}>{inner}</{name}>"
    if isinstance(value, list):
        return "".join(to_xml(name, v, namespace) for v in value)
    return f"<{name}{attrs}>{escape(str(value))}</{name}>"


class Backend:
    """The device's datastore and request log, shared by its handler threads."""

    def __init__(self, hostname: str, *, basic_auth: tuple[str, str] | None = None, big_size: int = 0) -> None:
        self.data = initial_data(hostname)
        self.basic_auth = basic_auth
        self.big_size = big_size
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        self.server: ThreadingHTTPServer | None = None
        self.port = 0

    def start(self) -> Backend:
        backend = self

        class Handler(_Handler):
            pass

        Handler.backend = backend
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True, name="restconf-backend").start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    backend: Backend
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def log_message(self, format: str, *args: Any) -> None:
        return

    # -- helpers ------------------------------------------------------------------

    def _media(self) -> str:
        return XML if "xml" in (self.headers.get("Accept") or "") else JSON

    def _send(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, tag: str, message: str, path: str | None = None) -> None:
        entry = {
            "error-type": "protocol" if status != 409 else "application",
            "error-tag": tag,
            "error-message": message,
        }
        if path:
            entry["error-path"] = path
        if self._media() == XML:
            inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in entry.items())
            body = f'<errors xmlns="urn:ietf:params:xml:ns:yang:ietf-restconf"><error>{inner}</error></errors>'
            self._send(status, body.encode(), XML)
        else:
            self._send(status, json.dumps({"ietf-restconf:errors": {"error": [entry]}}).encode(), JSON)

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw or b"null")

    def _target(self) -> tuple[str, list[str]] | None:
        path = self.path.split("?")[0]
        if not path.startswith("/restconf/data"):
            return None
        parts = [p for p in path[len("/restconf/data") :].split("/") if p]
        if not parts:
            return "", []
        return parts[0], parts[1:]

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization")
        with self.backend.lock:
            self.backend.requests.append((self.command, self.path, auth))
        if self.backend.basic_auth is None:
            return True
        user, password = self.backend.basic_auth
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if auth == expected:
            return True
        self._error(401, "access-denied", "authentication required")
        return False

    # -- methods --------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._authorized():
            return
        if self.path == "/.well-known/host-meta":
            body = (
                b'<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0"><Link rel="restconf" href="/restconf"/></XRD>'
            )
            self._send(200, body, "application/xrd+xml")
            return
        target = self._target()
        if target is None:
            self._error(404, "invalid-value", "unknown resource", self.path)
            return
        top, rest = target
        if top == "example-big:blob":
            self._stream_big()
            return
        with self.backend.lock:
            data = copy.deepcopy(self.backend.data)
        if not top:
            value: Any = data
            name = "ietf-restconf:data"
        else:
            if top not in data:
                self._error(404, "invalid-value", f"{top} does not exist", f"/{top}")
                return
            value, name = data[top], top
            for leaf in rest:
                if not isinstance(value, dict) or leaf not in value:
                    self._error(404, "invalid-value", f"{leaf} does not exist", f"/{top}/{'/'.join(rest)}")
                    return
                value, name = value[leaf], f"{top.split(':')[0]}:{leaf}"
        if self._media() == XML:
            module, _, local = name.partition(":")
            self._send(200, to_xml(local or module, value, NAMESPACES.get(module)).encode(), XML)
        else:
            self._send(200, json.dumps({name: value}).encode(), JSON)

    def _stream_big(self) -> None:
        size = self.backend.big_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        sent = 0
        while sent < size:
            chunk = BIG_CHUNK[: min(len(BIG_CHUNK), size - sent)]
            self.wfile.write(chunk)
            sent += len(chunk)

    def _writable(self, top: str) -> bool:
        if top.endswith("-state"):
            self._error(405, "operation-not-supported", f"{top} is read-only state", f"/{top}")
            return False
        return True

    def do_PUT(self) -> None:
        if not self._authorized():
            return
        target = self._target()
        body = self._read_body()
        if not target or not target[0] or not isinstance(body, dict) or target[0] not in body:
            self._error(400, "malformed-message", "PUT needs {<module:name>: ...} matching the URL")
            return
        top, _ = target
        if not self._writable(top):
            return
        with self.backend.lock:
            existed = top in self.backend.data
            self.backend.data[top] = body[top]
        self._send(204 if existed else 201)

    def do_PATCH(self) -> None:
        if not self._authorized():
            return
        target = self._target()
        body = self._read_body()
        if not target or not target[0] or not isinstance(body, dict) or target[0] not in body:
            self._error(400, "malformed-message", "PATCH needs {<module:name>: {...}} matching the URL")
            return
        top, _ = target
        if not self._writable(top):
            return
        with self.backend.lock:
            if top not in self.backend.data:
                self._error(404, "invalid-value", f"{top} does not exist", f"/{top}")
                return
            self.backend.data[top].update(body[top])
        self._send(204)

    def do_POST(self) -> None:
        if not self._authorized():
            return
        target = self._target()
        body = self._read_body()
        if target is None or target[0] or not isinstance(body, dict) or len(body) != 1:
            self._error(400, "malformed-message", "POST to /restconf/data needs one {<module:name>: ...}")
            return
        [(top, value)] = body.items()
        with self.backend.lock:
            if top in self.backend.data:
                self._error(409, "data-exists", f"{top} already exists", f"/{top}")
                return
            self.backend.data[top] = value
        self._send(201)

    def do_DELETE(self) -> None:
        if not self._authorized():
            return
        target = self._target()
        if not target or not target[0]:
            self._error(400, "malformed-message", "DELETE needs a resource")
            return
        top, _ = target
        if not self._writable(top):
            return
        with self.backend.lock:
            if top not in self.backend.data:
                self._error(409, "data-missing", f"{top} does not exist", f"/{top}")
                return
            del self.backend.data[top]
        self._send(204)
