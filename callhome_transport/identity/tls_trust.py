"""TLS device identity (RFC 8071 C5, C6, S5; no I/O): from the chain a
handshake verified, *which device this is*, or a typed refusal.

1. Identify: the verified chain's end-entity certificate carries an
   identifier (subject serialNumber, CN, SAN DNS or URI) that one device of
   the inventory expects (C6), or is that device's pinned certificate.
2. Bind identity to issuer: the chain must run through one of *that* device's
   configured issuers, so a device of another manufacturer (or another device
   of the same one) cannot pose as it.
3. Revocation: every certificate of the chain that a configured CRL covers is
   checked (C5); a revoked one closes the connection at once.  A CRL past its
   nextUpdate rejects (or, by policy, warns).

:meth:`TLSTrust.anchors` feeds the handshakes' trust stores (``ssl`` and
tlslite-ng alike).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

from ..addresses import PeerAddress, format_peer
from ..errors import CertificateRejectedError, RevokedCertificateError
from .inventory import Device, IdentifierField, Inventory, StaleCRLPolicy, Transport

__all__ = ["TLSIdentified", "TLSTrust", "cert_fingerprint", "describe_certificate", "identifiers", "verify_path"]

log = logging.getLogger(__name__)


def cert_fingerprint(cert: x509.Certificate) -> str:
    """``SHA256:`` + unpadded base64 of the DER certificate's SHA-256."""
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


_NAMES = {NameOID.SERIAL_NUMBER: "serialNumber"}


def describe_certificate(cert: x509.Certificate) -> dict[str, str]:
    """The certificate facts a refusal carries (subject, issuer, serial, fingerprint)."""
    return {
        "subject": cert.subject.rfc4514_string(_NAMES),
        "issuer": cert.issuer.rfc4514_string(_NAMES),
        "serial": format(cert.serial_number, "X"),
        "fingerprint": cert_fingerprint(cert),
    }


def identifiers(cert: x509.Certificate, field: IdentifierField) -> list[str]:
    """The values ``cert`` carries in ``field``."""
    if field is IdentifierField.SERIAL_NUMBER:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)]
    if field is IdentifierField.COMMON_NAME:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    kind: type[x509.DNSName] | type[x509.UniformResourceIdentifier] = (
        x509.DNSName if field is IdentifierField.DNS else x509.UniformResourceIdentifier
    )
    return [str(v) for v in san.get_values_for_type(kind)]


def verify_path(
    leaf: x509.Certificate,
    intermediates: Iterable[x509.Certificate],
    anchors: Iterable[x509.Certificate],
    now: datetime.datetime,
) -> list[x509.Certificate]:
    """RFC 5280 path validation of ``leaf`` up to one of ``anchors`` (roots
    or intermediates alike), with ``cryptography``'s verifier: CA certificates
    under the Web PKI rules, the end-entity certificate under none (device
    certificates carry whatever EKU their manufacturer chose).  Returns the
    chain, end-entity first; raises ``VerificationError``."""
    verifier = (
        PolicyBuilder()
        .store(Store(list(anchors)))
        .time(now)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all())
        .build_client_verifier()
    )
    return list(verifier.verify(leaf, list(intermediates)).chain)


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return crl.is_signature_valid(key)
    return False


@dataclass(frozen=True, kw_only=True)
class TLSIdentified:
    """A TLS device identified from its verified chain."""

    device: str
    subject: str
    issuer: str
    serial: str
    fingerprint: str

    def facts(self) -> dict[str, Any]:
        """The connect event's certificate fields."""
        return {"certificate_subject": self.subject, "certificate_serial": self.serial}


class TLSTrust:
    """Certificate identity for TLS devices, from an :class:`Inventory`.

    :meth:`anchors` feeds the handshake's trust store; :meth:`identify` runs
    steps 2-4 of the module docstring on the chain OpenSSL verified.
    """

    def __init__(
        self, inventory: Inventory, transports: Iterable[Transport] = (Transport.TLS,), *, strict_listener: bool = False
    ) -> None:
        self.inventory = inventory
        self.strict_listener = strict_listener
        self.transports = tuple(transports)
        wanted = set(transports)
        self.devices = [d for d in inventory if d.transport in wanted and d.tls is not None]

    def anchors(self) -> list[x509.Certificate]:
        seen: dict[bytes, x509.Certificate] = {}
        for device in self.devices:
            assert device.tls is not None
            for cert in (*device.tls.issuers, *device.tls.pinned_certificates):
                seen.setdefault(cert.public_bytes(serialization.Encoding.DER), cert)
        return list(seen.values())

    def _find_device(self, leaf: x509.Certificate) -> Device | None:
        der = leaf.public_bytes(serialization.Encoding.DER)
        for device in self.devices:
            assert device.tls is not None
            if any(p.public_bytes(serialization.Encoding.DER) == der for p in device.tls.pinned_certificates):
                return device
        for field in self.inventory.tls_identifier_fields():
            for value in identifiers(leaf, field):
                found = self.inventory.device_for_tls_identifier(field, value)
                if found is not None and found in self.devices:
                    return found
        return None

    def identify(
        self, chain: list[x509.Certificate], peer: PeerAddress, now: datetime.datetime | None = None
    ) -> TLSIdentified:
        """Identify the device from ``chain`` (end-entity first, anchor last),
        or raise :class:`CertificateRejectedError` / :class:`RevokedCertificateError`."""
        if not chain:
            raise CertificateRejectedError(peer_address=peer, reason="no certificate presented")
        leaf = chain[0]
        facts = describe_certificate(leaf)
        device = self._find_device(leaf)
        if device is None:
            raise CertificateRejectedError(
                peer_address=peer, reason="no device in the inventory expects this certificate's identifier", **facts
            )
        tls = device.tls
        assert tls is not None
        now = now or datetime.datetime.now(datetime.UTC)
        pinned = any(leaf == p for p in tls.pinned_certificates)
        if not pinned and not any(cert == issuer for cert in chain for issuer in tls.issuers):
            chain = self._chain_to_own_issuer(device, chain, peer, now, facts)
        self._check_revocation(device, chain, peer, now, facts)
        if tls.c4_strict and not self.strict_listener:
            raise CertificateRejectedError(
                peer_address=peer,
                reason=f"device {device.name} is configured for strict C4 (heartbeat) mode: "
                "it must call the strict listener",
                device=device.name,
                **facts,
            )
        return TLSIdentified(device=device.name, **facts)

    def _chain_to_own_issuer(
        self,
        device: Device,
        chain: list[x509.Certificate],
        peer: PeerAddress,
        now: datetime.datetime,
        facts: dict[str, str],
    ) -> list[x509.Certificate]:
        """The handshake validated against every device's issuers and stops at
        the first it trusts: with device A configured with an intermediate and
        device B with the root above it, B's chain ends at A's intermediate.
        Validate it again against *this* device's issuers alone, the chain's
        certificates serving as intermediates; return the longer chain."""
        tls = device.tls
        assert tls is not None
        if tls.issuers:
            with contextlib.suppress(VerificationError):
                return verify_path(chain[0], chain[1:], tls.issuers, now)
        raise CertificateRejectedError(
            peer_address=peer,
            reason=f"the chain does not lead to an issuer configured for device {device.name}",
            device=device.name,
            **facts,
        )

    def _check_revocation(
        self,
        device: Device,
        chain: list[x509.Certificate],
        peer: PeerAddress,
        now: datetime.datetime,
        facts: dict[str, str],
    ) -> None:
        tls = device.tls
        assert tls is not None
        for cert, issuer in itertools.pairwise(chain):
            for crl in tls.crls:
                if crl.issuer != cert.issuer or not _signed_by(crl, issuer):
                    continue
                next_update = crl.next_update_utc
                if next_update is not None and next_update < now:
                    message = (
                        f"CRL of {crl.issuer.rfc4514_string(_NAMES)} is stale (nextUpdate {next_update.isoformat()})"
                    )
                    if tls.stale_crl is StaleCRLPolicy.REJECT:
                        raise CertificateRejectedError(
                            peer_address=peer, reason=message + "; policy: reject", device=device.name, **facts
                        )
                    log.warning("device=%s peer=%s %s; policy: warn, using it", device.name, format_peer(peer), message)
                revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
                if revoked is not None:
                    raise RevokedCertificateError(
                        peer_address=peer,
                        reason=(
                            f"certificate serial {cert.serial_number:X} ({cert.subject.rfc4514_string(_NAMES)}) "
                            f"revoked on {revoked.revocation_date_utc.isoformat()}"
                        ),
                        device=device.name,
                        **facts,
                    )
