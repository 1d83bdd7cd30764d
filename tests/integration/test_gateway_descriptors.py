"""The gateway near its open-file limit (issue 16): the soft limit raised to
the hard one at start, the room it leaves logged, and connections past it
refused cleanly (closed at accept: a metric and one WARNING a minute) instead
of failing inside asyncssh ("Unknown local username").

40 simulated devices call a real ``callhome serve`` whose hard limit leaves
room for fewer of them (about 10 s)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from callhome_transport.engine import EventLoopThread
from callhome_transport.sim import SimulatedDevice

from .test_gateway import GatewayProcess

DEVICES = 40
SOFT, HARD = 64, 140  # the gateway opens some 50 (a netconf.sock per device): room for some 28 connections


# ``callhome serve`` started under a lower open-file limit (set in the child
# itself: no preexec_fn in a threaded test process)
LIMITED_SERVE = (
    "import resource, runpy, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({SOFT}, {HARD})); "
    "sys.argv = ['callhome', *sys.argv[1:]]; runpy.run_module('callhome_transport.cli', run_name='__main__')"
)


class LimitedGateway(GatewayProcess):
    def launch(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-c", LIMITED_SERVE, "serve"),
                *("--config", str(self.config_path), "--ready-file", str(self.ready_file)),
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self.proc


def test_connections_past_the_open_file_limit_are_refused_cleanly(tmp_path: Path) -> None:
    sims = [SimulatedDevice(f"SN-{n:04d}", password="pw") for n in range(DEVICES)]
    inventory = {
        "devices": {
            sim.name: {"ssh": {"host_keys": [sim.host_key_line], "username": sim.username, "password": "pw"}}
            for sim in sims
        }
    }
    gw = LimitedGateway(tmp_path, inventory)
    loop = EventLoopThread(name="sims")
    try:
        gw.start()
        log = gw.log.read_text()
        room_match = re.search(r"open-file limit 140 \(raised from 64, hard 140\): \d+ open, 64 kept in reserve: "
                               r"room for (\d+) connected devices", log)  # fmt: skip
        assert room_match, log
        room = int(room_match.group(1))
        assert 0 < room < DEVICES
        assert f"the inventory has {DEVICES}" in log  # the WARNING at start

        async def call_all() -> list[object]:
            calls = [sim.call_home("127.0.0.1", gw.ssh_port) for sim in sims]
            return list(await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 60))

        results = loop.run(call_all())
        registered = sum(not isinstance(r, BaseException) for r in results)
        assert room - 5 <= registered <= room, (room, registered, results)
        status, metrics = gw.get("/metrics")
        assert status == 200
        refused = float(str(metrics).split("\ncallhome_descriptor_refusals_total ")[1].split()[0])
        assert refused >= DEVICES - registered
    finally:
        for sim in sims:
            loop.loop.call_soon_threadsafe(sim.close)
        loop.stop()
        gw.stop()
    log = gw.log.read_text()
    assert log.count("refusing call-home connections") == 1, log  # one WARNING a minute
    assert "Unknown local username" not in log and "Traceback" not in log, log
