"""Admission control (MaxStartups / PerSourcePenalties analogues), on a fake clock."""

from __future__ import annotations

import pytest

from callhome_transport.metrics import Metrics
from callhome_transport.server.admission import Admission, AdmissionConfig, FailureKind, Penalties, Startups


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_startups_drop_the_oldest_connection_that_has_not_sent_its_first_bytes() -> None:
    startups: Startups[str] = Startups(3)
    sent: set[str] = set()
    for name in ("a", "b", "c"):
        assert startups.admit(name, sent.__contains__) == (True, None)
    sent.add("a")  # a's device sent its banner: never dropped
    assert startups.admit("d", sent.__contains__) == (True, "b")
    assert list(startups) == ["a", "c", "d"]
    sent.update({"c", "d"})
    assert startups.admit("e", sent.__contains__) == (False, None)  # every one has: refuse the newcomer
    startups.finished("a")
    assert startups.admit("e", sent.__contains__) == (True, None)
    assert len(startups) == 3


def test_startups_without_a_limit_admit_everything() -> None:
    startups: Startups[int] = Startups(0)
    assert all(startups.admit(i, lambda _: False) == (True, None) for i in range(1000))


def test_source_blocked_after_k_failures_within_the_window_then_released() -> None:
    clock = Clock()
    admission = Admission(AdmissionConfig(failures_before_block=3, failure_window=10, block_seconds=30), clock=clock)
    assert not admission.failed("198.51.100.7", FailureKind.UNKNOWN_KEY)
    clock.now += 20  # outside the window: the first failure is forgotten
    assert not admission.failed("198.51.100.7", FailureKind.UNKNOWN_KEY)
    assert not admission.failed("198.51.100.7", FailureKind.UNKNOWN_KEY)
    assert admission.failed("198.51.100.7", FailureKind.UNKNOWN_KEY)
    assert not admission.failed("198.51.100.7", FailureKind.UNKNOWN_KEY)  # blocked once, reported once
    assert admission.admit("198.51.100.7") == "blocked"
    assert admission.admit("198.51.100.8") is None  # others unaffected
    assert admission.blocked() == {"198.51.100.7": 30}
    clock.now += 31
    assert admission.admit("198.51.100.7") is None


def test_each_failure_kind_has_its_own_weight() -> None:
    penalties = Penalties(unknown_key=0.5, garbage=5, grace_timeout=1, auth_failed=1)
    admission = Admission(AdmissionConfig(failures_before_block=5, penalties=penalties))
    assert not any(admission.failed("a", FailureKind.UNKNOWN_KEY) for _ in range(9))  # 4.5
    assert admission.failed("a", FailureKind.UNKNOWN_KEY)
    assert admission.failed("b", FailureKind.GARBAGE)  # garbage once is enough here
    assert not any(admission.failed("c", FailureKind.GRACE_TIMEOUT) for _ in range(4))
    assert admission.failed("c", FailureKind.GRACE_TIMEOUT)
    assert set(admission.blocked()) == {"a", "b", "c"}


def test_default_weights_never_block_a_device_waiting_to_be_onboarded() -> None:
    clock = Clock()
    admission = Admission(AdmissionConfig(), clock=clock)  # 10 within 60 s
    for _ in range(60):  # an unknown device redialing every 10 s for 10 minutes
        assert not admission.failed("192.0.2.9", FailureKind.UNKNOWN_KEY)
        clock.now += 10
    assert admission.admit("192.0.2.9") is None
    assert any(admission.failed("192.0.2.66", FailureKind.GARBAGE) for _ in range(5))  # a scanner: blocked


def test_exempt_networks_are_never_charged() -> None:
    admission = Admission(AdmissionConfig(failures_before_block=1, exempt=("10.0.0.0/8", "2001:db8::/32")))
    assert not admission.failed("10.1.2.3", FailureKind.GARBAGE)
    assert not admission.failed("2001:db8::7", FailureKind.GARBAGE)
    assert admission.admit("10.1.2.3") is None
    assert admission.failed("192.0.2.1", FailureKind.GARBAGE)


def test_authentication_failures_block_the_device_not_its_address() -> None:
    clock = Clock()
    admission = Admission(AdmissionConfig(failures_before_block=2, block_seconds=30), clock=clock)
    assert not admission.device_failed("SN-1")
    assert admission.device_failed("SN-1")
    assert admission.device_blocked("SN-1") == 30
    assert admission.device_blocked("SN-2") == 0
    assert admission.blocked() == {}  # no address is blocked for it
    assert admission.blocked_devices() == {"SN-1": 30}
    clock.now += 30
    assert admission.device_blocked("SN-1") == 0


def test_tables_are_bounded_and_blocks_expire() -> None:
    clock = Clock()
    config = AdmissionConfig(failures_before_block=1, block_seconds=10, max_tracked_sources=100)
    admission = Admission(config, clock=clock)
    for i in range(1000):  # a spoofed-source flood
        admission.failed(f"s{i}", FailureKind.GARBAGE)
    assert len(admission._sources.blocked) == 100
    clock.now += 11
    admission.failed("late", FailureKind.GARBAGE)
    assert list(admission._sources.blocked) == ["late"]  # the expired ones are gone
    few = Admission(AdmissionConfig(failures_before_block=2, max_tracked_sources=3))
    few.failed("a", FailureKind.GRACE_TIMEOUT)
    few.succeeded("a")
    assert not few.failed("a", FailureKind.GRACE_TIMEOUT)
    for i in range(10):
        few.failed(f"s{i}", FailureKind.GRACE_TIMEOUT)
    assert len(few._sources.failures) <= 3


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="block_seconds"):
        AdmissionConfig(block_seconds=-1)
    with pytest.raises(ValueError, match="exempt: 'ten' is not"):
        AdmissionConfig(exempt=("ten",))
    with pytest.raises(ValueError, match=r"penalties\.garbage"):
        Penalties(garbage=-1)


def test_gauges_read_together_are_read_once_per_render() -> None:
    metrics = Metrics()
    reads: list[int] = []

    def census() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        reads.append(1)
        return {"a_devices": {(("transport", "ssh"),): 3.0}, "b_held": {(): 1.0}}

    metrics.gauges({"a_devices": "A", "b_held": "B"}, census)
    text = metrics.render()
    assert reads == [1]
    assert '# TYPE a_devices gauge\na_devices{transport="ssh"} 3\n' in text
    assert "# HELP b_held B\n# TYPE b_held gauge\nb_held 1\n" in text
    metrics.render()
    assert reads == [1, 1]


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
