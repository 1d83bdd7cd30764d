"""The reconnect scheduler, sans I/O: plain numbers in, actions out; no
sockets, no sleeps."""

from __future__ import annotations

import datetime
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callhome_transport.agent.model import (
    Endpoint,
    NetconfClient,
    Periodic,
    Persistent,
    ReconnectStrategy,
    StartWith,
    Transport,
)
from callhome_transport.agent.schedule import (
    Action,
    CancelDial,
    ClientState,
    Dial,
    Exhausted,
    Hangup,
    Scheduler,
    Timing,
)

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a whole minute
NO_JITTER = Timing(jitter=0.0)


def endpoint(name: str) -> Endpoint:
    return Endpoint(name=name, transport=Transport.SSH, remote_address="192.0.2.1", remote_port=4334)


def client(
    name: str = "nms",
    endpoints: tuple[str, ...] = ("a", "b"),
    *,
    connection: Persistent | Periodic | None = None,
    start_with: StartWith = StartWith.FIRST_LISTED,
    max_wait: int = 5,
    max_attempts: int = 2,
) -> NetconfClient:
    return NetconfClient(
        name=name,
        endpoints=tuple(endpoint(e) for e in endpoints),
        connection=connection or Persistent(),
        reconnect=ReconnectStrategy(start_with=start_with, max_wait=max_wait, max_attempts=max_attempts),
    )


def dials(actions: list[Action]) -> list[Dial]:
    return [a for a in actions if isinstance(a, Dial)]


def only_dial(actions: list[Action]) -> Dial:
    found = dials(actions)
    assert len(found) == 1, actions
    return found[0]


def fail_until_exhausted(s: Scheduler, dial: Dial, now: float) -> tuple[list[str], Exhausted, float]:
    """Fail every attempt of a round; returns the endpoints dialled in order,
    the Exhausted event and the time it came."""
    order = [dial.endpoint.name]
    while True:
        actions = s.dial_failed(dial.attempt, now, "refused")
        exhausted = [a for a in actions if isinstance(a, Exhausted)]
        if exhausted:
            return order, exhausted[0], now
        if dials(actions):
            dial = only_dial(actions)
        else:
            timer = s.timer()
            assert timer is not None
            now = timer
            dial = only_dial(s.handle_timer(now))
        order.append(dial.endpoint.name)


# -- start-with ------------------------------------------------------------------------------------


def test_first_listed_tries_each_endpoint_max_attempts_times_in_order() -> None:
    s = Scheduler(timing=NO_JITTER)
    first = only_dial(s.configure([client(endpoints=("a", "b", "c"), max_attempts=3)], T0))
    assert (first.endpoint.name, first.round, first.try_number) == ("a", 1, 1)
    order, exhausted, _ = fail_until_exhausted(s, first, T0)
    assert order == ["a", "a", "a", "b", "b", "b", "c", "c", "c"]
    assert exhausted.round == 1
    assert exhausted.endpoints == ("a", "b", "c")
    assert exhausted.failures == ("refused", "refused", "refused")


def test_the_next_endpoint_is_dialled_at_once_but_a_retry_of_the_same_waits() -> None:
    s = Scheduler(timing=NO_JITTER)
    first = only_dial(s.configure([client(max_attempts=2)], T0))
    assert s.dial_failed(first.attempt, T0, "refused") == []  # a retry of "a": later
    assert s.state("nms") is ClientState.WAITING
    assert s.timer() == pytest.approx(T0 + NO_JITTER.min_delay)
    assert s.handle_timer(T0 + 0.04) == []
    retry = only_dial(s.handle_timer(T0 + 0.05))
    assert (retry.endpoint.name, retry.try_number) == ("a", 2)
    to_b = only_dial(s.dial_failed(retry.attempt, T0 + 0.05, "refused"))  # "a" used up: "b" now
    assert (to_b.endpoint.name, to_b.try_number) == ("b", 1)


def test_last_connected_starts_with_the_endpoint_of_the_last_session_then_round_robin() -> None:
    s = Scheduler(timing=NO_JITTER)
    config = client(endpoints=("a", "b", "c"), start_with=StartWith.LAST_CONNECTED, max_attempts=1)
    first = only_dial(s.configure([config], T0))
    assert first.endpoint.name == "a"  # nothing connected yet: the first listed
    to_b = only_dial(s.dial_failed(first.attempt, T0, "refused"))
    assert to_b.endpoint.name == "b"
    assert s.connected(to_b.attempt, T0) == []
    again = only_dial(s.session_ended(to_b.attempt, T0 + 600, graceful=True))
    assert again.endpoint.name == "b"
    order, _, _ = fail_until_exhausted(s, again, T0 + 600)
    assert order == ["b", "c", "a"]


def test_last_connected_can_be_restored_from_before_a_restart() -> None:
    config = client(endpoints=("a", "b", "c"), start_with=StartWith.LAST_CONNECTED, max_attempts=1)
    s = Scheduler(timing=NO_JITTER, last_connected={"nms": "c", "gone": "x"})
    assert only_dial(s.configure([config], T0)).endpoint.name == "c"
    assert s.remembered() == {"nms": "c", "gone": "x"}
    unknown = Scheduler(timing=NO_JITTER, last_connected={"nms": "removed-endpoint"})
    dial = only_dial(unknown.configure([config], T0))
    assert dial.endpoint.name == "a"
    # a new session updates what a driver keeps
    to_b = only_dial(unknown.dial_failed(dial.attempt, T0, "refused"))
    unknown.connected(to_b.attempt, T0)
    assert unknown.remembered() == {"nms": "b"}


def test_first_listed_ignores_the_last_connected_endpoint() -> None:
    s = Scheduler(timing=NO_JITTER)
    first = only_dial(s.configure([client(max_attempts=1)], T0))
    to_b = only_dial(s.dial_failed(first.attempt, T0, "refused"))
    s.connected(to_b.attempt, T0)
    assert only_dial(s.session_ended(to_b.attempt, T0 + 600, graceful=True)).endpoint.name == "a"


def test_random_selection_starts_anywhere_then_goes_round_robin() -> None:
    starts = set()
    for seed in range(40):
        s = Scheduler(timing=NO_JITTER, rng=random.Random(seed))
        config = client(endpoints=("a", "b", "c", "d"), start_with=StartWith.RANDOM_SELECTION, max_attempts=1)
        first = only_dial(s.configure([config], T0))
        order, _, _ = fail_until_exhausted(s, first, T0)
        names = ["a", "b", "c", "d"]
        i = names.index(order[0])
        assert order == names[i:] + names[:i]
        starts.add(order[0])
    assert starts == {"a", "b", "c", "d"}


# -- max-wait --------------------------------------------------------------------------------------


def test_max_wait_bounds_each_attempt_and_cancels_it() -> None:
    s = Scheduler(timing=NO_JITTER)
    first = only_dial(s.configure([client(max_wait=7, max_attempts=1)], T0))
    assert first.deadline == T0 + 7
    assert s.timer() == T0 + 7
    assert s.handle_timer(T0 + 6.99) == []
    actions = s.handle_timer(T0 + 7)
    assert actions[0] == CancelDial(client="nms", attempt=first.attempt, reason="max-wait")
    to_b = only_dial(actions)
    assert to_b.endpoint.name == "b"
    # the late success of the abandoned attempt is hung up, not counted
    [late] = s.connected(first.attempt, T0 + 7.5)
    assert isinstance(late, Hangup) and (late.attempt, late.reason) == (first.attempt, "no longer wanted")
    assert s.state("nms") is ClientState.DIALING
    assert s.connected(to_b.attempt, T0 + 8) == []
    assert s.state("nms") is ClientState.CONNECTED


# -- round backoff ---------------------------------------------------------------------------------


def test_round_backoff_grows_with_the_outage_and_is_bounded() -> None:
    timing = Timing(ratio=0.05, min_delay=0.1, max_delay=30.0, jitter=0.0)
    s = Scheduler(timing=timing)
    dial = only_dial(s.configure([client(endpoints=("a",), max_attempts=1)], T0))
    delays = []
    now = T0
    for _ in range(200):
        actions = s.dial_failed(dial.attempt, now, "refused")
        exhausted = next(a for a in actions if isinstance(a, Exhausted))
        delays.append((now - T0, exhausted.next_round_at - now))
        now = exhausted.next_round_at
        dial = only_dial(s.handle_timer(now))
    for elapsed, delay in delays:
        assert delay == pytest.approx(min(30.0, max(0.1, 0.05 * elapsed)), rel=1e-5)
    assert delays[0][1] == pytest.approx(0.1)
    assert delays[-1][1] == pytest.approx(30.0)
    assert [e.round for e in [exhausted]] == [200]


def test_jitter_spreads_the_delay_within_its_bounds() -> None:
    timing = Timing(jitter=0.5)
    seen = []
    for seed in range(50):
        s = Scheduler(timing=timing, rng=random.Random(seed))
        dial = only_dial(s.configure([client(endpoints=("a",), max_attempts=1)], T0))
        exhausted = next(a for a in s.dial_failed(dial.attempt, T0 + 100, "refused") if isinstance(a, Exhausted))
        seen.append(exhausted.next_round_at - (T0 + 100))
    base = 0.05 * 100
    assert all(0.5 * base <= d <= 1.5 * base for d in seen)
    assert max(seen) - min(seen) > base / 2  # really spread


def test_every_round_reports_exhausted_and_the_client_keeps_trying() -> None:
    s = Scheduler(timing=NO_JITTER)
    dial = only_dial(s.configure([client(max_attempts=1)], T0))
    rounds = []
    now = T0
    for _ in range(5):
        order, exhausted, now = fail_until_exhausted(s, dial, now)
        assert order == ["a", "b"]
        rounds.append(exhausted.round)
        now = exhausted.next_round_at
        dial = only_dial(s.handle_timer(now))
    assert rounds == [1, 2, 3, 4, 5]


# -- persistent ------------------------------------------------------------------------------------


def test_persistent_calls_again_as_soon_as_a_session_ends() -> None:
    s = Scheduler(timing=NO_JITTER)
    first = only_dial(s.configure([client()], T0))
    s.connected(first.attempt, T0 + 0.01)
    assert s.timer() is None  # nothing to do while connected
    again = only_dial(s.session_ended(first.attempt, T0 + 3600, graceful=True))
    assert (again.endpoint.name, again.round) == ("a", 1)
    s.connected(again.attempt, T0 + 3600)
    after_error = only_dial(s.session_ended(again.attempt, T0 + 7200, graceful=False))
    assert after_error.round == 1


def test_a_session_that_ends_at_once_counts_as_a_failed_attempt() -> None:
    """A manager that refuses the device (or a local server that hangs up) is
    not called in a tight loop."""
    s = Scheduler(timing=NO_JITTER)
    first = only_dial(s.configure([client(max_attempts=1)], T0))
    s.connected(first.attempt, T0)
    to_b = only_dial(s.session_ended(first.attempt, T0 + 0.05, graceful=True))
    assert to_b.endpoint.name == "b"  # "a" used its one attempt
    s.connected(to_b.attempt, T0 + 0.1)
    actions = s.session_ended(to_b.attempt, T0 + 0.15, graceful=True)
    assert isinstance(actions[0], Exhausted)
    assert actions[0].failures == ("the session ended at once (refused by the manager?)",) * 2
    assert s.timer() is not None and s.timer() > T0 + 0.15  # type: ignore[operator]


# -- periodic ----------------------------------------------------------------------------------------


def periodic(period: int = 60, anchor: str | None = None, idle: int = 180) -> Periodic:
    anchor_time = datetime.datetime.fromisoformat(anchor) if anchor else None
    return Periodic(period=period, anchor_time=anchor_time, idle_timeout=idle)


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat()


def test_periodic_without_anchor_calls_now_and_then_every_period() -> None:
    s = Scheduler(timing=NO_JITTER)
    first = only_dial(s.configure([client(connection=periodic(period=10, idle=0))], T0))
    s.connected(first.attempt, T0 + 1)
    assert s.session_ended(first.attempt, T0 + 120, graceful=True) == []
    assert s.state("nms") is ClientState.IDLE
    assert s.timer() == T0 + 600
    assert only_dial(s.handle_timer(T0 + 600)).endpoint.name == "a"


def test_periodic_is_anchored_to_anchor_time() -> None:
    # anchor 00:15Z, hourly: from 08:00 the next call is 08:15, then 09:15
    s = Scheduler(timing=NO_JITTER)
    config = client(connection=periodic(period=60, anchor="2020-01-01T00:15:00Z", idle=0))
    assert s.configure([config], T0) == []
    timer = s.timer()
    assert timer is not None and iso(timer) == "2027-01-15T08:15:00+00:00"
    dial = only_dial(s.handle_timer(timer))
    s.connected(dial.attempt, timer + 0.5)
    s.session_ended(dial.attempt, timer + 30, graceful=True)
    assert iso(s.timer()) == "2027-01-15T09:15:00+00:00"  # type: ignore[arg-type]


def test_periodic_anchor_in_the_future_counts_backwards() -> None:
    s = Scheduler(timing=NO_JITTER)
    s.configure([client(connection=periodic(period=30, anchor="2030-06-01T12:10:00+02:00", idle=0))], T0)
    assert iso(s.timer()) == "2027-01-15T08:10:00+00:00"  # type: ignore[arg-type]


def test_periodic_idle_timeout_hangs_up_then_waits_for_the_next_tick() -> None:
    s = Scheduler(timing=NO_JITTER)
    first = only_dial(s.configure([client(connection=periodic(period=5, idle=30))], T0))
    s.connected(first.attempt, T0)
    assert s.timer() == T0 + 30
    s.activity(first.attempt, T0 + 20)  # bytes moved: idle counts from here
    assert s.handle_timer(T0 + 30) == []
    assert s.timer() == T0 + 50
    assert s.handle_timer(T0 + 50) == [Hangup(client="nms", attempt=first.attempt, reason="idle for 30 s")]
    assert s.session_ended(first.attempt, T0 + 50.01, graceful=True) == []
    assert s.state("nms") is ClientState.IDLE
    assert s.timer() == T0 + 300


def test_periodic_idle_timeout_zero_never_hangs_up() -> None:
    s = Scheduler(timing=NO_JITTER)
    first = only_dial(s.configure([client(connection=periodic(period=5, idle=0))], T0))
    s.connected(first.attempt, T0)
    assert s.timer() is None
    assert s.handle_timer(T0 + 10**6) == []


def test_periodic_skips_ticks_that_pass_during_a_session() -> None:
    s = Scheduler(timing=NO_JITTER)
    first = only_dial(s.configure([client(connection=periodic(period=1, idle=0))], T0))
    s.connected(first.attempt, T0)
    assert s.handle_timer(T0 + 60) == []  # the 08:01 tick finds a session up: no second call
    s.session_ended(first.attempt, T0 + 150, graceful=True)
    assert s.timer() == T0 + 180  # 08:03, not 08:01 or 08:02 at once


def test_periodic_session_broken_by_an_error_is_called_again_at_once() -> None:
    s = Scheduler(timing=NO_JITTER)
    first = only_dial(s.configure([client(connection=periodic(period=60, idle=0))], T0))
    s.connected(first.attempt, T0)
    again = only_dial(s.session_ended(first.attempt, T0 + 100, graceful=False))
    assert again.endpoint.name == "a"


def test_periodic_keeps_retrying_a_missed_call_until_it_connects() -> None:
    s = Scheduler(timing=NO_JITTER)
    dial = only_dial(s.configure([client(connection=periodic(period=60, idle=0), max_attempts=1)], T0))
    _, exhausted, _ = fail_until_exhausted(s, dial, T0)
    assert exhausted.next_round_at < T0 + 60  # not deferred to the next period
    dial = only_dial(s.handle_timer(exhausted.next_round_at))
    s.connected(dial.attempt, exhausted.next_round_at)
    s.session_ended(dial.attempt, exhausted.next_round_at + 10, graceful=True)
    assert s.timer() == T0 + 3600


def test_periodic_quick_graceful_session_waits_for_the_next_tick() -> None:
    """A manager that does its job in a second and closes is not called again."""
    s = Scheduler(timing=NO_JITTER)
    dial = only_dial(s.configure([client(connection=periodic(period=60, idle=0))], T0))
    s.connected(dial.attempt, T0)
    assert s.session_ended(dial.attempt, T0 + 0.5, graceful=True) == []
    assert s.timer() == T0 + 3600


# -- reload ------------------------------------------------------------------------------------------


def test_reload_keeps_untouched_clients_and_restarts_changed_ones() -> None:
    s = Scheduler(timing=NO_JITTER)
    keep, change, drop = client("keep"), client("change"), client("drop")
    attempts = {d.client: d.attempt for d in dials(s.configure([keep, change, drop], T0))}
    for attempt in attempts.values():
        s.connected(attempt, T0 + 1)
    changed = client("change", endpoints=("c",))
    added = client("added")
    actions = s.configure([keep, changed, added], T0 + 100)
    hangups = {a.client: a for a in actions if isinstance(a, Hangup)}
    assert set(hangups) == {"change", "drop"}
    assert hangups["change"].attempt == attempts["change"]
    assert hangups["drop"].reason == "removed from the configuration"
    assert {(d.client, d.endpoint.name) for d in dials(actions)} == {("change", "c"), ("added", "a")}
    # the untouched client's session is still its own: activity and its end are its own
    assert s.state("keep") is ClientState.CONNECTED
    assert s.client_of(attempts["keep"]) == "keep"
    # the old sessions' ends (after the hang-up) change nothing
    assert s.session_ended(attempts["change"], T0 + 101, graceful=True) == []
    assert s.session_ended(attempts["drop"], T0 + 101, graceful=True) == []
    assert sorted(s.clients()) == ["added", "change", "keep"]
    assert s.state("change") is ClientState.DIALING


def test_reload_of_the_same_configuration_changes_nothing() -> None:
    s = Scheduler(timing=NO_JITTER)
    configs = [client("one"), client("two", connection=periodic())]
    first = dials(s.configure(configs, T0))
    assert s.configure(list(configs), T0 + 5) == []
    assert {s.client_of(d.attempt) for d in first} == {"one", "two"}


def test_a_changed_client_keeps_its_last_connected_endpoint() -> None:
    s = Scheduler(timing=NO_JITTER)
    config = client(endpoints=("a", "b"), start_with=StartWith.LAST_CONNECTED, max_attempts=1)
    first = only_dial(s.configure([config], T0))
    to_b = only_dial(s.dial_failed(first.attempt, T0, "refused"))
    s.connected(to_b.attempt, T0)
    changed = client(endpoints=("a", "b"), start_with=StartWith.LAST_CONNECTED, max_attempts=2)
    restart = only_dial(s.configure([changed], T0 + 10))
    assert restart.endpoint.name == "b"


def test_stop_cancels_dials_and_hangs_up_sessions() -> None:
    s = Scheduler(timing=NO_JITTER)
    ds = {d.client: d for d in dials(s.configure([client("x"), client("y")], T0))}
    s.connected(ds["x"].attempt, T0)
    actions = s.stop("bye")
    assert Hangup(client="x", attempt=ds["x"].attempt, reason="bye") in actions
    assert CancelDial(client="y", attempt=ds["y"].attempt, reason="bye") in actions
    assert s.timer() is None


# -- invariants under any sequence of events ----------------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["fail", "connect", "end-ok", "end-error", "activity", "timer", "reload"]),
        st.floats(min_value=0, max_value=400),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(EVENTS, st.integers(min_value=0, max_value=10**6))
def test_any_event_sequence_keeps_one_attempt_per_client_and_a_timer_when_needed(
    events: list[tuple[str, float]], seed: int
) -> None:
    configs = [
        client("p", ("a", "b", "c"), max_attempts=2, start_with=StartWith.RANDOM_SELECTION),
        client("q", ("a", "b"), connection=periodic(period=1, idle=20), start_with=StartWith.LAST_CONNECTED),
    ]
    s = Scheduler(rng=random.Random(seed))
    now = T0
    outstanding: dict[str, int] = {}  # client -> dial or session attempt

    def apply(actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Dial):
                assert a.client not in outstanding, f"{a.client} dials twice"
                assert a.endpoint in s_configs[a.client].endpoints
                assert a.deadline == now + s_configs[a.client].reconnect.max_wait
                outstanding[a.client] = a.attempt
            elif isinstance(a, CancelDial):
                assert outstanding.pop(a.client) == a.attempt

    s_configs = {c.name: c for c in configs}
    apply(s.configure(configs, now))
    for kind, step in events:
        now += step
        if kind == "timer":
            apply(s.handle_timer(now))
            continue
        if kind == "reload":
            apply(s.configure(configs, now))
            continue
        for name, attempt in list(outstanding.items()):
            state = s.state(name)
            if kind == "fail" and state is ClientState.DIALING:
                del outstanding[name]
                apply(s.dial_failed(attempt, now, "refused"))
            elif kind == "connect" and state is ClientState.DIALING:
                assert s.connected(attempt, now) == []
            elif kind.startswith("end") and state in (ClientState.CONNECTED, ClientState.HANGING_UP):
                del outstanding[name]
                apply(s.session_ended(attempt, now, graceful=kind == "end-ok"))
            elif kind == "activity":
                s.activity(attempt, now)
        for name in s.clients():
            state = s.state(name)
            assert (name in outstanding) == (
                state in (ClientState.DIALING, ClientState.CONNECTED, ClientState.HANGING_UP)
            )
            if state in (ClientState.WAITING, ClientState.IDLE, ClientState.DIALING):
                assert s.timer() is not None
