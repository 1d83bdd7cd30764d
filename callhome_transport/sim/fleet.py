"""A fleet of simulated SSH devices in one process, calling home with RFC 8071
server behaviour (S1-S7): each has its own host key; the connection is
*persistent* (called again after it drops, with exponential backoff and
jitter) or *periodic* (called every ``period`` seconds, kept ``linger``
seconds), as ietf-netconf-server's call-home connection types.  It writes the
matching inventory, so a manager can trust exactly this fleet.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .device import SimulatedDevice
from .tls_device import SimPKI, SimulatedTLSDevice

__all__ = ["Fleet", "FleetConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class FleetConfig:
    count: int
    prefix: str = "SIM-"
    username: str = "admin"
    password: str = "admin"
    mode: str = "persistent"  # or "periodic"
    period: float = 60.0  # periodic: seconds between calls
    linger: float = 10.0  # periodic: seconds a call stays up
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    keepalive_interval: float = 0.0
    transport: str = "ssh"  # ssh, tls (NETCONF over TLS) or restconf
    pki_dir: Path | None = None  # tls/restconf: where the fleet's certificates go

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("count must be >= 1")
        if self.transport not in ("ssh", "tls", "restconf"):
            raise ValueError("transport must be ssh, tls or restconf")
        if self.transport != "ssh" and self.pki_dir is None:
            raise ValueError("a pki_dir for tls/restconf fleets")
        if self.mode not in ("persistent", "periodic"):
            raise ValueError("mode must be 'persistent' or 'periodic'")


class Fleet:
    """``count`` simulated devices named ``<prefix>00001``..."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        width = max(5, len(str(config.count)))
        names = [f"{config.prefix}{i:0{width}d}" for i in range(1, config.count + 1)]
        self.pki: SimPKI | None = None
        self.devices: list[Any]
        if config.transport == "ssh":
            self.devices = [SimulatedDevice(n, username=config.username, password=config.password) for n in names]
        else:
            assert config.pki_dir is not None
            self.pki = SimPKI(config.pki_dir)
            protocol = "netconf" if config.transport == "tls" else "restconf"
            self.devices = [SimulatedTLSDevice(n, self.pki, protocol=protocol) for n in names]
        self.connected: set[str] = set()

    def inventory(self) -> dict[str, Any]:
        """The inventory (YAML/dict form) that trusts exactly this fleet."""
        if self.pki is not None:
            issuer = str(self.pki.ca_file)
            return {
                "version": 1,
                "devices": {
                    d.name: {"transport": self.config.transport, "tls": {"issuers": [issuer], "identifier": d.name}}
                    for d in self.devices
                },
            }
        return {
            "version": 1,
            "defaults": {"ssh": {"username": self.config.username, "password": self.config.password}},
            "devices": {d.name: {"ssh": {"host_keys": [d.host_key_line]}} for d in self.devices},
        }

    async def run(self, host: str, port: int, devices: Iterable[Any] | None = None) -> None:
        """Call home with every device until cancelled."""
        tasks = [asyncio.create_task(self._device(d, host, port)) for d in (devices or self.devices)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _device(self, device: Any, host: str, port: int) -> None:
        delay = self.config.backoff_initial
        while True:
            try:
                await device.call_home(host, port, keepalive_interval=self.config.keepalive_interval)
            except Exception as exc:  # any failure to call means: back off and call again
                log.debug("%s: call home failed: %s; retry in %.1f s", device.name, exc, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, self.config.backoff_max)
                continue
            delay = self.config.backoff_initial
            self.connected.add(device.name)
            if self.config.mode == "periodic":
                await asyncio.sleep(self.config.linger)
                device.close()
                await device.wait_closed()
                self.connected.discard(device.name)
                await asyncio.sleep(max(0.0, self.config.period - self.config.linger))
            else:
                await device.wait_closed()
                self.connected.discard(device.name)
                log.info("%s: connection closed; calling home again", device.name)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
