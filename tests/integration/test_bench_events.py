"""benchmarks/bench_events.py runs (a small storm: 30 devices, 2 consumers)
and finds no event lost: it exits 1 when a consumer missed one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_events.py"


def test_bench_events_small_storm_loses_no_event() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--devices", "30", "--sequential", "3", "--consumers", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "no event lost:                     True" in out.stdout
    assert "30 device-connected events for 30 of 30 devices; ids consecutive: True; notices: none" in out.stdout
    assert "error" not in out.stdout
