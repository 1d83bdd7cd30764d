"""One asyncio event loop in a background thread, for synchronous callers.

The listener and every SSH client role run on this loop (measured: asyncssh on
one loop held 10,000 idle sessions where paramiko's thread per connection
stalled past 2,000).  Synchronous APIs (:class:`~callhome_transport.CallHomeServer`,
:func:`~callhome_transport.call_home`) submit coroutines with :meth:`EventLoopThread.run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

__all__ = ["EventLoopThread", "takes_arguments_of"]

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")


def takes_arguments_of(
    target: Callable[P, object],
) -> Callable[[Callable[..., None]], Callable[Concatenate[Any, P], None]]:
    """For a synchronous facade's ``__init__(self, *args, **kwargs)`` that
    hands its arguments to ``target`` as they are: type checkers, ``help()``
    and ``inspect.signature`` see ``target``'s parameters, so the facade
    never restates (and never drifts from) the signature it forwards to."""

    def decorate(init: Callable[..., None]) -> Callable[Concatenate[Any, P], None]:
        params = list(inspect.signature(target).parameters.values())
        self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        init.__signature__ = inspect.Signature([self_param, *params])  # type: ignore[attr-defined]
        return init

    return decorate


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
