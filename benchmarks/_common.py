"""Helpers shared by the benchmarks (not a benchmark itself).

- CPU, RSS and open files of a process, read from ``/proc`` (the figures of
  processes we did not write, such as ``callhome serve``, come from there too,
  so every manager is measured the same way);
- :class:`LineProcess`: a helper process that speaks JSON lines on
  stdin/stdout, waited on with a reader thread (no polling);
- :func:`goal`: the one format every benchmark prints its issue goals in
  (``benchmarks/run_all.py`` collects them), and :func:`ratio`, which refuses
  to print a ratio against a baseline that did not run.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
GOAL_PREFIX = "GOAL |"


# -- /proc ----------------------------------------------------------------------------------


def proc_cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process ``pid`` and its threads (alive
    or ended), at the kernel's clock-tick resolution (10 ms here)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def proc_fds(pid: int) -> int:
    """Open file descriptors of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_sched(pid: int, tid: int | None = None) -> tuple[float, float]:
    """Seconds thread ``tid`` of ``pid`` (its main thread: the event loop's)
    has run on a CPU and has waited, runnable, for one
    (``/proc/<pid>/task/<tid>/schedstat``, nanoseconds): a stall whose time
    went to waiting was the machine's, not the loop's own work."""
    fields = Path(f"/proc/{pid}/task/{tid or pid}/schedstat").read_text().split()
    return int(fields[0]) / 1e9, int(fields[1]) / 1e9


def nofile_limits() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def raise_nofile(hard_limit: int | None = None) -> tuple[int, int]:
    """Raise this process's soft open-file limit to the hard one (the helper
    processes inherit it); return (soft, hard) after.  ``hard_limit`` sets
    the hard limit first (raising it needs CAP_SYS_RESOURCE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard_limit is not None and hard_limit != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard_limit), hard_limit))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class CpuMeter:
    """CPU used by ``pid`` between :meth:`start` and :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.user = self.system = 0.0
        self._start = (0.0, 0.0)

    def start(self) -> CpuMeter:
        self._start = proc_cpu(self.pid)
        return self

    def stop(self) -> CpuMeter:
        user, system = proc_cpu(self.pid)
        self.user, self.system = user - self._start[0], system - self._start[1]
        return self

    @property
    def total(self) -> float:
        return self.user + self.system


# -- helper processes -----------------------------------------------------------------------


class LineProcess:
    """A helper process that prints one JSON object a line (``{"event": ...}``)
    and reads commands a line on stdin.  :meth:`expect` waits for an event
    on a queue filled by a reader thread, bounded by a timeout."""

    def __init__(self, args: Sequence[str], *, log: Path, env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.log = log
        self._log_file = log.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            env=env,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "text", "text": line}
            if not isinstance(event, dict):
                event = {"event": "text", "text": line}
            event["_at"] = time.monotonic()
            self._events.put(event)
        self._events.put(None)

    def send(self, command: str) -> float:
        """Write a command line; return the monotonic time it was written."""
        assert self.proc.stdin is not None
        at = time.monotonic()
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return at

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next event named ``event`` (others are skipped); RuntimeError
        with the tail of the helper's log if it exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{Path(self.args[1]).name}: no {event!r} within {timeout:.0f} s{self.tail()}")
            try:
                got = self._events.get(timeout=remaining)
            except queue.Empty:
                continue
            if got is None:
                self._events.put(None)
                raise RuntimeError(
                    f"{Path(self.args[1]).name} exited ({self.proc.poll()}) before {event!r}{self.tail()}"
                )
            if got.get("event") == event:
                return got
            if got.get("event") == "error":
                raise RuntimeError(f"{Path(self.args[1]).name}: {got.get('message')}{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return ("\n  " + "\n  ".join(text)) if text else ""

    def stop(self, timeout: float = 30) -> None:
        """Close stdin (the helper's cue to finish), then SIGTERM, then SIGKILL, by PID."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        self._log_file.close()


def emit(event: str, **fields: Any) -> None:
    """Print one JSON event line (the helper processes' side of :class:`LineProcess`)."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


# -- relays ---------------------------------------------------------------------------------


def forward_relay(target_port: int) -> tuple[subprocess.Popen[bytes], int]:
    """A ``socat`` TCP forwarder (TCP_NODELAY) in front of ``target_port``:
    the forward baselines take the same extra hop as the call-home relay."""
    from tests.integration.netconfd_peer import free_port

    port = free_port()
    proc = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay", f"TCP:127.0.0.1:{target_port},nodelay"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    return proc, port


# -- reporting ------------------------------------------------------------------------------


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], scale: float = 1.0, unit: str = "", digits: int = 1) -> str:
    """``median (min-max, n=N)`` of ``values`` times ``scale``."""
    if not values:
        return "no samples"
    f = f"{{:.{digits}f}}"
    return (
        f"{f.format(scale * med(values))}{unit} "
        f"(min {f.format(scale * min(values))}, max {f.format(scale * max(values))}, n={len(values)})"
    )


def ratio(ours: float | None, base: float | None, *, base_name: str = "baseline") -> float | None:
    """``ours / base``, or None (and an error line) when either did not run."""
    if ours is None or base is None or base <= 0:
        print(f"error: the {base_name} did not run: no ratio")
        return None
    return ours / base


def goal(name: str, measured: str, target: str, met: bool | None, note: str = "") -> None:
    """One goal line: ``GOAL | name | measured | target | met``; ``met`` None:
    not measured (say why in ``note``)."""
    verdict = "not measured" if met is None else ("goal met" if met else "goal NOT met")
    print(f"{GOAL_PREFIX} {name} | {measured} | {target} | {verdict}{f' ({note})' if note else ''}", flush=True)
