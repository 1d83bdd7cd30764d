"""Admission control (MaxStartups / PerSourcePenalties analogues), on a fake clock."""

from __future__ import annotations

import pytest

from callhome_transport.admission import Admission, AdmissionConfig
from callhome_transport.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pending_handshakes_are_capped() -> None:
    admission = Admission(AdmissionConfig(max_pending_handshakes=2))
    assert admission.admit("a") is None
    assert admission.admit("b") is None
    assert admission.admit("c") == "too-many-handshakes"
    admission.finished()
    assert admission.admit("c") is None


def test_source_blocked_after_k_failures_within_the_window_then_released() -> None:
    clock = Clock()
    admission = Admission(AdmissionConfig(failures_before_block=3, failure_window=10, block_seconds=30), clock=clock)
    assert not admission.failed("198.51.100.7")
    clock.now += 20  # outside the window: the first failure is forgotten
    assert not admission.failed("198.51.100.7")
    assert not admission.failed("198.51.100.7")
    assert admission.failed("198.51.100.7")
    assert admission.admit("198.51.100.7") == "blocked"
    assert admission.admit("198.51.100.8") is None  # others unaffected
    assert admission.blocked() == {"198.51.100.7": 30}
    clock.now += 31
    assert admission.admit("198.51.100.7") is None


def test_success_clears_failures_and_memory_is_bounded() -> None:
    admission = Admission(AdmissionConfig(failures_before_block=2, max_tracked_sources=3))
    admission.failed("a")
    admission.succeeded("a")
    assert not admission.failed("a")
    for i in range(10):
        admission.failed(f"s{i}")
    assert len(admission._failures) <= 3


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="block_seconds"):
        AdmissionConfig(block_seconds=-1)


def test_prometheus_text() -> None:
    metrics = Metrics()
    metrics.counter("x_total", "X")
    metrics.histogram("lat_seconds", "Latency", buckets=(0.1, 1.0))
    metrics.gauge("g", "G", lambda: {(("k", "v"),): 2.0})
    metrics.inc("x_total", transport="ssh", result="ok")
    metrics.inc("x_total", transport="ssh", result="ok")
    for value in (0.05, 0.5, 5.0):
        metrics.observe("lat_seconds", value, transport="ssh")
    text = metrics.render()
    assert 'x_total{result="ok",transport="ssh"} 2' in text
    assert 'lat_seconds_bucket{transport="ssh",le="0.1"} 1' in text
    assert 'lat_seconds_bucket{transport="ssh",le="1"} 2' in text
    assert 'lat_seconds_bucket{transport="ssh",le="+Inf"} 3' in text
    assert 'lat_seconds_count{transport="ssh"} 3' in text
    assert 'g{k="v"} 2' in text
    assert "# TYPE lat_seconds histogram" in text
