"""What a long event-loop iteration ran (not a benchmark itself): a
diagnostic the storm benchmark installs in a manager with ``--trace-loop``.

Every callback the loop runs is timed (``asyncio.Handle._run``), and so is
every garbage collection (``gc.callbacks``); an iteration of the loop whose
callbacks took longer than ``threshold`` seconds is written as one JSON line:
its callback count, its callback time, its GC time, and the callbacks that
took the most time in it, summed by kind (the function, or a task's
coroutine).  Costs a ``perf_counter`` pair per callback.

``python benchmarks/_looptrace.py FILE`` prints the longest iterations of a
trace, seconds from its first record.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO


def kind_of(handle: asyncio.Handle) -> str:
    callback = handle._callback  # type: ignore[attr-defined]
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return f"task {getattr(coro, '__qualname__', type(coro).__name__)}"
    return getattr(callback, "__qualname__", repr(callback))


class LoopTrace:
    def __init__(self, out: Path, threshold: float = 0.02) -> None:
        self.threshold = threshold
        self._out: TextIO = out.open("a", buffering=1)
        self._callbacks = 0
        self._time = 0.0
        self._kinds: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._gc = 0.0
        self._gc_generations: list[int] = []
        self._gc_started = 0.0

    def install(self) -> None:
        trace = self
        original_run = asyncio.Handle._run

        def timed_run(handle: asyncio.Handle) -> None:
            started = time.perf_counter()
            try:
                original_run(handle)
            finally:
                spent = time.perf_counter() - started
                trace._callbacks += 1
                trace._time += spent
                kind = kind_of(handle)
                trace._kinds[kind] += spent
                trace._counts[kind] += 1

        asyncio.Handle._run = timed_run  # type: ignore[method-assign]
        original_once = asyncio.BaseEventLoop._run_once

        def timed_once(loop: asyncio.BaseEventLoop) -> None:
            trace._callbacks, trace._time, trace._gc = 0, 0.0, 0.0
            trace._kinds.clear()
            trace._counts.clear()
            trace._gc_generations = []
            started = time.perf_counter()
            original_once(loop)  # type: ignore[attr-defined]
            if trace._time + trace._gc >= trace.threshold:
                trace.write(time.perf_counter() - started, len(loop._scheduled))  # type: ignore[attr-defined]

        asyncio.BaseEventLoop._run_once = timed_once  # type: ignore[attr-defined]
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._gc += time.perf_counter() - self._gc_started
            self._gc_generations.append(int(info.get("generation", -1)))

    def write(self, wall: float, scheduled: int) -> None:
        top = self._kinds.most_common(6)
        record = {
            "at": time.monotonic(),
            "wall_ms": round(1000 * wall, 1),
            "callbacks": self._callbacks,
            "callback_ms": round(1000 * self._time, 1),
            "gc_ms": round(1000 * self._gc, 1),
            "gc_generations": self._gc_generations,
            "timers": scheduled,
            "top": [[k, round(1000 * t, 1), self._counts[k]] for k, t in top],
        }
        self._out.write(json.dumps(record) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description="The longest event-loop iterations of a --trace-loop file.")
    parser.add_argument("trace", type=Path)
    parser.add_argument("--top", type=int, default=20, help="how many iterations")
    parser.add_argument("--after", type=float, default=0.0, help="only iterations this many seconds in or later")
    args = parser.parse_args()
    records = [json.loads(line) for line in args.trace.read_text().splitlines() if line.strip()]
    if not records:
        print("no iteration over the threshold")
        return 0
    first = records[0]["at"]
    chosen = [r for r in records if r["at"] - first >= args.after]
    for r in sorted(chosen, key=lambda r: -r["wall_ms"])[: args.top]:
        top = "; ".join(f"{kind[:60]} {ms} ms x{count}" for kind, ms, count in r["top"][:3])
        print(
            f"{r['at'] - first:8.1f} s  {r['wall_ms']:7.1f} ms  {r['callbacks']:6d} callbacks  "
            f"GC {r['gc_ms']:6.1f} ms  {top}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
