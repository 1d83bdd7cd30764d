"""Admission control for the call-home listeners (RFC 8071 s5: the manager's
listener is now the attack surface), sans I/O.

Modelled on OpenSSH: ``max_pending_handshakes`` is MaxStartups (connections
not yet authenticated), ``failures_before_block`` / ``failure_window`` /
``block_seconds`` are PerSourcePenalties (a source address that keeps failing
is refused for a while).  The handshake timeout (LoginGraceTime) lives with
each transport.  Loopback sources are not exempt: tests rely on that.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Admission", "AdmissionConfig"]


@dataclass(frozen=True, kw_only=True)
class AdmissionConfig:
    """Limits; 0 disables a limit."""

    max_pending_handshakes: int = 256
    failures_before_block: int = 10
    failure_window: float = 60.0
    block_seconds: float = 60.0
    max_tracked_sources: int = 65536  # bounded memory under a spoofed-source flood

    def __post_init__(self) -> None:
        for name in ("max_pending_handshakes", "failures_before_block", "max_tracked_sources"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")
        for name in ("failure_window", "block_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")


class Admission:
    """Decides whether a new connection may start a handshake."""

    def __init__(self, config: AdmissionConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or AdmissionConfig()
        self._clock = clock
        self.pending = 0
        self._failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self._blocked: dict[str, float] = {}

    def admit(self, source: str) -> str | None:
        """``None`` if ``source`` may start a handshake (then call
        :meth:`finished` once it ends), else the refusal reason."""
        now = self._clock()
        until = self._blocked.get(source)
        if until is not None:
            if now < until:
                return "blocked"
            del self._blocked[source]
        limit = self.config.max_pending_handshakes
        if limit and self.pending >= limit:
            return "too-many-handshakes"
        self.pending += 1
        return None

    def finished(self) -> None:
        self.pending = max(0, self.pending - 1)

    def failed(self, source: str) -> bool:
        """Record a failed handshake from ``source``; return whether it is now blocked."""
        k = self.config.failures_before_block
        if not k:
            return False
        now = self._clock()
        times = self._failures.pop(source, None) or collections.deque()
        times.append(now)
        while times and now - times[0] > self.config.failure_window:
            times.popleft()
        if len(times) >= k:
            self._blocked[source] = now + self.config.block_seconds
            return True
        self._failures[source] = times
        while len(self._failures) > self.config.max_tracked_sources:
            self._failures.popitem(last=False)
        return False

    def succeeded(self, source: str) -> None:
        self._failures.pop(source, None)

    def blocked(self) -> dict[str, float]:
        """Blocked sources and the seconds left for each."""
        now = self._clock()
        return {source: until - now for source, until in self._blocked.items() if until > now}
