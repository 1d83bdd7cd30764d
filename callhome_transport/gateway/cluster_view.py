"""The control API of a cluster member: answers about every gateway's
devices, from the shared registry (docs/scale.md).

``GET /devices``, ``/devices/NAME`` and ``/devices/NAME/wait`` merge this
gateway's own records (inventory, rejections, reconnects) with where each
device lives now (``gateway``: the id of the member holding it; ``state``
``connected`` wherever that is).  ``GET /gateways`` lists the live members
with the host and run directory clients reach them at.  Every other route is
the gateway's own (:mod:`.control`).  When Redis does not answer, the
gateway answers for itself and says so (``cluster`` in the ``/gateways``
answer, the ``Callhome-Cluster: unavailable`` header).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ..errors import REFUSAL_ERRORS, DeviceNotConnectedError, refusal_to_dict
from ..status import DeviceInfo
from . import control
from .cluster import ClusterMember, Placement
from .http import Request, Response, json_response

if TYPE_CHECKING:
    from .service import Gateway

__all__ = ["ClusterView"]

log = logging.getLogger(__name__)

UNAVAILABLE_HEADER = ("Callhome-Cluster", "unavailable")
REFUSALS = tuple(REFUSAL_ERRORS.values())


class ClusterView:
    """Cluster-wide answers for one gateway's control socket."""

    def __init__(self, gateway: Gateway, cluster: ClusterMember) -> None:
        self.gateway = gateway
        self.cluster = cluster

    async def handle(self, request: Request) -> Response:
        """The cluster's answer to ``request``, or the gateway's own."""
        if request.method == "GET":
            parts = urlsplit(request.target)
            answer = await self.answer([p for p in parts.path.split("/") if p], parse_qs(parts.query))
            if answer is not None:
                return answer
        return await control.handle(self.gateway, request)

    async def answer(self, path: list[str], query: dict[str, list[str]]) -> Response | None:
        """The response for ``path``, or ``None`` when it is a local question
        (rejected attempts, blocks, metrics)."""
        if path == ["gateways"]:
            return await self._gateways()
        if path == ["devices"]:
            placements = await self._placements()
            records = [self.gateway.record(name) for name in self.gateway.names()]
            merged = [self._merge(r, placements) for r in records if r is not None]
            return self._respond(200, merged, placements is None)
        if len(path) in (2, 3) and path[0] == "devices":
            record = self.gateway.record(path[1])
            if record is None:
                return None  # the gateway's own 404
            if len(path) == 3 and path[2] == "wait":
                return await self._wait(record, query)
            if len(path) == 2:
                placement, unavailable = await self._placement(record.name)
                return self._respond(
                    200, self._merge(record, {} if placement is None else {record.name: placement}), unavailable
                )
        return None

    def _respond(self, status: int, body: Any, unavailable: bool) -> Response:
        response = json_response(status, body)
        if unavailable:
            response.headers.append(UNAVAILABLE_HEADER)
        return response

    async def _placements(self) -> dict[str, Placement] | None:
        try:
            return await self.cluster.placements()
        except Exception as exc:
            log.debug("cluster: cannot list placements: %s", exc)
            return None

    async def _placement(self, device: str) -> tuple[Placement | None, bool]:
        try:
            return await self.cluster.placement(device), False
        except Exception as exc:
            log.debug("cluster: cannot read %s's placement: %s", device, exc)
            return None, True

    def _merge(self, record: DeviceInfo, placements: dict[str, Placement] | None) -> dict[str, Any]:
        data = record.as_dict()
        if record.connected:
            data["gateway"] = self.cluster.config.gateway_id
            return data
        placement = (placements or {}).get(record.name)
        if placement is not None and placement.gateway != self.cluster.config.gateway_id:
            data.update(
                state="connected",
                gateway=placement.gateway,
                peer_address=placement.peer,
                connected_since=placement.connected_since,
                local_sessions=0,
                last_reason=None,
            )
        return data

    async def _wait(self, record: DeviceInfo, query: dict[str, list[str]]) -> Response | None:
        timeout = control.seconds(query.get("timeout", ["60"])[0])
        if timeout is None or not 0 <= timeout <= control.WAIT_TIMEOUT_MAX:
            return None  # the gateway's own answer (400)
        if record.connected:
            return json_response(200, self._merge(record, {}))
        name = record.name
        local = asyncio.ensure_future(self.gateway.wait_for(name, timeout))
        elsewhere = asyncio.ensure_future(self.cluster.wait_elsewhere(name, timeout))
        try:
            pending = {local, elsewhere}
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if local in done and local.exception() is None:
                    return json_response(200, self._merge(self.gateway.record(name) or record, {}))
                refused = local.exception() if local in done else None
                if isinstance(refused, REFUSALS):
                    # it called here during the wait and was refused: the same inventory refuses it everywhere
                    body = {"error": str(refused), "device": name, "refusal": refusal_to_dict(refused)}
                    return json_response(502, body)
                found = elsewhere.result() if elsewhere in done else None
                if found is not None:
                    return json_response(200, self._merge(record, {name: found}))
        finally:
            for task in (local, elsewhere):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(local, elsewhere, return_exceptions=True)
        error = DeviceNotConnectedError(device=name, timeout=timeout)
        return json_response(504, {"error": str(error), "device": name, "timeout": timeout})

    async def _gateways(self) -> Response:
        me = self.cluster.member
        try:
            members = [asdict(m) for m in await self.cluster.members()]
            state = "up"
        except Exception as exc:
            log.debug("cluster: cannot list members: %s", exc)
            members, state = [asdict(me)], "unavailable"
        return json_response(200, {"self": me.gateway, "cluster": state, "members": members})
