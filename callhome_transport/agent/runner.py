"""The agent: dials the managers the scheduler says, and splices each
outbound connection to a new connection to the device's own server.

RFC 8071 S1-S2 for a NETCONF server that cannot call home itself: the agent
opens the TCP connection to the manager (S1), then connects to the local SSH
or TLS server and relays bytes both ways.  The SSH/TLS server role (S3-S7:
host key or certificate, client authentication, the NETCONF server) stays
with the real server: the agent sees only ciphertext and holds no credential.

One asyncio loop runs every client.  ``callhome agent`` (:func:`run_agent`)
adds the signals: SIGHUP reloads the file (changed clients restart, the others
are untouched), SIGTERM and SIGINT hang up and end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import AgentConfigError
from ..metrics import Metrics
from .config import DEFAULT_REVISION, load_config
from .driver import ScheduleDriver, describe_reload
from .model import AgentConfig, Endpoint, HostPort, NetconfClient, TcpKeepalives, Transport
from .schedule import Dial, Exhausted, Timing

__all__ = ["Agent", "run_agent"]

log = logging.getLogger(__name__)

_CHUNK = 65536
LOCAL_CONNECT_TIMEOUT = 5.0  # seconds to reach the device's own server (it is local)


def _fmt_bytes(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / (1024 * 1024):.1f} MiB"


def _why(exc: OSError) -> str:
    """``Connection refused`` rather than asyncio's ``Connect call failed (...)``."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def set_keepalives(sock: socket.socket, keepalives: TcpKeepalives | None) -> None:
    """SO_KEEPALIVE with the model's idle-time, probe-interval and max-probes
    (ietf-tcp-common; Linux names them TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT)."""
    if keepalives is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", keepalives.idle_time),
        ("TCP_KEEPINTVL", keepalives.probe_interval),
        ("TCP_KEEPCNT", keepalives.max_probes),
    ):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


async def _connect(
    host: str,
    port: int,
    *,
    local_address: str | None = None,
    local_port: int = 0,
    keepalives: TcpKeepalives | None = None,
    timeout: float | None = None,
) -> socket.socket:
    """A TCP connection to the first address of ``host`` that answers, in
    resolution order, optionally bound first; ``TCP_NODELAY`` on.  Raises
    :class:`OSError` naming each address's failure."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if local_address is not None:
        want = socket.AF_INET6 if ":" in local_address else socket.AF_INET
        infos = [info for info in infos if info[0] == want]
        if not infos:
            raise OSError(f"{host} has no address of the family of {local_address}")
    errors: list[str] = []
    for family, _type, proto, _name, address in infos:
        sock = socket.socket(family, socket.SOCK_STREAM, proto)
        sock.setblocking(False)
        try:
            if local_address is not None or local_port:
                if local_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                any_address = "::" if family == socket.AF_INET6 else "0.0.0.0"
                sock.bind((local_address or any_address, local_port))
            set_keepalives(sock, keepalives)
            await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
        except (OSError, TimeoutError) as exc:
            sock.close()
            errors.append(f"{address[0]}: {_why(exc) if isinstance(exc, OSError) else 'timed out'}")
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise OSError("; ".join(errors) or "no address")


async def dial_endpoint(endpoint: Endpoint) -> socket.socket:
    """Open the TCP connection to ``endpoint`` (RFC 8071 S1): every address
    the name resolves to, in order, from ``local-address``/``local-port`` if
    set, with the endpoint's keepalives.  Its max-wait is the scheduler's."""
    return await _connect(
        endpoint.remote_address,
        endpoint.remote_port,
        local_address=endpoint.local_address,
        local_port=endpoint.local_port,
        keepalives=endpoint.keepalives,
    )


async def connect_local(server: HostPort, timeout: float = LOCAL_CONNECT_TIMEOUT) -> socket.socket:
    """A new connection to the device's own server."""
    return await _connect(server.host, server.port, timeout=timeout)


@dataclass
class SessionResult:
    graceful: bool
    reason: str
    to_manager: int
    from_manager: int


class Splice:
    """Bytes both ways between the manager's connection and the local
    server's, until both sides have closed, either fails, or :meth:`close`.
    ``on_activity`` is called whenever bytes move (idle-timeout)."""

    def __init__(
        self, manager: socket.socket, local: socket.socket, on_activity: Callable[[], None] = lambda: None
    ) -> None:
        self.manager = manager
        self.local = local
        self.on_activity = on_activity
        self.to_manager = 0
        self.from_manager = 0
        self._closed_by: str | None = None
        self._first_eof: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def _pump(self, src: socket.socket, dst: socket.socket, from_manager: bool) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(src, _CHUNK)
            if not data:
                if self._first_eof is None:
                    self._first_eof = "the manager closed" if from_manager else "the local server closed"
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            await loop.sock_sendall(dst, data)
            if from_manager:
                self.from_manager += len(data)
            else:
                self.to_manager += len(data)
            self.on_activity()

    async def run(self) -> SessionResult:
        if self._closed_by is not None:  # hung up before it started
            self.manager.close()
            self.local.close()
            return SessionResult(graceful=True, reason=self._closed_by, to_manager=0, from_manager=0)
        self._tasks = [
            asyncio.create_task(self._pump(self.manager, self.local, True)),
            asyncio.create_task(self._pump(self.local, self.manager, False)),
        ]
        error: BaseException | None = None
        try:
            pending = set(self._tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if not task.cancelled() and task.exception() is not None and error is None:
                        error = task.exception()
                        for other in pending:
                            other.cancel()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.manager.close()
            self.local.close()
        if self._closed_by is not None:
            graceful, reason = True, self._closed_by
        elif error is not None:
            what = _why(error) if isinstance(error, OSError) else repr(error)
            graceful, reason = False, f"connection error: {what}"
        else:
            graceful, reason = True, self._first_eof or "closed"
        return SessionResult(
            graceful=graceful, reason=reason, to_manager=self.to_manager, from_manager=self.from_manager
        )

    def close(self, reason: str) -> None:
        """Hang up both sides (the agent's decision: idle-timeout, reload, stop)."""
        if self._closed_by is None:
            self._closed_by = f"hung up: {reason}"
        for task in self._tasks:
            task.cancel()


class Agent(ScheduleDriver):
    """Call home on behalf of the device's own NETCONF servers, as ``config`` says.

    ``clock`` is wall-clock time (periodic connections are anchored to dates);
    ``metrics_file`` gets the Prometheus text of :attr:`metrics` after every
    change (for node_exporter's textfile collector: the agent opens no port)."""

    log = logging.getLogger(__name__)

    def __init__(
        self,
        config: AgentConfig,
        *,
        timing: Timing | None = None,
        metrics_file: Path | None = None,
        state_file: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state_file = state_file
        super().__init__(timing=timing, clock=clock, last_connected=self._read_state())
        self.config = config
        self.metrics_file = metrics_file
        self.metrics = Metrics()
        self.metrics.counter("callhome_agent_dials_total", "Connection attempts to managers, by outcome")
        self.metrics.counter(
            "callhome_agent_rounds_exhausted_total", "Rounds in which every endpoint of a client failed max-attempts"
        )
        self.metrics.counter("callhome_agent_local_failures_total", "Manager connections dropped: no local server")
        self.metrics.counter("callhome_agent_sessions_total", "Spliced sessions ended")
        self.metrics.counter("callhome_agent_bytes_total", "Bytes relayed, by direction")
        self.metrics.gauge(
            "callhome_agent_connected",
            "1 if the client has a session now",
            lambda: {(("client", c),): float(c in self.connected_clients()) for c in self.scheduler.clients()},
        )
        self._splices: dict[int, Splice] = {}
        self._local_down: set[Transport] = set()

    def reload(self, config: AgentConfig) -> None:
        """Apply a new configuration: changed clients restart, the others
        keep their sessions (new sessions use the new local servers)."""
        log.info("reloaded %s: %s", config.source, describe_reload(self.config.clients, config.clients))
        self.config = config
        self.reconfigure()

    # -- the driver's hooks ------------------------------------------------------------------------

    def current_clients(self) -> Sequence[NetconfClient]:
        return self.config.clients

    def hang_up(self, attempt: int, reason: str) -> None:
        splice = self._splices.get(attempt)
        if splice is not None:
            splice.close(reason)

    def on_exhausted(self, event: Exhausted) -> None:
        self.metrics.inc("callhome_agent_rounds_exhausted_total", client=event.client)

    def on_cancelled(self, dial: Dial, reason: str) -> None:
        self._count_dial(dial, "timeout" if reason == "max-wait" else "cancelled")

    def after_actions(self) -> None:
        self._write_metrics()

    def _count_dial(self, dial: Dial, result: str) -> None:
        self.metrics.inc("callhome_agent_dials_total", client=dial.client, endpoint=dial.endpoint.name, result=result)

    # -- one call ----------------------------------------------------------------------------------

    async def call(self, dial: Dial) -> None:
        endpoint = dial.endpoint
        who = f"client={dial.client} endpoint={endpoint.name}"
        log.debug("%s dialling %s (round %d, try %d)", who, endpoint.remote, dial.round, dial.try_number)
        try:
            manager = await dial_endpoint(endpoint)
        except OSError as exc:
            log.debug("%s %s: %s", who, endpoint.remote, exc)
            self._count_dial(dial, "error")
            self.report_failed(dial, str(exc))
            return
        local_server = self.config.local.for_transport(endpoint.transport)
        try:
            local = await connect_local(local_server)
        except OSError as exc:
            manager.close()
            if endpoint.transport not in self._local_down:
                self._local_down.add(endpoint.transport)
                log.warning(
                    "%s local %s server %s unavailable (%s): hung up on the manager; retrying per the strategy",
                    who,
                    endpoint.transport.value.upper(),
                    local_server,
                    _why(exc),
                )
            self.metrics.inc("callhome_agent_local_failures_total", transport=endpoint.transport.value)
            self._count_dial(dial, "local-unavailable")
            self.report_failed(dial, f"local server {local_server} unavailable")
            return
        except BaseException:
            manager.close()
            raise
        if endpoint.transport in self._local_down:
            self._local_down.discard(endpoint.transport)
            log.info("local %s server %s is back", endpoint.transport.value.upper(), local_server)
        await self._session(dial, manager, local, local_server, who)

    async def _session(
        self, dial: Dial, manager: socket.socket, local: socket.socket, local_server: HostPort, who: str
    ) -> None:
        started = self.clock()
        splice = Splice(manager, local, lambda: self.report_activity(dial.attempt))
        self._splices[dial.attempt] = splice
        self._count_dial(dial, "ok")
        try:
            peer = manager.getpeername()
            resolved = "" if peer[0] == dial.endpoint.remote_address else f" ({_addr(peer)})"
            log.info(
                "%s connected to %s%s from %s; spliced to %s",
                who,
                dial.endpoint.remote,
                resolved,
                _addr(manager.getsockname()),
                local_server,
            )
            if not self.report_connected(dial, started):
                splice.close("no longer wanted")
            result = await splice.run()
        finally:
            self._splices.pop(dial.attempt, None)
        log.info(
            "%s session ended after %.1f s (%s): %s to the manager, %s from it",
            who,
            self.clock() - started,
            result.reason,
            _fmt_bytes(result.to_manager),
            _fmt_bytes(result.from_manager),
        )
        self.metrics.inc("callhome_agent_sessions_total", client=dial.client, endpoint=dial.endpoint.name)
        self.metrics.inc("callhome_agent_bytes_total", result.to_manager, client=dial.client, direction="to-manager")
        self.metrics.inc(
            "callhome_agent_bytes_total", result.from_manager, client=dial.client, direction="from-manager"
        )
        self.report_ended(dial, graceful=result.graceful)

    def _write_metrics(self) -> None:
        if self.metrics_file is not None:
            _write_atomic(self.metrics_file, self.metrics.render(), "metrics")

    # -- last-connected across restarts ---------------------------------------------------------------

    def _read_state(self) -> dict[str, str]:
        if self.state_file is None or not self.state_file.exists():
            return {}
        try:
            state = json.loads(self.state_file.read_text())
            remembered = state["last_connected"]
            if not isinstance(remembered, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in remembered.items()
            ):
                raise TypeError("last_connected must map client names to endpoint names")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the state file %s (%s): last-connected starts afresh", self.state_file, exc)
            return {}
        return dict(remembered)

    def report_connected(self, dial: Dial, at: float | None = None) -> bool:
        before = self.scheduler.remembered()
        wanted = super().report_connected(dial, at)
        after = self.scheduler.remembered()
        if self.state_file is not None and after != before:
            _write_atomic(self.state_file, json.dumps({"last_connected": after}, indent=2) + "\n", "state")
        return wanted


_unwritable: set[Path] = set()  # warned about once, until a write succeeds


def _write_atomic(path: Path, text: str, what: str) -> None:
    """Replace ``path`` in one step (readers never see half a file)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".callhome-agent-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        if path not in _unwritable:
            _unwritable.add(path)
            log.warning("cannot write the %s file %s: %s", what, path, exc)
    else:
        _unwritable.discard(path)


def _addr(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def log_config(config: AgentConfig) -> None:
    """The INFO lines of a (re)load: what is dialled, and each ignored part."""
    log.info(
        "call-home configuration %s (ietf-netconf-server@%s): %d client(s); SSH endpoints -> %s, TLS endpoints -> %s",
        config.source,
        config.revision,
        len(config.clients),
        config.local.ssh,
        config.local.tls,
    )
    for part in config.ignored:
        log.info("ignored %s: %s", part.key_path, part.reason)
    if not config.clients:
        log.warning("%s configures no netconf-client: nothing to call (SIGHUP reloads)", config.source)


def run_agent(
    path: Path,
    *,
    revision: str = DEFAULT_REVISION,
    local_ssh: HostPort | None = None,
    local_tls: HostPort | None = None,
    metrics_file: Path | None = None,
    state_file: Path | None = None,
) -> int:
    """``callhome agent``: run until SIGTERM/SIGINT; SIGHUP reloads ``path``."""

    def load() -> AgentConfig:
        return load_config(path, revision=revision, local_ssh=local_ssh, local_tls=local_tls)

    for option, file in (("--metrics-file", metrics_file), ("--state-file", state_file)):
        if file is not None and not file.parent.is_dir():
            raise AgentConfigError(file, "", f"a file in an existing directory ({option})")
    config = load()
    log_config(config)
    agent = Agent(config, metrics_file=metrics_file, state_file=state_file)

    def reload() -> None:
        failure: AgentConfigError | None = None
        try:
            new = load()
        except AgentConfigError as exc:
            failure = exc
        if failure is not None:
            log.error("reload failed, keeping the running configuration: %s", failure)
            return
        log_config(new)
        agent.reload(new)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, agent.stop)
        loop.add_signal_handler(signal.SIGINT, agent.stop)
        loop.add_signal_handler(signal.SIGHUP, reload)
        await agent.run("the agent is stopping")

    asyncio.run(main())
    log.info("callhome agent stopped")
    return 0
