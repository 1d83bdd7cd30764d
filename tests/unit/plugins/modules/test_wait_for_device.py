# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""callhome.network.wait_for_device against a real gateway."""

from __future__ import annotations

import time

from ansible_collections.callhome.network.plugins.modules import wait_for_device


def test_connected_device_returns_at_once(lab_factory, run_module):
    lab = lab_factory(ssh=["SN-0001"])
    lab.call("SN-0001")
    status, result = run_module(wait_for_device.main, {"run_dir": str(lab.run_dir), "name": "SN-0001", "timeout": 10})
    assert status == 0
    assert result["changed"] is False
    assert result["device"]["connected"] is True
    assert result["device"]["identity"] == lab.devices["SN-0001"].fingerprint
    assert result["elapsed"] < 3  # no wait: one control request


def test_device_that_calls_after_the_module_started(lab_factory, run_module):
    lab = lab_factory(ssh=["SN-0001"], restconf=["SN-0004"])
    lab.call("SN-0004", delay=1.0, wait=False)
    started = time.monotonic()
    status, result = run_module(wait_for_device.main, {"run_dir": str(lab.run_dir), "name": "SN-0004", "timeout": 10})
    assert status == 0
    assert result["device"]["name"] == "SN-0004"
    assert result["device"]["state"] == "connected"
    assert 0.9 <= result["elapsed"] <= time.monotonic() - started


def test_timeout_names_the_device_and_the_wait(lab_factory, run_module):
    lab = lab_factory(ssh=["SN-0001"], absent=["SN-0002"])
    status, result = run_module(wait_for_device.main, {"run_dir": str(lab.run_dir), "name": "SN-0002", "timeout": 0.5})
    assert status == 1
    assert result["failed"] is True
    assert result["msg"].startswith("device SN-0002 did not call home within 0.5s (waited ")
    assert result["msg"].endswith("; state never-connected)")
    assert result["error"] == "DeviceNotConnectedError"
    assert result["device"]["state"] == "never-connected"
    assert 0.4 <= result["elapsed"] < 5


def test_timeout_after_a_disconnect_gives_the_last_reason(lab_factory, run_module):
    lab = lab_factory(ssh=["SN-0001"])
    lab.call("SN-0001")
    lab.hang_up("SN-0001")
    status, result = run_module(wait_for_device.main, {"run_dir": str(lab.run_dir), "name": "SN-0001", "timeout": 0.3})
    assert status == 1
    assert "state disconnected, last reason: " in result["msg"]
    assert result["device"]["last_reason"]
    assert result["device"]["connected"] is False


def test_unknown_device_fails_with_its_name(lab_factory, run_module):
    lab = lab_factory(ssh=["SN-0001"])
    status, result = run_module(wait_for_device.main, {"run_dir": str(lab.run_dir), "name": "SN-9999", "timeout": 5})
    assert status == 1
    assert "device SN-9999 is not in the inventory" in result["msg"]
    assert result["error"] == "UnknownGatewayDeviceError"
    assert result["elapsed"] < 5


def test_no_gateway_fails_with_the_socket_path(empty_run_dir, run_module):
    status, result = run_module(wait_for_device.main, {"run_dir": str(empty_run_dir), "name": "SN-0001", "timeout": 5})
    assert status == 1
    assert "no call-home gateway at %s" % (empty_run_dir / "control.sock") in result["msg"]
    assert result["error"] == "GatewayUnavailableError"


def test_name_is_required(empty_run_dir, run_module):
    status, result = run_module(wait_for_device.main, {"run_dir": str(empty_run_dir)})
    assert status == 1
    assert "missing required arguments: name" in result["msg"]
