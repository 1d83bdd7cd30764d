"""Reload planning (SIGHUP), a pure function of the current endpoints and the
new inventory: no sockets."""

from __future__ import annotations

import pytest

from callhome_transport import InventoryError
from callhome_transport.gateway.reload import DeviceEndpoints, ReloadPlan, plan_reload

SSH = DeviceEndpoints(transport="ssh", kinds=("netconf",))
TLS = DeviceEndpoints(transport="tls", kinds=("netconf",))
RESTCONF = DeviceEndpoints(transport="restconf", kinds=("restconf",))


def plan(current: dict[str, DeviceEndpoints], wanted: dict[str, DeviceEndpoints], **kw: object) -> ReloadPlan:
    options: dict[str, object] = {"source": "devices.yml", "explicitly_empty": False, **kw}
    return plan_reload(current, wanted, **options)  # type: ignore[arg-type]


def test_added_removed_and_kept() -> None:
    result = plan({"A": SSH, "B": SSH, "C": TLS}, {"B": SSH, "C": TLS, "D": RESTCONF})
    assert result == ReloadPlan(added=("D",), removed=("A",), kept=("B", "C"))
    assert result.build == ("D",)
    assert result.retire == ("A",)
    assert result.disconnect == ("A",)


def test_a_changed_transport_rebuilds_the_endpoints_and_drops_the_session() -> None:
    result = plan({"A": SSH, "B": SSH}, {"A": RESTCONF, "B": SSH})
    assert result.replaced == ("A",)
    assert result.build == result.retire == result.disconnect == ("A",)
    assert result.kept == ("B",)


def test_a_lost_endpoint_file_is_rebuilt_without_dropping_the_device() -> None:
    result = plan({"A": SSH, "B": SSH}, {"A": SSH, "B": SSH}, damaged=["B"])
    assert result.repaired == ("B",)
    assert result.build == result.retire == ("B",)
    assert result.disconnect == ()


@pytest.mark.parametrize("explicit", [False, True])
def test_removing_every_device_needs_an_explicit_empty_inventory(explicit: bool) -> None:
    current = {f"D{i}": SSH for i in range(8)}
    if not explicit:
        with pytest.raises(InventoryError) as info:
            plan(current, {})
        assert info.value.source == "devices.yml"
        assert info.value.key_path == "devices"
        assert "would remove all 8" in info.value.expected
        assert "devices: {}" in info.value.expected
    else:
        assert plan(current, {}, explicitly_empty=True).removed == tuple(sorted(current))


def test_an_empty_inventory_when_nothing_is_served_is_no_change() -> None:
    assert plan({}, {}) == ReloadPlan()


def test_replacing_the_whole_fleet_by_another_is_allowed() -> None:
    result = plan({"A": SSH}, {"B": SSH})
    assert (result.added, result.removed) == (("B",), ("A",))
