"""The control API of a cluster member: answers about every gateway's
devices, from the shared registry (docs/scale.md).

``GET /devices``, ``/devices/NAME`` and ``/devices/NAME/wait`` merge this
gateway's own records (inventory, rejections, reconnects) with where each
device lives now (``gateway``: the id of the member holding it; ``state``
``connected`` wherever that is).  ``GET /gateways`` lists the live members
with the host and run directory clients reach them at.  When Redis does not
answer, the gateway answers for itself and says so (``cluster`` in the
``/gateways`` answer, the ``Callhome-Cluster: unavailable`` header).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ..errors import REFUSAL_ERRORS, CallHomeError, DeviceNotConnectedError, refusal_to_dict
from .cluster import ClusterMember, Placement
from .http import Response, json_response

if TYPE_CHECKING:
    from .service import DeviceRecord, Gateway

__all__ = ["ClusterView"]

log = logging.getLogger(__name__)

UNAVAILABLE_HEADER = ("Callhome-Cluster", "unavailable")


class ClusterView:
    """Cluster-wide answers for one gateway's control socket."""

    def __init__(self, gateway: Gateway, cluster: ClusterMember) -> None:
        self.gateway = gateway
        self.cluster = cluster

    async def answer(self, path: list[str], query: dict[str, list[str]]) -> Response | None:
        """The response for ``path``, or ``None`` when it is a local question
        (rejected attempts, blocks, metrics)."""
        if path == ["gateways"]:
            return await self._gateways()
        if path == ["devices"]:
            placements = await self._placements()
            records = [self._merge(r, placements) for r in self.gateway.records.values()]
            return self._respond(200, records, placements is None)
        if len(path) in (2, 3) and path[0] == "devices":
            record = self.gateway.records.get(path[1])
            if record is None:
                return json_response(404, {"error": f"no device {path[1]}"})
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

    def _merge(self, record: DeviceRecord, placements: dict[str, Placement] | None) -> dict[str, Any]:
        data = self.gateway._record(record)
        if record.state == "connected":
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

    async def _wait(self, record: DeviceRecord, query: dict[str, list[str]]) -> Response:
        try:
            timeout = float(query.get("timeout", ["60"])[0])
        except ValueError:
            return json_response(400, {"error": "timeout must be a number of seconds"})
        if record.state == "connected":
            return json_response(200, self._merge(record, {}))
        local = asyncio.ensure_future(self.gateway.server.wait_for(record.name, timeout))
        elsewhere = asyncio.ensure_future(self.cluster.wait_elsewhere(record.name, timeout))
        try:
            pending = {local, elsewhere}
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if local in done and local.exception() is None:
                    return json_response(200, self._merge(record, {}))
                refused = local.exception() if local in done else None
                if isinstance(refused, CallHomeError) and isinstance(refused, tuple(REFUSAL_ERRORS.values())):
                    # it called here during the wait and was refused: the same inventory refuses it everywhere
                    body = {"error": str(refused), "device": record.name, "refusal": refusal_to_dict(refused)}
                    return json_response(502, body)
                found = elsewhere.result() if elsewhere in done else None
                if found is not None:
                    return json_response(200, self._merge(record, {record.name: found}))
        finally:
            for task in (local, elsewhere):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(local, elsewhere, return_exceptions=True)
        error = DeviceNotConnectedError(device=record.name, timeout=timeout)
        return json_response(504, {"error": str(error), "device": record.name, "timeout": timeout})

    async def _gateways(self) -> Response:
        me = self.cluster.member
        try:
            members = [asdict(m) for m in await self.cluster.members()]
            state = "up"
        except Exception as exc:
            log.debug("cluster: cannot list members: %s", exc)
            members, state = [asdict(me)], "unavailable"
        return json_response(200, {"self": me.gateway, "cluster": state, "members": members})
