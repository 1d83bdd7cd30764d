"""The benchmarks still start: every ``benchmarks/*.py`` parses its arguments
(``--help``, all at once), and a small storm runs every party for real (20
devices: fleet, bare loop, our server, the gateway, the C client when it can
be built) and prints its ratios and goals.  About 10 s; the figures
themselves come from ``make bench``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .libnetconf2_peer import ln2_available

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_every_benchmark_parses_its_arguments() -> None:
    scripts = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "_common.py")
    procs = {
        p.name: subprocess.Popen([sys.executable, str(p), "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for p in scripts
    }
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"{name} --help failed:\n{out.decode()}"
        assert b"usage:" in out, name


def test_small_storm_runs_every_party() -> None:
    phases = ["bare", "server", "gateway", "server-hello"] + ([] if ln2_available() else ["c"])
    result = subprocess.run(
        [
            sys.executable, str(BENCHMARKS / "bench_storm.py"), "--devices", "20", "--hello-devices", "10",
            "--idle", "1", "--only", *phases,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for name in ("bare asyncssh loop", "AsyncCallHomeServer", "callhome serve (gateway)"):
        assert re.search(rf"{re.escape(name)}\s+20/20\s+\d", out), out
    assert re.search(r"our server \+ hello\s+10/10\s+\d", out), out
    assert re.search(r"gateway rate / bare rate\s+\d+\.\d\d", out), out
    assert "gateway file descriptors: limit" in out, out
    goals = [line for line in out.splitlines() if line.startswith("GOAL |")]
    assert len(goals) == 6, out  # the idle stall twice: through the gateway and in our server
    assert re.search(r"in-process server \(watch_loop=True\) idle with 20 sessions.*worst event-loop stall \d+ ms", out)
    if "c" in phases:
        assert re.search(r"C libnetconf2 client \(with hello\)\s+10/10\s+\d", out), out
        # a ratio, or (10 sessions may take under one 10 ms tick) an error instead of a ratio
        assert re.search(
            r"our CPU per session with hello / C client\s+\d+\.\d\d|no measurable CPU.*no ratio 'our CPU per session",
            out,
        ), out
    else:
        pytest.skip(f"C client not built: {ln2_available()}")
