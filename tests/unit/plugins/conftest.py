# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A real call-home lab for the plugins' unit tests.

``Lab`` runs the callhome gateway (``callhome_transport.gateway.service.Gateway``,
the code behind ``callhome serve``) on its own event loop thread, listening on
127.0.0.1 with ports chosen by the kernel and its run directory in a fresh
short temporary directory (Unix socket paths are limited to 108 bytes), and
simulated devices from ``callhome_transport.sim`` that call it home from a
second event loop thread: SSH devices (NETCONF), NETCONF-over-TLS devices and
RESTCONF devices with certificates from the simulator's manufacturer CA.

ansible-test runs every test in its own fork, so a lab lives for one test and
needs no process clean-up (no subprocess is started). It imports no Ansible
code, so the module tests (run without Ansible's controller code) use it too.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from callhome_transport.engine import EventLoopThread
from callhome_transport.gateway.client import GatewayClient
from callhome_transport.gateway.config import GatewayConfig
from callhome_transport.gateway.service import Gateway
from callhome_transport.sim.device import SimulatedDevice
from callhome_transport.sim.tls_device import SimPKI, SimulatedTLSDevice

TEST_DEADLINE = 45  # seconds; a test still running then fails instead of hanging the run


class RestconfDevice(SimulatedTLSDevice):
    """The simulator's RESTCONF device (GET and PATCH of a top-level
    container) plus PUT and DELETE of a top-level resource, so that a full
    create/replace/delete round trip can run through the gateway."""

    def restconf(self, method, target, body):
        top = target.removeprefix("/restconf/data/").split("?")[0]
        if method == "PUT" and target.startswith("/restconf/data/"):
            created = top not in self.data
            self.data[top] = json.loads(body or b"{}").get(top, {})
            return (201 if created else 204), b""
        if method == "DELETE" and top in self.data:
            del self.data[top]
            return 204, b""
        return super().restconf(method, target, body)


class NoNetconfDevice(SimulatedDevice):
    """An SSH device that calls home and authenticates the gateway, but
    refuses the ``netconf`` subsystem (NETCONF disabled on the device)."""

    async def _serve(self, process):
        process.stderr.write(b"netconf subsystem disabled\n")
        process.exit(1)


class Lab:
    """The gateway and its devices. ``ssh``, ``tls`` and ``restconf`` name
    simulated devices (they call home when :meth:`call` is called);
    ``absent`` names SSH devices that are in the gateway's inventory but never
    call; ``no_netconf`` names SSH devices that call but refuse NETCONF."""

    def __init__(self, *, ssh=(), tls=(), restconf=(), absent=(), no_netconf=(), deferral_timeout=10.0):
        self.dir = Path(tempfile.mkdtemp(prefix="chu-"))
        self.run_dir = self.dir / "run"
        self.pki = SimPKI(self.dir / "pki") if (tls or restconf) else None
        self.devices = {}
        for name in ssh:
            self.devices[name] = SimulatedDevice(name, username="admin", password="admin-pw")
        for name in no_netconf:
            self.devices[name] = NoNetconfDevice(name, username="admin", password="admin-pw")
        for name in tls:
            self.devices[name] = SimulatedTLSDevice(name, self.pki, protocol="netconf")
        for name in restconf:
            self.devices[name] = RestconfDevice(name, self.pki, protocol="restconf")
        inventory = {"version": 1, "devices": {}}
        for name, device in self.devices.items():
            if isinstance(device, SimulatedDevice):
                inventory["devices"][name] = {
                    "transport": "ssh",
                    "ssh": {"host_keys": [device.host_key_line], "username": "admin", "password": "admin-pw"},
                }
            else:
                inventory["devices"][name] = {
                    "transport": "tls" if device.protocol == "netconf" else "restconf",
                    "tls": {"issuers": [str(self.pki.ca_file)], "identifier": name},
                }
        for name in absent:
            never = SimulatedDevice(name)  # only for a valid host key
            inventory["devices"][name] = {
                "transport": "ssh",
                "ssh": {"host_keys": [never.host_key_line], "username": "admin", "password": "admin-pw"},
            }
        (self.dir / "devices.yml").write_text(yaml.safe_dump(inventory), encoding="utf-8")
        config = {
            "inventory": "devices.yml",
            "run_dir": str(self.run_dir),
            "deferral_timeout": deferral_timeout,
            "listen": {
                "addresses": ["127.0.0.1"],
                "ssh_port": 0,
                "tls_port": 0 if tls else None,
                "restconf_port": 0 if restconf else None,
            },
            "ssh": {"handshake_timeout": 5, "keepalive_interval": 5, "keepalive_count_max": 2},
        }
        if self.pki is not None:
            config["tls"] = {"certfile": str(self.pki.manager_cert), "keyfile": str(self.pki.manager_key)}
        (self.dir / "gateway.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        self.config = GatewayConfig.from_file(self.dir / "gateway.yml")
        self.client = GatewayClient(self.run_dir, timeout=10)
        self.gateway = None
        self._gateway_loop = None
        self._device_loop = None
        self._pending = []

    # -- lifecycle -----------------------------------------------------------------

    def start(self):
        self._gateway_loop = EventLoopThread(name="lab-gateway")
        self._device_loop = EventLoopThread(name="lab-devices")
        self.gateway = self._gateway_loop.run(self._start_gateway(), timeout=15)
        return self

    async def _start_gateway(self):
        gateway = Gateway(self.config)
        await gateway.start()
        return gateway

    def restart_gateway(self):
        """Stop the gateway and start a new one on the same run directory
        (new ports; devices must call again), as ``systemctl restart`` does."""
        self._gateway_loop.run(self.gateway.stop(), timeout=10)
        self.gateway = None
        self.gateway = self._gateway_loop.run(self._start_gateway(), timeout=15)

    def stop(self):
        for future in self._pending:
            future.cancel()
        if self._device_loop is not None:

            async def hang_up():
                for device in self.devices.values():
                    device.close()

            try:
                self._device_loop.run(hang_up(), timeout=5)
            finally:
                self._device_loop.stop()
        if self._gateway_loop is not None:
            try:
                if self.gateway is not None:
                    self._gateway_loop.run(self.gateway.stop(), timeout=10)
            finally:
                self._gateway_loop.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- devices -------------------------------------------------------------------

    def port(self, name):
        device = self.devices[name]
        server = self.gateway.server
        if isinstance(device, SimulatedDevice):
            return server.listen_port
        return server.tls_listen_port if device.protocol == "netconf" else server.restconf_listen_port

    def call(self, name, *, delay=0.0, wait=True):
        """Device ``name`` calls home (after ``delay`` seconds, in the
        background when ``wait`` is false); with ``wait``, return once the
        gateway lists it as connected."""
        device = self.devices[name]
        port = self.port(name)

        async def call_home():
            if delay:
                await asyncio.sleep(delay)
            await device.call_home("127.0.0.1", port)

        future = self._device_loop.submit(call_home())
        self._pending.append(future)
        if wait:
            future.result(15)
            return self.client.wait(name, 10)
        return future

    def hang_up(self, name, timeout=10.0):
        """Device ``name`` closes its call-home connection; return once the
        gateway no longer lists it as connected."""
        device = self.devices[name]

        async def close():
            device.close()

        self._device_loop.run(close(), timeout=5)
        deadline = time.monotonic() + timeout
        while self.client.device(name).connected:
            if time.monotonic() > deadline:
                raise AssertionError("the gateway still lists %s as connected" % name)
            time.sleep(0.05)

    # -- paths -----------------------------------------------------------------------

    def endpoint(self, name, kind):
        return self.run_dir / "devices" / name / ("%s.sock" % kind)


@pytest.fixture
def lab_factory():
    """``lab_factory(ssh=[...], restconf=[...], absent=[...])``: a started
    :class:`Lab`, stopped after the test."""
    labs = []

    def make(**kwargs):
        lab = Lab(**kwargs)
        labs.append(lab)
        return lab.start()

    yield make
    for lab in reversed(labs):
        lab.stop()


@pytest.fixture
def empty_run_dir():
    """A run directory where no gateway runs."""
    path = Path(tempfile.mkdtemp(prefix="chu-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class DeadlineExceeded(Exception):
    """A test ran longer than TEST_DEADLINE."""


@pytest.fixture(autouse=True)
def deadline():
    """Every test is bounded in time even if a peer hangs (each test runs in
    its own fork under ansible-test, so the alarm is the test's own)."""

    def expired(signum, frame):
        raise DeadlineExceeded("test still running after %ds" % TEST_DEADLINE)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_DEADLINE)
    started = time.monotonic()
    yield started
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
