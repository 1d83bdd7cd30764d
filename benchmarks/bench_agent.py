"""Reconnection after a gateway restart: the agent (``callhome agent``) vs
the ``socat`` retry loop the tests used before it, in the same run.

The same netconfd + sshd device calls a real gateway (``callhome serve``),
once through the agent (the model's default reconnect strategy: max-wait 5,
max-attempts 3) and once through ``while :; do socat
TCP:<gateway>,retry=50,interval=0.1 TCP:<sshd>; done`` (a poll every 0.1 s).
For each trial the gateway is stopped and started again on the same port;
measured: from the gateway's ``listening on`` log line to its ``event=connected``
line for the device (both the gateway's own clock, ms resolution), which
includes the SSH handshake and authentication (the same for both).

Target: the agent is not slower (ratio agent / socat <= 1, within noise).
Run: ``.venv/bin/python benchmarks/bench_agent.py [--trials 8]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.agent_peer import AgentProcess, Client, callhome_payload  # noqa: E402
from tests.integration.netconfd_peer import SOCAT, NetconfdDevice, peers_available  # noqa: E402
from tests.integration.test_gateway import GatewayProcess  # noqa: E402

STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"


def stamp(text: str, pattern: str) -> float | None:
    found = re.search(STAMP + r" .*" + pattern, text)
    if found is None:
        return None
    when = datetime.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return when.timestamp()


def wait_connected(gateway: GatewayProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stamp(gateway.log.read_text(errors="replace"), r"device=R1 .*event=connected") is not None:
            return
        time.sleep(0.01)
    raise RuntimeError(f"R1 did not call within {timeout} s:\n{gateway.log.read_text()[-2000:]}")


def restart(gateway: GatewayProcess) -> float:
    """Stop and start the gateway; seconds from listening to R1 registered."""
    assert gateway.stop() == 0
    gateway.start()
    wait_connected(gateway)
    text = gateway.log.read_text(errors="replace")
    listening = stamp(text, rf"listening on 127\.0\.0\.1:{gateway.ssh_port}")
    registered = stamp(text, r"device=R1 .*event=connected")
    if listening is None or registered is None:
        raise RuntimeError(f"log lines missing:\n{text[-2000:]}")
    return registered - listening


class SocatLoop:
    """The relay of tests/integration/netconfd_peer.py (ReverseRelay), restarted
    in a shell loop each time its connection ends."""

    def __init__(self, gateway_port: int, device_port: int) -> None:
        relay = (
            f"{SOCAT} -T 600 TCP4:127.0.0.1:{gateway_port},retry=50,interval=0.1,nodelay "
            f"TCP4:127.0.0.1:{device_port},nodelay"
        )
        self.proc = subprocess.Popen(
            ["sh", "-c", f"while :; do {relay} 2>/dev/null; done"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="gateway restarts per method")
    args = parser.parse_args()
    reason = peers_available()
    if reason:
        print(f"error: {reason}: no measurement", file=sys.stderr)
        return 1
    agent_times: list[float] = []
    socat_times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="callhome-bench-agent-") as tmp:
        work = Path(tmp)
        with NetconfdDevice(work) as device:
            gateway = GatewayProcess(
                work,
                {"devices": {"R1": device.inventory_entry()}},
                admission={"failures_before_block": 100000, "max_pending_handshakes": 1000},
            ).start()
            try:
                for trial in range(args.trials):
                    # alternate, so drift of the machine hits both alike
                    for method in ("agent", "socat") if trial % 2 == 0 else ("socat", "agent"):
                        if method == "agent":
                            payload = callhome_payload(Client("gateway", [("gateway", gateway.ssh_port)]))
                            caller: AgentProcess | SocatLoop = AgentProcess(
                                work, payload, local_ssh_port=device.ssh_port, name=f"agent-{trial}"
                            ).start()
                        else:
                            caller = SocatLoop(gateway.ssh_port, device.ssh_port)
                        try:
                            restart(gateway)  # a fresh gateway: the caller's first call
                            (agent_times if method == "agent" else socat_times).append(restart(gateway))
                        finally:
                            caller.stop()
            finally:
                gateway.stop()
    if len(agent_times) != args.trials or len(socat_times) != args.trials:
        print("error: a method did not complete every trial: no ratio", file=sys.stderr)
        return 1
    med = statistics.median
    print("reconnection after a gateway restart (gateway listening -> device registered, incl. SSH handshake)")
    print(
        f"socat retry loop (poll every 0.1 s): median {1000 * med(socat_times):6.0f} ms, "
        f"max {1000 * max(socat_times):6.0f} ms (n={len(socat_times)})"
    )
    print(
        f"callhome agent (model defaults):      median {1000 * med(agent_times):6.0f} ms, "
        f"max {1000 * max(agent_times):6.0f} ms (n={len(agent_times)})"
    )
    print(f"ratio agent / socat (target <= 1):    {med(agent_times) / med(socat_times):6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
