"""RESTCONF call home (RFC 8071 port 4336, RFC 8040) through ``requests``.

The device opens the TCP connection and we are the TLS client, then the HTTP
client.  ``requests`` always dials out, so this module gives it a transport
adapter whose connections are call-home TLS sessions instead::

    session = requests.Session()
    session.mount("https://", server.restconf_adapter(wait_timeout=60))
    session.get("https://SN-0003/restconf/data/ietf-system:system")

The URL's host is the device's *name* in the inventory: nothing is resolved
or dialled.  Three small classes, as in requests-unixsocket: a urllib3
connection whose ``connect()`` takes the device's next identified call-home
stream (waiting for the device to call, up to ``wait_timeout``), a pool per
device, and the adapter.  HTTP/1.1 keep-alive runs over the one connection;
the pool holds one connection per device by default, so concurrent requests
to one device are serialised, and requests to different devices run in
parallel.  A connection the device closed is dropped by urllib3 and the next
request waits for the next call home.

HTTP Basic is added only for devices whose inventory entry configures it, and
only on connections whose certificate identified that device (RFC 8071 C7;
s5 warns about Basic and Digest).
"""

from __future__ import annotations

import json
import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import HTTPError, InvalidURL
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

from ..errors import CallHomeError, DeviceNotConnectedError, RestconfDiscoveryError
from ..identity.inventory import Device, Inventory, Transport

__all__ = [
    "YANG_DATA_JSON",
    "YANG_DATA_XML",
    "CallHomeAdapter",
    "DeviceNotConnected",
    "RestconfClient",
    "RestconfError",
    "RestconfErrorInfo",
    "raise_for_restconf_error",
]

YANG_DATA_JSON = "application/yang-data+json"  # RFC 8040 s11.3.2
YANG_DATA_XML = "application/yang-data+xml"  # RFC 8040 s11.3.1
_RESTCONF_NS = "urn:ietf:params:xml:ns:yang:ietf-restconf"
_XRD_NS = "http://docs.oasis-open.org/ns/xri/xrd-1.0"


class StreamOpener(Protocol):
    """Gives the next identified call-home stream of a device (blocking)."""

    def __call__(self, device: str, timeout: float) -> socket.socket: ...


class DeviceNotConnected(RequestsConnectionError, DeviceNotConnectedError):
    """The device did not call home within the adapter's ``wait_timeout``.

    A ``requests.exceptions.ConnectionError``, so code that handles requests'
    errors handles it, and a :class:`DeviceNotConnectedError`; ``device`` and
    ``timeout`` say which and how long.  It pickles (without the request).
    """

    def __init__(self, device: str, timeout: float, *, request: Any = None) -> None:
        message = f"RESTCONF device {device} did not call home within {timeout:g} s"
        RequestsConnectionError.__init__(self, message, request=request)
        self.message = message
        self._attrs = {"device": device, "timeout": timeout}
        self.device = device
        self.timeout = timeout

    def __reduce__(self) -> tuple[Any, ...]:
        return (DeviceNotConnected, (self.device, self.timeout))

    def __str__(self) -> str:
        return self.message


class CallHomeHTTPConnection(HTTPConnection):
    """A urllib3 connection over a call-home TLS stream of one device.

    The TLS session is already established and verified by the listener, so
    this speaks plain HTTP/1.1 over the relayed plaintext stream."""

    def __init__(
        self,
        *args: Any,
        device: str,
        opener: StreamOpener,
        wait_timeout: float,
        on_new_stream: Callable[[str], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.device = device  # as the inventory spells it (urllib3 lower-cases hosts)
        self._opener = opener
        self._wait_timeout = wait_timeout
        self._on_new_stream = on_new_stream

    def connect(self) -> None:
        device = self.device
        # DeviceNotConnectedError passes through urllib3 untouched (it is no
        # OSError); CallHomeAdapter.send turns it into DeviceNotConnected
        sock = self._opener(device, self._wait_timeout)
        if self.timeout is not None and isinstance(self.timeout, int | float):
            sock.settimeout(self.timeout)
        self.sock = sock
        self._on_new_stream(device)


class CallHomeConnectionPool(HTTPConnectionPool):
    """One device's connections (``maxsize`` of them, blocking when all are busy)."""

    ConnectionCls = CallHomeHTTPConnection


class CallHomeAdapter(HTTPAdapter):
    """A ``requests`` transport adapter over call-home RESTCONF connections.

    Mount it for ``https://``; the host of each URL names the device.  Build it
    with :meth:`callhome_transport.CallHomeServer.restconf_adapter`.
    ``wait_timeout`` bounds the wait for a device to call home (deferral);
    ``connections_per_device`` > 1 spreads concurrent requests over several
    connections when the device opens several.
    """

    def __init__(
        self,
        inventory: Inventory,
        opener: StreamOpener,
        *,
        wait_timeout: float = 60.0,
        connections_per_device: int = 1,
    ) -> None:
        if wait_timeout <= 0:
            raise ValueError(f"wait_timeout must be > 0, not {wait_timeout}")
        if connections_per_device < 1:
            raise ValueError(f"connections_per_device must be >= 1, not {connections_per_device}")
        self.inventory = inventory
        self._opener = opener
        self.wait_timeout = wait_timeout
        self.connections_per_device = connections_per_device
        self._pools: dict[str, CallHomeConnectionPool] = {}
        self._lock = threading.Lock()
        self._roots: dict[str, str] = {}
        super().__init__(max_retries=0)

    # -- requests' extension points -------------------------------------------------

    def get_connection_with_tls_context(
        self,
        request: requests.PreparedRequest,
        verify: Any,
        proxies: Mapping[str, str] | None = None,
        cert: Any = None,
    ) -> HTTPConnectionPool:
        return self._pool(self._device(request.url or ""))

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """TLS is verified by the call-home listener (issuer, identifier, CRL);
        requests' CA-bundle checks do not apply."""

    def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
        device = self.inventory.get(self._device(request.url or ""))
        if device is not None and device.http_auth is not None and "Authorization" not in request.headers:
            request.headers["Authorization"] = device.http_auth.header()

    def request_url(self, request: requests.PreparedRequest, proxies: Mapping[str, str] | None) -> str:
        return request.path_url

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        try:
            return super().send(request, *args, **kwargs)
        except DeviceNotConnectedError as exc:
            raise DeviceNotConnected(exc.device, exc.timeout, request=request) from exc

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
        super().close()

    # -- ours ---------------------------------------------------------------------------

    def device_name(self, name: str) -> str:
        """The inventory's spelling of RESTCONF device ``name`` (host names
        match in any case); :class:`~requests.exceptions.InvalidURL` naming
        ``name`` as given when there is none."""
        device = self.inventory.get(name) or next((d for d in self.inventory if d.name.lower() == name.lower()), None)
        if device is None or device.transport is not Transport.RESTCONF:
            known = sorted(d.name for d in restconf_devices(self.inventory))
            listed = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "") if known else "none"
            raise InvalidURL(
                f"{name!r} is not a RESTCONF device of the inventory ({self.inventory.source}; "
                f"RESTCONF devices: {listed})"
            )
        return device.name

    def _device(self, url: str) -> str:
        # requests has lower-cased the host by now; RestconfClient and
        # restconf_root check the caller's own spelling first
        parts = urlsplit(url)
        device = self.device_name(parts.hostname or "")
        if parts.port is not None:
            raise InvalidURL(f"a call-home URL names the device only, without a port: {url}")
        return device

    def _pool(self, device: str) -> CallHomeConnectionPool:
        with self._lock:
            pool = self._pools.get(device)
            if pool is None:
                pool = CallHomeConnectionPool(
                    host=device,
                    port=443,
                    maxsize=self.connections_per_device,
                    block=True,
                    device=device,
                    opener=self._opener,
                    wait_timeout=self.wait_timeout,
                    on_new_stream=self._forget_root,
                )
                self._pools[device] = pool
            return pool

    def _forget_root(self, device: str) -> None:
        self._roots.pop(device, None)

    def restconf_root(self, session: requests.Session, device: str) -> str:
        """The device's RESTCONF root (RFC 8040 s3.1, ``/.well-known/host-meta``),
        discovered once per connection and cached until the device calls again."""
        device = self.device_name(device)
        root = self._roots.get(device)
        if root is None:
            response = session.get(f"https://{device}/.well-known/host-meta", headers={"Accept": "application/xrd+xml"})
            response.raise_for_status()
            root = _root_from_host_meta(response.text, device=device)
            self._roots[device] = root
        return root


def _root_from_host_meta(text: str, *, device: str = "-") -> str:
    try:
        doc = ET.fromstring(text)
    except ET.ParseError as exc:
        raise RestconfDiscoveryError(device=device, reason=f"host-meta is not XML: {exc}") from exc
    for link in doc.iter(f"{{{_XRD_NS}}}Link"):
        if link.get("rel") == "restconf" and link.get("href"):
            return str(link.get("href")).rstrip("/")
    raise RestconfDiscoveryError(device=device, reason="host-meta has no <Link rel='restconf'>")


@dataclass(frozen=True, kw_only=True)
class RestconfErrorInfo:
    """One ``error`` entry of an RFC 8040 ``ietf-restconf:errors`` body (s7.1)."""

    error_type: str
    error_tag: str
    error_path: str | None = None
    error_message: str | None = None
    error_app_tag: str | None = None


class RestconfError(HTTPError, CallHomeError):
    """An HTTP error whose body is an RFC 8040 ``ietf-restconf:errors``.

    ``errors`` lists every entry; ``error_tag``, ``error_path`` and
    ``error_message`` are the first one's; ``status_code`` the HTTP status.
    A ``requests`` ``HTTPError`` and a :class:`CallHomeError`; it pickles
    (without the response).
    """

    def __init__(self, status_code: int, errors: list[RestconfErrorInfo], *, response: Any = None) -> None:
        first = errors[0]
        message = (
            f"RESTCONF {status_code} {first.error_tag}"
            + (f" at {first.error_path}" if first.error_path else "")
            + (f": {first.error_message}" if first.error_message else "")
        )
        HTTPError.__init__(self, message, response=response)
        self.message = message
        self._attrs = {"status_code": status_code, "errors": errors}
        self.status_code = status_code
        self.errors = errors
        self.error_tag = first.error_tag
        self.error_path = first.error_path
        self.error_message = first.error_message

    def __reduce__(self) -> tuple[Any, ...]:
        return (RestconfError, (self.status_code, self.errors))

    def __str__(self) -> str:
        return self.message


def parse_restconf_errors(content_type: str, body: bytes) -> list[RestconfErrorInfo]:
    """The entries of an ``ietf-restconf:errors`` body (JSON or XML), or []."""
    if "json" in content_type:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return []
        errors = (data.get("ietf-restconf:errors") or data.get("errors") or {}).get("error", [])
        return [
            RestconfErrorInfo(
                error_type=str(e.get("error-type", "")),
                error_tag=str(e.get("error-tag", "")),
                error_path=e.get("error-path"),
                error_message=e.get("error-message"),
                error_app_tag=e.get("error-app-tag"),
            )
            for e in errors
            if isinstance(e, dict)
        ]
    if "xml" in content_type:
        try:
            doc = ET.fromstring(body)
        except ET.ParseError:
            return []
        ns = {"rc": _RESTCONF_NS}

        def text(el: ET.Element, tag: str) -> str | None:
            found = el.find(f"rc:{tag}", ns)
            return found.text if found is not None else None

        return [
            RestconfErrorInfo(
                error_type=text(e, "error-type") or "",
                error_tag=text(e, "error-tag") or "",
                error_path=text(e, "error-path"),
                error_message=text(e, "error-message"),
                error_app_tag=text(e, "error-app-tag"),
            )
            for e in doc.iter(f"{{{_RESTCONF_NS}}}error")
        ]
    return []


def raise_for_restconf_error(response: requests.Response) -> None:
    """Raise :class:`RestconfError` for an error response carrying an RFC 8040
    errors body, ``requests.HTTPError`` for any other error status."""
    if response.status_code < 400:
        return
    errors = parse_restconf_errors(response.headers.get("Content-Type", ""), response.content)
    if errors:
        raise RestconfError(response.status_code, errors, response=response)
    response.raise_for_status()


class RestconfClient:
    """A small RESTCONF helper over a ``requests`` session that has the
    call-home adapter mounted: discovers the root, builds ``{root}/data/...``
    URLs, sets ``Accept``/``Content-Type`` to yang-data JSON or XML, and raises
    :class:`RestconfError` for RFC 8040 error bodies."""

    def __init__(self, session: requests.Session, device: str, *, encoding: str = "json") -> None:
        if encoding not in ("json", "xml"):
            raise ValueError("encoding must be 'json' or 'xml'")
        adapter = session.get_adapter(f"https://{device}/")
        if not isinstance(adapter, CallHomeAdapter):
            raise TypeError("mount CallHomeServer.restconf_adapter() on the session for https:// first")
        self.session = session
        self.device = adapter.device_name(device)  # InvalidURL naming ``device`` as the caller spelled it
        self.adapter = adapter
        self.media_type = YANG_DATA_JSON if encoding == "json" else YANG_DATA_XML

    @property
    def root(self) -> str:
        """The RESTCONF root path, e.g. ``/restconf``."""
        return self.adapter.restconf_root(self.session, self.device)

    def url(self, path: str = "", *, datastore: str = "data") -> str:
        """``https://<device><root>/data/<path>``."""
        return f"https://{self.device}{self.root}/{datastore}" + (f"/{path.lstrip('/')}" if path else "")

    def request(
        self, method: str, path: str = "", *, body: Any = None, stream: bool = False, **kwargs: Any
    ) -> requests.Response:
        headers = {"Accept": self.media_type, **kwargs.pop("headers", {})}
        data = None
        if body is not None:
            headers.setdefault("Content-Type", self.media_type)
            data = json.dumps(body) if self.media_type == YANG_DATA_JSON and not isinstance(body, str | bytes) else body
        response = self.session.request(method, self.url(path), headers=headers, data=data, stream=stream, **kwargs)
        raise_for_restconf_error(response)
        return response

    def get(self, path: str = "", **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def put(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, body=body, **kwargs)

    def patch(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, body=body, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, body=body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)


def restconf_devices(inventory: Inventory) -> list[Device]:
    return [d for d in inventory if d.transport is Transport.RESTCONF]
