"""Refusals, read from the error's type (never from its text), and the
admission guard every SSH handshake's trust goes through."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import (
    AuthenticationFailedError,
    CallHomeError,
    CertificateRejectedError,
    DeviceBlockedError,
    HandshakeTimeoutError,
    OutboundSSHRefusedError,
    ProxyProtocolError,
    RevokedCertificateError,
    UnknownDeviceError,
)
from ..identity.trust import Identity, PresentedKey, Trust
from ..status import RefusalReason
from .admission import Admission

__all__ = ["AdmittedTrust", "Refusal", "refusal_of"]


class AdmittedTrust:
    """A :class:`Trust` that refuses, after identification and before any
    credential is sent, a device blocked for repeated authentication failures."""

    def __init__(self, trust: Trust, admission: Admission) -> None:
        self._trust = trust
        self._admission = admission

    def identify(self, presented: PresentedKey) -> Identity | None:
        identity = self._trust.identify(presented)
        if identity is not None:
            seconds = self._admission.device_blocked(identity.device)
            if seconds:
                raise DeviceBlockedError(
                    device=identity.device,
                    peer_address=presented.peer_address,
                    seconds=seconds,
                    fingerprint=presented.fingerprint,
                    key_type=presented.key_type,
                )
        return identity


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """What a refused attempt records, read from its error."""

    reason: RefusalReason
    fingerprint: str = ""
    key_type: str = ""
    device: str | None = None
    detail: str = ""
    device_id: str | None = None
    certificate_subject: str | None = None
    ends_wait: bool = False  # a caller waiting for the device gets the error
    log_format: str = "peer=%(peer)s %(error)s"


_UNKNOWN_DEVICE_LOG = (
    "peer=%(peer)s rejected unknown device: host key %(key_type)s %(fingerprint)s is not in the inventory; "
    "pin it under devices.<name>.ssh.host_keys to accept it"
)
_IDENTIFIED_LOG = "device=%(device)s peer=%(peer)s %(error)s"
_PROXY_LOG = "peer=%(peer)s refused: a PROXY protocol header from a source not allowed to send one"


@dataclass(frozen=True)
class _Kind:
    """How an error type reads as a refusal."""

    reason: RefusalReason | None  # None: the error's own ``reason`` (Junos outbound-ssh)
    ends_wait: bool = False  # an identified device was refused: its waiters get the error
    key_type: str | None = None  # None: the error's own
    identified: bool = True  # the error names the device it refused
    log_format: str = "peer=%(peer)s %(error)s"


# by error type, the most specific first along the error's MRO
_KINDS: dict[type[CallHomeError], _Kind] = {
    OutboundSSHRefusedError: _Kind(None, ends_wait=True, key_type=""),
    UnknownDeviceError: _Kind(RefusalReason.UNKNOWN_DEVICE, identified=False, log_format=_UNKNOWN_DEVICE_LOG),
    DeviceBlockedError: _Kind(RefusalReason.DEVICE_BLOCKED, ends_wait=True, log_format=_IDENTIFIED_LOG),
    AuthenticationFailedError: _Kind(RefusalReason.AUTH_FAILED, ends_wait=True, log_format=_IDENTIFIED_LOG),
    RevokedCertificateError: _Kind(RefusalReason.REVOKED, ends_wait=True, key_type="x509"),
    CertificateRejectedError: _Kind(RefusalReason.CERTIFICATE_REJECTED, ends_wait=True, key_type="x509"),
    HandshakeTimeoutError: _Kind(RefusalReason.HANDSHAKE_TIMEOUT, key_type=""),
    ProxyProtocolError: _Kind(RefusalReason.PROXY_HEADER, key_type="", identified=False, log_format=_PROXY_LOG),
    CallHomeError: _Kind(RefusalReason.TRANSPORT_ERROR, key_type=""),
}


def refusal_of(exc: CallHomeError) -> Refusal:
    """The refusal an error stands for: its reason from its type (:data:`_KINDS`), its data from its attributes."""
    kind = next(_KINDS[cls] for cls in type(exc).__mro__ if cls in _KINDS)
    device_id = getattr(exc, "device_id", None)
    if kind.reason is None:  # the error says which refusal it is, and what exactly
        reason = RefusalReason(getattr(exc, "reason", RefusalReason.TRANSPORT_ERROR))
        detail = str(getattr(exc, "detail", ""))
        detail = f"DEVICE-ID {device_id}: {detail}" if device_id is not None else detail
    else:
        reason = kind.reason
        detail = str(exc) if kind.identified else ""
    return Refusal(
        reason=reason,
        fingerprint=str(getattr(exc, "fingerprint", "") or ""),
        key_type=str(getattr(exc, "key_type", "") or "") if kind.key_type is None else kind.key_type,
        device=getattr(exc, "device", None) if kind.identified else None,
        detail=detail,
        device_id=device_id,
        certificate_subject=getattr(exc, "subject", None) or None,  # TLS: the certificate refused
        ends_wait=kind.ends_wait,
        log_format=kind.log_format,
    )
