"""Client side of a running gateway (``callhome serve``): the control API and
the per-device local endpoints, for the CLI and the Ansible plugins.

Everything here is blocking and uses only the Unix sockets under the
gateway's run directory::

    client = GatewayClient("/run/callhome")
    client.wait("SN-0001", timeout=20)           # deferral: until it calls home
    mgr = client.netconf_manager("SN-0001")      # a standard ncclient Manager
    mgr = connect("SN-0001", "/run/callhome")    # the same in one call
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from ncclient import NCClientError
from ncclient import manager as nc_manager

from ..errors import (
    DeviceNotConnectedError,
    GatewayError,
    GatewayRequestError,
    GatewayUnavailableError,
    TransportError,
    UnknownGatewayDeviceError,
    refusal_from_dict,
)
from ..integrations.netconf import DEFAULT_MAX_MESSAGE_SIZE, manager_over_socket
from ..status import DeviceInfo
from .remote import LocalOpener, SSHGateway, SSHOpener, StreamOpener

__all__ = [
    "DEFAULT_RUN_DIR",
    "DeviceInfo",
    "EventCursor",
    "GatewayClient",
    "UnixHTTPConnection",
    "cluster_client",
    "connect",
]

DEFAULT_RUN_DIR = "/run/callhome"


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a Unix socket (the gateway's control and RESTCONF
    endpoints), on this host or, with ``opener``, on another one."""

    def __init__(self, path: str, timeout: float, *, opener: StreamOpener | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path
        self.opener = opener or LocalOpener()
        self._open_timeout = timeout

    def connect(self) -> None:
        self.sock = self.opener.open(self.path, self._open_timeout)


@dataclass
class EventCursor:
    """Where a consumer of ``GET /events`` is: the last event id it was given
    and the gateway process (``epoch``) that id came from.
    :meth:`GatewayClient.events` moves it; pass it again to resume."""

    since: int | None = None
    epoch: str | None = None


# how often a client looks again for a gateway that is starting
_START_POLL = 0.05


class GatewayClient:
    """Talks to the gateway whose run directory is ``run_dir``.

    ``timeout`` bounds each request.  ``start_wait`` is how long a request
    waits for the gateway's control socket to appear and answer (a gateway
    started just before, ``callhome serve &``); 0 fails at once.  The gateway
    creates ``control.sock`` last, once every listener and device endpoint is
    up."""

    def __init__(
        self,
        run_dir: str | Path = DEFAULT_RUN_DIR,
        *,
        timeout: float = 30.0,
        start_wait: float = 0.0,
        opener: StreamOpener | None = None,
        remotes: Mapping[str, SSHGateway | None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.timeout = timeout
        self.start_wait = start_wait
        self.opener = opener or LocalOpener()
        # cluster members' hosts, by the name they announce: how to reach each (None: this host)
        self.remotes = dict(remotes or {})
        self._cluster: dict[str, Any] | None = None
        self._openers: dict[str, StreamOpener] = {}

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "control.sock"

    def endpoint(self, device: str, kind: str) -> Path:
        """Path of ``device``'s local endpoint ``kind`` (``netconf`` or ``restconf``)."""
        return self.run_dir / "devices" / device / f"{kind}.sock"

    # -- control API ------------------------------------------------------------------------

    def _connect(self, timeout: float | None, start_wait: float | None) -> UnixHTTPConnection:
        """A connection to the control socket, waiting up to ``start_wait``
        (default: the client's) for the gateway to start."""
        sock_path = self.opener.describe(str(self.control_socket))
        deadline = time.monotonic() + (self.start_wait if start_wait is None else start_wait)
        while True:
            conn = UnixHTTPConnection(
                str(self.control_socket), self.timeout if timeout is None else timeout, opener=self.opener
            )
            try:
                conn.connect()
                return conn
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                conn.close()
                if time.monotonic() >= deadline:
                    raise GatewayUnavailableError(
                        socket_path=sock_path, reason=f"{exc.strerror}; is 'callhome serve' running with this run_dir?"
                    ) from exc
                time.sleep(_START_POLL)
            except PermissionError as exc:
                conn.close()
                raise GatewayUnavailableError(
                    socket_path=sock_path, reason="permission denied (see socket_mode in the gateway config)"
                ) from exc
            except OSError as exc:
                conn.close()
                raise GatewayUnavailableError(socket_path=sock_path, reason=str(exc) or type(exc).__name__) from exc

    def get(self, path: str, timeout: float | None = None, *, start_wait: float | None = None) -> tuple[int, Any]:
        """GET ``path`` on the control socket; the status and the decoded body
        (JSON when the gateway sent JSON, else text).  Waits up to
        ``start_wait`` (default: the client's) for the gateway to start."""
        sock_path = self.opener.describe(str(self.control_socket))
        conn = self._connect(timeout, start_wait)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read().decode()
            ctype = response.getheader("Content-Type") or ""
        except TimeoutError as exc:
            raise GatewayUnavailableError(socket_path=sock_path, reason=f"no answer to {path} in time") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise GatewayUnavailableError(socket_path=sock_path, reason=str(exc) or type(exc).__name__) from exc
        finally:
            conn.close()
        if "json" in ctype:
            try:
                return response.status, json.loads(body)
            except ValueError as exc:
                raise GatewayUnavailableError(socket_path=sock_path, reason=f"invalid JSON for {path}") from exc
        return response.status, body

    def _device_get(
        self, device: str, suffix: str = "", timeout: float | None = None, start_wait: float | None = None
    ) -> DeviceInfo:
        path = f"/devices/{quote(device, safe='')}{suffix}"
        status, body = self.get(path, timeout, start_wait=start_wait)
        return self._device_info(status, body, path, device)

    def _device_info(self, status: int, body: Any, path: str, device: str) -> DeviceInfo:
        if status == 404:
            raise UnknownGatewayDeviceError(device=device, run_dir=str(self.run_dir))
        if status != 200 or not isinstance(body, dict):
            detail = body.get("error", body) if isinstance(body, dict) else body
            raise GatewayRequestError(status=status, path=path, detail=str(detail))
        return DeviceInfo.from_json(body)

    def devices(self) -> list[DeviceInfo]:
        status, body = self.get("/devices")
        if status != 200:
            raise GatewayRequestError(status=status, path="/devices", detail=str(body))
        return [DeviceInfo.from_json(item) for item in body]

    def device(self, device: str) -> DeviceInfo:
        return self._device_get(device)

    def wait(self, device: str, timeout: float) -> DeviceInfo:
        """Block until ``device`` is connected (at most ``timeout`` s, which
        includes waiting for a gateway that is starting); raise
        :class:`DeviceNotConnectedError` when it did not call home in time, or
        the refusal (:class:`AuthenticationFailedError`,
        :class:`CertificateRejectedError`, :class:`RevokedCertificateError`,
        with ``refused_at``) when it called and the gateway refused it."""
        started = time.monotonic()
        info = self._device_get(device, start_wait=max(self.start_wait, timeout))  # the gateway is up
        if info.connected:
            return info
        remaining = max(0.0, timeout - (time.monotonic() - started))
        path = f"/devices/{quote(device, safe='')}/wait?timeout={remaining!r}"
        status, body = self.get(path, remaining + 10, start_wait=0)
        if status == 504:
            raise DeviceNotConnectedError(device=device, timeout=timeout)
        if status == 502 and isinstance(body, dict) and isinstance(body.get("refusal"), dict):
            refusal = refusal_from_dict(body["refusal"])
            if refusal is not None:
                raise refusal  # the device called during the wait and was refused
        return self._device_info(status, body, path, device)

    def rejected(self) -> list[dict[str, Any]]:
        status, body = self.get("/rejected")
        if status != 200:
            raise GatewayRequestError(status=status, path="/rejected", detail=str(body))
        return list(body)

    def events(
        self,
        cursor: EventCursor | None = None,
        *,
        types: Sequence[str] = (),
        follow: bool = False,
        start_wait: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The gateway's events (``GET /events``, docs/events.md), one dict per
        NDJSON line: events (with an ``id``) and notices for this stream
        (``events-dropped``, ``gateway-restarted``: no ``id``).

        From ``cursor`` (default: every event the gateway holds), which is
        moved past each event yielded, so that the same cursor resumes after a
        lost connection or a gateway restart.  ``types`` keeps only those
        event types.  Without ``follow`` the iterator ends at the newest event
        held when it started; with it, it waits for new events (no timeout)
        and ends when the gateway stops or the connection is lost."""
        cursor = cursor if cursor is not None else EventCursor()
        query: dict[str, str] = {"follow": "true" if follow else "false"}
        if cursor.since is not None:
            query["since"] = str(cursor.since)
        if cursor.epoch is not None:
            query["epoch"] = cursor.epoch
        if types:
            query["types"] = ",".join(types)
        path = "/events?" + urlencode(query)
        sock_path = self.opener.describe(str(self.control_socket))
        conn = self._connect(None if follow else self.timeout, start_wait)
        try:
            try:
                conn.request("GET", path)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise GatewayUnavailableError(socket_path=sock_path, reason=str(exc) or type(exc).__name__) from exc
            if response.status != 200:
                body = response.read().decode(errors="replace")
                try:
                    detail = str(json.loads(body).get("error", body))
                except (ValueError, AttributeError):
                    detail = body
                raise GatewayRequestError(status=response.status, path=path, detail=detail)
            # the answer's epoch is adopted with its first line: if the gateway
            # restarted, that line says so, and the old id must not be resumed
            # under the new epoch should the connection drop before it is read
            epoch = response.getheader("Callhome-Events-Epoch") or cursor.epoch
            adopted = False
            while True:
                try:
                    line = response.readline()
                except (OSError, http.client.HTTPException):
                    return  # the gateway went away mid-stream: the cursor says where to resume
                if not line:
                    if not adopted:
                        cursor.epoch = epoch
                    return
                try:
                    item = json.loads(line)
                except ValueError as exc:
                    raise GatewayUnavailableError(socket_path=sock_path, reason=f"invalid event line {line!r}") from exc
                if not adopted:
                    adopted = True
                    cursor.epoch = epoch
                if item.get("type") == "gateway-restarted":
                    cursor.since, cursor.epoch = 0, item.get("epoch", epoch)
                elif isinstance(item.get("id"), int):
                    cursor.since = item["id"]
                yield item
        finally:
            conn.close()

    def metrics(self) -> str:
        status, body = self.get("/metrics")
        if status != 200:
            raise GatewayRequestError(status=status, path="/metrics", detail=str(body))
        return str(body)

    # -- a cluster (docs/scale.md) --------------------------------------------------------------

    def cluster(self) -> dict[str, Any] | None:
        """``GET /gateways`` (``{"self": id, "members": [...]}``), or ``None``
        from a gateway that is not a cluster member.  Cached."""
        if self._cluster is None:
            status, body = self.get("/gateways")
            self._cluster = body if status == 200 and isinstance(body, dict) else {}
        return self._cluster or None

    def for_device(self, info: DeviceInfo) -> GatewayClient:
        """The client of the gateway holding the device ``info`` describes:
        this one, another worker on the same host (its own run directory), or
        a gateway on another host (over SSH, as ``remotes`` says).  Raises
        :class:`GatewayRequestError` when that host is not in ``remotes``."""
        cluster = self.cluster() if info.gateway else None
        if cluster is None or info.gateway == cluster.get("self"):
            return self
        members = {m["gateway"]: m for m in cluster.get("members", [])}
        member = members.get(info.gateway)
        if member is None:
            self._cluster = None  # a member that appeared since: ask again next time
            cluster = self.cluster() or {}
            member = {m["gateway"]: m for m in cluster.get("members", [])}.get(info.gateway)
        if member is None:
            raise GatewayRequestError(
                status=404,
                path="/gateways",
                detail=f"device {info.name} is on gateway {info.gateway}, which is not live",
            )
        mine = members.get(cluster.get("self", ""), {})
        if member["host"] == mine.get("host"):
            opener: StreamOpener = self.opener  # another worker on the same host
        elif member["host"] in self.remotes:
            opener = self._opener_for(member["host"])
        else:
            raise GatewayRequestError(
                status=404,
                path="/gateways",
                detail=f"device {info.name} is on gateway {info.gateway} at host {member['host']}: add that host "
                "to the gateways this client may reach (the inventory plugin's 'gateways')",
            )
        return GatewayClient(member["run_dir"], timeout=self.timeout, opener=opener, remotes=self.remotes)._sharing(
            self
        )

    def _opener_for(self, host: str) -> StreamOpener:
        if host not in self._openers:
            ssh = self.remotes.get(host)
            self._openers[host] = LocalOpener() if ssh is None else SSHOpener(ssh)
        return self._openers[host]

    def _sharing(self, other: GatewayClient) -> GatewayClient:
        self._openers = other._openers  # one SSH connection per host for every client derived from one
        return self

    # -- local endpoints --------------------------------------------------------------------

    def connect_endpoint(self, device: str, kind: str, timeout: float | None = None) -> socket.socket:
        """A connected socket on ``device``'s local ``kind`` endpoint."""
        path = self.endpoint(device, kind)
        try:
            sock: socket.socket = self.opener.open(str(path), self.timeout if timeout is None else timeout)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            if isinstance(self.opener, LocalOpener) and not self.control_socket.exists():
                raise GatewayUnavailableError(
                    socket_path=str(self.control_socket), reason=exc.strerror or str(exc)
                ) from exc
            raise UnknownGatewayDeviceError(device=device, run_dir=self.opener.describe(str(self.run_dir))) from exc
        except OSError as exc:
            raise GatewayUnavailableError(
                socket_path=self.opener.describe(str(path)), reason=exc.strerror or str(exc)
            ) from exc
        return sock

    def netconf_manager(
        self,
        device: str,
        *,
        wait: float = 0.0,
        timeout: float = 30.0,
        device_params: Mapping[str, Any] | None = None,
        on_close: Callable[[], None] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> nc_manager.Manager:
        """A standard ncclient ``Manager`` on a new NETCONF session with
        ``device`` through the gateway, after waiting up to ``wait`` s for the
        device to call home (``0``: it must be connected now, or the gateway's
        own deferral applies). ``timeout`` is the Manager's RPC timeout.

        Unlike ``ncclient.manager.connect_uds`` the session has no 100 ms send
        tick (see :mod:`callhome_transport.integrations.netconf`). ``on_close`` runs once
        when the session ends, whichever side ended it.  A message from the
        device over ``max_message_size`` bytes closes the session with
        :class:`~callhome_transport.errors.MessageTooLargeError`."""
        started = time.monotonic()
        info = self.wait(device, wait) if wait > 0 else self.device(device)
        holder = self.for_device(info)
        if holder is not self:
            return holder.netconf_manager(
                device,
                wait=max(0.0, wait - (time.monotonic() - started)),
                timeout=timeout,
                device_params=device_params,
                on_close=on_close,
                max_message_size=max_message_size,
            )
        if info.transport not in ("ssh", "tls"):
            raise GatewayRequestError(
                status=409,
                path=str(self.endpoint(device, "netconf")),
                detail=f"device {device} calls home over {info.transport}; NETCONF is for ssh and tls devices",
            )
        hello_timeout = max(5.0, wait - (time.monotonic() - started)) if wait > 0 else timeout
        sock = self.connect_endpoint(device, "netconf", hello_timeout)
        sock.settimeout(None)
        asked_at = time.time()
        try:
            return manager_over_socket(
                sock,
                device=device,
                timeout=timeout,
                hello_timeout=hello_timeout,
                device_params=device_params,
                on_close=on_close,
                max_message_size=max_message_size,
                hello_settle=0.0,  # the gateway answers our hello and keeps the device's settle itself
            )
        except (NCClientError, OSError) as exc:
            # the gateway closed the session before or just after the hello:
            # its record of the device says why
            reason = self._session_error(device, asked_at) or str(exc) or type(exc).__name__
            raise TransportError(
                f"NETCONF session with device {device} through the gateway at {self.run_dir} failed: {reason}",
                device=device,
            ) from exc

    def _session_error(self, device: str, since: float) -> str | None:
        """Why the gateway's last local session with ``device`` failed, if
        that happened at or after ``since`` (``time.time()``)."""
        try:
            info = self.device(device)
        except GatewayError:
            return None
        at = info.last_session_error_at
        return info.last_session_error if at is not None and at >= since - 1.0 else None


def connect(
    device: str,
    run_dir: str | Path | None = None,
    *,
    wait: float = 0.0,
    timeout: float = 30.0,
    device_params: Mapping[str, Any] | None = None,
) -> nc_manager.Manager:
    """A standard ncclient ``Manager`` on a new NETCONF session with
    ``device`` through the gateway whose run directory is ``run_dir``
    (default: ``$CALLHOME_RUN_DIR``, else ``/run/callhome``)::

        from callhome_transport import gateway

        with gateway.connect("SN-0001") as m:
            print(m.get_config(source="running"))

    The fast path: requests are written at once, where
    ``ncclient.manager.connect_uds`` on the same socket waits for ncclient's
    100 ms send tick on every RPC.  ``wait``: seconds to wait for the device to
    call home first (``0``: the gateway's ``deferral_timeout`` applies);
    ``timeout``: the Manager's RPC timeout.  Raises
    :class:`GatewayUnavailableError`, :class:`UnknownGatewayDeviceError`,
    :class:`DeviceNotConnectedError` (or the refusal of the device), and
    :class:`TransportError` with the gateway's reason when the session fails."""
    directory = run_dir or os.environ.get("CALLHOME_RUN_DIR") or DEFAULT_RUN_DIR
    return GatewayClient(directory).netconf_manager(device, wait=wait, timeout=timeout, device_params=device_params)


def cluster_client(
    run_dir: str | Path | None,
    remotes: Mapping[str, SSHGateway | None],
    *,
    timeout: float = 30.0,
    hosts: Sequence[str] = (),
) -> GatewayClient:
    """A client of the first cluster member that answers: the gateway whose
    ``run_dir`` is on this host (when it has a ``control.sock``), then those
    of ``remotes`` (in order, or ``hosts``' order), over SSH at their
    announced ``run_dir`` (the ``run_dir`` each entry gives, else
    ``DEFAULT_RUN_DIR``).  A device is then reached on whichever member holds
    it (:meth:`GatewayClient.for_device`).  Raises
    :class:`GatewayUnavailableError` when none answers."""
    openers: dict[str, StreamOpener] = {}
    candidates: list[GatewayClient] = []
    if run_dir is not None:
        candidates.append(GatewayClient(run_dir, timeout=timeout, remotes=remotes))
    for host in hosts or list(remotes):
        ssh = remotes.get(host)
        if ssh is None:
            continue
        opener = openers.setdefault(host, SSHOpener(ssh))
        candidates.append(GatewayClient(ssh.run_dir, timeout=timeout, opener=opener, remotes=remotes))
    errors = []
    for candidate in candidates:
        candidate._openers = openers
        try:
            candidate.get("/gateways", start_wait=0)
        except GatewayUnavailableError as exc:
            errors.append(str(exc))
            continue
        return candidate
    raise GatewayUnavailableError(
        socket_path=", ".join(c.opener.describe(str(c.control_socket)) for c in candidates) or "(none configured)",
        reason="; ".join(errors) or "no gateway configured",
    )
