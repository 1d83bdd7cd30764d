"""``callhome serve --workers N``: N gateway processes on one host, one port.

One asyncio loop uses one core; a host with more cores runs one gateway
process per core.  Every worker binds the same listeners with
``SO_REUSEPORT`` (the kernel spreads incoming connections across them), has
its own run directory (``run_dir/w<i>``: ``control.sock`` and
``devices/<name>/``) and its own cluster id (``<gateway_id>-w<i>``), and is
a member of the same shared registry (``cluster:`` is required): a device
lands on any worker, and every worker's control socket answers for all of
them (docs/scale.md).

This supervisor starts the workers, links ``run_dir/control.sock`` to the
first one's (so ``callhome devices`` works as with one process), writes its
ready file and notifies systemd once all are up, passes SIGHUP on (reload)
and SIGTERM/SIGINT (stop), and starts a worker again when it dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from ..errors import EndpointError
from .config import GatewayConfig
from .readiness import remove_ready_file, sd_notify, write_ready_file

__all__ = ["run_workers"]

log = logging.getLogger(__name__)

_START_TIMEOUT = 120.0  # seconds for every worker to be ready
_RESTART_DELAY = 1.0
_POLL = 0.05


class _Worker:
    def __init__(self, index: int, config_path: Path, config: GatewayConfig) -> None:
        self.index = index
        self.run_dir = config.for_worker(index).run_dir
        self.ready_file = config.run_dir / f".w{index}.ready"
        self.argv = [
            *(sys.executable, "-m", "callhome_transport.cli", "serve"),
            *("--config", str(config_path), "--worker", str(index), "--ready-file", str(self.ready_file)),
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.ready_file.unlink()
        # the worker's log lines go where ours go (journal, terminal); systemd hears from the
        # supervisor only (NotifyAccess=main would log every worker's READY=1 as refused)
        env = {key: value for key, value in os.environ.items() if key != "NOTIFY_SOCKET"}
        self.proc = subprocess.Popen(self.argv, env=env)
        log.info("worker %d started (pid %d)", self.index, self.proc.pid)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


def run_workers(config_path: Path, config: GatewayConfig, count: int, *, ready_file: Path | None = None) -> int:
    """Run ``count`` workers until SIGTERM/SIGINT; returns the exit status."""
    config.for_worker(0)  # refuses a configuration workers cannot share (no cluster, port 0)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    workers = [_Worker(index, config_path, config) for index in range(count)]
    stopping = False

    def on_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            worker.signal(signal.SIGTERM)

    def on_hup(signum: int, frame: FrameType | None) -> None:
        for worker in workers:
            worker.signal(signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    for worker in workers:
        worker.start()
    link = config.run_dir / "control.sock"
    try:
        _wait_ready(workers, lambda: stopping)
        if not stopping:
            _link(link, Path("w0/control.sock"))
            _announce(config, workers, ready_file)
        restart_at: dict[int, float] = {}
        while not stopping:
            for worker in workers:
                assert worker.proc is not None
                code = worker.proc.poll()
                if code is None:
                    continue
                if worker.index not in restart_at:
                    log.warning(
                        "worker %d (pid %d) exited with %s; starting it again", worker.index, worker.proc.pid, code
                    )
                    restart_at[worker.index] = time.monotonic() + _RESTART_DELAY
                elif time.monotonic() >= restart_at[worker.index]:
                    del restart_at[worker.index]
                    worker.start()
            time.sleep(_POLL * 4)
    finally:
        sd_notify("STOPPING=1")
        if not stopping:  # on_stop has signalled them already: a second SIGTERM would stop them twice
            for worker in workers:
                worker.signal(signal.SIGTERM)
        for worker in workers:
            if worker.proc is not None:
                try:
                    worker.proc.wait(30)
                except subprocess.TimeoutExpired:
                    worker.signal(signal.SIGKILL)
                    worker.proc.wait(5)
        if link.is_symlink():
            link.unlink()
        if ready_file is not None:
            remove_ready_file(ready_file)
    return 0


def _wait_ready(workers: list[_Worker], stopping: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while not all(w.ready_file.exists() for w in workers):
        if stopping():
            return
        for worker in workers:
            if worker.proc is not None and worker.proc.poll() is not None:
                raise EndpointError(path=str(worker.run_dir), reason=f"worker {worker.index} exited at start")
        if time.monotonic() > deadline:
            raise EndpointError(path=str(workers[0].run_dir), reason=f"workers not ready in {_START_TIMEOUT:g} s")
        time.sleep(_POLL)


def _link(link: Path, target: Path) -> None:
    staged = link.with_name(".control.sock.link")
    with contextlib.suppress(FileNotFoundError):
        staged.unlink()
    staged.symlink_to(target)
    os.replace(staged, link)


def _announce(config: GatewayConfig, workers: list[_Worker], ready_file: Path | None) -> None:
    pids = [w.proc.pid for w in workers if w.proc is not None]
    if ready_file is not None:
        write_ready_file(
            ready_file,
            {
                "pid": os.getpid(),
                "workers": pids,
                "run_dir": str(config.run_dir),
                "control_socket": str(config.run_dir / "control.sock"),
                "worker_run_dirs": [str(w.run_dir) for w in workers],
            },
        )
    sd_notify(f"READY=1\nSTATUS={len(workers)} workers ready\nMAINPID={os.getpid()}")
    log.info("%d workers ready: %s", len(workers), ", ".join(str(w.run_dir) for w in workers))
