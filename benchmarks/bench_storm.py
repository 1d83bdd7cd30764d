"""Call-home storm: N simulated SSH devices call at once; rate and CPU of
each manager against a bare asyncssh loop and a C floor, in the same run.

Every party runs in a process of its own, so every CPU figure is that
process's own (``/proc/<pid>/stat``, 10 ms ticks):

- the fleet: ``benchmarks/_fleet.py`` (the simulated devices of
  ``callhome_transport.sim``), whose CPU per handshake is printed beside the
  manager's: on this 2-core machine the devices cost about as much as the
  manager, and the two share the cores;
- the managers, one after the other against the same fleet (the devices
  hang up between them):

  storm (every device at once; registered = identified and authenticated)
    ``bare``     a bare asyncssh client loop, same accept loop, same host-key
                 check and password, options passed per connection
                 (``benchmarks/_managers.py``);
    ``server``   our ``AsyncCallHomeServer`` in a process of its own
                 (``watch_loop=True``), then ``--idle`` seconds idle, its
                 event loop probed with a 50 ms sleep;
    ``gateway``  the real ``callhome serve`` (INFO logging, its netconf.sock
                 per device), then ``--idle`` seconds with every session
                 idle and keepalives running, its event loop probed with a
                 tiny control request every 50 ms.
  sessions with the hello (``--hello-devices`` at once)
    ``C``        libnetconf2's client (``nc_accept_callhome``, one session
                 after the other): ``benchmarks/ln2_manager/ln2_manager.c``,
                 compiled here with gcc and pkg-config: the C floor;
    ``bare``     + the ``netconf`` channel and the hello;
    ``server``   + a greeted session (``take_session``: the ``netconf``
                 channel and the hello exchange, the session held ready to
                 lend), what ``nc_accept_callhome`` returns in C;
    ``Manager``  ``CallHomeServer.netconf()``: an ncclient Manager per device.
  stock (``--stock-devices``, one after the other)
    ``stock``    ncclient ``connect_ssh(sock=accepted)`` behind the same accept
                 loop (its own ``call_home`` cannot bind twice in a process).

Before each measured storm one warm-up device calls (lazy imports, first
allocations), and is not counted.  Registration is waited for on events
(the managers' callbacks, the fleet's report; for the gateway one metrics
request, then its control API's ``wait`` for any device still missing),
never by polling a registry; the gateway's CPU for that one metrics request
(timed again right after, on the same state) is taken off its storm CPU, as
the bare loop counts its own registrations for free;
the rate is devices / (command to the fleet -> its last authentication), the
same clock for every manager.  Admission limits are raised to the fleet size
(``max_pending_handshakes``), so the storm measures handshakes, not refusals.

The open-file limit is reported: the gateway holds descriptors per
inventory device and per connected device; if the limit cannot hold
``--devices``, the benchmark says so before the storm and after it (how many
registered), and prints no ratio for the incomplete storm.

Run: ``.venv/bin/python benchmarks/bench_storm.py --devices 1000`` (and
``--devices 10000``; ``make bench`` runs both).  ``--profile DIR`` records a
py-spy profile of each Python manager during its storm (py-spy from PyPI).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from _common import (
    ROOT,
    CpuMeter,
    LineProcess,
    goal,
    med,
    nofile_limits,
    proc_fds,
    proc_rss_kib,
    raise_nofile,
    thread_sched,
)

sys.path.insert(0, str(ROOT))

from tests.integration.libnetconf2_peer import LN2_YANG_DIR, build_ln2, ln2_available
from tests.integration.netconfd_peer import free_port
from tests.integration.test_gateway import GatewayProcess

HERE = Path(__file__).resolve().parent
C_SOURCE = HERE / "ln2_manager" / "ln2_manager.c"
C_PACKAGES = ("libnetconf2", "libyang", "libssh")
# the modules the simulated device announces, preloaded in the C client's shared context
C_MODULES = ("ietf-netconf-acm", "ietf-system@2014-08-06", "ietf-interfaces@2018-02-20")
C_SEARCHPATHS = (LN2_YANG_DIR, Path("/usr/share/yuma/nmda-modules/ietf"))
PY = sys.executable
POLL_SAMPLES = 5  # /metrics requests timed to take the gateway's registration check off its storm CPU


class Phase:
    """One manager's measured run: what it did and what it cost."""

    def __init__(self, name: str, devices: int) -> None:
        self.name = name
        self.devices = devices
        self.ok = 0
        self.failed = 0
        self.seconds: float | None = None
        self.cpu = 0.0
        self.cpu_system = 0.0
        self.fleet_cpu = 0.0
        self.algorithms: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.extra: dict[str, Any] = {}
        self.error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and self.ok == self.devices and self.seconds is not None

    @property
    def rate(self) -> float | None:
        return self.devices / self.seconds if self.complete and self.seconds else None

    @property
    def precise(self) -> bool:
        """At least 50 clock ticks of CPU (+-2 %): enough to judge a goal on."""
        return self.cpu >= 0.5

    @property
    def cpu_ms(self) -> float | None:
        return 1000 * self.cpu / self.ok if self.ok and self.error is None else None

    @property
    def fleet_ms(self) -> float | None:
        return 1000 * self.fleet_cpu / self.ok if self.ok else None

    def line(self) -> str:
        if self.error is not None:
            return f"  {self.name:34s} error: {self.error}"
        rate = f"{self.rate:8.1f}/s" if self.rate else "incomplete"
        cpu = f"{self.cpu_ms:6.2f} ms" if self.cpu_ms is not None else "   -   "
        fleet = f"{self.fleet_ms:6.2f} ms" if self.fleet_ms is not None else "   -   "
        sys_ms = 1000 * self.cpu_system / self.ok if self.ok else 0.0
        coarse = "" if self.precise else f"  (+-{100 * 0.01 / max(self.cpu, 0.01):.0f} %: few ticks)"
        return (
            f"  {self.name:34s} {self.ok:6d}/{self.devices:<6d} {rate:>11s}  manager {cpu} "
            f"(kernel {sys_ms:5.2f})  fleet {fleet}{coarse}"
        )


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        wanted = set(args.only or PHASES)
        sizes = [args.devices] if wanted & {"bare", "server", "gateway"} else []
        sizes += [args.hello_devices] if wanted & {"c", "bare-hello", "server-hello", "server-manager"} else []
        sizes += [args.stock_devices] if "stock" in wanted else []
        self.total = max(sizes, default=1)
        self.warm = self.total  # index of the warm-up device (one past the measured ones)
        self.fleet: LineProcess | None = None
        self.inventory = work / "fleet.yml"
        self.fingerprints = work / "fingerprints.txt"
        self.profiles: list[Path] = []

    # -- the fleet ----------------------------------------------------------------------------

    def start_fleet(self) -> None:
        self.fleet = LineProcess(
            [
                PY, str(HERE / "_fleet.py"), "--devices", str(self.total + 1),
                "--inventory-out", str(self.inventory), "--fingerprints-out", str(self.fingerprints),
            ],
            log=self.work / "fleet.log",
        )  # fmt: skip
        self.fleet.expect("ready", 600)

    def call(self, port: int, first: int, count: int) -> tuple[float, dict[str, Any]]:
        """Devices first..first+count-1 call ``port``; (when the command went, the fleet's report)."""
        assert self.fleet is not None
        timeout = max(60.0, count / 40)
        sent = self.fleet.send(f"call 127.0.0.1 {port} {first} {count} {timeout}")
        return sent, self.fleet.expect("called", timeout + 120)

    def hangup(self) -> None:
        assert self.fleet is not None
        self.fleet.send("hangup")
        self.fleet.expect("closed", 300)

    def warm_up(self, port: int) -> None:
        _, report = self.call(port, self.warm, 1)
        if report["ok"] != 1:
            raise RuntimeError(f"the warm-up device could not call: {report['errors']}")

    # -- profiles -----------------------------------------------------------------------------

    def trace_args(self, name: str) -> list[str]:
        if not self.args.trace_loop:
            return []
        self.args.trace_loop.mkdir(parents=True, exist_ok=True)
        return ["--trace-loop", str(self.args.trace_loop / f"{name}-{self.args.devices}.jsonl")]

    def trace_env(self) -> dict[str, str] | None:
        """The gateway's environment with ``_looptrace`` installed at start
        (a ``sitecustomize`` in the work directory), with ``--trace-loop``."""
        if not self.args.trace_loop:
            return None
        self.args.trace_loop.mkdir(parents=True, exist_ok=True)
        site = self.work / "trace-site"
        site.mkdir(exist_ok=True)
        out = self.args.trace_loop / f"gateway-{self.args.devices}.jsonl"
        (site / "sitecustomize.py").write_text(
            f"import sys\nsys.path.insert(0, {str(HERE)!r})\nfrom pathlib import Path\n"
            f"from _looptrace import LoopTrace\nLoopTrace(Path({str(out)!r})).install()\n"
        )
        return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}

    def profile(self, pid: int, name: str) -> subprocess.Popen[bytes] | None:
        if not self.args.profile:
            return None
        pyspy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(PY).parent))
        if pyspy is None:
            print("note: --profile needs py-spy (pip install py-spy): no profile", flush=True)
            return None
        out = self.args.profile / f"{name}-{self.args.devices}.txt"
        self.args.profile.mkdir(parents=True, exist_ok=True)
        self.profiles.append(out)
        command = [pyspy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250", "--gil", "--nonblocking"]
        proc = subprocess.Popen(
            [*command, "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=(self.work / f"py-spy-{name}.log").open("wb"),
        )
        time.sleep(1.0)  # py-spy attaches
        return proc

    @staticmethod
    def stop_profile(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)

    # -- Python managers ----------------------------------------------------------------------

    def python_phase(
        self,
        name: str,
        kind: str,
        level: str,
        count: int,
        *,
        by_fleet_clock: bool,
        idle: float = 0.0,
        extra_args: tuple[str, ...] = (),
    ) -> Phase:
        phase = Phase(name, count)
        manager = LineProcess(
            [
                PY, str(HERE / "_managers.py"), kind, "--level", level, "--count", str(count + 1),
                "--inventory", str(self.inventory), "--fingerprints", str(self.fingerprints),
                "--keepalive", str(self.args.keepalive), "--keepalive-jitter", str(self.args.keepalive_jitter),
                "--kex", *self.args.kex, "--cipher", *self.args.cipher,
                *self.trace_args(f"{kind}-{level}"), *extra_args,
            ],
            log=self.work / f"manager-{kind}-{level}.log",
        )  # fmt: skip
        try:
            port = manager.expect("ready", 120)["port"]
            self.warm_up(port)
            manager.expect("first", 60)
            # stock is left out: py-spy's sampling of its hundreds of ncclient threads costs it more than its work
            profiler = self.profile(manager.pid, f"{kind}-{level}") if level != "manager" and kind != "stock" else None
            cpu = CpuMeter(manager.pid).start()
            rss0 = proc_rss_kib(manager.pid)
            sent, report = self.call(port, 0, count)
            if report["failed"]:
                # devices that failed before the manager saw them (TCP, timeouts) never reach its
                # count: take its tally once it has had a moment for the rest
                try:
                    done = manager.expect("done", 30)
                except RuntimeError:
                    manager.send("status")
                    status = manager.expect("status", 30)
                    done = {**status, "errors": {}, "_at": status["_at"]}
            else:
                done = manager.expect("done", 600)
            cpu.stop()
            self.stop_profile(profiler)
            phase.ok, phase.failed = report["ok"], report["failed"]
            if done["ok"] != count + 1:
                phase.ok = min(phase.ok, done["ok"] - 1)
            phase.seconds = report["seconds"] if by_fleet_clock else done["_at"] - sent
            phase.cpu, phase.cpu_system = cpu.total, cpu.system
            phase.fleet_cpu = report["cpu_user"] + report["cpu_system"]
            phase.algorithms, phase.errors = report["algorithms"], {**report["errors"], **done["errors"]}
            phase.extra = {k: v for k, v in done.items() if k.startswith("gc_")}
            phase.extra["rss_per_session_kib"] = (proc_rss_kib(manager.pid) - rss0) / max(1, phase.ok)
            if idle:
                assert self.fleet is not None
                fleet_cpu = CpuMeter(self.fleet.pid).start()
                manager.send(f"idle {idle}")
                phase.extra["idle"] = manager.expect("idle", idle + 120)
                phase.extra["idle"]["fleet_cpu_share"] = fleet_cpu.stop().total / idle
        except RuntimeError as exc:
            phase.error = str(exc).splitlines()[0]
        finally:
            manager.stop()
            self.hangup()
        return phase

    # -- the C client -------------------------------------------------------------------------

    def c_phase(self, count: int) -> Phase:
        phase = Phase("C libnetconf2 client (with hello)", count)
        reason = ln2_available()
        if reason is None:
            for tool_check in C_PACKAGES[2:]:
                probe = subprocess.run(["pkg-config", "--exists", tool_check], capture_output=True, check=False)
                if probe.returncode != 0:
                    reason = f"pkg-config does not know {tool_check} (libssh-dev)"
        if reason is not None:
            phase.error = f"cannot build the C client: {reason}"
            return phase
        try:
            binary = build_ln2(C_SOURCE, self.work / "build", packages=C_PACKAGES)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            phase.error = f"cannot build the C client: {exc}"
            return phase
        port = free_port()
        searchpaths = [a for p in C_SEARCHPATHS if p.is_dir() for a in ("--searchpath", str(p))]
        modules = [a for m in C_MODULES for a in ("--module", m)]
        manager = LineProcess(
            [
                str(binary), "--port", str(port), "--count", str(count + 1),
                "--fingerprints", str(self.fingerprints), "--username", "admin",
                "--password-env", "BENCH_DEVICE_PASSWORD", *searchpaths, *modules,
            ],
            log=self.work / "manager-c.log",
            env={**os.environ, "BENCH_DEVICE_PASSWORD": "admin"},
        )  # fmt: skip
        try:
            manager.expect("text", 60)  # "ready <port>"
            self.warm_up(port)
            manager.expect("text", 60)  # "first"
            cpu = CpuMeter(manager.pid).start()
            sent, report = self.call(port, 0, count)
            done = manager.expect("text", 600)  # "done ok failed seconds"
            cpu.stop()
            _, ok, _failed, _ = done["text"].split()
            phase.ok = min(report["ok"], int(ok) - 1)
            phase.failed = count - phase.ok
            phase.seconds = done["_at"] - sent
            phase.cpu, phase.cpu_system = cpu.total, cpu.system
            phase.fleet_cpu = report["cpu_user"] + report["cpu_system"]
            phase.algorithms, phase.errors = report["algorithms"], report["errors"]
        except (RuntimeError, ValueError) as exc:
            phase.error = str(exc).splitlines()[0]
        finally:
            manager.stop()
            self.hangup()
        return phase

    # -- the gateway --------------------------------------------------------------------------

    def gateway_phase(self, count: int) -> Phase:
        phase = Phase("callhome serve (gateway)", count)
        gw_dir = self.work / "gateway"
        gw_dir.mkdir(exist_ok=True)
        inventory = yaml.safe_load(self.inventory.read_text())
        gw = GatewayProcess(
            gw_dir,
            inventory,
            ssh={
                "handshake_timeout": 120,
                "keepalive_interval": self.args.keepalive,
                "keepalive_count_max": 3,
                "keepalive_jitter": self.args.keepalive_jitter,
                **({"kex_algorithms": self.args.kex} if self.args.kex else {}),
                **({"encryption_algorithms": self.args.cipher} if self.args.cipher else {}),
            },
            admission={"max_pending_handshakes": max(256, 2 * count), "failures_before_block": 0},
        )
        proc = gw.launch(self.trace_env())
        try:
            deadline = time.monotonic() + 600
            while not gw.ready_file.exists():  # startup, not measured
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway did not start: {gw.log.read_text()[-500:]}")
                time.sleep(0.1)
            soft, _hard = gateway_nofile(proc.pid)
            fds_start = proc_fds(proc.pid)
            phase.extra.update(nofile_soft=soft, fds_start=fds_start, inventory_devices=self.total + 1)
            room = soft - fds_start
            if room < count + 1:
                print(
                    f"note: the gateway cannot hold {count} devices: its open-file limit is {soft}, it holds "
                    f"{fds_start} descriptors after start ({self.total + 1} inventory devices: a listening "
                    f"netconf.sock each) and needs at least one more per connected device: room for {room}",
                    flush=True,
                )
            self.warm_up(gw.ssh_port)
            status, _ = gw.get(f"/devices/{device_name(self.warm, self.total + 1)}/wait?timeout=60", 90)
            if status != 200:
                raise RuntimeError("the warm-up device did not register with the gateway")
            profiler = self.profile(proc.pid, "gateway")
            cpu = CpuMeter(proc.pid).start()
            rss0 = proc_rss_kib(proc.pid)
            _, report = self.call(gw.ssh_port, 0, count)
            names = [device_name(i, self.total + 1) for i in range(count)]
            registered = wait_registered(gw, report["ok"] + 1, names, 30) - 1
            cpu.stop()
            self.stop_profile(profiler)
            # that check read /metrics once, which the bare loop (it counts its own registrations)
            # never pays: the gateway's CPU for one such request, measured on the same state (the
            # mean of POLL_SAMPLES), is taken off (a /devices or /wait the check needed is not)
            poll = CpuMeter(proc.pid).start()
            for _ in range(POLL_SAMPLES):
                handshakes_ok(gw)
            poll.stop()
            phase.extra["poll_ms"] = 1000 * poll.total / POLL_SAMPLES
            phase.ok, phase.failed = registered, count - registered
            phase.seconds = report["seconds"]
            phase.cpu = max(0.0, cpu.total - poll.total / POLL_SAMPLES)
            phase.cpu_system = max(0.0, cpu.system - poll.system / POLL_SAMPLES)
            phase.fleet_cpu = report["cpu_user"] + report["cpu_system"]
            phase.algorithms, phase.errors = report["algorithms"], report["errors"]
            fds_end = proc_fds(proc.pid)
            phase.extra.update(
                fds_end=fds_end,
                fds_per_session=(fds_end - fds_start) / max(1, registered),
                rss_per_session_kib=(proc_rss_kib(proc.pid) - rss0) / max(1, registered),
            )
            text = gw.log.read_text(errors="replace")
            room_line = re.search(r"room for (\d+) connected devices", text)
            phase.extra["room_logged"] = int(room_line.group(1)) if room_line else None
            if registered < count:
                phase.extra["log_emfile"] = text.count("Too many open files")
                phase.extra["log_unknown_user"] = text.count("Unknown local username")
            if self.args.idle:
                assert self.fleet is not None
                fleet_cpu = CpuMeter(self.fleet.pid).start()
                phase.extra["idle"] = probe_idle(gw, device_name(0, self.total + 1), self.args.idle, proc.pid)
                phase.extra["idle"]["fleet_cpu_share"] = fleet_cpu.stop().total / self.args.idle
            _, metrics = gw.get("/metrics", 60)
            phase.extra["metrics"] = {
                name: metric_sum(str(metrics), name)
                for name in (
                    "callhome_descriptor_refusals_total",
                    "callhome_loop_stall_worst_seconds",
                    "callhome_gc_pause_seconds_sum",
                    "callhome_gc_pause_seconds_count",
                    "callhome_gc_freezes_total",
                )
            }
        except RuntimeError as exc:
            phase.error = str(exc).splitlines()[0]
        finally:
            gw.stop()
            self.hangup()
        return phase


def device_name(index: int, count: int) -> str:
    """The fleet's name of device ``index`` (``callhome_transport.sim.fleet``)."""
    return f"SIM-{index + 1:0{max(5, len(str(count)))}d}"


def gateway_nofile(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    return nofile_limits()


def metric_sum(text: str, name: str) -> float | None:
    """The sum of every series of ``name`` in Prometheus text, or ``None``."""
    values = [float(line.split()[-1]) for line in text.splitlines() if re.match(rf"{name}(\{{| )", line)]
    return sum(values) if values else None


def handshakes_ok(gw: GatewayProcess) -> int:
    _, text = gw.get("/metrics", 60)
    total = 0
    for line in str(text).splitlines():
        if line.startswith("callhome_handshakes_total{") and 'result="ok"' in line:
            total += int(float(line.split()[-1]))
    return total


def wait_registered(gw: GatewayProcess, expected: int, names: list[str], timeout: float) -> int:
    """The gateway's count of registered handshakes, once it has ``expected``
    (the fleet saw them authenticated; the gateway may still be working
    through its queue): one metrics request, then, only if some are missing,
    the control API's event-driven ``wait`` on each of ``names`` not yet
    connected, up to ``timeout`` seconds in all."""
    got = handshakes_ok(gw)
    if got >= expected:
        return got
    deadline = time.monotonic() + timeout
    _, records = gw.get("/devices", 60)
    connected = {r["name"] for r in records if isinstance(r, dict) and r.get("state") == "connected"}
    for name in names:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if name not in connected:
            gw.get(f"/devices/{name}/wait?timeout={min(5.0, remaining):.1f}", 60)
    return handshakes_ok(gw)


def probe_idle(gw: GatewayProcess, device: str, seconds: float, pid: int) -> dict[str, float]:
    """A tiny control request every 50 ms for ``seconds``: its latency shows the
    gateway's event-loop stalls (keepalives, garbage collection)."""
    # (latency, the gateway's loop thread ran, it waited for a CPU, this probe waited for one)
    samples: list[tuple[float, float, float, float]] = []
    me, tid = os.getpid(), threading.get_native_id()
    cpu = CpuMeter(pid).start()
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        before, (ran, waited), (_, probe_waited) = time.monotonic(), thread_sched(pid), thread_sched(me, tid)
        gw.get(f"/devices/{device}", 30)
        latency = time.monotonic() - before
        ran_after, waited_after = thread_sched(pid)
        probe_after = thread_sched(me, tid)[1]
        samples.append((latency, ran_after - ran, waited_after - waited, probe_after - probe_waited))
        time.sleep(max(0.0, 0.05 - (time.monotonic() - before)))
    cpu.stop()
    samples.sort()
    latencies = [s[0] for s in samples]
    worst = samples[-1]
    return {
        "worst": worst[0],
        "worst_ran": worst[1],
        "worst_waited": worst[2],
        "worst_probe_waited": worst[3],
        "worst_less_wait": max(s[0] - s[2] - s[3] for s in samples),
        "p99": latencies[int(0.99 * (len(latencies) - 1))],
        "median": med(latencies),
        "samples": len(samples),
        "cpu_share": cpu.total / (time.monotonic() - started),
    }


def report(args: argparse.Namespace, phases: dict[str, Phase]) -> None:
    n = args.devices
    cores = os.cpu_count()
    print()
    print(f"call-home storm, {cores} cores; every party in its own process; CPU per device from /proc (10 ms ticks)")
    print(f"  {'manager':34s} {'registered':>13s} {'rate':>11s}  CPU per device")
    print(f"storm: {n} devices at once (registered = identified + authenticated)")
    for key in ("bare", "server", "gateway"):
        if key in phases:
            print(phases[key].line())
    print(f"sessions with the NETCONF hello: {args.hello_devices} devices at once")
    for key in ("c", "bare-hello", "server-hello", "server-manager"):
        if key in phases:
            print(phases[key].line())
    if "stock" in phases:
        print(f"stock ncclient, {args.stock_devices} devices one after the other (with hello)")
        print(phases["stock"].line())
    print("negotiated (as the devices saw it):")
    for key, phase in phases.items():
        if phase.algorithms:
            print(f"  {key:16s} {', '.join(phase.algorithms)}")
    for key, phase in phases.items():
        if phase.errors:
            print(f"  errors, {key}: {json.dumps(phase.errors)[:300]}")
    for key in ("bare", "server"):
        phase = phases.get(key)
        if phase and "gc_count" in phase.extra:
            e = phase.extra
            print(
                f"  GC during the storm, {key}: {e['gc_count']} collections, {e['gc_total']:.2f} s, "
                f"worst {1000 * e['gc_worst']:.0f} ms"
            )

    server = phases.get("server")
    if server is not None and "idle" in server.extra:
        i = server.extra["idle"]
        print(
            f"  in-process server (watch_loop=True) idle with {server.ok} sessions, {args.keepalive:g} s keepalives, "
            f"{args.idle:g} s: worst event-loop stall {1000 * i['worst']:.0f} ms, p99 {1000 * i['p99']:.1f} ms; "
            f"GC {i['gc_count']} collections, {i['gc_total']:.2f} s, worst {1000 * i['gc_worst']:.0f} ms; "
            f"CPU {100 * i['cpu_share']:.2f} % of a core (fleet {100 * i['fleet_cpu_share']:.2f} %); the worst "
            f"sample's loop thread ran {1000 * i['worst_ran']:.1f} ms and waited {1000 * i['worst_waited']:.1f} ms "
            f"for a CPU; worst stall less that wait {1000 * i['worst_less_wait']:.0f} ms"
        )

    print()
    print("same-run ratios")
    bare, server, gw = phases.get("bare"), phases.get("server"), phases.get("gateway")
    c_floor, srv_hello = phases.get("c"), phases.get("server-hello")
    bare_hello, srv_mgr, stock = phases.get("bare-hello"), phases.get("server-manager"), phases.get("stock")

    def show(label: str, ours: Phase | None, base: Phase | None, get: Any, get_base: Any = None) -> float | None:
        """Print ours / base; nothing if a side was not part of this run
        (``--only``), an error (never a ratio) if a side did not complete."""
        if ours is None or base is None:
            return None
        for side, getter in ((base, get_base or get), (ours, get)):
            if getter(side) is None:
                why = side.error or f"{side.ok} of {side.devices} devices"
                print(f"error: {side.name} did not complete ({why}): no ratio '{label}'")
                return None
        if (get_base or get)(base) <= 0:
            print(f"error: {base.name} used no measurable CPU (10 ms ticks): no ratio '{label}'")
            return None
        value: float = get(ours) / (get_base or get)(base)
        print(f"  {label:58s} {value:6.2f}")
        return value

    cpu_server = show("in-process server CPU / bare CPU (per handshake)", server, bare, cpu_of)
    cpu_gw = show("gateway CPU / bare CPU (per handshake)", gw, bare, cpu_of)
    show("in-process server rate / bare rate", server, bare, rate_of)
    rate_gw = show("gateway rate / bare rate", gw, bare, rate_of)
    show("fleet CPU per handshake / gateway's (gateway storm)", gw, gw, fleet_of, cpu_of)
    c_ratio = show("our CPU per session with hello / C client", srv_hello, c_floor, cpu_of)
    show("bare asyncssh with hello / C client", bare_hello, c_floor, cpu_of)
    show("ncclient Manager per device (CPU) / C client", srv_mgr, c_floor, cpu_of)
    show("our CPU with hello / bare asyncssh with hello", srv_hello, bare_hello, cpu_of)
    show("stock ncclient CPU per session / our Manager's", stock, srv_mgr, cpu_of)
    show("our Manager rate (all at once) / stock rate (one by one)", srv_mgr, stock, rate_of)
    if gw is not None and gw.error is None:
        e = gw.extra
        print(
            f"  gateway file descriptors: limit {e['nofile_soft']}, {e['fds_start']} after start with "
            f"{e['inventory_devices']} inventory devices, {e.get('fds_per_session', 0):.2f} more per connected device; "
            f"RSS {e.get('rss_per_session_kib', 0):.1f} KiB per connected device"
        )
        print(
            f"  gateway CPU of one /metrics request (the registration check): {e.get('poll_ms', 0):.1f} ms, "
            "taken off its storm CPU"
        )
        if gw.ok < n:
            print(
                f"error: the gateway registered {gw.ok} of {n} devices (fleet errors: {json.dumps(gw.errors)[:200]}; "
                f"gateway log: {e.get('log_emfile', 0)} 'Too many open files', "
                f"{e.get('log_unknown_user', 0)} 'Unknown local username'): no rate ratio for this storm"
            )
        m = e.get("metrics") or {}
        if m:
            print(
                f"  gateway metrics: room logged for {e.get('room_logged')} connected devices, "
                f"{m.get('callhome_descriptor_refusals_total') or 0:.0f} refused near the open-file limit; "
                f"worst event-loop stall {1000 * (m.get('callhome_loop_stall_worst_seconds') or 0):.0f} ms; "
                f"GC {m.get('callhome_gc_pause_seconds_count') or 0:.0f} pauses, "
                f"{m.get('callhome_gc_pause_seconds_sum') or 0:.2f} s; "
                f"{m.get('callhome_gc_freezes_total') or 0:.0f} freezes"
            )
        if "idle" in e:
            i = e["idle"]
            print(
                f"  gateway idle with {gw.ok} sessions, {args.keepalive:g} s keepalives, {args.idle:g} s: control "
                f"request latency median {1000 * i['median']:.1f} ms, p99 {1000 * i['p99']:.1f} ms, worst "
                f"{1000 * i['worst']:.1f} ms; CPU {100 * i['cpu_share']:.2f} % of a core "
                f"(fleet {100 * i['fleet_cpu_share']:.2f} %); in the worst sample the gateway's loop thread ran "
                f"{1000 * i['worst_ran']:.1f} ms and waited {1000 * i['worst_waited']:.1f} ms for a CPU, the probe "
                f"waited {1000 * i['worst_probe_waited']:.1f} ms; worst latency less those waits "
                f"{1000 * i['worst_less_wait']:.0f} ms"
            )

    print()

    def judge(name: str, value: float | None, target: str, met: bool, *sides: Phase | None) -> None:
        if value is None:
            if any(side is None for side in sides):
                why = "not part of this run (--only)"
            else:
                side = next((side for side in sides if side is not None and not side.complete), None)
                if side is None:  # both complete: one used no measurable CPU (10 ms ticks)
                    why = "too little CPU for 10 ms ticks: use more devices"
                else:
                    why = f"{side.name}: {side.error or f'{side.ok} of {side.devices} registered'}"
            goal(name, "-", target, None, why)
        elif not all(side is not None and side.precise for side in sides):
            goal(name, f"{value:.2f}x", target, None, "too little CPU for 10 ms ticks: use more devices")
        else:
            goal(name, f"{value:.2f}x", target, met)

    c_goal = "CPU per call-home session incl. hello / libnetconf2 C client"
    if (
        c_ratio is not None
        and srv_hello is not None
        and c_floor is not None
        and set(srv_hello.algorithms) != set(c_floor.algorithms)
    ):
        # libssh (the C client) has no post-quantum key exchange: a ratio over
        # different algorithms compares the algorithms, not the clients
        kex = next(iter(c_floor.algorithms)).split()[0] if c_floor.algorithms else "the C client's"
        ours, theirs = ", ".join(srv_hello.algorithms), ", ".join(c_floor.algorithms)
        why = f"different algorithms (ours {ours}; C {theirs}): run with --kex {kex}"
        goal(c_goal, f"{c_ratio:.2f}x", "<= 1.5x", None, why)
    else:
        judge(c_goal, c_ratio, "<= 1.5x", c_ratio is not None and c_ratio <= 1.5, srv_hello, c_floor)
    for label, value, phase in (("gateway", cpu_gw, gw), ("in-process server", cpu_server, server)):
        judge(
            f"manager CPU per handshake / bare asyncssh loop ({label}, {n} devices)",
            value, "<= 0.9x", value is not None and value <= 0.9, phase, bare,
        )  # fmt: skip
    judge(
        f"gateway storm rate / bare loop rate ({n} devices)",
        rate_gw, ">= 0.95x", rate_gw is not None and rate_gw >= 0.95, gw, bare,
    )  # fmt: skip
    for label, phase in (("gateway, control-request latency", gw), ("in-process server, 50 ms sleep", server)):
        idle = phase.extra.get("idle") if phase is not None else None
        stall_goal = f"worst event-loop stall, 10,000 idle sessions + keepalives ({label})"
        if n >= 10000 and idle is not None and phase is not None:
            held = "" if phase.ok >= 10000 else f"only {phase.ok} sessions held"
            goal(stall_goal, f"{1000 * idle['worst']:.0f} ms", "<= 100 ms", idle["worst"] <= 0.1 and not held, held)
        elif phase is not None:
            goal(stall_goal, "-", "<= 100 ms", None, "needs --devices 10000 and --idle")


def cpu_of(phase: Phase | None) -> float | None:
    return phase.cpu_ms if phase is not None and phase.complete else None


def rate_of(phase: Phase | None) -> float | None:
    return phase.rate if phase is not None and phase.complete else None


def fleet_of(phase: Phase | None) -> float | None:
    return phase.fleet_ms if phase is not None and phase.complete else None


PHASES = ("bare", "server", "gateway", "c", "bare-hello", "server-hello", "server-manager", "stock")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000, help="devices in the storm")
    parser.add_argument("--hello-devices", type=int, default=1000, help="devices of the sessions-with-hello phases")
    parser.add_argument("--stock-devices", type=int, default=200, help="devices of the stock ncclient loop")
    parser.add_argument("--idle", type=float, default=65.0, help="seconds the gateway idles with every session (0: no)")
    parser.add_argument("--keepalive", type=float, default=30.0, help="SSH keepalive interval of every manager")
    parser.add_argument(
        "--keepalive-jitter", type=float, default=1.0, help="keepalive_jitter of our server and the gateway (0: none)"
    )
    parser.add_argument("--nofile", type=int, help="set the hard open-file limit of every party (needs root to raise)")
    parser.add_argument("--kex", nargs="+", default=[], help="key exchange every manager offers (asyncssh's default)")
    parser.add_argument("--cipher", nargs="+", default=[], help="encryption every manager offers (asyncssh's default)")
    parser.add_argument("--only", nargs="+", choices=PHASES, help="run only these phases")
    parser.add_argument("--profile", type=Path, help="write py-spy profiles (raw, collapsed stacks) here")
    parser.add_argument(
        "--trace-loop", type=Path, help="write each Python manager's long event-loop iterations here (JSON lines)"
    )
    args = parser.parse_args()
    try:
        soft, hard = raise_nofile(args.nofile)
    except (ValueError, OSError) as exc:
        print(f"error: cannot set the hard open-file limit to {args.nofile}: {exc}")
        return 2
    print(f"open-file limit (RLIMIT_NOFILE) soft {soft}, hard {hard}; helper processes inherit it", flush=True)
    wanted = set(args.only or PHASES)
    started = time.monotonic()
    phases: dict[str, Phase] = {}
    with tempfile.TemporaryDirectory(prefix="callhome-storm-") as tmp:
        bench = Bench(args, Path(tmp))
        bench.start_fleet()
        print(f"fleet of {bench.total + 1} devices ready after {time.monotonic() - started:.1f} s", flush=True)
        try:
            n, h, s = args.devices, args.hello_devices, args.stock_devices
            python = bench.python_phase
            runs = [
                ("bare", lambda: python("bare asyncssh loop", "bare", "auth", n, by_fleet_clock=True)),
                (
                    "server",
                    lambda: python(
                        "AsyncCallHomeServer",
                        "server",
                        "auth",
                        n,
                        by_fleet_clock=True,
                        idle=args.idle,
                        extra_args=("--watch-loop",),
                    ),
                ),
                ("gateway", lambda: bench.gateway_phase(n)),
                ("c", lambda: bench.c_phase(h)),
                ("bare-hello", lambda: python("bare asyncssh + hello", "bare", "hello", h, by_fleet_clock=False)),
                (
                    "server-hello",
                    lambda: python("our server + hello", "server", "hello", h, by_fleet_clock=False),
                ),
                (
                    "server-manager",
                    lambda: python("CallHomeServer.netconf (ncclient)", "server", "manager", h, by_fleet_clock=False),
                ),
                (
                    "stock",
                    lambda: python("stock ncclient connect_ssh", "stock", "auth", s, by_fleet_clock=False),
                ),
            ]
            for key, run in runs:
                if key in wanted:
                    phase_started = time.monotonic()
                    phases[key] = run()
                    print(f"{key}: {time.monotonic() - phase_started:.1f} s", flush=True)
                    print(phases[key].line(), flush=True)
        finally:
            assert bench.fleet is not None
            bench.fleet.stop()
    report(args, phases)
    for path in bench.profiles:
        print(f"profile: {path}")
    if bench.profiles:
        print("note: the storms ran under py-spy (--profile): their CPU figures include its sampling; measure without")
    print(f"(benchmark wall time {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
