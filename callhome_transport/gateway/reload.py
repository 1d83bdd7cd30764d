"""Planning an inventory reload (SIGHUP), without I/O.

The gateway builds everything a new inventory needs before it changes
anything (the inventory parsed, certificates loaded, TLS contexts built,
socket paths checked, new endpoints bound), then swaps it in one step; a
failure on the way keeps the old state whole.  What changes is decided here,
from the current endpoints and the new inventory alone, so that it is tested
without sockets (tests/unit/test_gateway_reload.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from ..errors import InventoryError

__all__ = ["DeviceEndpoints", "ReloadPlan", "plan_reload"]


@dataclass(frozen=True, kw_only=True)
class DeviceEndpoints:
    """How one device is served: its transport and its local endpoint kinds
    (``netconf``, ``terminal``, ``restconf``)."""

    transport: str
    kinds: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class ReloadPlan:
    """What a reload does, by device name (each tuple sorted)."""

    added: tuple[str, ...] = ()  # new: endpoints and a registry record
    removed: tuple[str, ...] = ()  # gone: disconnected, endpoints and record removed
    replaced: tuple[str, ...] = ()  # transport or endpoints changed: disconnected, endpoints rebuilt
    repaired: tuple[str, ...] = ()  # unchanged, but an endpoint file went missing: endpoints rebuilt
    kept: tuple[str, ...] = ()  # untouched (sessions stay; trust data is refreshed for all)

    @property
    def build(self) -> tuple[str, ...]:
        """Devices that get new endpoints (bound before the swap)."""
        return tuple(sorted(self.added + self.replaced + self.repaired))

    @property
    def retire(self) -> tuple[str, ...]:
        """Devices whose current endpoints are closed after the swap."""
        return tuple(sorted(self.removed + self.replaced + self.repaired))

    @property
    def disconnect(self) -> tuple[str, ...]:
        """Devices whose call-home connections are closed after the swap."""
        return tuple(sorted(self.removed + self.replaced))


def plan_reload(
    current: Mapping[str, DeviceEndpoints],
    wanted: Mapping[str, DeviceEndpoints],
    *,
    source: str,
    explicitly_empty: bool,
    damaged: Collection[str] = (),
) -> ReloadPlan:
    """The plan from the ``current`` devices to the ``wanted`` ones.

    ``damaged`` names current devices whose endpoint files are missing (they
    are rebuilt even if nothing else changed).  An inventory that lists no
    device while devices are served is refused (:class:`InventoryError`)
    unless it said so explicitly (``devices: {}``): an empty or truncated file
    must not disconnect the fleet.
    """
    if current and not wanted and not explicitly_empty:
        raise InventoryError(
            source,
            "devices",
            f"at least one device (the file lists none, which would remove all {len(current)}; "
            "write 'devices: {}' to remove every device on purpose)",
        )
    added = sorted(set(wanted) - set(current))
    removed = sorted(set(current) - set(wanted))
    common = sorted(set(current) & set(wanted))
    replaced = [name for name in common if current[name] != wanted[name]]
    repaired = [name for name in common if name in damaged and name not in replaced]
    kept = [name for name in common if name not in replaced and name not in repaired]
    return ReloadPlan(
        added=tuple(added),
        removed=tuple(removed),
        replaced=tuple(replaced),
        repaired=tuple(repaired),
        kept=tuple(kept),
    )
