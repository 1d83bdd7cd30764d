"""Admission control for the call-home listeners (RFC 8071 s5: the manager's
listener is now the attack surface), sans I/O.

Modelled on OpenSSH's sshd:

- :class:`Startups` is MaxStartups, *per listener*: connections whose
  handshake has not finished.  At the cap, the oldest one whose device has
  not yet sent its first bytes (SSH: its identification string; TLS: its
  ServerHello) is dropped to make room, as MaxStartups' random early drop
  does; only when every pending connection has sent them is a new one
  refused.  A flood on one port never keeps devices out of another.
- ``banner_timeout`` bounds the wait for those first bytes, separately from
  the full handshake timeout (LoginGraceTime, ``handshake_timeout`` of each
  transport): a silent connection holds its slot seconds, not half a minute.
- :class:`Admission` is PerSourcePenalties: each failed handshake charges its
  source address a weight by kind (:class:`FailureKind`: unknown key,
  protocol garbage, grace timeout); a source whose charges within
  ``failure_window`` reach ``failures_before_block`` is refused for
  ``block_seconds``.  Authentication failures of an *identified* device are
  charged to that device, not to its address (many devices share one NAT
  address), and block that device only.  ``exempt`` is
  PerSourcePenaltyExemptList (CIDRs never blocked).  Both tables are bounded
  (``max_tracked_sources``) and expire.

Loopback sources are not exempt unless listed: tests rely on that.
"""

from __future__ import annotations

import collections
import enum
import ipaddress
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Admission", "AdmissionConfig", "FailureKind", "Penalties", "Startups"]

K = TypeVar("K", bound=Hashable)


class FailureKind(enum.Enum):
    """Why a handshake failed, for its penalty (OpenSSH PerSourcePenalties)."""

    UNKNOWN_KEY = "unknown_key"  # a host key or certificate no device has (noauth)
    GARBAGE = "garbage"  # not the protocol, or the connection broke mid-handshake
    GRACE_TIMEOUT = "grace_timeout"  # no first bytes / no handshake in time, or dropped early (grace-exceeded)
    AUTH_FAILED = "auth_failed"  # an identified device refused our credentials (authfail): charged to the device


@dataclass(frozen=True, kw_only=True)
class Penalties:
    """The charge of each :class:`FailureKind`, in failures."""

    unknown_key: float = 1.0  # a device waiting to be onboarded redials: it should not get blocked
    garbage: float = 2.0  # our devices do not send garbage; scanners do
    grace_timeout: float = 1.0
    auth_failed: float = 1.0

    def __post_init__(self) -> None:
        for kind in FailureKind:
            if getattr(self, kind.value) < 0:
                raise ValueError(f"penalties.{kind.value} must be >= 0, not {getattr(self, kind.value)}")

    def weight(self, kind: FailureKind) -> float:
        return float(getattr(self, kind.value))


@dataclass(frozen=True, kw_only=True)
class AdmissionConfig:
    """Limits; 0 disables a limit (``banner_timeout`` 0: only the handshake timeout applies)."""

    max_pending_handshakes: int = 256  # per listener
    banner_timeout: float = 10.0
    failures_before_block: int = 10
    failure_window: float = 60.0
    block_seconds: float = 60.0
    penalties: Penalties = field(default_factory=Penalties)
    exempt: tuple[str, ...] = ()  # CIDRs never blocked, e.g. the NAT address of a site
    max_tracked_sources: int = 65536  # bounded memory under a spoofed-source flood

    def __post_init__(self) -> None:
        for name in ("max_pending_handshakes", "failures_before_block", "max_tracked_sources"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")
        for name in ("banner_timeout", "failure_window", "block_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")
        object.__setattr__(self, "exempt", tuple(self.exempt))
        for cidr in self.exempt:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"exempt: {cidr!r} is not an address or network (CIDR)") from None


@dataclass
class _Window:
    """One key's charges within the failure window: (time, weight), and their sum."""

    events: collections.deque[tuple[float, float]] = field(default_factory=collections.deque)
    total: float = 0.0


class _Charges:
    """Weighted failures per key within a sliding window, and the keys blocked
    now.  Bounded: the oldest keys are forgotten first."""

    def __init__(self, config: AdmissionConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.failures: collections.OrderedDict[str, _Window] = collections.OrderedDict()
        # insertion order is expiry order (block_seconds is one constant)
        self.blocked: collections.OrderedDict[str, float] = collections.OrderedDict()

    def blocked_for(self, key: str) -> float:
        """Seconds ``key`` stays blocked (0: not blocked)."""
        until = self.blocked.get(key)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self.blocked[key]
            return 0.0
        return left

    def charge(self, key: str, weight: float) -> bool:
        """Charge ``key``; return whether this charge blocked it."""
        threshold = self.config.failures_before_block
        if not threshold or not self.config.block_seconds or weight <= 0 or self.blocked_for(key):
            return False
        now = self.clock()
        window = self.failures.pop(key, None) or _Window()
        window.events.append((now, weight))
        window.total += weight
        while window.events and now - window.events[0][0] > self.config.failure_window:
            window.total -= window.events.popleft()[1]
        if window.total >= threshold - 1e-9:  # float sums of weights
            self._block(key, now + self.config.block_seconds)
            return True
        self.failures[key] = window
        while len(self.failures) > self.config.max_tracked_sources:
            self.failures.popitem(last=False)
        return False

    def _block(self, key: str, until: float) -> None:
        now = self.clock()
        while self.blocked and next(iter(self.blocked.values())) <= now:
            self.blocked.popitem(last=False)
        self.blocked.pop(key, None)
        self.blocked[key] = until
        while len(self.blocked) > self.config.max_tracked_sources:
            self.blocked.popitem(last=False)

    def forgive(self, key: str) -> None:
        self.failures.pop(key, None)

    def snapshot(self) -> dict[str, float]:
        now = self.clock()
        return {key: until - now for key, until in self.blocked.items() if until > now}


class Admission:
    """Decides whether a source may start a handshake, and whether an
    identified device may go on to authenticate; keeps the penalties."""

    def __init__(self, config: AdmissionConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or AdmissionConfig()
        self._sources = _Charges(self.config, clock)
        self._devices = _Charges(self.config, clock)
        self._exempt = [ipaddress.ip_network(cidr, strict=False) for cidr in self.config.exempt]

    def is_exempt(self, source: str) -> bool:
        if not self._exempt:
            return False
        try:
            address = ipaddress.ip_address(source.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in network for network in self._exempt)

    def admit(self, source: str) -> str | None:
        """``None`` if ``source`` may start a handshake, else the refusal reason."""
        return "blocked" if self._sources.blocked_for(source) else None

    def failed(self, source: str, kind: FailureKind = FailureKind.GARBAGE) -> bool:
        """Charge a failed handshake of ``kind`` to ``source``; return whether
        this blocked it (once per block).  Exempt sources are never charged."""
        if self.is_exempt(source):
            return False
        return self._sources.charge(source, self.config.penalties.weight(kind))

    def succeeded(self, source: str) -> None:
        self._sources.forgive(source)

    def device_failed(self, device: str) -> bool:
        """Charge an authentication failure to the identified ``device``;
        return whether this blocked it."""
        return self._devices.charge(device, self.config.penalties.weight(FailureKind.AUTH_FAILED))

    def device_blocked(self, device: str) -> float:
        """Seconds the identified ``device`` stays refused (0: it may authenticate)."""
        return self._devices.blocked_for(device)

    def device_succeeded(self, device: str) -> None:
        self._devices.forgive(device)

    def blocked(self) -> dict[str, float]:
        """Blocked sources and the seconds left for each."""
        return self._sources.snapshot()

    def blocked_devices(self) -> dict[str, float]:
        """Devices blocked after authentication failures, and the seconds left."""
        return self._devices.snapshot()


class Startups(Generic[K]):
    """The connections of one listener whose handshake has not finished
    (MaxStartups, per listener), oldest first, with early drop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pending: dict[K, None] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._pending))

    def admit(self, item: K, has_sent_first_bytes: Callable[[K], bool]) -> tuple[bool, K | None]:
        """Make room for ``item``: ``(True, None)``; ``(True, dropped)`` when the
        cap was reached and ``dropped``, the oldest pending connection whose
        device has not sent its first bytes, must be closed for it; or
        ``(False, None)``: every pending connection has sent them, refuse
        ``item``."""
        if not self.limit or len(self._pending) < self.limit:
            self._pending[item] = None
            return True, None
        for old in self._pending:
            if not has_sent_first_bytes(old):
                del self._pending[old]
                self._pending[item] = None
                return True, old
        return False, None

    def finished(self, item: K) -> None:
        self._pending.pop(item, None)
