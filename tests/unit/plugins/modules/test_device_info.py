# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""callhome.network.device_info against a real gateway."""

from __future__ import annotations

import datetime

from ansible_collections.callhome.network.plugins.modules import device_info


def started_lab(lab_factory):
    lab = lab_factory(ssh=["SN-0001"], restconf=["SN-0004"], absent=["SN-0002"])
    lab.call("SN-0001")
    lab.call("SN-0004")
    return lab


def test_all_devices(lab_factory, run_module):
    lab = started_lab(lab_factory)
    status, result = run_module(device_info.main, {"run_dir": str(lab.run_dir)})
    assert status == 0
    assert result["changed"] is False
    assert "device" not in result
    records = {r["name"]: r for r in result["devices"]}
    assert sorted(records) == ["SN-0001", "SN-0002", "SN-0004"]
    assert records["SN-0001"]["transport"] == "ssh"
    assert records["SN-0001"]["connected"] is True
    assert records["SN-0004"]["transport"] == "restconf"
    assert records["SN-0004"]["state"] == "connected"
    assert records["SN-0002"]["state"] == "never-connected"
    assert records["SN-0002"]["connected"] is False
    assert records["SN-0002"]["connected_since_iso"] is None


def test_one_device(lab_factory, run_module):
    lab = started_lab(lab_factory)
    status, result = run_module(device_info.main, {"run_dir": str(lab.run_dir), "name": "SN-0001"})
    assert status == 0
    assert result["devices"] == [result["device"]]
    device = result["device"]
    assert device["name"] == "SN-0001"
    assert device["connected"] is True
    assert device["identity"] == lab.devices["SN-0001"].fingerprint
    assert device["peer_address"].startswith("127.0.0.1:")
    since = datetime.datetime.fromisoformat(device["connected_since_iso"])
    assert since.utcoffset() == datetime.timedelta(0)
    assert abs(since.timestamp() - device["connected_since"]) < 1e-3


def test_connected_only(lab_factory, run_module):
    lab = started_lab(lab_factory)
    status, result = run_module(device_info.main, {"run_dir": str(lab.run_dir), "connected_only": True})
    assert status == 0
    assert sorted(r["name"] for r in result["devices"]) == ["SN-0001", "SN-0004"]


def test_run_dir_from_the_environment(lab_factory, run_module, monkeypatch):
    lab = started_lab(lab_factory)
    monkeypatch.setenv("CALLHOME_RUN_DIR", str(lab.run_dir))
    status, result = run_module(device_info.main, {"name": "SN-0004"})
    assert status == 0
    assert result["device"]["state"] == "connected"


def test_check_mode(lab_factory, run_module):
    lab = started_lab(lab_factory)
    status, result = run_module(device_info.main, {"run_dir": str(lab.run_dir), "_ansible_check_mode": True})
    assert status == 0
    assert len(result["devices"]) == 3


def test_unknown_device_fails_with_its_name(lab_factory, run_module):
    lab = started_lab(lab_factory)
    status, result = run_module(device_info.main, {"run_dir": str(lab.run_dir), "name": "SN-9999"})
    assert status == 1
    assert result["failed"] is True
    assert "device SN-9999 is not in the inventory" in result["msg"]
    assert result["error"] == "UnknownGatewayDeviceError"
    assert result["details"] == {"device": "SN-9999", "run_dir": str(lab.run_dir)}


def test_no_gateway_fails_with_the_socket_path(empty_run_dir, run_module):
    status, result = run_module(device_info.main, {"run_dir": str(empty_run_dir)})
    assert status == 1
    socket_path = str(empty_run_dir / "control.sock")
    assert "no call-home gateway at %s" % socket_path in result["msg"]
    assert result["error"] == "GatewayUnavailableError"
    assert result["details"]["socket_path"] == socket_path
