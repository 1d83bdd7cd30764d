"""What is known of a device, in one schema: its call-home state and the
transitions between states (kept by the server's registry), the reasons a
call is refused, and :class:`DeviceInfo`, the record the gateway's control
API answers with, :class:`~callhome_transport.gateway.client.GatewayClient`
returns and ``callhome devices`` prints.

Standard library only: the Ansible plugins load it (through the gateway
client) in every task's worker.

The state table (one row per event the registry sees; any other event leaves
the state as it is):

============================  ==================  ===============================
event                         from                to
============================  ==================  ===============================
connected (authenticated)     any                 connected (reconnects + 1 unless
                                                  it never connected before)
refused, device identified    any but connected   auth-failed (authentication
                                                  failed) or rejected (any other
                                                  refusal)
connection ended              connected           disconnected, unless another
                                                  connection of the device is
                                                  still usable or the connection
                                                  was handed over to its user
============================  ==================  ===============================
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["BlockKind", "DeviceInfo", "DeviceState", "DeviceStatus", "RefusalReason"]


class DeviceState(enum.StrEnum):
    """A device's call-home state."""

    NEVER_CONNECTED = "never-connected"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    REJECTED = "rejected"  # identified, then refused (certificate, blocked, outbound-ssh HMAC...)
    AUTH_FAILED = "auth-failed"  # identified, then its credentials were refused


class RefusalReason(enum.StrEnum):
    """Why a call-home attempt was refused (``RejectedAttempt.reason``, the
    ``result`` label of ``callhome_handshakes_total``)."""

    UNKNOWN_DEVICE = "unknown-device"  # SSH host key pinned for no device
    AUTH_FAILED = "auth-failed"
    CERTIFICATE_REJECTED = "certificate-rejected"
    REVOKED = "revoked"
    DEVICE_BLOCKED = "device-blocked"  # identified, blocked after repeated authentication failures
    HANDSHAKE_TIMEOUT = "handshake-timeout"
    BANNER_TIMEOUT = "banner-timeout"  # nothing sent within admission.banner_timeout
    DROPPED = "dropped"  # room made for a newer connection (admission)
    CLOSED_EARLY = "closed-early"  # the peer left before its first bytes
    TRANSPORT_ERROR = "transport-error"
    # Junos outbound-ssh
    PREAMBLE_TIMEOUT = "preamble-timeout"
    MALFORMED_PREAMBLE = "malformed-preamble"
    UNKNOWN_DEVICE_ID = "unknown-device-id"
    HMAC_MISMATCH = "hmac-mismatch"
    HOST_KEY_MISMATCH = "host-key-mismatch"
    # behind an L4 balancer: a PROXY protocol header from a source not allowed to send one
    PROXY_HEADER = "proxy-header"


class BlockKind(enum.StrEnum):
    """What admission blocked after repeated failures (gateway.md, admission)."""

    SOURCE = "source"  # a source address, after repeated failed handshakes
    DEVICE = "device"  # an identified device, after repeated authentication failures


HANDED_OVER = "handed over"  # the close reason of a connection given to its user whole (direct RESTCONF)


@dataclass(kw_only=True)
class DeviceStatus:
    """The registry's record of one device: its state and what the last
    event said.
    :meth:`on_connected`, :meth:`on_refused` and :meth:`on_ended` are
    the only transitions (the table in this module's docstring)."""

    state: DeviceState = DeviceState.NEVER_CONNECTED
    peer_address: str | None = None
    identity: str | None = None  # SHA256 fingerprint, or certificate subject
    connected_since: float | None = None
    last_seen: float | None = None
    reconnects: int = 0
    last_reason: str | None = None

    def on_connected(self, *, peer_address: str, identity: str, at: float) -> None:
        if self.state is DeviceState.CONNECTED or self.connected_since is not None:
            self.reconnects += 1
        self.state = DeviceState.CONNECTED
        self.peer_address = peer_address
        self.identity = identity
        self.connected_since = at
        self.last_seen = at
        self.last_reason = None

    def on_refused(self, reason: RefusalReason, detail: str, at: float) -> bool:
        """An identified device was refused; a live session of it keeps the
        state.  Returns whether the state changed."""
        if self.state is DeviceState.CONNECTED:
            return False
        self.state = DeviceState.AUTH_FAILED if reason is RefusalReason.AUTH_FAILED else DeviceState.REJECTED
        self.last_reason = f"{reason}: {detail}" if detail else str(reason)
        self.last_seen = at
        return True

    def on_ended(self, reason: str, *, still_connected: bool) -> bool:
        """A connection of the device ended.  Returns whether the state changed."""
        if reason == HANDED_OVER or still_connected:
            return False
        self.state = DeviceState.DISCONNECTED
        self.last_reason = reason
        return True


@dataclass(kw_only=True)
class DeviceInfo(DeviceStatus):
    """One device as the gateway's control API describes it
    (``GET /devices/NAME``): its :class:`DeviceStatus` and what the gateway
    adds.  Keys this version does not know (from a newer gateway) are kept
    in :attr:`extra`, and :meth:`as_dict` gives them back."""

    name: str
    transport: str
    local_sessions: int = 0
    one_session_at_a_time: bool = False  # a second session was refused (or never answered) while one was open
    session_held: bool = False  # a greeted NETCONF session is ready for the next local client
    last_session_error: str | None = None  # why the last local session failed (the client only saw a close)
    last_session_error_at: float | None = None
    gateway: str | None = None  # in a cluster (docs/scale.md): the id of the member holding the device
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeviceInfo:
        known = {f.name for f in fields(cls)} - {"extra"}
        # values stay the JSON's plain types (``state`` a str, equal to its DeviceState):
        # Ansible takes no other types into its variables
        values = {k: v for k, v in data.items() if k in known}
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    @classmethod
    def of(cls, status: DeviceStatus, **gateway: Any) -> DeviceInfo:
        """``status`` with the gateway's fields (``name``, ``transport``, ...)."""
        return cls(**{f.name: getattr(status, f.name) for f in fields(DeviceStatus)}, **gateway)

    @property
    def connected(self) -> bool:
        return self.state == DeviceState.CONNECTED

    def as_dict(self) -> dict[str, Any]:
        """The JSON object (the control API's answer), in one order: name and
        transport first, then the state, then the rest; unknown keys last."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        ordered = {"name": data.pop("name"), "transport": data.pop("transport"), **data}
        ordered["state"] = str(self.state)
        return {**ordered, **self.extra}


# the columns of ``callhome devices``: (header, DeviceInfo field)
TABLE_COLUMNS = (
    ("DEVICE", "name"),
    ("TRANSPORT", "transport"),
    ("STATE", "state"),
    ("PEER", "peer_address"),
    ("CONNECTED SINCE", "connected_since"),
    ("RECONNECTS", "reconnects"),
    ("SESSIONS", "local_sessions"),
    ("IDENTITY", "identity"),
)
