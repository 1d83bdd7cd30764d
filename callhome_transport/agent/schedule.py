"""When to call which manager: the reconnect scheduler, sans I/O.

Times and events go in (``handle_timer(now)``, ``connected``,
``dial_failed``, ``session_ended``, ``activity``); actions come out
(:class:`Dial` endpoint E now, :class:`CancelDial`, :class:`Hangup`,
:class:`Exhausted`).  Nothing here opens a socket, sleeps or reads a clock, so
every rule of the model is unit-tested with plain numbers; the agent
(:mod:`.runner`) and the simulated device drive the same object.

``now`` is wall-clock time in seconds since the epoch (periodic connections
are anchored to a date-and-time); a driver calls :meth:`Scheduler.handle_timer`
at or after :meth:`Scheduler.timer`.

The model's semantics, per ``netconf-client`` (each runs independently):

* a *round* tries the endpoints in the order ``start-with`` gives
  (first-listed; last-connected, then round robin from it; random-selection,
  then round robin), each up to ``max-attempts`` times, each attempt bounded
  by ``max-wait`` seconds; an attempt that fails fast is retried after the
  current retry delay, so ``max-attempts`` is not spent in a millisecond;
* a round that ends with no connection reports :class:`Exhausted` and the
  next round starts after the retry delay: ``ratio`` times the time since the
  client lost its connection, at least ``min_delay`` and at most
  ``max_delay``, times a random factor in ``1 +- jitter``.  So a device
  returns within about 5 % of an outage after the manager is back, and a
  fleet spreads out its calls;
* persistent: a new round as soon as a session ends;
* periodic: a round at ``anchor-time + k * period`` (the start time when no
  anchor is set); a tick that finds a session still up is skipped (the model
  says a second connection is NOT RECOMMENDED); a session idle for
  ``idle-timeout`` seconds is hung up; a session that ends in error (not
  gracefully) is called again at once, as the model requires;
* a session shorter than ``short_session`` seconds (the manager refused the
  device, or the local server went away) counts as a failed attempt, so a
  refusing manager is not called in a tight loop.
"""

from __future__ import annotations

import enum
import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .model import Endpoint, NetconfClient, Periodic, StartWith

__all__ = [
    "Action",
    "CancelDial",
    "ClientState",
    "Dial",
    "Exhausted",
    "Hangup",
    "Scheduler",
    "Timing",
]


@dataclass(frozen=True, kw_only=True)
class Timing:
    """The agent's own retry pacing (not in the model; see the module text)."""

    ratio: float = 0.05
    min_delay: float = 0.05  # half the 0.1 s poll of the socat loop the agent replaced (bench_agent.py)
    max_delay: float = 30.0
    jitter: float = 0.5
    short_session: float = 2.0

    def __post_init__(self) -> None:
        if not (0 < self.min_delay <= self.max_delay and self.ratio >= 0 and 0 <= self.jitter < 1):
            raise ValueError("Timing needs 0 < min_delay <= max_delay, ratio >= 0, 0 <= jitter < 1")


# -- actions ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Dial:
    """Dial ``endpoint`` for ``client`` now; report the outcome with
    ``connected(attempt)`` or ``dial_failed(attempt)``.  The scheduler gives
    up on it by itself at ``deadline`` (then it says :class:`CancelDial`)."""

    client: str
    endpoint: Endpoint
    attempt: int
    deadline: float
    round: int
    try_number: int  # 1..max-attempts on this endpoint in this round


@dataclass(frozen=True, kw_only=True)
class CancelDial:
    """Stop dialling ``attempt`` (max-wait ran out, or the client was removed)."""

    client: str
    attempt: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class Hangup:
    """Close the session of ``attempt`` (idle-timeout, reload, stop)."""

    client: str
    attempt: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class Exhausted:
    """Every endpoint of ``client`` failed ``max-attempts`` times in ``round``;
    the next round starts at ``next_round_at``."""

    client: str
    round: int
    endpoints: tuple[str, ...]
    failures: tuple[str, ...]  # the last failure of each endpoint, same order
    next_round_at: float


Action = Dial | CancelDial | Hangup | Exhausted


class ClientState(enum.Enum):
    WAITING = "waiting"  # for the next attempt or round (retry delay)
    DIALING = "dialing"
    CONNECTED = "connected"
    HANGING_UP = "hanging-up"  # we asked for the session to close
    IDLE = "idle"  # periodic: waiting for the next tick
    STOPPED = "stopped"


# -- one netconf-client ----------------------------------------------------------------------------


@dataclass
class _Client:
    config: NetconfClient
    timing: Timing
    rng: random.Random
    new_attempt: Callable[[], int]
    last_connected: str | None = None
    state: ClientState = ClientState.WAITING
    round: int = 0  # rounds since the client last had a session (or since its periodic tick)
    order: list[Endpoint] = field(default_factory=list)  # this round's endpoints; [] between rounds
    position: int = 0
    tries: int = 0  # attempts on order[position] in this round
    failures: dict[str, str] = field(default_factory=dict)
    outage_since: float = 0.0  # when the client last lost (or began to want) a session
    wake_at: float | None = None  # the next attempt (WAITING) or tick (IDLE)
    attempt: int | None = None  # the dial in flight, or the session's
    deadline: float = math.inf
    session_started: float = 0.0
    last_activity: float = 0.0
    anchor: float = 0.0  # periodic: seconds since the epoch
    next_tick: float = math.inf  # periodic: the next anchored time not yet used

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def periodic(self) -> Periodic | None:
        c = self.config.connection
        return c if isinstance(c, Periodic) else None

    # -- timing ------------------------------------------------------------------------------

    def timer(self) -> float | None:
        if self.state in (ClientState.WAITING, ClientState.IDLE):
            return self.wake_at
        if self.state is ClientState.DIALING:
            return self.deadline
        if self.state is ClientState.CONNECTED and self.periodic and self.periodic.idle_timeout:
            return self.last_activity + self.periodic.idle_timeout
        return None

    def retry_delay(self, now: float) -> float:
        t = self.timing
        base = min(t.max_delay, max(t.min_delay, t.ratio * (now - self.outage_since)))
        return base * self.rng.uniform(1 - t.jitter, 1 + t.jitter)

    def tick_at_or_after(self, now: float) -> float:
        """The first anchored connection time at or after ``now``."""
        assert self.periodic is not None
        period = self.periodic.period * 60.0
        return self.anchor + math.ceil((now - self.anchor) / period) * period

    # -- rounds and attempts -----------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        self.outage_since = now
        periodic = self.periodic
        if periodic is None:
            return self.begin_round(now)
        # no anchor-time: "the server may implicitly set it to the time when
        # this configuration is applied", so the first call is now
        self.anchor = periodic.anchor_time.timestamp() if periodic.anchor_time is not None else now
        self.next_tick = self.tick_at_or_after(now)
        return self.idle_until_tick(now)

    def idle_until_tick(self, now: float) -> list[Action]:
        if self.next_tick > now:
            self.state = ClientState.IDLE
            self.wake_at = self.next_tick
            return []
        assert self.periodic is not None
        self.next_tick = self.tick_at_or_after(now)
        if self.next_tick <= now:
            self.next_tick += self.periodic.period * 60.0
        self.outage_since = now
        self.round = 0
        return self.begin_round(now)

    def begin_round(self, now: float) -> list[Action]:
        endpoints = list(self.config.endpoints)
        start = 0
        how = self.config.reconnect.start_with
        if how is StartWith.LAST_CONNECTED and self.last_connected is not None:
            start = next((i for i, e in enumerate(endpoints) if e.name == self.last_connected), 0)
        elif how is StartWith.RANDOM_SELECTION:
            start = self.rng.randrange(len(endpoints))
        self.order = endpoints[start:] + endpoints[:start]
        self.round += 1
        self.position = 0
        self.tries = 0
        self.failures = {}
        return [self.dial(now)]

    def dial(self, now: float) -> Dial:
        self.state = ClientState.DIALING
        self.attempt = self.new_attempt()
        self.tries += 1
        self.deadline = now + self.config.reconnect.max_wait
        self.wake_at = None
        return Dial(
            client=self.name,
            endpoint=self.order[self.position],
            attempt=self.attempt,
            deadline=self.deadline,
            round=self.round,
            try_number=self.tries,
        )

    def failed(self, now: float, reason: str) -> list[Action]:
        """The attempt (or a short session) on ``order[position]`` failed."""
        self.failures[self.order[self.position].name] = reason
        self.attempt = None
        self.deadline = math.inf
        actions: list[Action] = []
        if self.tries >= self.config.reconnect.max_attempts:
            self.position += 1
            self.tries = 0
            if self.position < len(self.order):
                return [self.dial(now)]  # the next endpoint at once
            delay = self.retry_delay(now)
            actions.append(
                Exhausted(
                    client=self.name,
                    round=self.round,
                    endpoints=tuple(e.name for e in self.order),
                    failures=tuple(self.failures.get(e.name, "") for e in self.order),
                    next_round_at=now + delay,
                )
            )
            self.order = []
        else:
            delay = self.retry_delay(now)
        self.state = ClientState.WAITING
        self.wake_at = now + delay
        return actions

    def handle_timer(self, now: float) -> list[Action]:
        timer = self.timer()
        if timer is None or now < timer:
            return []
        if self.state is ClientState.DIALING:
            assert self.attempt is not None
            cancel = CancelDial(client=self.name, attempt=self.attempt, reason="max-wait")
            return [cancel, *self.failed(now, f"not connected within max-wait ({self.config.reconnect.max_wait} s)")]
        if self.state is ClientState.WAITING:
            return self.begin_round(now) if not self.order else [self.dial(now)]
        if self.state is ClientState.IDLE:
            return self.idle_until_tick(now)
        assert self.state is ClientState.CONNECTED and self.periodic is not None and self.attempt is not None
        self.state = ClientState.HANGING_UP
        return [Hangup(client=self.name, attempt=self.attempt, reason=f"idle for {self.periodic.idle_timeout} s")]

    # -- events ------------------------------------------------------------------------------

    def connected(self, now: float) -> list[Action]:
        self.state = ClientState.CONNECTED
        self.last_connected = self.order[self.position].name
        self.session_started = now
        self.last_activity = now
        self.deadline = math.inf
        return []

    def session_ended(self, now: float, graceful: bool) -> list[Action]:
        hung_up = self.state is ClientState.HANGING_UP
        short = now - self.session_started < self.timing.short_session and not hung_up
        if short and (self.periodic is None or not graceful):
            return self.failed(now, "the session ended at once (refused by the manager?)")
        self.attempt = None
        self.outage_since = now
        self.order = []
        if self.periodic is not None and (graceful or hung_up):
            # ticks that passed during the session are skipped: the model does
            # not recommend a new connection while one is up
            self.next_tick = max(self.next_tick, self.tick_at_or_after(now))
            return self.idle_until_tick(now)
        self.round = 0  # persistent, or periodic ended in error: "immediately attempt to reestablish"
        return self.begin_round(now)

    def stop(self, reason: str) -> list[Action]:
        actions: list[Action] = []
        if self.attempt is not None and self.state is ClientState.DIALING:
            actions.append(CancelDial(client=self.name, attempt=self.attempt, reason=reason))
        elif self.attempt is not None and self.state in (ClientState.CONNECTED, ClientState.HANGING_UP):
            actions.append(Hangup(client=self.name, attempt=self.attempt, reason=reason))
        self.state = ClientState.STOPPED
        self.attempt = None
        self.wake_at = None
        return actions


# -- every netconf-client ----------------------------------------------------------------------------


class Scheduler:
    """The call-home schedule of every ``netconf-client`` of a configuration.

    :meth:`configure` starts (first call) or reloads (later calls): clients
    whose configuration is unchanged keep their state, sessions and dials;
    changed ones are stopped and started again (keeping their last-connected
    endpoint); removed ones are stopped."""

    def __init__(
        self,
        *,
        timing: Timing | None = None,
        rng: random.Random | None = None,
        last_connected: Mapping[str, str] | None = None,
    ) -> None:
        self.timing = timing or Timing()
        self.rng = rng or random.Random()
        self._clients: dict[str, _Client] = {}
        self._attempts: dict[int, _Client] = {}
        self._attempt_ids = itertools.count(1)
        # client -> endpoint, remembered across restarts of the driver ("NETCONF
        # servers SHOULD be able to remember the last endpoint connected to
        # across reboots", start-with last-connected, 2023-12-28)
        self._remembered: dict[str, str] = dict(last_connected or {})

    # -- configuration -------------------------------------------------------------------------

    def configure(self, clients: Sequence[NetconfClient], now: float) -> list[Action]:
        actions: list[Action] = []
        wanted = {c.name: c for c in clients}
        for name, client in list(self._clients.items()):
            if wanted.get(name) != client.config:
                reason = "removed from the configuration" if name not in wanted else "its configuration changed"
                actions += self._track(client, client.stop(reason))
                del self._clients[name]
        for name, config in wanted.items():
            if name in self._clients:
                continue  # untouched
            client = _Client(config=config, timing=self.timing, rng=self.rng, new_attempt=self._attempt_ids.__next__)
            if self._remembered.get(name) in {e.name for e in config.endpoints}:
                client.last_connected = self._remembered[name]
            self._clients[name] = client
            actions += self._track(client, client.start(now))
        return actions

    def stop(self, reason: str = "stopping") -> list[Action]:
        """Cancel every dial and hang up every session."""
        actions: list[Action] = []
        for client in self._clients.values():
            actions += self._track(client, client.stop(reason))
        self._clients.clear()
        return actions

    # -- time ----------------------------------------------------------------------------------

    def timer(self) -> float | None:
        """When :meth:`handle_timer` must be called next (None: only on events)."""
        times = [t for t in (c.timer() for c in self._clients.values()) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for client in list(self._clients.values()):
            actions += self._track(client, client.handle_timer(now))
        return actions

    # -- events from the driver ------------------------------------------------------------------

    def connected(self, attempt: int, now: float) -> list[Action]:
        """The dial of ``attempt`` is connected (to the manager and, for the
        agent, to the local server).  A :class:`Hangup` back means: too late."""
        client = self._attempts.get(attempt)
        if client is None or client.attempt != attempt or client.state is not ClientState.DIALING:
            self._attempts.pop(attempt, None)
            return [Hangup(client=client.name if client else "", attempt=attempt, reason="no longer wanted")]
        actions = self._track(client, client.connected(now))
        if client.last_connected is not None:
            self._remembered[client.name] = client.last_connected
        return actions

    def dial_failed(self, attempt: int, now: float, reason: str) -> list[Action]:
        client = self._attempts.pop(attempt, None)
        if client is None or client.attempt != attempt or client.state is not ClientState.DIALING:
            return []
        return self._track(client, client.failed(now, reason))

    def session_ended(self, attempt: int, now: float, *, graceful: bool) -> list[Action]:
        """The session of ``attempt`` ended; ``graceful``: closed by either
        side (a FIN), not broken by an error."""
        client = self._attempts.pop(attempt, None)
        if client is None or client.attempt != attempt:
            return []
        if client.state not in (ClientState.CONNECTED, ClientState.HANGING_UP):
            return []
        return self._track(client, client.session_ended(now, graceful))

    def activity(self, attempt: int, now: float) -> None:
        """Bytes moved on the session of ``attempt`` (for idle-timeout)."""
        client = self._attempts.get(attempt)
        if client is not None and client.attempt == attempt:
            client.last_activity = now

    # -- introspection -------------------------------------------------------------------------

    def client_of(self, attempt: int) -> str | None:
        client = self._attempts.get(attempt)
        return client.name if client else None

    def state(self, client: str) -> ClientState:
        return self._clients[client].state

    def last_connected(self, client: str) -> str | None:
        return self._clients[client].last_connected

    def remembered(self) -> dict[str, str]:
        """client -> the endpoint it last connected to (what a driver keeps
        across restarts: pass it back as ``last_connected``)."""
        return dict(self._remembered)

    def clients(self) -> list[str]:
        return list(self._clients)

    def _track(self, client: _Client, actions: list[Action]) -> list[Action]:
        for action in actions:
            if isinstance(action, Dial):
                self._attempts[action.attempt] = client
            elif isinstance(action, CancelDial):
                self._attempts.pop(action.attempt, None)  # already counted: no report expected
        return actions
