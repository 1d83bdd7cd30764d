"""Gateway events: what happened to devices and local sessions, as typed
records in a bounded ring buffer that followers read without ever holding up
whoever emits.  No sockets, no clocks of its own (``clock`` is injected).

The events come from one place, the server's registry
(:mod:`callhome_transport.server.registry`): :class:`RegistryFeed` is its
observer and turns each transition (connected, disconnected, refused,
blocked, a local session opened or closed) into an event, reading reasons
and kinds from the registry's enums.  The control API's ``GET /events``
(:mod:`callhome_transport.gateway.events_api`) reads through
:meth:`EventLog.subscribe`.

Ids are consecutive integers from 1 within one :class:`EventLog` (one gateway
process).  The log's ``epoch`` (random, per process) tells a consumer that the
gateway it reconnected to is not the one whose ids it holds.

A follower is a cursor into the shared buffer, not a queue of its own: an
emit costs the same with a hundred followers or none, and a follower that
reads slower than events arrive costs no memory.  If the buffer overwrites
events a follower had not read yet, the follower gets an ``events-dropped``
notice (how many, from which id) and goes on from the oldest event held.
"""

from __future__ import annotations

import asyncio
import enum
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from .addresses import format_peer
from .status import BlockKind, RefusalReason

if TYPE_CHECKING:
    from .server.registry import Blocked, DeviceConnected, DeviceDisconnected, LocalSession, RejectedAttempt

__all__ = [
    "AuthFailed",
    "Connected",
    "DeviceBlocked",
    "Disconnected",
    "Event",
    "EventBody",
    "EventLog",
    "EventType",
    "LocalSessionClosed",
    "LocalSessionOpened",
    "Notice",
    "NoticeType",
    "RegistryFeed",
    "Rejected",
    "SourceBlocked",
    "Subscription",
    "parse_types",
]

DEFAULT_CAPACITY = 10_000  # events held; up to about 1 KiB each with its JSON line (device-connected)
BATCH = 256  # events a follower takes per step (one write on the control socket)
SCAN = 4096  # ids a filtered follower looks at per step, so one step stays short


class EventType(enum.StrEnum):
    """The ``type`` of an event (docs/events.md)."""

    DEVICE_CONNECTED = "device-connected"
    DEVICE_DISCONNECTED = "device-disconnected"
    DEVICE_REJECTED = "device-rejected"
    DEVICE_AUTH_FAILED = "device-auth-failed"
    SOURCE_BLOCKED = "source-blocked"
    DEVICE_BLOCKED = "device-blocked"
    LOCAL_SESSION_OPENED = "local-session-opened"
    LOCAL_SESSION_CLOSED = "local-session-closed"


class NoticeType(enum.StrEnum):
    """The ``type`` of a stream notice: said to one consumer about its own
    stream, never stored, no id."""

    EVENTS_DROPPED = "events-dropped"  # the buffer overwrote events the consumer asked for
    GATEWAY_RESTARTED = "gateway-restarted"  # the consumer's ids came from another gateway process


@dataclass(frozen=True, kw_only=True)
class EventBody:
    """The fields of one event type; :class:`Event` adds id and time."""

    TYPE: ClassVar[EventType]


@dataclass(frozen=True, kw_only=True)
class Connected(EventBody):
    """A device called home and was identified and authenticated (RFC 8071 s5)."""

    TYPE: ClassVar[EventType] = EventType.DEVICE_CONNECTED
    device: str
    transport: str  # ssh, tls, restconf
    peer_address: str  # "192.0.2.7:53122", "[2001:db8::7]:53122"
    identity: str  # what identified it: SSH host-key fingerprint, or certificate subject
    fingerprint: str  # "SHA256:..." of the host key or certificate
    first_call: bool  # its first connection since the gateway started (or since it joined the inventory)
    reconnects: int
    connected_at: float  # when authenticated (the handshake completed), time.time()
    handshake_seconds: float  # TCP accept to authenticated


@dataclass(frozen=True, kw_only=True)
class Disconnected(EventBody):
    """A device's last call-home connection ended."""

    TYPE: ClassVar[EventType] = EventType.DEVICE_DISCONNECTED
    device: str
    transport: str
    reason: str
    peer_address: str
    connected_seconds: float  # how long its last connection had been up


@dataclass(frozen=True, kw_only=True)
class Rejected(EventBody):
    """A call-home attempt was refused: an unknown host key or certificate, a
    revoked certificate, a timeout, a blocked device... (``reason``)."""

    TYPE: ClassVar[EventType] = EventType.DEVICE_REJECTED
    reason: str  # unknown-device, certificate-rejected, revoked, device-blocked, handshake-timeout, ...
    transport: str  # the listener: ssh, tls, restconf, tls-strict
    peer_address: str
    device: str | None  # set when the device was identified before it was refused
    fingerprint: str  # of the host key or certificate presented ("" if none got that far)
    key_type: str  # ssh-ed25519, x509, ...
    certificate_subject: str | None  # TLS: the subject of the certificate refused
    device_id: str | None  # Junos outbound-ssh: the DEVICE-ID the device sent
    detail: str  # e.g. a certificate's subject, issuer and serial, and why it was refused


@dataclass(frozen=True, kw_only=True)
class AuthFailed(EventBody):
    """An identified device refused the credentials the inventory has for it."""

    TYPE: ClassVar[EventType] = EventType.DEVICE_AUTH_FAILED
    device: str
    transport: str
    peer_address: str
    fingerprint: str
    detail: str


@dataclass(frozen=True, kw_only=True)
class SourceBlocked(EventBody):
    """A source address is refused at accept after repeated failed handshakes
    (admission: PerSourcePenalties)."""

    TYPE: ClassVar[EventType] = EventType.SOURCE_BLOCKED
    source: str  # the address
    seconds: float  # how long it stays blocked


@dataclass(frozen=True, kw_only=True)
class DeviceBlocked(EventBody):
    """An identified device is refused before authentication after repeated
    authentication failures (its credentials in the inventory are wrong)."""

    TYPE: ClassVar[EventType] = EventType.DEVICE_BLOCKED
    device: str
    seconds: float


@dataclass(frozen=True, kw_only=True)
class LocalSessionOpened(EventBody):
    """A local client's session on a device endpoint began (a NETCONF session,
    a terminal, a RESTCONF connection)."""

    TYPE: ClassVar[EventType] = EventType.LOCAL_SESSION_OPENED
    device: str
    endpoint: str  # netconf, terminal, restconf
    session: int  # pairs opened and closed (unique within the gateway process)


@dataclass(frozen=True, kw_only=True)
class LocalSessionClosed(EventBody):
    TYPE: ClassVar[EventType] = EventType.LOCAL_SESSION_CLOSED
    device: str
    endpoint: str
    session: int
    seconds: float  # how long it was open


def _compact(data: Mapping[str, Any]) -> bytes:
    return (json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


@dataclass(frozen=True)
class Event:
    """One logged event: ``id`` (consecutive from 1 per gateway process),
    ``time`` (``time.time()`` when emitted) and its body's fields."""

    id: int
    time: float
    body: EventBody

    @property
    def type(self) -> EventType:
        return self.body.TYPE

    def to_json(self) -> dict[str, Any]:
        """``{"id": ..., "type": ..., "time": ..., <the body's fields>}``."""
        data: dict[str, Any] = {"id": self.id, "type": self.type.value, "time": round(self.time, 6)}
        for f in fields(self.body):
            data[f.name] = getattr(self.body, f.name)
        return data

    @cached_property
    def line(self) -> bytes:
        """The NDJSON line (made once, whatever the number of followers)."""
        return _compact(self.to_json())


@dataclass(frozen=True, kw_only=True)
class Notice:
    """A stream notice (:class:`NoticeType`): no id, not stored."""

    type: NoticeType
    time: float
    epoch: str  # the gateway's epoch now
    after: int | None = None  # events-dropped: the id the consumer asked to continue after
    oldest: int | None = None  # events-dropped: the first id it gets instead
    missed: int | None = None  # events-dropped: how many events (of every type) it will not get
    previous_epoch: str | None = None  # gateway-restarted: the epoch the consumer had, if it said

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type.value, "time": round(self.time, 6), "epoch": self.epoch}
        for name in ("after", "oldest", "missed", "previous_epoch"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data

    @property
    def line(self) -> bytes:
        return _compact(self.to_json())


def parse_types(values: Iterable[str]) -> frozenset[EventType] | None:
    """``["device-connected,device-disconnected", ...]`` -> the types, or
    ``None`` for all (no value, or only empty ones).  Raises ``ValueError``
    naming an unknown type and the known ones."""
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if not names:
        return None
    known = {t.value: t for t in EventType}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown event type {unknown[0]!r}; known: {', '.join(known)}")
    return frozenset(known[name] for name in names)


class EventLog:
    """The last ``capacity`` events, with consecutive ids from 1.

    :meth:`emit` is O(1) and never waits: it stores the event (overwriting
    the oldest when full) and wakes the followers waiting for one.  Call it
    and :meth:`subscribe` from one thread (the gateway's event loop)."""

    def __init__(
        self, capacity: int = DEFAULT_CAPACITY, *, clock: Callable[[], float] = time.time, epoch: str | None = None
    ) -> None:
        if capacity < 1:
            raise ValueError(f"an event log holds at least 1 event, not {capacity}")
        self.capacity = capacity
        self.epoch = epoch or secrets.token_hex(8)
        self._clock = clock
        self._ring: list[Event | None] = [None] * capacity
        self._next = 1
        # the newest id overwritten of each type: did a consumer lose any event it wanted?
        self._overwritten: dict[EventType, int] = {}
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False

    @property
    def last_id(self) -> int:
        """The newest event's id (0: none yet)."""
        return self._next - 1

    @property
    def oldest_id(self) -> int:
        """The oldest event held (``last_id + 1`` when empty)."""
        return max(1, self._next - self.capacity)

    def __len__(self) -> int:
        return self._next - self.oldest_id

    def emit(self, body: EventBody) -> Event:
        """Log ``body`` as the next event and wake the followers."""
        event = Event(self._next, self._clock(), body)
        slot = (self._next - 1) % self.capacity
        old = self._ring[slot]
        if old is not None:
            self._overwritten[old.type] = old.id
        self._ring[slot] = event
        self._next += 1
        self._wake()
        return event

    def get(self, event_id: int) -> Event | None:
        """The event ``event_id`` if the buffer still holds it."""
        if not self.oldest_id <= event_id <= self.last_id:
            return None
        return self._ring[(event_id - 1) % self.capacity]

    def lost_since(self, after: int, types: frozenset[EventType] | None) -> bool:
        """Whether an event after ``after`` of one of ``types`` (None: any)
        has been overwritten."""
        if after >= self.oldest_id - 1:
            return False
        if types is None:
            return True
        return any(self._overwritten.get(t, 0) > after for t in types)

    def subscribe(
        self,
        *,
        after: int | None = None,
        types: frozenset[EventType] | None = None,
        epoch: str | None = None,
    ) -> Subscription:
        """A reader of the events after ``after`` (``None``: every event the
        buffer holds), of ``types`` (``None``: all).

        ``epoch`` is the epoch the consumer's ``after`` came from; if it is not
        this log's, or if ``after`` is newer than any id here (another gateway
        process issued it), the consumer gets a ``gateway-restarted`` notice
        and every event held.  If events after ``after`` that it wanted were
        overwritten, it gets an ``events-dropped`` notice first."""
        now = self._clock()
        notices: list[Notice] = []
        if (epoch is not None and epoch != self.epoch) or (after is not None and after > self.last_id):
            notices.append(Notice(type=NoticeType.GATEWAY_RESTARTED, time=now, epoch=self.epoch, previous_epoch=epoch))
            after = 0
        if after is None:
            after = self.oldest_id - 1
        subscription = Subscription(self, after, types)
        subscription.pending.extend(notices)
        subscription.catch_up()
        return subscription

    def close(self) -> None:
        """No more events: followers end once they have read what is held."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def changed(self) -> None:
        """Return at the next :meth:`emit` or :meth:`close`."""
        if self.closed:
            return
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._waiter)  # one follower cancelled leaves the others waiting


class Subscription:
    """One consumer's position in an :class:`EventLog`: ``cursor`` is the last
    id it has been given (or skipped as filtered out)."""

    def __init__(self, log: EventLog, after: int, types: frozenset[EventType] | None) -> None:
        self.log = log
        self.cursor = after
        self.types = types
        self.pending: list[Event | Notice] = []
        self.end = log.last_id  # where a non-following read stops

    def catch_up(self) -> None:
        """If the buffer overwrote events this consumer had not read, queue an
        ``events-dropped`` notice (when it wanted any of them) and move the
        cursor to the oldest event held."""
        log = self.log
        oldest = log.oldest_id
        if self.cursor >= oldest - 1:
            return
        if log.lost_since(self.cursor, self.types):
            self.pending.append(
                Notice(
                    type=NoticeType.EVENTS_DROPPED,
                    time=log._clock(),
                    epoch=log.epoch,
                    after=self.cursor,
                    oldest=oldest,
                    missed=oldest - 1 - self.cursor,
                )
            )
        self.cursor = oldest - 1

    def read(self, limit: int = BATCH, *, until: int | None = None) -> list[Event | Notice]:
        """What is ready now (notices first), at most ``limit`` events, up to
        id ``until`` (default: the newest); never waits."""
        self.catch_up()
        out, self.pending = self.pending, []
        log = self.log
        stop = min(log.last_id, self.cursor + SCAN, log.last_id if until is None else until)
        taken = 0
        while self.cursor < stop and taken < limit:
            self.cursor += 1
            event = log.get(self.cursor)
            if event is not None and (self.types is None or event.type in self.types):
                out.append(event)
                taken += 1
        return out

    @property
    def done(self) -> bool:
        """A non-following read has reached the newest event at subscription."""
        return not self.pending and self.cursor >= self.end

    async def next(self, limit: int = BATCH, timeout: float | None = None) -> list[Event | Notice] | None:
        """Wait for events (or notices) and return them; ``[]`` on timeout;
        ``None`` once the log is closed and everything was read."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            batch = self.read(limit)
            if batch:
                return batch
            if self.cursor < self.log.last_id:
                continue  # a long run of filtered-out ids: read on
            if self.log.closed:
                return None
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return []
            try:
                await asyncio.wait_for(self.log.changed(), remaining)
            except TimeoutError:
                return []


class RegistryFeed:
    """The registry's observer (:class:`~callhome_transport.server.registry.RegistryObserver`)
    that logs its transitions in ``log``: the one source of the gateway's events.

    A disconnection is an event only when it changed the device's state (its
    last usable connection ended; not a connection replaced by the device's
    newer call, nor one handed over to its user)."""

    def __init__(self, log: EventLog) -> None:
        self.log = log

    def connected(self, event: DeviceConnected) -> None:
        self.log.emit(
            Connected(
                device=event.device,
                transport=event.transport.value,
                peer_address=format_peer(event.peer_address),
                identity=event.certificate_subject or event.fingerprint,
                fingerprint=event.fingerprint,
                first_call=event.reconnects == 0,
                reconnects=event.reconnects,
                connected_at=event.connected_at,
                handshake_seconds=round(event.handshake_seconds, 6),
            )
        )

    def disconnected(self, event: DeviceDisconnected) -> None:
        if not event.state_changed:
            return
        self.log.emit(
            Disconnected(
                device=event.device,
                transport=event.transport.value,
                reason=event.reason,
                peer_address=format_peer(event.peer_address),
                connected_seconds=round(max(0.0, event.at - event.connected_at), 3),
            )
        )

    def rejected(self, attempt: RejectedAttempt) -> None:
        peer_address = format_peer(attempt.peer_address)
        if attempt.reason is RefusalReason.AUTH_FAILED and attempt.device is not None:
            self.log.emit(
                AuthFailed(
                    device=attempt.device,
                    transport=attempt.transport,
                    peer_address=peer_address,
                    fingerprint=attempt.fingerprint,
                    detail=attempt.detail,
                )
            )
            return
        self.log.emit(
            Rejected(
                reason=attempt.reason.value,
                transport=attempt.transport,
                peer_address=peer_address,
                device=attempt.device,
                fingerprint=attempt.fingerprint,
                key_type=attempt.key_type,
                certificate_subject=attempt.certificate_subject,
                device_id=attempt.device_id,
                detail=attempt.detail,
            )
        )

    def blocked(self, block: Blocked) -> None:
        if block.kind is BlockKind.DEVICE:
            self.log.emit(DeviceBlocked(device=block.key, seconds=block.seconds))
        else:
            self.log.emit(SourceBlocked(source=block.key, seconds=block.seconds))

    def local_session(self, session: LocalSession) -> None:
        if session.closed_at is None:
            self.log.emit(LocalSessionOpened(device=session.device, endpoint=session.endpoint, session=session.session))
            return
        seconds = round(max(0.0, session.closed_at - session.opened_at), 3)
        self.log.emit(
            LocalSessionClosed(
                device=session.device, endpoint=session.endpoint, session=session.session, seconds=seconds
            )
        )
