"""Runs the sans-I/O :class:`~.schedule.Scheduler` on an asyncio loop: wakes
at its timer, starts one task per :class:`~.schedule.Dial`, cancels and hangs
up as it says, and reports the outcomes back.  The agent (:mod:`.runner`)
and the simulated device (:mod:`callhome_transport.sim.callhome`) differ only
in what a call is: a byte splice to the local server, or the device's own
SSH server role."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from .model import NetconfClient
from .schedule import Action, CancelDial, Dial, Exhausted, Hangup, Scheduler, Timing

__all__ = ["ScheduleDriver"]

MAX_SLEEP = 30.0  # timers are in wall-clock time, which may be set while we sleep


class ScheduleDriver(abc.ABC):
    """The loop around a :class:`Scheduler`; subclasses say what a call is."""

    log: logging.Logger = logging.getLogger(__name__)
    context = ""  # a prefix for log lines, e.g. "device=SIM-00001 "
    exhausted_level = logging.WARNING

    def __init__(
        self,
        *,
        timing: Timing | None = None,
        clock: Callable[[], float] = time.time,
        last_connected: Mapping[str, str] | None = None,
    ) -> None:
        self.scheduler = Scheduler(timing=timing, last_connected=last_connected)
        self.clock = clock
        self.calls: dict[int, Dial] = {}  # dials and sessions in progress, by attempt
        self.sessions: set[int] = set()  # the attempts that became sessions
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._started = False

    # -- what a subclass provides ---------------------------------------------------------------

    @abc.abstractmethod
    def current_clients(self) -> Sequence[NetconfClient]:
        """The netconf-clients to call now."""

    @abc.abstractmethod
    async def call(self, dial: Dial) -> None:
        """Dial, then :meth:`report_failed` or :meth:`report_connected`, serve,
        :meth:`report_ended`.  Cancelled when the scheduler gives up on it."""

    @abc.abstractmethod
    def hang_up(self, attempt: int, reason: str) -> None:
        """Close the session of ``attempt`` (it then reports its end)."""

    def on_exhausted(self, event: Exhausted) -> None:
        """Besides the WARNING line (metrics, for instance)."""
        del event

    def on_cancelled(self, dial: Dial, reason: str) -> None:
        """A dial the scheduler gave up on (max-wait, reconfigured)."""
        del dial, reason

    def after_actions(self) -> None:
        """After each batch of actions (write metrics, for instance)."""
        return

    # -- control -------------------------------------------------------------------------------------

    def reconfigure(self) -> None:
        """Apply :meth:`current_clients`: changed clients restart, the others are untouched."""
        if self._started:
            self.apply(self.scheduler.configure(self.current_clients(), self.clock()))

    def stop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run(self, stop_reason: str = "stopping") -> None:
        """Call home until :meth:`stop`; then cancel every dial and hang up every session."""
        self._wake = asyncio.Event()
        self._started = True
        self.apply(self.scheduler.configure(self.current_clients(), self.clock()))
        try:
            while not self._stopping:
                timer = self.scheduler.timer()
                timeout = MAX_SLEEP if timer is None else min(MAX_SLEEP, max(0.0, timer - self.clock()))
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                self.apply(self.scheduler.handle_timer(self.clock()))
        finally:
            self.apply(self.scheduler.stop(stop_reason))
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self.after_actions()

    # -- the scheduler's actions -------------------------------------------------------------------

    def apply(self, actions: Iterable[Action]) -> None:
        for action in actions:
            if isinstance(action, Dial):
                self.calls[action.attempt] = action
                self._tasks[action.attempt] = asyncio.create_task(self._run_call(action))
            elif isinstance(action, CancelDial):
                task = self._tasks.get(action.attempt)
                dial = self.calls.get(action.attempt)
                if task is not None and action.attempt not in self.sessions:
                    task.cancel()
                if dial is not None:
                    self.on_cancelled(dial, action.reason)
            elif isinstance(action, Hangup):
                if action.attempt in self.sessions:
                    self.hang_up(action.attempt, action.reason)
            elif isinstance(action, Exhausted):
                tried = ", ".join(f"{e} ({why})" for e, why in zip(action.endpoints, action.failures, strict=True))
                self.log.log(
                    self.exhausted_level,
                    "%sclient=%s event=exhausted round=%d: every endpoint failed max-attempts: %s; "
                    "next round in %.2f s",
                    self.context,
                    action.client,
                    action.round,
                    tried,
                    max(0.0, action.next_round_at - self.clock()),
                )
                self.on_exhausted(action)
        self.after_actions()
        if self._wake is not None:
            self._wake.set()

    async def _run_call(self, dial: Dial) -> None:
        try:
            await self.call(dial)
        finally:
            self._tasks.pop(dial.attempt, None)
            self.calls.pop(dial.attempt, None)
            self.sessions.discard(dial.attempt)

    # -- reports from a call ---------------------------------------------------------------------------

    def report_failed(self, dial: Dial, reason: str) -> None:
        self.apply(self.scheduler.dial_failed(dial.attempt, self.clock(), reason))

    def report_connected(self, dial: Dial, at: float | None = None) -> bool:
        """The call is up.  False: the scheduler no longer wants it (close it
        without reporting its end)."""
        actions = self.scheduler.connected(dial.attempt, self.clock() if at is None else at)
        if any(isinstance(a, Hangup) and a.attempt == dial.attempt for a in actions):
            return False
        self.sessions.add(dial.attempt)
        self.apply(actions)
        return True

    def report_activity(self, attempt: int) -> None:
        self.scheduler.activity(attempt, self.clock())

    def report_ended(self, dial: Dial, *, graceful: bool) -> None:
        self.sessions.discard(dial.attempt)
        self.apply(self.scheduler.session_ended(dial.attempt, self.clock(), graceful=graceful))

    def connected_clients(self) -> set[str]:
        return {self.calls[a].client for a in self.sessions if a in self.calls}


def describe_reload(old: Sequence[NetconfClient], new: Sequence[NetconfClient]) -> str:
    """``restarted A; untouched B; added C; removed D`` for a reload's INFO line."""
    before, after = {c.name: c for c in old}, {c.name: c for c in new}

    def names(selected: Iterable[str]) -> str:
        return ", ".join(selected) or "-"

    return (
        f"restarted {names(n for n in after if n in before and after[n] != before[n])}; "
        f"untouched {names(n for n in after if n in before and after[n] == before[n])}; "
        f"added {names(n for n in after if n not in before)}; "
        f"removed {names(n for n in before if n not in after)}"
    )
