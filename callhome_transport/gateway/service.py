"""The gateway (``callhome serve``): holds call-home sessions for a fleet and
exposes every device at a local endpoint.

Run directory layout (permissions from ``socket_mode``, private by default)::

    <run_dir>/control.sock              HTTP+JSON control API, Prometheus /metrics
    <run_dir>/devices/<name>/netconf.sock   NETCONF (SSH and TLS devices)
    <run_dir>/devices/<name>/restconf.sock  HTTP/1.1 relayed to the device (RESTCONF devices)

Every local ``netconf.sock`` connection is its own NETCONF session on the
device: a new ``netconf`` SSH channel on the call-home connection (the local
client does its own hello, so ``ncclient.manager.connect_uds`` or ``socat``
work), or, for a TLS device, its next call-home connection.  A device that
has not called yet is waited for up to ``deferral_timeout`` (call-home draft
deferral), then the local connection is closed and the gateway logs why.

``restconf.sock`` speaks HTTP/1.1; each request is parsed with h11 and relayed
over the device's call-home connection, one at a time per device; a device
that has not called answers 504 with an RFC 8040 error body after the
deferral timeout.

SIGTERM stops cleanly; SIGHUP reloads the inventory, all or nothing (see
:meth:`Gateway.reload`): added devices get endpoints, removed devices are
disconnected and lose theirs, others keep their sessions.

This module holds the lifecycle, the reload and the NETCONF endpoint; the
Unix endpoints (:mod:`.endpoints`), the RESTCONF relay (:mod:`.restconf_relay`),
the terminal (:mod:`.terminal`) and the control API (:mod:`.control`, a
routing table) have their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..addresses import format_peer
from ..descriptors import OpenFileLimit, log_capacity, process_guard, raise_open_file_limit
from ..errors import (
    CallHomeError,
    ClientHelloError,
    EndpointError,
)
from ..events import EventLog, RegistryFeed
from ..identity.inventory import Device, Inventory, Transport
from ..server.core import AsyncCallHomeServer, PreparedInventory
from ..server.registry import DeviceDisconnected, RejectedAttempt
from ..status import DeviceInfo
from . import control
from .cluster import ClusterMember
from .cluster_view import ClusterView
from .config import GatewayConfig
from .endpoints import UnixEndpoint
from .events_api import EventsAPI
from .http import Response, serve_http
from .readiness import remove_ready_file, sd_notify, write_ready_file
from .reload import DeviceEndpoints, ReloadPlan, plan_reload
from .restconf_relay import DeviceHTTP
from .terminal import serve_terminal

__all__ = ["Gateway", "run"]

log = logging.getLogger(__name__)

STOP_DRAIN = 1.0  # seconds event streams get to end at stop (a follower that is not reading is cut)


@dataclass
class _LocalUse:
    """What the gateway adds to a device's registry status: why its last local
    session failed (the registry counts the open ones)."""

    last_error: str | None = None  # why the last local session failed (the client only saw a close)
    last_error_at: float | None = None


class Gateway:
    """The long-running call-home gateway (asyncio)."""

    def __init__(
        self, config: GatewayConfig, *, ready_file: Path | None = None, open_file_limit: OpenFileLimit | None = None
    ) -> None:
        self.config = config
        self.ready_file = ready_file
        self.open_file_limit = open_file_limit if open_file_limit is not None else raise_open_file_limit()
        self.inventory: Inventory = config.load_inventory()
        self.local: dict[str, _LocalUse] = {}  # the devices served, in inventory order
        self._endpoints: dict[str, list[UnixEndpoint]] = {}
        self._device_http: dict[str, DeviceHTTP] = {}
        self._control: UnixEndpoint | None = None
        self._stopped = asyncio.Event()
        self._stopping = False
        self._reload_lock = asyncio.Lock()
        self._reload_queued = False
        self._reload_tasks: set[asyncio.Task[bool]] = set()
        self.event_log = EventLog(config.events_buffer)  # GET /events (docs/events.md), fed by the registry
        self._events_api = EventsAPI(self.event_log, max_followers=config.events_max_followers)
        self.server = self._make_server(self.inventory)
        # a cluster member (docs/scale.md): publishes what the registry holds, answers for the cluster
        self.cluster: ClusterMember | None = None
        if config.cluster is not None:
            self.cluster = ClusterMember(config.cluster, run_dir=str(config.run_dir), listening=self.listening)
            self.cluster.attach(self.server.registry)

    def _make_server(self, inventory: Inventory) -> AsyncCallHomeServer:
        c = self.config
        server = AsyncCallHomeServer(
            inventory,
            listen_address=c.listen_addresses,
            listen_port=c.ssh_port,
            ssh=c.ssh,
            tls=c.tls,
            tls_listen_port=c.tls_port,
            restconf_listen_port=c.restconf_port,
            tls_strict_listen_port=c.tls_strict_port,
            admission=c.admission,
            hello_timeout=c.hello_timeout,
            hold_idle=c.hold_idle,
            outbound_ssh_listen_port=c.outbound_ssh_port,
            outbound_ssh=c.outbound_ssh,
            proxy_protocol=c.proxy_protocol,
            reuse_port=c.reuse_port,
            restconf_direct=False,  # the gateway relays RESTCONF on its event loop
            watch_loop=True,  # stall and GC metrics, gc.freeze after registration bursts
        )
        server.metrics.counter("callhome_local_sessions_total", "Local sessions opened on device endpoints")
        server.metrics.counter("callhome_bytes_relayed_total", "Bytes relayed from devices to local clients")
        server.metrics.gauge(
            "callhome_local_sessions",
            "Local sessions open now",
            lambda: {(): float(server.registry.local_sessions())},
        )
        server.metrics.counter_reading(
            "callhome_descriptor_refusals_total",
            "Connections refused because the open-file limit was nearly reached",
            lambda: {(): float(process_guard().refused)},
        )
        server.registry.on_disconnected(self._on_disconnect)
        server.registry.add_observer(RegistryFeed(self.event_log))
        return server

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        run = self.config.run_dir
        run.mkdir(parents=True, exist_ok=True)
        (run / "devices").mkdir(exist_ok=True)
        dir_mode = 0o700 if self.config.socket_mode & 0o077 == 0 else 0o755
        os.chmod(run, dir_mode)
        for stale in run.glob(".new*"):  # staging names a killed gateway left behind
            with contextlib.suppress(OSError):
                stale.unlink()
        try:
            await self.server.start()
            self._control = self._endpoint(run / "control.sock", self.config.socket_mode, self._control_connection)
            for device in self.inventory:
                self._serve(device, self._bind_endpoints(device))
            if self.cluster is not None:
                await self.cluster.start()
            # control.sock appears last: a client that finds it finds every endpoint
            self._control.publish()
            self._announce_ready()
        except BaseException:
            await self.stop()  # a failed start leaves no control.sock (nor ready file) behind
            raise
        log.info(
            "gateway ready: %d devices, run directory %s, listening %s",
            len(self.inventory),
            run,
            ", ".join(f"{kind} {port}" for kind, port in self.listening().items()),
        )
        log_capacity(self.open_file_limit, len(self.inventory))

    def listening(self) -> dict[str, int]:
        """The TCP port of each listener that runs, by kind."""
        ports: dict[str, int] = {}
        for kind, attribute in (
            ("ssh", "listen_port"),
            ("tls", "tls_listen_port"),
            ("restconf", "restconf_listen_port"),
            ("tls_strict", "tls_strict_listen_port"),
        ):
            with contextlib.suppress(RuntimeError):  # that listener does not run
                ports[kind] = getattr(self.server, attribute)
        return ports

    def _announce_ready(self) -> None:
        """Every listener and endpoint is up: say so to systemd (``READY=1``
        with ``Type=notify``) and in the ready file, if asked for one."""
        status = f"{len(self.inventory)} devices; listening " + ", ".join(
            f"{kind} {port}" for kind, port in self.listening().items()
        )
        if self.ready_file is not None:
            try:
                write_ready_file(
                    self.ready_file,
                    {
                        "pid": os.getpid(),
                        "run_dir": str(self.config.run_dir),
                        "control_socket": str(self.config.run_dir / "control.sock"),
                        "devices": len(self.inventory),
                        "listening": self.listening(),
                    },
                )
            except OSError as exc:
                raise EndpointError(path=str(self.ready_file), reason=exc.strerror or str(exc)) from exc
        sd_notify(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")

    async def stop(self) -> None:
        self._stopping = True
        self.event_log.close()  # event streams end
        sd_notify("STOPPING=1")
        if self.ready_file is not None:
            remove_ready_file(self.ready_file)
        async with self._reload_lock:  # a reload in progress finishes first (it is bounded)
            await self._events_api.drain(STOP_DRAIN)  # event streams end cleanly, not cut
            if self._control is not None:
                await self._control.close()
                self._control = None
            for name in list(self._endpoints):
                await self._retire(name, self._endpoints.pop(name))
            if self.cluster is not None:
                await self.cluster.close()
            await self.server.close()
        self._stopped.set()
        log.info("gateway stopped")

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(self.stop()))
        loop.add_signal_handler(signal.SIGINT, lambda: loop.create_task(self.stop()))
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        await self._stopped.wait()

    def request_reload(self) -> None:
        """SIGHUP: queue a :meth:`reload`.  Reloads run one at a time; requests
        that arrive while one is queued are served by that one (it reads the
        file when its turn comes)."""
        if self._reload_queued:
            return
        self._reload_queued = True
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reload_tasks.add(task)
        task.add_done_callback(self._reload_tasks.discard)

    async def reload(self) -> bool:
        """Reread the inventory and switch to it in one step, or keep the
        current state whole (returns whether it switched).

        Everything is built first: the inventory parsed in a worker thread
        (certificates, socket path lengths checked), the server's trust and
        TLS contexts, and the new local endpoints, bound at staging names.
        Then, with no await in between, the endpoints are renamed into place
        and the inventory, trust and registry swapped.  Devices removed (or
        whose transport changed) are disconnected afterwards; others keep
        their sessions.  An inventory that lists no device is refused unless
        it says ``devices: {}``."""
        async with self._reload_lock:
            self._reload_queued = False
            if self._stopping:
                return False
            try:
                return await self._reload()
            except Exception:
                log.exception("reload failed, keeping the current inventory")
                return False

    def _prepare_reload(self) -> tuple[PreparedInventory, ReloadPlan]:
        """The worker-thread half of a reload: nothing here changes the gateway."""
        new = self.config.load_inventory()
        prepared = self.server.prepare_inventory(new)
        current = {device.name: self._served_as(device) for device in self.inventory}
        damaged = [name for name, eps in self._endpoints.items() if not all(e.intact() for e in eps)]
        plan = plan_reload(
            current,
            {device.name: self._served_as(device) for device in new},
            source=str(self.config.inventory_path),
            explicitly_empty=new.explicitly_empty,
            damaged=damaged,
        )
        return prepared, plan

    async def _reload(self) -> bool:
        try:
            prepared, plan = await asyncio.to_thread(self._prepare_reload)
        except (CallHomeError, ValueError) as exc:
            log.error("reload failed, keeping the current inventory: %s", exc)  # noqa: TRY400 - no traceback wanted
            return False
        new = prepared.inventory
        built: dict[str, list[UnixEndpoint]] = {}
        try:
            for name in plan.build:
                built[name] = self._bind_endpoints(new[name])
        except CallHomeError as exc:
            for endpoints in built.values():
                for endpoint in endpoints:
                    await endpoint.close()
            for name in plan.added:
                shutil.rmtree(self.config.run_dir / "devices" / name, ignore_errors=True)
            log.error("reload failed, keeping the current inventory: %s", exc)  # noqa: TRY400 - no traceback wanted
            return False
        try:
            for endpoints in built.values():
                for endpoint in endpoints:
                    endpoint.publish()  # an atomic rename over the old file, if any
        except OSError as exc:
            for endpoints in built.values():
                for endpoint in endpoints:
                    await endpoint.close()
            log.error("reload failed, keeping the current inventory: cannot publish an endpoint: %s", exc)  # noqa: TRY400
            return False
        # -- the swap: no await until it is complete --
        self.server.use_inventory(prepared)
        self.inventory = new
        retired = {name: self._endpoints.pop(name) for name in plan.retire if name in self._endpoints}
        for name in plan.removed + plan.replaced:
            self.local.pop(name, None)
            self.server.registry.forget(name)
            http = self._device_http.pop(name, None)
            if http is not None and http.client is not None:
                http.client.close()
        for name in plan.repaired:
            self._endpoints[name] = built[name]
        for name in plan.added + plan.replaced:
            self._serve(new[name], built[name])
        # -- then what the old state held --
        for name in plan.disconnect:
            await self.server.disconnect(name)
        for name, endpoints in retired.items():
            await self._retire(name, endpoints, keep_sessions=name in plan.repaired)
        for name in plan.removed:
            log.info("device=%s removed from the inventory: disconnected", name)
        for name in plan.added:
            log.info("device=%s added to the inventory", name)
        for name in plan.replaced:
            log.info(
                "device=%s now calls home over %s: disconnected, endpoints rebuilt", name, new[name].transport.value
            )
        for name in plan.repaired:
            log.warning("device=%s had lost its endpoint file: endpoints rebuilt", name)
        for name in plan.added + plan.replaced:
            if not self.server.serves(new[name].transport):
                log.warning(
                    "device=%s calls home over %s, but no listener for it runs (the gateway started with no "
                    "such device): restart the gateway to open it",
                    name,
                    new[name].transport.value,
                )
        log.info(
            "inventory reloaded: %d devices (%d added, %d removed%s)",
            len(new),
            len(plan.added),
            len(plan.removed),
            "".join(
                f", {len(names)} {what}"
                for names, what in ((plan.replaced, "transport changed"), (plan.repaired, "endpoints restored"))
                if names
            ),
        )
        return True

    # -- devices ----------------------------------------------------------------------

    def _served_as(self, device: Device) -> DeviceEndpoints:
        return DeviceEndpoints(transport=device.transport.value, kinds=self.config.endpoint_kinds(device))

    def _endpoint(self, path: Path, mode: int, handler: Callable[[socket.socket], Awaitable[None]]) -> UnixEndpoint:
        return UnixEndpoint(path, mode, handler, staging_dir=self.config.run_dir)

    def _bind_endpoints(self, device: Device) -> list[UnixEndpoint]:
        """``device``'s endpoints, bound but not yet published."""
        directory = self.config.run_dir / "devices" / device.name
        try:
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o700 if self.config.socket_mode & 0o077 == 0 else 0o755)
        except OSError as exc:
            raise EndpointError(path=str(directory), reason=exc.strerror or str(exc)) from exc
        handlers = {
            "netconf": self._netconf_handler,
            "terminal": self._terminal_handler,
            "restconf": self._restconf_handler,
        }
        endpoints: list[UnixEndpoint] = []
        for kind in self.config.endpoint_kinds(device):
            # a shell as the device's user: owner only, whatever socket_mode gives the others
            mode = 0o600 if kind == "terminal" else self.config.socket_mode
            path = self.config.endpoint_path(device.name, kind)
            endpoints.append(self._endpoint(path, mode, handlers[kind](device.name)))
        return endpoints

    def _serve(self, device: Device, endpoints: list[UnixEndpoint]) -> None:
        """Publish ``device``'s endpoints and count its local sessions."""
        for endpoint in endpoints:
            endpoint.publish()
        self.local[device.name] = _LocalUse()
        if device.transport is Transport.RESTCONF:
            self._device_http[device.name] = DeviceHTTP(self, device.name)
        self._endpoints[device.name] = endpoints

    async def _retire(self, name: str, endpoints: list[UnixEndpoint], *, keep_sessions: bool = False) -> None:
        for endpoint in endpoints:
            await endpoint.close(keep_sessions=keep_sessions)
        if name not in self._endpoints:  # not served any more (removed, or the gateway stops)
            http = self._device_http.pop(name, None)
            if http is not None and http.client is not None:
                http.client.close()
            shutil.rmtree(self.config.run_dir / "devices" / name, ignore_errors=True)

    def _on_disconnect(self, event: DeviceDisconnected) -> None:
        if event.device not in self.local or not event.state_changed:
            return
        transport = self.inventory[event.device].transport.value if event.device in self.inventory else "-"
        log.info("device=%s transport=%s event=disconnected reason=%s", event.device, transport, event.reason)

    @property
    def deferral_timeout(self) -> float:
        return self.config.deferral_timeout

    def touch(self, device: str) -> None:
        """A local client used ``device``."""
        if device in self.local:
            self.server.registry.status(device).last_seen = time.time()

    # -- local endpoints ------------------------------------------------------------------

    def _netconf_handler(self, device: str) -> Callable[[socket.socket], Awaitable[None]]:
        async def handle(local: socket.socket) -> None:
            # a greeted session: the held one, or one opened now (queued behind
            # the open one on a one-session device), within the deferral
            try:
                session = await self.server.take_session(device, self.config.deferral_timeout)
            except CallHomeError as exc:
                self._local_session_failed(device, exc)
                local.close()
                return
            try:
                # the device's hello replayed, the client's answered here
                await self.server.lend_to_local(session, local)
            except ClientHelloError as exc:
                self._local_session_failed(device, exc)
                return
            self.server.metrics.inc("callhome_local_sessions_total", endpoint="netconf")
            with self.server.registry.local_session(device, "netconf"):
                log.info(
                    "device=%s peer=%s event=local-session-opened session-id=%s",
                    device,
                    format_peer(session.peer_address) if session.peer_address else "-",
                    session.session_id,
                )
                await asyncio.shield(session.stream.closed)
                log.info("device=%s event=local-session-closed session-id=%s", device, session.session_id)

        return handle

    def _local_session_failed(self, device: str, exc: CallHomeError) -> None:
        """One line per failed local session, and the reason in the device's
        record (a local client only sees its connection close)."""
        log.warning("device=%s event=local-session-failed reason=%s", device, exc)
        use = self.local.get(device)
        if use is not None:
            use.last_error = str(exc)
            use.last_error_at = time.time()

    def _terminal_handler(self, device: str) -> Callable[[socket.socket], Awaitable[None]]:
        return functools.partial(serve_terminal, self.server, device, self.config.deferral_timeout)

    def _restconf_handler(self, device: str) -> Callable[[socket.socket], Awaitable[None]]:
        async def handle(local: socket.socket) -> None:
            reader, writer = await asyncio.open_connection(sock=local)
            self.server.metrics.inc("callhome_local_sessions_total", endpoint="restconf")
            with self.server.registry.local_session(device, "restconf"):
                await serve_http(reader, writer, self._device_http[device].relay)

        return handle

    # -- control API ------------------------------------------------------------------------

    def record(self, name: str) -> DeviceInfo | None:
        """``name``'s record (the control API's answer), if the gateway serves it."""
        use = self.local.get(name)
        if use is None:
            return None
        device = self.inventory.get(name)
        return DeviceInfo.of(
            self.server.registry.status(name),
            name=name,
            transport=device.transport.value if device is not None else "-",
            local_sessions=self.server.registry.local_sessions(name),
            one_session_at_a_time=self.server.traits(name).one_at_a_time,
            session_held=self.server.session_held(name),
            last_session_error=use.last_error,
            last_session_error_at=use.last_error_at,
        )

    async def _control_connection(self, sock: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=sock)
        handler = (
            functools.partial(control.handle, self) if self.cluster is None else ClusterView(self, self.cluster).handle
        )
        await serve_http(reader, writer, handler)

    # -- what the control API reads (control.ControlView) ----------------------------------------

    def names(self) -> list[str]:
        return list(self.local)

    async def wait_for(self, name: str, timeout: float) -> None:
        await self.server.wait_for(name, timeout)

    def rejected(self) -> list[dict[str, Any]]:
        return [_rejected_dict(r) for r in self.server.rejected]

    def blocked(self) -> Any:
        return self.server.admission.blocked()

    def metrics(self) -> str:
        return self.server.metrics.render()

    def events(self, query: Mapping[str, list[str]], client_gone: Callable[[], bool]) -> Response:
        return self._events_api.request(query, client_gone)


def _rejected_dict(r: RejectedAttempt) -> dict[str, Any]:
    data = asdict(r)
    data["peer_address"] = format_peer(r.peer_address)
    return data


def run(config: GatewayConfig, *, ready_file: Path | None = None) -> None:
    """Run the gateway until SIGTERM/SIGINT.  Once every listener and endpoint
    is up it notifies systemd (``READY=1``, when ``$NOTIFY_SOCKET`` is set)
    and writes ``ready_file`` (JSON: pid, run_dir, listening ports), which it
    removes when it stops."""

    open_file_limit = raise_open_file_limit()  # before any socket: 2 descriptors per device

    async def main() -> None:
        gateway = Gateway(config, ready_file=ready_file, open_file_limit=open_file_limit)
        await gateway.start()
        await gateway.serve_forever()

    asyncio.run(main())
