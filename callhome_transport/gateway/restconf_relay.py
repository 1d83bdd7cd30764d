"""The gateway's RESTCONF relay (``restconf.sock``): each local HTTP/1.1
request, parsed with h11, goes over the device's call-home connection, one
at a time per device; a device that has not called answers 504 with an RFC
8040 error body after the deferral timeout."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Protocol

import h11

from ..errors import CallHomeError, DeviceNotConnectedError
from ..identity.inventory import Inventory
from ..server.core import AsyncCallHomeServer
from .control import seconds
from .http import HTTPClient, Request, Response

__all__ = ["DeviceHTTP", "RelayHost"]

log = logging.getLogger(__name__)


class RelayHost(Protocol):
    """What the relay reads from the gateway."""

    server: AsyncCallHomeServer
    inventory: Inventory

    @property
    def deferral_timeout(self) -> float: ...

    def touch(self, device: str) -> None: ...


class DeviceHTTP:
    """The device side of the RESTCONF relay: one keep-alive HTTP connection
    over the device's call-home connection, one request at a time."""

    def __init__(self, gateway: RelayHost, device: str) -> None:
        self.gateway = gateway
        self.device = device
        self.lock = asyncio.Lock()
        self.client: HTTPClient | None = None

    async def _connect(self, wait: float) -> HTTPClient:
        if self.client is not None and self.client.usable:
            return self.client
        if self.client is not None:
            self.client.close()
        ours, theirs = socket.socketpair()
        try:
            await self.gateway.server.open_restconf(self.device, wait, local=ours)
        except BaseException:
            ours.close()
            theirs.close()
            raise
        reader, writer = await asyncio.open_connection(sock=theirs)
        self.client = HTTPClient(reader, writer, self.device)
        return self.client

    def _wait(self, request: Request) -> float:
        """How long this request may wait for the device: ``deferral_timeout``,
        or less if the client says so (``Callhome-Wait: <seconds>``)."""
        wait = self.gateway.deferral_timeout
        asked = seconds(request.header(WAIT_HEADER))
        if asked is not None:
            wait = min(wait, max(0.0, asked))
        return wait

    async def relay(self, request: Request) -> Response:
        loop = asyncio.get_running_loop()
        wait = self._wait(request)
        deadline = loop.time() + wait  # the lock (another request in flight) counts too
        try:
            await asyncio.wait_for(self.lock.acquire(), wait)
        except TimeoutError:
            return _restconf_error(
                504, "resource-denied", f"device {self.device} busy with another request for {wait:g} s"
            )
        try:
            client = await self._connect(max(0.0, deadline - loop.time()))
            late = loop.time() - (deadline - wait) > LATE_AFTER
            if late and request.method not in IDEMPOTENT_METHODS and request.client_gone():
                # the local client gave up while we waited: a late PATCH/POST
                # must not reach the device behind its back
                self.lock.release()
                return _restconf_error(503, "operation-failed", f"the local client left before device {self.device}")
            device = self.gateway.inventory.get(self.device)
            auth = device.http_auth.header() if device is not None and device.http_auth is not None else None
            status, headers, body = await client.request(request, authorization=auth)
        except DeviceNotConnectedError:
            self.lock.release()
            return _restconf_error(504, "resource-denied", f"device {self.device} did not call home within {wait:g} s")
        except (ConnectionError, OSError, CallHomeError) as exc:
            self.lock.release()
            if self.client is not None:
                self.client.close()
                self.client = None
            return _restconf_error(502, "operation-failed", f"device {self.device}: {exc}")
        except BaseException:
            self.lock.release()
            raise
        self.gateway.touch(self.device)
        finished = False

        async def stream() -> AsyncIterator[bytes]:
            nonlocal finished
            async for chunk in body:
                self.gateway.server.metrics.inc("callhome_bytes_relayed_total", len(chunk), endpoint="restconf")
                yield chunk
            finished = True

        async def drain() -> None:
            drained = 0
            async for chunk in body:
                drained += len(chunk)
                if drained > DRAIN_MAX_BYTES:
                    raise ConnectionError(f"more than {DRAIN_MAX_BYTES} bytes left in an abandoned response")

        async def done() -> None:
            try:
                if not finished:
                    # the local client left mid-body: read the rest from the device
                    # (discarded, within a budget) so that its one connection stays
                    # in step; a stalled or endless body costs the connection instead
                    await asyncio.wait_for(drain(), DRAIN_MAX_SECONDS)
            except (ConnectionError, OSError, h11.ProtocolError, TimeoutError) as exc:
                log.info("device=%s event=restconf-connection-dropped reason=%s", self.device, exc)
                if self.client is not None:
                    self.client.close()
                    self.client = None
            finally:
                self.lock.release()

        return Response(status, headers, stream=stream(), done=done)


LATE_AFTER = 0.05  # seconds: a request that waited longer for the device was deferred
IDEMPOTENT_METHODS = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")
DRAIN_MAX_BYTES = 16 * 1024 * 1024  # what we read of an abandoned response to keep the connection
DRAIN_MAX_SECONDS = 5.0
WAIT_HEADER = "Callhome-Wait"  # request header: seconds the relay may wait for the device (not relayed)


def _restconf_error(status: int, tag: str, message: str) -> Response:
    body = {
        "ietf-restconf:errors": {"error": [{"error-type": "transport", "error-tag": tag, "error-message": message}]}
    }
    return Response(status, [("Content-Type", "application/yang-data+json")], (json.dumps(body) + "\n").encode())
