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
    ends_wait: bool = False  # a caller waiting for the device gets the error
    log_format: str = "peer=%(peer)s %(error)s"


_UNKNOWN_DEVICE_LOG = (
    "peer=%(peer)s rejected unknown device: host key %(key_type)s %(fingerprint)s is not in the inventory; "
    "pin it under devices.<name>.ssh.host_keys to accept it"
)


def refusal_of(exc: CallHomeError) -> Refusal:
    """The refusal an error stands for (its reason from its type)."""
    fingerprint = str(getattr(exc, "fingerprint", "") or "")
    key_type = str(getattr(exc, "key_type", "") or "")
    device = getattr(exc, "device", None)
    if isinstance(exc, OutboundSSHRefusedError):
        detail = f"DEVICE-ID {exc.device_id}: {exc.detail}" if exc.device_id is not None else exc.detail
        return Refusal(
            reason=RefusalReason(exc.reason),
            fingerprint=fingerprint,
            device=device,
            detail=detail,
            device_id=exc.device_id,
            ends_wait=True,
        )
    if isinstance(exc, UnknownDeviceError):
        return Refusal(
            reason=RefusalReason.UNKNOWN_DEVICE,
            fingerprint=fingerprint,
            key_type=key_type,
            log_format=_UNKNOWN_DEVICE_LOG,
        )
    if isinstance(exc, DeviceBlockedError | AuthenticationFailedError):
        reason = RefusalReason.DEVICE_BLOCKED if isinstance(exc, DeviceBlockedError) else RefusalReason.AUTH_FAILED
        return Refusal(
            reason=reason,
            fingerprint=fingerprint,
            key_type=key_type,
            device=device,
            detail=str(exc),
            ends_wait=True,
            log_format="device=%(device)s peer=%(peer)s %(error)s",
        )
    if isinstance(exc, CertificateRejectedError):
        reason = (
            RefusalReason.REVOKED if isinstance(exc, RevokedCertificateError) else RefusalReason.CERTIFICATE_REJECTED
        )
        return Refusal(
            reason=reason, fingerprint=fingerprint, key_type="x509", device=device, detail=str(exc), ends_wait=True
        )
    if isinstance(exc, HandshakeTimeoutError):
        return Refusal(reason=RefusalReason.HANDSHAKE_TIMEOUT, device=device, detail=str(exc))
    return Refusal(reason=RefusalReason.TRANSPORT_ERROR, device=device, detail=str(exc))
