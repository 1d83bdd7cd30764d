"""Event-loop stalls and garbage-collection pauses of a long-running manager
(the gateway), and freezing long-lived objects after registration bursts.

A gateway holding thousands of sessions holds millions of objects in the
cyclic garbage collector's oldest generation; every full collection walks all
of them while the event loop waits: 7.25 s of GC in one 10,000-device storm
and idle stalls of 0.85-1.33 s (issue 16).  Sessions live for hours, so once
a burst of registrations is over, :class:`LoopWatch` moves every object alive
then into the collector's permanent generation (:func:`gc.freeze`), which
full collections skip.  Reference counting still frees frozen objects; only
frozen *cycles* that become garbage wait, so after enough devices left
(:attr:`LoopWatch.refreeze_share` of those frozen), the next quiet moment
unfreezes, collects everything once and freezes again.

Measured for the operator (Prometheus, the gateway's ``/metrics``):
``callhome_loop_stall_seconds`` (how late a 100 ms tick of the event loop
ran), ``callhome_loop_stall_worst_seconds``, ``callhome_gc_pause_seconds``
(by generation) and ``callhome_gc_freezes_total`` (by collection, ``young`` or
``full``).  The number of frozen objects is not exported: counting them
(:func:`gc.get_freeze_count`) walks every one of them while the event loop
waits, 0.12 s with 10,000 sessions (1.24 million objects), which made every
freeze and every scrape of ``/metrics`` a stall of its own (issue 16).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from typing import Any

from .metrics import Metrics

__all__ = ["LoopWatch"]

log = logging.getLogger(__name__)

STALL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# the collector's thresholds while watching (Python's default: 700, 10, 10).  A storm of
# handshakes allocates millions of short-lived tracked objects while the connections it makes
# pile up in the oldest generation: with the default, 10,000 devices cost 4.2 s of collections
# (34 % of the manager's CPU, pauses up to 0.5 s); with these 0.7 s (pauses up to 78 ms), and
# CPU per handshake 1.24 -> 0.90 ms (bench_storm --devices 10000 --only bare server, issue 16)
GC_THRESHOLDS = (10_000, 10, 100)


class LoopWatch:
    """Watches the running event loop (``tick`` seconds apart) and the
    collector; freezes after a burst of registrations once ``quiet`` seconds
    passed without one.  Call :meth:`registered` and :meth:`left` from the
    server's connect and disconnect callbacks; :meth:`start` and :meth:`stop`
    on the loop."""

    def __init__(
        self, metrics: Metrics, *, tick: float = 0.1, quiet: float = 2.0, refreeze_share: float = 0.25
    ) -> None:
        self.metrics = metrics
        self.tick = tick
        self.quiet = quiet
        self.refreeze_share = refreeze_share
        self.worst_stall = 0.0
        self.freezes = 0
        self._since_freeze = 0  # registrations not yet frozen
        self._frozen_registrations = 0
        self._left_since_full = 0
        self._last_registration = 0.0
        self._gc_started: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._thresholds: tuple[int, int, int] | None = None  # the collector's before start()
        metrics.histogram("callhome_loop_stall_seconds", "How late a 100 ms event-loop tick ran", STALL_BUCKETS)
        metrics.gauge(
            "callhome_loop_stall_worst_seconds", "The worst event-loop stall so far", lambda: {(): self.worst_stall}
        )
        metrics.histogram("callhome_gc_pause_seconds", "Garbage-collection pauses, by generation", STALL_BUCKETS)
        metrics.counter(
            "callhome_gc_freezes_total",
            "gc.freeze after registration bursts, by the collection before it (young or full)",
        )

    def start(self) -> None:
        """Watch, and raise the collector's thresholds to :data:`GC_THRESHOLDS`
        (never lower them) until :meth:`stop`."""
        self._thresholds = gc.get_threshold()
        gc.set_threshold(*(max(mine, theirs) for mine, theirs in zip(GC_THRESHOLDS, self._thresholds, strict=True)))
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="callhome-loop-watch")

    async def stop(self) -> None:
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def registered(self, *_: object) -> None:
        """A device registered (connect callback)."""
        self._since_freeze += 1
        self._last_registration = time.monotonic()

    def left(self, *_: object) -> None:
        """A device's connection ended (disconnect callback)."""
        self._left_since_full += 1

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            pause = time.perf_counter() - self._gc_started
            self._gc_started = None
            self.metrics.observe("callhome_gc_pause_seconds", pause, generation=str(info.get("generation", "")))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.tick)
            stall = max(0.0, loop.time() - before - self.tick)
            self.worst_stall = max(self.worst_stall, stall)
            self.metrics.observe("callhome_loop_stall_seconds", stall)
            if self._since_freeze and time.monotonic() - self._last_registration >= self.quiet:
                self.freeze()

    def freeze(self) -> None:
        """Freeze what is alive now: the young generations collected first
        (a burst's garbage is not frozen); everything once after enough of
        the frozen devices left."""
        started = time.perf_counter()
        full = self._left_since_full > self.refreeze_share * self._frozen_registrations
        if full:
            gc.unfreeze()
            gc.collect()
            self._left_since_full = 0
            self._frozen_registrations = 0
        else:
            gc.collect(1)
        gc.freeze()
        self._frozen_registrations += self._since_freeze
        registrations, self._since_freeze = self._since_freeze, 0
        self.freezes += 1
        collection = "full" if full else "young"
        self.metrics.inc("callhome_gc_freezes_total", collection=collection)
        log.debug(
            "gc.freeze after %d registrations (%s collection, %.3f s)",
            registrations,
            collection,
            time.perf_counter() - started,
        )
