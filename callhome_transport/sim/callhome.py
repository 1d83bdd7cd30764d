"""The simulated device provisioned through the standard model: it stores the
``ietf-netconf-server`` call-home configuration written with edit-config
(running, or candidate + commit) and acts on it with the agent's scheduler
(:mod:`callhome_transport.agent.schedule`): it dials the configured managers,
with their reconnect strategy, and hangs up when a netconf-client is deleted
or changed.  The first device here that can be provisioned end to end through
the model: a manager reaches it on its management port (or over an existing
call home), writes the payload a native device takes, and the device calls.

The device implements ``ssh-call-home`` only (it is an SSH device): a TLS
endpoint is refused at commit, with the key path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import asyncssh
from lxml import etree

from ..agent.config import NCS_NS, parse_config, parse_netconf_server_element, render_xml, xml_roots
from ..agent.driver import ScheduleDriver, describe_reload
from ..agent.model import AgentConfig, NetconfClient, Transport
from ..agent.runner import dial_endpoint
from ..agent.schedule import Dial, Timing
from ..errors import AgentConfigError
from .datastore import RpcError
from .device import SimulatedDevice

__all__ = ["SIM_REVISION", "ModelCallHome", "run_model_fleet"]

log = logging.getLogger(__name__)

SIM_REVISION = "2023-12-28"  # libnetconf2 3.x, netopeer2 2.2-2.4, Debian trixie


def capability(revision: str) -> str:
    """The module this device implements, with the features it supports."""
    features = "ssh-call-home" if revision == "2019-07-02" else "ssh-call-home,central-netconf-server-supported"
    return f"{NCS_NS}?module=ietf-netconf-server&revision={revision}&features={features}"


class ModelCallHome(ScheduleDriver):
    """Make ``device`` call home as its running datastore's
    ``netconf-server/call-home`` says (``revision`` of ietf-netconf-server).
    Start with :meth:`run` on the device's event loop."""

    log = log
    exhausted_level = logging.INFO  # a simulated fleet: not an operator's alarm

    def __init__(
        self,
        device: SimulatedDevice,
        *,
        revision: str = SIM_REVISION,
        timing: Timing | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(timing=timing, clock=clock)
        self.device = device
        self.context = f"device={device.name} "
        self.revision = revision
        stores = device.datastores
        stores.validators.append(self._validate)
        stores.listeners.append(self._running_changed)
        stores.capabilities.append(capability(revision))
        stores.enable_startup()  # a provisioned call home is saved to startup, as on netopeer2
        device.on_activity = self._activity
        self.config = self._parse(stores.running)
        self._connections: dict[int, asyncssh.SSHServerConnection] = {}
        self._attempt_of: dict[asyncssh.SSHServerConnection, int] = {}

    # -- the model in the datastore -----------------------------------------------------------------

    def provision(self, payload: bytes | str) -> None:
        """Put a call-home payload (XML or RFC 7951 JSON, as ``callhome
        agent`` takes) in running and candidate, as an operator would."""
        config = parse_config(payload, revision=self.revision, source="<provisioned>")
        self._check_transports(config)
        text = payload.encode() if isinstance(payload, str) else payload
        element = None
        if not text.lstrip().startswith(b"{"):  # XML: kept as written (server parameters too)
            element = next(
                (r for r in xml_roots(text, "<provisioned>") if r.tag == f"{{{NCS_NS}}}netconf-server"), None
            )
        if element is None:  # JSON: the model's XML form of what was parsed
            element = render_xml(config)[0]
        stores = self.device.datastores
        for store in (stores.running, stores.candidate):
            for old in store.findall(f"{{{NCS_NS}}}netconf-server"):
                store.remove(old)
        stores.candidate.append(etree.fromstring(etree.tostring(element)))
        running = etree.fromstring(etree.tostring(stores.running))
        running.append(element)
        stores.set_running(running)

    def _parse(self, running: etree._Element) -> AgentConfig:
        element = running.find(f"{{{NCS_NS}}}netconf-server")
        config = parse_netconf_server_element(element, revision=self.revision, source=f"{self.device.name} running")
        self._check_transports(config)
        return config

    def _check_transports(self, config: AgentConfig) -> None:
        for client in config.clients:
            for endpoint in client.endpoints:
                if endpoint.transport is Transport.TLS:
                    raise AgentConfigError(
                        config.source,
                        f"/ietf-netconf-server:netconf-server/call-home/netconf-client[name='{client.name}']"
                        f"/endpoints/endpoint[name='{endpoint.name}']/tls",
                        "this device supports ssh-call-home only",
                    )

    def _validate(self, running: etree._Element) -> None:
        try:
            self._parse(running)
        except AgentConfigError as exc:
            raise RpcError("invalid-value", str(exc.expected), path=exc.key_path) from None

    def _running_changed(self, running: etree._Element) -> None:
        config = self._parse(running)
        for part in config.ignored:
            log.info("device=%s ignored %s: %s", self.device.name, part.key_path, part.reason)
        if config.clients != self.config.clients:
            log.info(
                "device=%s call home reconfigured: %s",
                self.device.name,
                describe_reload(self.config.clients, config.clients),
            )
        self.config = config
        self.reconfigure()

    # -- the driver's hooks ------------------------------------------------------------------------

    def current_clients(self) -> Sequence[NetconfClient]:
        return self.config.clients

    def hang_up(self, attempt: int, reason: str) -> None:
        connection = self._connections.get(attempt)
        if connection is not None:
            log.info("device=%s client=%s hanging up: %s", self.device.name, self.calls[attempt].client, reason)
            self.device.hang_up(connection)

    def _activity(self, connection: asyncssh.SSHServerConnection) -> None:
        attempt = self._attempt_of.get(connection)
        if attempt is not None:
            self.report_activity(attempt)

    async def call(self, dial: Dial) -> None:
        who = f"device={self.device.name} client={dial.client} endpoint={dial.endpoint.name}"
        try:
            sock = await dial_endpoint(dial.endpoint)
        except OSError as exc:
            log.debug("%s %s: %s", who, dial.endpoint.remote, exc)
            self.report_failed(dial, str(exc))
            return
        lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

        def on_lost(exc: Exception | None) -> None:
            if not lost.done():
                lost.set_result(exc)

        try:
            connection = await self.device.call_home(sock=sock, on_lost=on_lost)
        except (OSError, asyncssh.Error) as exc:
            sock.close()
            self.report_failed(dial, f"SSH: {exc}")
            return
        except BaseException:  # cancelled: max-wait ran out, or reconfigured
            sock.close()
            raise
        started = self.clock()
        self._connections[dial.attempt] = connection
        self._attempt_of[connection] = dial.attempt
        try:
            log.info("%s called %s", who, dial.endpoint.remote)
            if not self.report_connected(dial):
                connection.close()
            error = await lost
        finally:
            self._connections.pop(dial.attempt, None)
            self._attempt_of.pop(connection, None)
            connection.close()
        log.info("%s session ended after %.1f s (%s)", who, self.clock() - started, error or "closed")
        self.report_ended(dial, graceful=error is None)


async def run_model_fleet(
    devices: Sequence[SimulatedDevice],
    *,
    payload: bytes | None = None,
    listen: tuple[str, int] | None = None,
    revision: str = SIM_REVISION,
    duration: float = 0.0,
) -> None:
    """``callhome sim --callhome-config FILE`` / ``--netconf-listen``: every
    device stores ``payload`` (if given) and calls as its running datastore
    says; device *i* also accepts NETCONF over SSH on ``listen`` port + *i*
    (its management port, to be provisioned).  Until cancelled, or for
    ``duration`` seconds."""
    drivers = [ModelCallHome(device, revision=revision) for device in devices]
    acceptors = []
    if listen is not None:
        for i, device in enumerate(devices):
            acceptors.append(await device.listen(listen[0], listen[1] + i))
            log.info("device=%s accepts NETCONF over SSH on %s port %d", device.name, listen[0], listen[1] + i)
    if payload is not None:
        for driver in drivers:
            driver.provision(payload)
    runners = [asyncio.create_task(driver.run(f"{driver.device.name} stops")) for driver in drivers]
    try:
        if duration:
            await asyncio.sleep(duration)
        else:
            await asyncio.Event().wait()
    finally:
        for driver in drivers:
            driver.stop()
        await asyncio.gather(*runners, return_exceptions=True)
        for acceptor in acceptors:
            acceptor.close()
