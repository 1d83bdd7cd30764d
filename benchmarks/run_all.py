"""``make bench``: every benchmark, one after the other, each bounded in time;
then the issue goals they printed (``GOAL |`` lines), in one table, and how
long each took.

A benchmark that fails or runs out of time is reported as such (its goals
then read "not measured"); the others still run.  Run under
``flock /tmp/bench.lock`` on a shared machine: the figures are timings.

Run: ``.venv/bin/python benchmarks/run_all.py [--only NAME...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import GOAL_PREFIX

HERE = Path(__file__).resolve().parent

# (name, arguments, time bound in seconds)
BENCHMARKS: list[tuple[str, list[str], int]] = [
    ("ssh", ["bench_ssh.py"], 300),
    ("tls", ["bench_tls.py"], 300),
    ("restconf", ["bench_restconf.py"], 300),
    ("gateway", ["bench_gateway.py"], 600),
    ("first-rpc", ["bench_first_rpc.py"], 300),
    ("first-rpc-per-caller", ["bench_first_rpc.py", "--hold", "never"], 300),
    ("local-client", ["bench_local_client.py"], 300),
    ("idle-reconnects", ["bench_idle_reconnects.py", "--minutes", "5"], 600),
    ("storm-1000", ["bench_storm.py", "--devices", "1000"], 900),
    (
        "c-floor-same-kex",  # libssh has no post-quantum key exchange: the C goal at the C client's algorithms
        ["bench_storm.py", "--only", "c", "bare-hello", "server-hello", "--kex", "curve25519-sha256", "--idle", "0"],
        300,
    ),
    ("storm-10000", ["bench_storm.py", "--devices", "10000", "--only", "bare", "server", "gateway"], 1500),
    ("ansible", ["bench_ansible.py"], 900),
    ("agent", ["bench_agent.py"], 600),
    ("events", ["bench_events.py"], 600),
    ("memory", ["bench_memory.py"], 900),
]


def run(name: str, args: list[str], bound: int) -> tuple[int | None, float, list[str]]:
    """Run one benchmark, echoing its output; (exit code or None on timeout, seconds, goal lines)."""
    print(f"\n=== {name}: {' '.join(args)} (bound {bound} s)", flush=True)
    started = time.monotonic()
    goals: list[str] = []
    proc = subprocess.Popen(
        [sys.executable, str(HERE / args[0]), *args[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = started + bound
    # a benchmark silent past its bound is ended too (the loop below waits on its output)
    timer = threading.Timer(bound, os.killpg, (proc.pid, signal.SIGTERM))
    timer.start()
    timed_out = False
    for raw in proc.stdout:
        line = raw.decode(errors="replace")
        sys.stdout.write(line)
        sys.stdout.flush()
        if line.startswith(GOAL_PREFIX):
            goals.append(line.strip())
        if time.monotonic() > deadline:
            timed_out = True
            break
    timer.cancel()
    timed_out = timed_out or time.monotonic() > deadline
    if timed_out:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    try:
        code: int | None = proc.wait(max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        code = None
    return (None if timed_out else code), time.monotonic() - started, goals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=[b[0] for b in BENCHMARKS])
    args = parser.parse_args()
    started = time.monotonic()
    results = []
    for name, bench_args, bound in BENCHMARKS:
        if args.only and name not in args.only:
            continue
        results.append((name, *run(name, bench_args, bound)))
    print("\n=== summary")
    failed = 0
    for name, code, seconds, _ in results:
        state = "ok" if code == 0 else ("TIMED OUT" if code is None else f"FAILED (exit {code})")
        failed += code != 0
        print(f"  {name:12s} {seconds:7.0f} s  {state}")
    print(f"  total        {time.monotonic() - started:7.0f} s")
    print("\n=== goals (same-run ratios; issue 16)")
    for name, _, _, goals in results:
        for line in goals:
            print(f"  [{name}] {line[len(GOAL_PREFIX) :].strip()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
