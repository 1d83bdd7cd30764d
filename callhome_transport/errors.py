"""Typed errors for call home.

One root, :class:`CallHomeError`, and one family per room (listener, inventory,
trust, transport, device state).  Every error carries its data as attributes
(``device``, ``peer_address``, ``fingerprint``...) so callers never parse
messages, and every error pickles: they cross Ansible's process boundary.

Whose fault it is reads from the family:

* :class:`InventoryError`: the operator's configuration.
* :class:`TrustError`: the calling device is not who we expect (remote).
* :class:`TransportError`: the SSH/TLS/NETCONF session failed (remote or network).
* :class:`DeviceStateError`: the device is not (or no longer) available.
* :class:`ListenerError`, :class:`EndpointError`: we could not bind or listen (local).
* :class:`GatewayError`: a local client could not use the gateway (local).
* :class:`AgentConfigError`: the device side's call-home configuration (the operator's).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

__all__ = [
    "AgentConfigError",
    "AuthenticationFailedError",
    "CallHomeError",
    "CertificateRejectedError",
    "ClientHelloError",
    "DeviceBlockedError",
    "DeviceDisconnectedError",
    "DeviceNotConnectedError",
    "DeviceStateError",
    "EndpointError",
    "GatewayError",
    "GatewayRequestError",
    "GatewayUnavailableError",
    "HandshakeTimeoutError",
    "HelloTimeoutError",
    "HostKeyMismatchError",
    "InventoryError",
    "ListenerError",
    "MalformedMessageError",
    "MalformedPreambleError",
    "MessageTooLargeError",
    "OutboundSSHKeyMismatchError",
    "OutboundSSHRefusedError",
    "PreambleHMACError",
    "ProxyProtocolError",
    "RestconfDiscoveryError",
    "RevokedCertificateError",
    "ServerStateError",
    "TransportError",
    "TrustError",
    "UnknownDeviceError",
    "UnknownDeviceIDError",
    "UnknownDeviceNameError",
    "UnknownGatewayDeviceError",
    "UnsupportedOptionError",
    "refusal_from_dict",
    "refusal_to_dict",
]


class CallHomeError(Exception):
    """Root of every error raised by :mod:`callhome_transport`.

    Subclasses set their data as keyword-only attributes and build the message
    from them.  ``__reduce__`` rebuilds an error from those attributes, so an
    error survives pickling with its data intact.
    """

    def __init__(self, message: str, **attrs: Any) -> None:
        super().__init__(message)
        self.message = message
        self._attrs = dict(attrs)
        for key, value in attrs.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self._attrs))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[CallHomeError], message: str, attrs: dict[str, Any]) -> CallHomeError:
    err = cls.__new__(cls)
    CallHomeError.__init__(err, message, **attrs)
    return err


def _peer(peer_address: tuple[str, int] | None) -> str:
    if peer_address is None:
        return "unknown peer"
    host, port = peer_address[0], peer_address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- configuration -----------------------------------------------------------


class InventoryError(CallHomeError):
    """The inventory (file or Python data) is invalid.

    ``source`` is the file (or ``"<dict>"``), ``key_path`` the dotted path of the
    offending key (``devices.SN-0001.ssh.host_keys[0]``), ``expected`` what was
    expected there.
    """

    source: str
    key_path: str
    expected: str

    def __init__(self, source: str | Path, key_path: str, expected: str) -> None:
        where = f"{source}: {key_path}" if key_path else str(source)
        super().__init__(
            f"{where}: expected {expected}",
            source=str(source),
            key_path=key_path,
            expected=expected,
        )


class AgentConfigError(CallHomeError):
    """The device side's call-home configuration (``callhome agent``, the
    simulated device) is invalid for the ietf-netconf-server revision in use.

    ``source`` is the file (or ``"<xml>"``/``"<json>"``), ``key_path`` the
    instance path of the offending node in libyang's form
    (``/ietf-netconf-server:netconf-server/call-home/netconf-client[name='nms']/...``),
    ``expected`` what was expected there.
    """

    source: str
    key_path: str
    expected: str

    def __init__(self, source: str | Path, key_path: str, expected: str) -> None:
        where = f"{source}: {key_path}" if key_path else str(source)
        super().__init__(f"{where}: {expected}", source=str(source), key_path=key_path, expected=expected)


class UnsupportedOptionError(CallHomeError, TypeError):
    """An option (e.g. an ``ncclient.manager.call_home`` keyword) that our
    engine cannot honour was given.  We refuse it rather than ignore it."""

    option: str
    reason: str

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"option {option!r} is not supported: {reason}", option=option, reason=reason)


# --- listener -------------------------------------------------------------


class ListenerError(CallHomeError):
    """The listener could not bind or accept (a local problem)."""

    listen_address: str
    listen_port: int

    def __init__(self, listen_address: str, listen_port: int, reason: str) -> None:
        super().__init__(
            f"cannot listen on {_peer((listen_address, listen_port))}: {reason}",
            listen_address=listen_address,
            listen_port=listen_port,
            reason=reason,
        )


class ProxyProtocolError(CallHomeError):
    """A connection on a listener with the PROXY protocol enabled had no valid
    header where one was required (from a trusted balancer), or carried one
    where none is allowed (from any other source).  ``peer_address`` is the
    connection's own source (the balancer, or the spoofer)."""

    reason: str
    peer_address: tuple[str, int] | None

    def __init__(self, *, reason: str, peer_address: tuple[str, int] | None = None) -> None:
        super().__init__(
            f"PROXY protocol: {reason}" + (f" (from {_peer(peer_address)})" if peer_address else ""),
            reason=reason,
            peer_address=peer_address,
        )


class EndpointError(CallHomeError):
    """The gateway could not open a local Unix socket endpoint (a local problem:
    permissions, a path too long, a full file system)."""

    path: str
    reason: str

    def __init__(self, *, path: str, reason: str) -> None:
        super().__init__(f"cannot open the local endpoint {path}: {reason}", path=path, reason=reason)


# --- trust (the remote side is not who we expect) ----------------------------


class TrustError(CallHomeError):
    """The calling device could not be trusted (RFC 8071 s5, C5)."""

    peer_address: tuple[str, int] | None
    fingerprint: str


class UnknownDeviceError(TrustError):
    """The presented host key belongs to no device in the inventory.

    The connection was closed before any authentication was attempted.
    ``fingerprint`` is what an operator adds to the inventory to onboard it;
    ``unknown_to`` says what was consulted (``"the inventory"``, or e.g.
    the ``known_hosts`` files of a single-device ``call_home()``).
    """

    key_type: str

    def __init__(
        self,
        *,
        peer_address: tuple[str, int] | None,
        fingerprint: str,
        key_type: str = "",
        unknown_to: str = "the inventory",
    ) -> None:
        key = f"{key_type} {fingerprint}" if key_type else fingerprint
        where = (
            "is not pinned for any device in the inventory"
            if unknown_to == "the inventory"
            else f"is not in {unknown_to}"
        )
        super().__init__(
            f"unknown device from {_peer(peer_address)}: host key {key} {where}",
            peer_address=peer_address,
            fingerprint=fingerprint,
            key_type=key_type,
            unknown_to=unknown_to,
        )


class HostKeyMismatchError(TrustError):
    """A device we waited for by name called with another device's key, or a
    ``call_home(hostkey_b64=...)`` pin did not match what the device presented."""

    device: str | None

    def __init__(
        self,
        *,
        device: str | None,
        peer_address: tuple[str, int] | None,
        fingerprint: str,
        expected: str = "",
    ) -> None:
        who = device or "the expected device"
        super().__init__(
            f"host key {fingerprint} from {_peer(peer_address)} does not match {who}"
            + (f" (expected {expected})" if expected else ""),
            device=device,
            peer_address=peer_address,
            fingerprint=fingerprint,
            expected=expected,
        )


class CertificateRejectedError(TrustError):
    """A TLS device's certificate was refused (RFC 8071 C5, C6, s5): unknown
    issuer, expired, missing intermediates, an identifier no device expects, a
    device presenting another manufacturer's chain, a stale CRL.

    ``reason`` says which; ``subject``, ``issuer`` and ``serial`` describe the
    presented end-entity certificate when it is known (OpenSSL rejects some
    chains during the handshake, before we can see them).
    """

    reason: str
    subject: str
    issuer: str
    serial: str
    device: str | None

    def __init__(
        self,
        *,
        peer_address: tuple[str, int] | None,
        reason: str,
        subject: str = "",
        issuer: str = "",
        serial: str = "",
        fingerprint: str = "",
        device: str | None = None,
    ) -> None:
        cert = f" (subject {subject!r}, issuer {issuer!r}, serial {serial})" if subject else ""
        super().__init__(
            f"certificate from {_peer(peer_address)} rejected: {reason}{cert}",
            peer_address=peer_address,
            reason=reason,
            subject=subject,
            issuer=issuer,
            serial=serial,
            fingerprint=fingerprint,
            device=device,
        )


class RevokedCertificateError(CertificateRejectedError):
    """A certificate of the device's chain is on its issuer's CRL; the
    connection was closed at once (RFC 8071 C5)."""


class OutboundSSHRefusedError(TrustError):
    """A Junos outbound-ssh call was refused (docs/inventory.md, "Juniper
    outbound-ssh"): its preamble was malformed or late, named no device, failed
    the HMAC check, or the host key did not match the device it named.

    ``reason`` is the refusal kind (as in ``rejected()`` and the metrics),
    ``device_id`` the DEVICE-ID the device sent (``None`` if it sent none),
    ``device`` the inventory device it named, ``fingerprint`` the host key
    (from the HOST-KEY line or the SSH handshake) when known.  The shared
    secret never appears in it.
    """

    reason: str
    device_id: str | None
    device: str | None
    detail: str

    _reason = "refused"

    def __init__(
        self,
        *,
        peer_address: tuple[str, int] | None,
        detail: str,
        device_id: str | None = None,
        device: str | None = None,
        fingerprint: str = "",
        reason: str | None = None,
    ) -> None:
        reason = reason or self._reason
        who = f" DEVICE-ID {device_id!r}" if device_id is not None else ""
        super().__init__(
            f"outbound-ssh call from {_peer(peer_address)}{who} refused ({reason}): {detail}",
            peer_address=peer_address,
            reason=reason,
            device_id=device_id,
            device=device,
            fingerprint=fingerprint,
            detail=detail,
        )


class MalformedPreambleError(OutboundSSHRefusedError):
    """The outbound-ssh preamble was not ``MSG-ID: DEVICE-CONN-INFO``,
    ``MSG-VER: V1``, ``DEVICE-ID: ...`` [``HOST-KEY: ...``, ``HMAC: ...``],
    exceeded its bounds, or did not arrive in time (``reason``
    ``preamble-timeout``)."""

    _reason = "malformed-preamble"


class UnknownDeviceIDError(OutboundSSHRefusedError):
    """No device in the inventory has this outbound-ssh DEVICE-ID."""

    _reason = "unknown-device-id"


class PreambleHMACError(OutboundSSHRefusedError):
    """A secret is configured for the device and the preamble's HMAC of its
    HOST-KEY did not match it (or HOST-KEY/HMAC were missing)."""

    _reason = "hmac-mismatch"


class OutboundSSHKeyMismatchError(OutboundSSHRefusedError):
    """The host key (on the HOST-KEY line or in the SSH handshake) is not
    pinned for the device the DEVICE-ID named, or the two differ.  No
    authentication was attempted."""

    _reason = "host-key-mismatch"


# --- transport --------------------------------------------------------------


class TransportError(CallHomeError):
    """The SSH/TLS or NETCONF session with a device failed."""

    device: str | None
    peer_address: tuple[str, int] | None

    def __init__(
        self,
        message: str,
        *,
        device: str | None = None,
        peer_address: tuple[str, int] | None = None,
        **attrs: Any,
    ) -> None:
        super().__init__(message, device=device, peer_address=peer_address, **attrs)


class AuthenticationFailedError(TransportError):
    """The device was identified (by ``key_type`` ``fingerprint``) but refused
    our credentials (C7)."""

    username: str
    fingerprint: str
    key_type: str

    def __init__(
        self,
        *,
        device: str,
        peer_address: tuple[str, int] | None,
        username: str,
        reason: str = "",
        fingerprint: str = "",
        key_type: str = "",
    ) -> None:
        super().__init__(
            f"authentication as {username!r} failed on device {device} ({_peer(peer_address)})"
            + (f": {reason}" if reason else ""),
            device=device,
            peer_address=peer_address,
            username=username,
            reason=reason,
            fingerprint=fingerprint,
            key_type=key_type,
        )


class DeviceBlockedError(TransportError):
    """An identified device was refused before authentication: it failed to
    authenticate too often recently (see ``AdmissionConfig``), so its
    credentials are not tried again until ``seconds`` have passed."""

    device: str
    seconds: float
    fingerprint: str
    key_type: str

    def __init__(
        self,
        *,
        device: str,
        peer_address: tuple[str, int] | None,
        seconds: float,
        fingerprint: str = "",
        key_type: str = "",
    ) -> None:
        super().__init__(
            f"device {device} refused before authentication for another {seconds:.0f} s "
            "after repeated authentication failures",
            device=device,
            peer_address=peer_address,
            seconds=seconds,
            fingerprint=fingerprint,
            key_type=key_type,
        )


class RestconfDiscoveryError(TransportError):
    """The device's ``/.well-known/host-meta`` names no RESTCONF root (RFC 8040 s3.1)."""

    reason: str

    def __init__(self, *, device: str, reason: str) -> None:
        super().__init__(f"RESTCONF root of device {device}: {reason}", device=device, reason=reason)


class HandshakeTimeoutError(TransportError):
    """A device connected but did not finish the SSH/TLS handshake and
    authentication within the handshake timeout (a DoS guard, RFC 8071 s5)."""

    timeout: float

    def __init__(self, *, peer_address: tuple[str, int] | None, timeout: float, device: str | None = None) -> None:
        super().__init__(
            f"handshake with {_peer(peer_address)} did not complete within {timeout:g} s",
            device=device,
            peer_address=peer_address,
            timeout=timeout,
        )


def _size(limit: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if limit >= 1 << shift and limit % (1 << shift) == 0:
            return f"{limit >> shift} {unit}"
    return f"{limit} bytes"


class MessageTooLargeError(TransportError):
    """A device sent a NETCONF message larger than the session's
    ``max_message_size`` (``limit``, bytes); the session was closed before the
    message was held whole in memory."""

    limit: int

    def __init__(self, *, device: str, limit: int, peer_address: tuple[str, int] | None = None) -> None:
        super().__init__(
            f"device {device} sent a NETCONF message larger than {_size(limit)} "
            f"(max_message_size={limit}); the session was closed",
            device=device,
            peer_address=peer_address,
            limit=limit,
        )


class MalformedMessageError(TransportError):
    """A device sent bytes that are no NETCONF message: framing that breaks
    RFC 6242 s4, or text that is not UTF-8 (RFC 6241 s3); the session was
    closed.  ``reason`` says what and where."""

    reason: str

    def __init__(self, *, device: str, reason: str, peer_address: tuple[str, int] | None = None) -> None:
        super().__init__(
            f"device {device} sent a malformed NETCONF message: {reason}; the session was closed",
            device=device,
            peer_address=peer_address,
            reason=reason,
        )


class HelloTimeoutError(TransportError):
    """The device accepted a NETCONF session (an SSH channel, a TLS
    connection) but sent no ``<hello>`` within ``timeout`` seconds (RFC 6241
    s8.1).  A device that does this to a second session while one is open
    serves one session at a time."""

    timeout: float

    def __init__(self, *, device: str, peer_address: tuple[str, int] | None, timeout: float) -> None:
        super().__init__(
            f"device {device} accepted a NETCONF session but sent no hello within {timeout:g} s",
            device=device,
            peer_address=peer_address,
            timeout=timeout,
        )


# --- device state -------------------------------------------------------------


class DeviceStateError(CallHomeError):
    """The device is not available for the requested operation."""

    device: str


class DeviceNotConnectedError(DeviceStateError):
    """The device did not call home within the time we were asked to wait
    (the deferral of the call-home draft ran out)."""

    timeout: float

    def __init__(self, *, device: str, timeout: float) -> None:
        super().__init__(
            f"device {device} did not call home within {timeout:g} s",
            device=device,
            timeout=timeout,
        )


class UnknownDeviceNameError(DeviceStateError, KeyError):
    """A device name that is not in the inventory (a ``KeyError`` too)."""

    source: str

    def __init__(self, *, device: str, source: str) -> None:
        super().__init__(f"device {device!r} is not in the inventory ({source})", device=device, source=source)


class ServerStateError(CallHomeError, RuntimeError):
    """The server cannot do that in its state: closed, or no listener of that
    kind runs (a ``RuntimeError`` too)."""

    reason: str

    def __init__(self, reason: str) -> None:
        super().__init__(reason, reason=reason)


class DeviceDisconnectedError(DeviceStateError):
    """The device's session ended (closed by the device, or declared dead after
    missed keepalives)."""

    reason: str

    def __init__(self, *, device: str, reason: str) -> None:
        super().__init__(f"device {device} disconnected: {reason}", device=device, reason=reason)


# --- gateway clients -----------------------------------------------------------


class GatewayError(CallHomeError):
    """A local client (CLI, Ansible plugin) could not use the gateway."""


class GatewayUnavailableError(GatewayError):
    """No gateway answers on the control socket (not running, wrong run
    directory, or no permission on the socket)."""

    socket_path: str
    reason: str

    def __init__(self, *, socket_path: str, reason: str) -> None:
        super().__init__(f"no call-home gateway at {socket_path}: {reason}", socket_path=socket_path, reason=reason)


class UnknownGatewayDeviceError(GatewayError):
    """The gateway has no device of that name in its inventory."""

    device: str
    run_dir: str

    def __init__(self, *, device: str, run_dir: str) -> None:
        super().__init__(
            f"device {device} is not in the inventory of the call-home gateway at {run_dir} "
            "('callhome devices' lists the known devices)",
            device=device,
            run_dir=run_dir,
        )


class ClientHelloError(GatewayError):
    """A local NETCONF client's ``<hello>`` could not be used on a session the
    server had already greeted: none in time, not a hello, or base versions
    that cannot use the framing the device and the server agreed on
    (RFC 6242 s4.1).  The local client is disconnected."""

    device: str
    reason: str

    def __init__(self, *, device: str, reason: str) -> None:
        super().__init__(f"local NETCONF client of device {device} refused: {reason}", device=device, reason=reason)


class GatewayRequestError(GatewayError):
    """The gateway answered a control request with an error status."""

    status: int
    path: str
    detail: str

    def __init__(self, *, status: int, path: str, detail: str) -> None:
        super().__init__(f"gateway answered {status} to {path}: {detail}", status=status, path=path, detail=detail)


# --- refusals reported to a caller that waited for the device ----------------

# The errors that say "the device called and we refused it" (RFC 8071 s5):
# a caller waiting for that device gets one of them instead of
# DeviceNotConnectedError.  By name, so the gateway's clients rebuild them.
REFUSAL_ERRORS: dict[str, type[CallHomeError]] = {
    cls.__name__: cls
    for cls in (
        AuthenticationFailedError,
        CertificateRejectedError,
        RevokedCertificateError,
        DeviceBlockedError,
        PreambleHMACError,  # Junos outbound-ssh refusals that name a device
        OutboundSSHKeyMismatchError,
    )
}


def refused_while_waiting(error: CallHomeError, refused_at: float) -> CallHomeError:
    """A copy of ``error`` (a refusal of a device's call) for a caller that
    waited for that device: same type and attributes, plus ``refused_at``
    (``time.time()`` of the refusal), and a message that says when."""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(refused_at))
    attrs = {**error._attrs, "refused_at": refused_at}
    return _rebuild(type(error), f"{error.message} (the device called at {when} and was refused)", attrs)


def refusal_to_dict(error: CallHomeError) -> dict[str, Any]:
    """``error`` (one of :data:`REFUSAL_ERRORS`) as JSON-ready data."""
    return {"type": type(error).__name__, "message": error.message, **error._attrs}


def refusal_from_dict(data: dict[str, Any]) -> CallHomeError | None:
    """The error :func:`refusal_to_dict` described, or ``None`` when ``data``
    does not describe one."""
    cls = REFUSAL_ERRORS.get(str(data.get("type")))
    message = data.get("message")
    if cls is None or not isinstance(message, str):
        return None
    attrs = {k: v for k, v in data.items() if k not in ("type", "message")}
    if isinstance(attrs.get("peer_address"), list):
        attrs["peer_address"] = tuple(attrs["peer_address"])
    return _rebuild(cls, message, attrs)
