"""The gateway cluster's shared registry, in Redis: which gateway holds
each device (docs/scale.md).

Several gateways behind one L4 balancer each hold the devices that happened
to land on them.  Each one, a *member*, publishes what it holds:

- ``<prefix>:device:<name>`` -> JSON ``{device, gateway, host, transport,
  connected_since, peer, session}``, with a TTL (``ttl``) refreshed every
  ``refresh_interval`` for each session the gateway still holds (its SSH
  keepalives are what keep a session held); deleted on disconnect;
- ``<prefix>:member:<gateway id>`` -> JSON ``{gateway, host, run_dir, pid,
  started}`` with the same TTL: where clients find that gateway's endpoints;
- events on the channel ``<prefix>:events`` (JSON ``{"event": "connected" |
  "disconnected", ...}``).

**Newest session wins.**  A device that calls a second gateway while its old
session on the first is stale (a NAT mapping gone, a half-open TCP
connection) is registered by an atomic script that keeps the record with the
latest ``connected_since``; every member hears the ``connected`` event and
closes its own older session of that device, so no device has two owners
for longer than an event's delivery.  A member whose refresh finds a newer
owner closes its session too (events missed while Redis was away).

**Redis down.**  Members keep serving what they hold (Redis is never on the
path of a device session or a local client), log once, and retry; when Redis
is back they resynchronise: every held session is registered again (newest
wins again) and records left under their own id by an earlier life are
removed.

The member is an observer of the server's one device registry
(:class:`~callhome_transport.server.registry.RegistryObserver`, attached by
:meth:`ClusterMember.attach`): the registry's ``connected`` and
``disconnected`` events are what it publishes, and "close your session of
device X" goes back to that registry (:meth:`Registry.disconnect`).  The TTL
of a record is renewed for as long as the registry holds the session (its
SSH keepalives, or TCP keepalive for TLS, are what keep it held).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..addresses import format_peer
from ..status import DeviceState

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ..server.registry import (
        Blocked,
        DeviceConnected,
        DeviceDisconnected,
        LocalSession,
        Registry,
        RejectedAttempt,
    )

__all__ = ["ClusterConfig", "ClusterMember", "Member", "Placement"]

log = logging.getLogger(__name__)

# KEYS[1] device key, KEYS[2] this gateway's device set; ARGV: record JSON, ttl ms, session,
# connected_since, gateway, member-set prefix, device
_REGISTER = """
local old = redis.call('GET', KEYS[1])
if old then
  local rec = cjson.decode(old)
  if rec.session ~= ARGV[3] and tonumber(rec.connected_since) > tonumber(ARGV[4]) then
    return {'newer', old}
  end
  if rec.gateway ~= ARGV[5] then
    redis.call('SREM', ARGV[6] .. rec.gateway, ARGV[7])
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if old then
  local rec = cjson.decode(old)
  if rec.session == ARGV[3] then return {'same', old} end
  return {'replaced', old}
end
return {'new', ''}
"""

# KEYS[1] device key, KEYS[2] this gateway's device set; ARGV: session, device
_UNREGISTER = """
redis.call('SREM', KEYS[2], ARGV[2])
local old = redis.call('GET', KEYS[1])
if old and cjson.decode(old).session == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS[1] device key; ARGV: gateway -- delete a record only while it is still this gateway's
_FORGET = """
local old = redis.call('GET', KEYS[1])
if old and cjson.decode(old).gateway == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

_RETRY_INITIAL = 0.5
_RETRY_MAX = 5.0
_SCAN_BATCH = 1000
_WRITE_BATCH = 500  # registrations per pipelined round trip


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """One member's settings (``cluster:`` in gateway.yml).

    ``gateway_id`` names this gateway in the registry (unique in the
    cluster); ``host`` is the host name clients use to reach it (the Ansible
    inventory's ``gateways`` keys); ``ttl`` bounds how long a record outlives
    a gateway that died without a word; ``refresh_interval`` should be the SSH
    keepalive interval (ttl about three times it)."""

    redis_url: str
    gateway_id: str = ""
    host: str = ""
    ttl: float = 90.0
    refresh_interval: float = 30.0
    timeout: float = 2.0  # seconds per Redis command
    prefix: str = "callhome"

    def __post_init__(self) -> None:
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url: a redis://, rediss:// or unix:// URL, not {_safe_url(self.redis_url)!r}")
        host = self.host or socket.gethostname()
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "gateway_id", self.gateway_id or host)
        if not 0 < self.refresh_interval < self.ttl:
            raise ValueError(f"refresh_interval ({self.refresh_interval}) must be > 0 and below ttl ({self.ttl})")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0, not {self.timeout}")
        for name in ("gateway_id", "host", "prefix"):
            value = getattr(self, name)
            if not value or any(c in value for c in " :*?[]"):
                raise ValueError(f"{name}: {value!r} (no spaces, ':' or glob characters)")


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where one device lives now (its record in the shared registry)."""

    device: str
    gateway: str
    host: str
    transport: str
    connected_since: float
    peer: str
    session: str

    @classmethod
    def from_json(cls, text: str | bytes) -> Placement:
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


@dataclass(frozen=True, kw_only=True)
class Member:
    """One live gateway of the cluster."""

    gateway: str
    host: str
    run_dir: str
    pid: int
    started: float
    listening: dict[str, int] = field(default_factory=dict)


CloseRequest = Callable[[str, str], None]  # (device, reason): close your session of this device


@dataclass
class _Held:
    placement: Placement
    written: float = float("-inf")  # time.monotonic() of its last successful write


class ClusterMember:
    """This gateway as a member of the cluster: an observer of its device
    registry (:meth:`attach`), or driven directly through :meth:`publish`
    and :meth:`withdraw`.

    ``on_close(device, reason)`` is called when another gateway holds a newer
    session of a device this one holds (:meth:`attach` sets it to the
    registry's disconnect).  ``run_dir`` and ``listening`` are announced for
    clients."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        on_close: CloseRequest | None = None,
        run_dir: str,
        listening: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        import redis.asyncio as aioredis  # the optional extra 'cluster'

        self.config = config
        self._on_close: CloseRequest = on_close or (lambda device, reason: None)
        self._closing: set[asyncio.Task[bool]] = set()
        self._listening = listening or dict
        self.member = Member(
            gateway=config.gateway_id, host=config.host, run_dir=run_dir, pid=os.getpid(), started=time.time()
        )
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            config.redis_url, socket_timeout=config.timeout, socket_connect_timeout=config.timeout
        )
        self._held: dict[str, _Held] = {}
        self._sessions = itertools.count(1)
        self._ops: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._up = False
        self._closed = False
        self._resync = True  # at start: clear what an earlier life of this gateway left
        self._waiters: dict[str, list[asyncio.Event]] = {}
        self._started_at = f"{time.time():.6f}"
        self.writes = 0  # Redis commands (scripts) sent, for the benchmark
        self._register = self._redis.register_script(_REGISTER)
        self._unregister = self._redis.register_script(_UNREGISTER)
        self._forget = self._redis.register_script(_FORGET)

    # -- keys -----------------------------------------------------------------------------

    def _device_key(self, device: str) -> str:
        return f"{self.config.prefix}:device:{device}"

    def _set_prefix(self) -> str:
        return f"{self.config.prefix}:devices-of:"

    def _my_set(self) -> str:
        return self._set_prefix() + self.config.gateway_id

    @property
    def channel(self) -> str:
        return f"{self.config.prefix}:events"

    @property
    def up(self) -> bool:
        """Whether Redis answered the last write."""
        return self._up

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start writing and listening; returns at once (Redis may be down)."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._writer(), name="cluster-writer"),
            loop.create_task(self._listener(), name="cluster-events"),
            loop.create_task(self._refresher(), name="cluster-refresh"),
        ]

    async def close(self) -> None:
        """Withdraw this gateway's records (best effort) and stop.  A second
        call (a second SIGTERM while stopping) returns at once."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:  # bounded: a stop never waits on Redis for long
            await asyncio.wait(self._tasks, timeout=self.config.timeout)
        if self._up:
            await _within(self._withdraw(), self.config.timeout * 2)
        await _within(self._redis.aclose(), self.config.timeout)

    # -- the registry's observer ----------------------------------------------------------------

    def attach(self, registry: Registry) -> None:
        """Publish what ``registry`` holds, and close its session of a device
        another gateway holds a newer session of."""
        registry.add_observer(self)

        def close(device: str, reason: str) -> None:
            task = asyncio.get_running_loop().create_task(registry.disconnect(device))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

        self._on_close = close

    def connected(self, event: DeviceConnected) -> None:
        self.publish(
            event.device,
            transport=event.transport.value,
            peer=format_peer(event.peer_address),
            connected_since=event.connected_at,
        )

    def disconnected(self, event: DeviceDisconnected) -> None:
        if event.state is not DeviceState.CONNECTED:  # no usable call of it left here
            self.withdraw(event.device, event.reason)

    def rejected(self, attempt: RejectedAttempt) -> None:
        """Refusals stay with the gateway that saw them (``GET /rejected``)."""

    def blocked(self, block: Blocked) -> None:
        """Blocks stay with the gateway that set them (``GET /blocked``)."""

    def local_session(self, session: LocalSession) -> None:
        """Local sessions are the holding gateway's own (its ``GET /devices``)."""

    # -- what this gateway holds ------------------------------------------------------------------

    def publish(self, device: str, *, transport: str, peer: str, connected_since: float) -> None:
        """``device`` is identified and authenticated here (returns at once;
        the write happens behind it)."""
        placement = Placement(
            device=device,
            gateway=self.config.gateway_id,
            host=self.config.host,
            transport=transport,
            connected_since=connected_since,
            peer=peer,
            session=f"{self.config.gateway_id}/{self._started_at}/{next(self._sessions)}",
        )
        self._held[device] = _Held(placement)
        self._ops.put_nowait(("register", placement))

    def withdraw(self, device: str, reason: str) -> None:
        """This gateway holds no session of ``device`` any more."""
        held = self._held.pop(device, None)
        if held is not None:
            self._ops.put_nowait(("unregister", (held.placement, reason)))

    def held(self) -> dict[str, Placement]:
        """The sessions this gateway holds, as published."""
        return {name: held.placement for name, held in self._held.items()}

    # -- reads (for the control API) ---------------------------------------------------------

    async def placements(self) -> dict[str, Placement]:
        """Every device some gateway holds now.  Raises ``redis`` errors."""
        keys: list[bytes] = []
        async for key in self._redis.scan_iter(match=f"{self.config.prefix}:device:*", count=_SCAN_BATCH):
            keys.append(key)
        found: dict[str, Placement] = {}
        for start in range(0, len(keys), _SCAN_BATCH):
            for value in await self._redis.mget(keys[start : start + _SCAN_BATCH]):
                if value is None:
                    continue  # expired between SCAN and MGET
                try:
                    placement = Placement.from_json(value)
                except (ValueError, KeyError, TypeError):
                    log.debug("cluster: ignoring a malformed record %r", value[:200])
                    continue
                found[placement.device] = placement
        return found

    async def placement(self, device: str) -> Placement | None:
        value = await self._redis.get(self._device_key(device))
        return None if value is None else Placement.from_json(value)

    async def members(self) -> list[Member]:
        keys = [key async for key in self._redis.scan_iter(match=f"{self.config.prefix}:member:*")]
        values = await self._redis.mget(keys) if keys else []
        return sorted((Member(**json.loads(v)) for v in values if v is not None), key=lambda m: m.gateway)

    async def wait_elsewhere(self, device: str, timeout: float) -> Placement | None:
        """Wait up to ``timeout`` s until some gateway registers ``device``;
        its placement, or ``None``."""
        event = asyncio.Event()
        self._waiters.setdefault(device, []).append(event)
        try:
            with contextlib.suppress(Exception):
                found = await self.placement(device)
                if found is not None:
                    return found
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
            with contextlib.suppress(Exception):
                return await self.placement(device)
            return None
        finally:
            waiters = self._waiters.get(device, [])
            if event in waiters:
                waiters.remove(event)
            if not waiters:
                self._waiters.pop(device, None)

    # -- writing ------------------------------------------------------------------------------

    async def _writer(self) -> None:
        """Apply queued registrations in pipelined batches (one round trip
        per batch: a storm of calls costs few); on failure, wait for Redis
        and resynchronise."""
        delay = _RETRY_INITIAL
        while True:
            try:
                if self._resync or not self._up:
                    await self._synchronise()
                    delay = _RETRY_INITIAL
                _reraise_cancel()  # before waiting: a cancellation the client swallowed ends the task here
                batch = [await self._ops.get()]
                while not self._ops.empty() and len(batch) < _WRITE_BATCH:
                    batch.append(self._ops.get_nowait())
                registers = [p for kind, p in batch if kind == "register" and self._is_held(p)]
                unregisters = [arg for kind, arg in batch if kind == "unregister"]
                await self._apply(registers, unregisters)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # redis.ConnectionError, TimeoutError, ...
                _reraise_cancel()
                self._went_down(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)

    def _is_held(self, placement: Placement) -> bool:
        held = self._held.get(placement.device)
        return held is not None and held.placement is placement

    async def _apply(self, registers: list[Placement], unregisters: list[tuple[Placement, str]]) -> None:
        if not registers and not unregisters:
            return
        ttl_ms = int(self.config.ttl * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            for placement in registers:
                await self._register(
                    keys=[self._device_key(placement.device), self._my_set()],
                    args=[
                        placement.to_json(),
                        ttl_ms,
                        placement.session,
                        repr(placement.connected_since),
                        placement.gateway,
                        self._set_prefix(),
                        placement.device,
                    ],
                    client=pipe,
                )
            for placement, _ in unregisters:
                await self._unregister(
                    keys=[self._device_key(placement.device), self._my_set()],
                    args=[placement.session, placement.device],
                    client=pipe,
                )
            results = await pipe.execute()
        self.writes += len(results)
        now = time.monotonic()
        events: list[dict[str, Any]] = []
        for placement, (raw, old) in zip(registers, results[: len(registers)], strict=True):
            outcome = raw.decode() if isinstance(raw, bytes) else raw
            if outcome == "newer":
                self._superseded(placement, Placement.from_json(old))
                continue
            held = self._held.get(placement.device)
            if held is not None and held.placement is placement:
                held.written = now
            if outcome in ("new", "replaced"):
                events.append({"event": "connected", **asdict(placement)})
        for (placement, reason), deleted in zip(unregisters, results[len(registers) :], strict=True):
            if deleted:
                events.append({"event": "disconnected", **asdict(placement), "reason": reason})
        if events:
            async with self._redis.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.publish(self.channel, json.dumps(event))
                await pipe.execute()
            self.writes += len(events)

    def _went_down(self, exc: Exception) -> None:
        if self._up or self._resync:
            log.warning(
                "cluster: Redis %s unreachable (%s): serving the %d devices held here; "
                "will resynchronise when it is back",
                _safe_url(self.config.redis_url),
                exc or type(exc).__name__,
                len(self._held),
            )
        self._up = False
        self._resync = False
        # what was queued is covered by the resynchronisation
        while not self._ops.empty():
            self._ops.get_nowait()

    async def _synchronise(self) -> None:
        """(Re)publish every held session and drop records an earlier life of
        this gateway left; on success Redis is up."""
        await self._redis.ping()
        members = await self._redis.smembers(self._my_set())
        stale = {m.decode() if isinstance(m, bytes) else m for m in members} - set(self._held)
        for device in stale:
            await self._forget(keys=[self._device_key(device)], args=[self.config.gateway_id])
            await self._redis.srem(self._my_set(), device)
        await self._announce()
        held = [h.placement for h in self._held.values()]
        for start in range(0, len(held), _WRITE_BATCH):
            await self._apply(held[start : start + _WRITE_BATCH], [])
        was_down = not self._up and not self._resync
        self._up, self._resync = True, False
        if was_down:
            log.warning(
                "cluster: Redis %s is back: resynchronised %d devices", _safe_url(self.config.redis_url), len(held)
            )
        else:
            log.info(
                "cluster: member %s (host %s) of %s; %d stale records removed",
                self.config.gateway_id,
                self.config.host,
                _safe_url(self.config.redis_url),
                len(stale),
            )

    async def _announce(self) -> None:
        member = Member(**{**asdict(self.member), "listening": self._listening()})
        await self._redis.set(
            f"{self.config.prefix}:member:{self.config.gateway_id}",
            json.dumps(asdict(member)),
            px=int(self.config.ttl * 1000),
        )

    async def _withdraw(self) -> None:
        held = [(h.placement, "gateway stopped") for h in self._held.values()]
        for start in range(0, len(held), _WRITE_BATCH):
            await self._apply([], held[start : start + _WRITE_BATCH])
        await self._redis.delete(f"{self.config.prefix}:member:{self.config.gateway_id}")

    def _superseded(self, ours: Placement, newer: Placement) -> None:
        """Another gateway holds a newer session of a device we hold: close ours."""
        held = self._held.get(ours.device)
        if held is None or held.placement.session != ours.session:
            return
        del self._held[ours.device]
        log.info(
            "device=%s cluster: a newer session on gateway %s (from %s): closing the one held here",
            ours.device,
            newer.gateway,
            newer.peer,
        )
        self._on_close(ours.device, f"newer session on gateway {newer.gateway}")

    def _due(self) -> list[Placement]:
        limit = time.monotonic() - self.config.refresh_interval
        return [h.placement for h in self._held.values() if h.written <= limit]

    async def _refresher(self) -> None:
        """Keep this member's record and those of the sessions it holds alive:
        each is written again once ``refresh_interval`` has passed since its
        last write."""
        while True:
            _reraise_cancel()
            await asyncio.sleep(self.config.refresh_interval / 4)
            if not self._up:
                continue
            try:
                await self._announce()
                due = self._due()
                for start in range(0, len(due), _WRITE_BATCH):
                    await self._apply(due[start : start + _WRITE_BATCH], [])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _reraise_cancel()
                self._went_down(exc)
                self._ops.put_nowait(("noop", None))  # wake the writer: it retries and resynchronises

    # -- events -------------------------------------------------------------------------------

    async def _listener(self) -> None:
        delay = _RETRY_INITIAL
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                delay = _RETRY_INITIAL
                while True:
                    _reraise_cancel()
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message.get("type") == "message":
                        self._event(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _reraise_cancel()
                log.debug("cluster: event subscription lost (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
            finally:
                await _within(pubsub.aclose(), self.config.timeout)  # type: ignore[no-untyped-call]

    def _event(self, data: bytes | str) -> None:
        try:
            event = json.loads(data)
            kind = event.pop("event")
            placement = Placement(**{k: event[k] for k in Placement.__dataclass_fields__})
        except (ValueError, KeyError, TypeError):
            log.debug("cluster: ignoring a malformed event %r", data[:200])
            return
        if kind != "connected":
            return
        for waiter in self._waiters.get(placement.device, []):
            waiter.set()
        held = self._held.get(placement.device)
        if (
            held is not None
            and held.placement.session != placement.session
            and held.placement.connected_since <= placement.connected_since
        ):
            self._superseded(held.placement, placement)


def _reraise_cancel() -> None:
    """Raise ``CancelledError`` if this task is being cancelled.  The Redis
    client sometimes swallows a cancellation that reaches it mid-command
    (returning, or raising a connection error): a loop that went on to wait
    again would never end.  Called before every wait of the member's loops."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _within(step: Awaitable[Any], timeout: float) -> None:
    """Run a clean-up ``step`` (best effort) for at most ``timeout`` seconds.
    Unlike ``asyncio.wait_for``, never waits longer for a step that does not
    end when cancelled (a Redis client stuck on a dead connection): it is
    cancelled and left behind."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
    elif not task.cancelled() and task.exception() is not None:
        log.debug("cluster: clean-up step failed: %s", task.exception())


def _safe_url(url: str) -> str:
    """``url`` without a password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
