"""Open-file descriptors: the process's limit, and refusing call-home
connections cleanly when it is nearly used up (RFC 8071 s5: the listener is
the attack surface; running out of descriptors is a denial of service too).

Every connected device holds a socket, and a gateway device also its
``netconf.sock``; a gateway of 10,000 devices needs some 20,000 descriptors.
Past the limit, accepted sockets take the last descriptors and whatever the
handshake or a local session opens next fails deep inside a library.  So:

- :func:`raise_open_file_limit` raises the soft ``RLIMIT_NOFILE`` to the hard
  limit (what systemd's ``LimitNOFILE=`` or ``ulimit -Hn`` allows) at start;
- :class:`DescriptorGuard` closes a newly accepted connection at once when
  the descriptor it got is within ``reserve`` of the limit: the kernel hands
  out the lowest free descriptor, so descriptor number ``n`` means at least
  ``n + 1`` are open.  It counts refusals and logs one WARNING a minute.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DescriptorGuard", "OpenFileLimit", "open_descriptors", "process_guard", "raise_open_file_limit"]

log = logging.getLogger(__name__)

WARNING_INTERVAL = 60.0  # seconds between two WARNINGs about refusals
RESERVE_MIN = 64  # descriptors kept for what is not a new connection: local sessions, files, logs


@dataclass(frozen=True)
class OpenFileLimit:
    """``RLIMIT_NOFILE`` after :func:`raise_open_file_limit`: ``soft`` was
    ``before``."""

    soft: int
    hard: int
    before: int


def raise_open_file_limit() -> OpenFileLimit:
    """Raise the soft open-file limit to the hard one (an unlimited hard
    limit: to the soft one's maximum the kernel allows, left as it is)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else soft
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # a platform that caps it lower
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
            return OpenFileLimit(soft=soft, hard=hard, before=soft)
    return OpenFileLimit(soft=max(soft, target), hard=hard, before=soft)


def open_descriptors() -> int | None:
    """How many descriptors the process has open (Linux ``/proc``), or ``None``."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # the directory's own
    except OSError:
        return None


def default_reserve(limit: int) -> int:
    """Descriptors kept free for what is not a new connection: 1 % of the
    limit, at least :data:`RESERVE_MIN`."""
    return max(RESERVE_MIN, limit // 100)


class DescriptorGuard:
    """Refuses connections accepted near the open-file limit.

    ``limit`` is fixed for tests; by default it is the soft ``RLIMIT_NOFILE``
    as it is at each connection.  ``reserve`` descriptors below it stay free
    for local sessions, key files and logs (by default 1 % of the limit, at
    least :data:`RESERVE_MIN`).  ``on_refused`` callbacks run for each
    refusal (a metric)."""

    def __init__(
        self,
        *,
        limit: int | None = None,
        reserve: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._reserve = reserve
        self.refused = 0
        self.on_refused: list[Callable[[], None]] = []
        self._clock = clock
        self._warned_at: float | None = None
        self._refused_since_warning = 0

    @property
    def limit(self) -> int:
        return self._limit if self._limit is not None else resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    @property
    def reserve(self) -> int:
        return self._reserve if self._reserve is not None else default_reserve(self.limit)

    def admit(self, fd: int) -> bool:
        """Whether a connection accepted on descriptor ``fd`` may go on;
        ``False``: close it (counted, logged once a minute)."""
        limit = self.limit
        reserve = self._reserve if self._reserve is not None else default_reserve(limit)
        if fd < limit - reserve:
            return True
        self.refused += 1
        self._refused_since_warning += 1
        for callback in self.on_refused:
            callback()
        now = self._clock()
        if self._warned_at is None or now - self._warned_at >= WARNING_INTERVAL:
            log.warning(
                "refusing call-home connections: descriptor %d is within %d of the open-file limit %d "
                "(%d refused since the last warning); raise the limit (LimitNOFILE=) or spread the devices",
                fd,
                reserve,
                limit,
                self._refused_since_warning,
            )
            self._warned_at = now
            self._refused_since_warning = 0
        return False


_process_guard: DescriptorGuard | None = None


def process_guard() -> DescriptorGuard:
    """The guard of this process's listeners (the limit is the process's)."""
    global _process_guard
    if _process_guard is None:
        _process_guard = DescriptorGuard()
    return _process_guard


def log_capacity(limit: OpenFileLimit, inventory_devices: int, guard: DescriptorGuard | None = None) -> int | None:
    """Log what the open-file limit leaves room for, once everything a
    manager opens at start is open (a gateway: a ``netconf.sock`` per device):
    each connected device then takes one descriptor more.  A WARNING when
    that is fewer than the inventory's devices.  Returns that room, or
    ``None`` where the open descriptors cannot be counted."""
    guard = guard if guard is not None else process_guard()
    open_now = open_descriptors()
    if open_now is None:
        return None
    room = max(0, limit.soft - guard.reserve - open_now)
    raised = f"raised from {limit.before}, " if limit.before != limit.soft else ""
    log.info(
        "open-file limit %d (%shard %d): %d open, %d kept in reserve: room for %d connected devices",
        limit.soft,
        raised,
        limit.hard,
        open_now,
        guard.reserve,
        room,
    )
    if room < inventory_devices:
        log.warning(
            "the open-file limit leaves room for %d connected devices, the inventory has %d: connections past "
            "that are refused; raise the hard limit (LimitNOFILE=) to %d or more",
            room,
            inventory_devices,
            open_now + inventory_devices + guard.reserve,
        )
    return room
