"""A test PKI generated per run with ``cryptography`` (no private key is committed).

Manufacturer A: root -> intermediate -> device leaves (subject serialNumber +
CN), one expired, one revoked (on the intermediate's CRL).  Manufacturer B: its
own root and a leaf claiming A's serial number.  The manager: its own CA and a
client certificate that the devices require.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


def _name(cn: str, serial: str | None = None, org: str = "callhome tests") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if serial:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    return x509.Name(attrs)


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: list[x509.Certificate] = field(default_factory=list)  # intermediates, leaf excluded

    def write(self, directory: Path, name: str, *, with_chain: bool = True) -> tuple[Path, Path]:
        """Write ``name.pem`` (the certificate, then its intermediates) and ``name.key``."""
        certs = [self.cert, *(self.chain if with_chain else [])]
        cert_path = directory / f"{name}.pem"
        cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
        key_path = directory / f"{name}.key"
        key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)
        return cert_path, key_path


def _issue(
    subject: x509.Name,
    issuer: Issued | None,
    *,
    ca: bool,
    path_length: int | None = None,
    not_before: datetime.datetime = NOW - DAY,
    not_after: datetime.datetime = NOW + 30 * DAY,
    eku: list[x509.ObjectIdentifier] | None = None,
    san: list[x509.GeneralName] | None = None,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    signer_key = issuer.key if issuer else key
    issuer_name = issuer.cert.subject if issuer else subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
        )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(signer_key, hashes.SHA256())
    chain = ([issuer.cert, *issuer.chain] if issuer and issuer.chain else [issuer.cert]) if issuer else []
    # a leaf's chain is its intermediates only: drop the self-signed root
    chain = [c for c in chain if c.issuer != c.subject]
    return Issued(cert=cert, key=key, chain=chain)


def crl_for(
    issuer: Issued, revoked: list[x509.Certificate], *, next_update: datetime.datetime
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(NOW - DAY)
        .next_update(next_update)
    )
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(NOW - DAY).build()
        )
    return builder.sign(issuer.key, hashes.SHA256())


SERVER = [ExtendedKeyUsageOID.SERVER_AUTH]
CLIENT = [ExtendedKeyUsageOID.CLIENT_AUTH]


@dataclass
class DevicePKI:
    """Everything, written under ``directory``; attributes are file paths."""

    directory: Path

    def __post_init__(self) -> None:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        self.root_a = _issue(_name("Manufacturer A Root CA", org="Manufacturer A"), None, ca=True)
        self.inter_a = _issue(
            _name("Manufacturer A Device CA", org="Manufacturer A"), self.root_a, ca=True, path_length=0
        )
        self.root_b = _issue(_name("Manufacturer B Root CA", org="Manufacturer B"), None, ca=True)
        self.manager_ca = _issue(_name("Manager CA"), None, ca=True)
        self.devices = {
            serial: _issue(
                _name(serial.lower(), serial, "Manufacturer A"),
                self.inter_a,
                ca=False,
                eku=SERVER,
                san=[x509.DNSName(f"{serial.lower()}.devices.example")],
            )
            for serial in ("SN-0003", "SN-0004", "SN-0005", "SN-9999")
        }
        self.expired = _issue(
            _name("sn-0006", "SN-0006", "Manufacturer A"),
            self.inter_a,
            ca=False,
            eku=SERVER,
            not_before=NOW - 60 * DAY,
            not_after=NOW - 2 * DAY,
        )
        self.impostor_b = _issue(_name("sn-0003", "SN-0003", "Manufacturer B"), self.root_b, ca=False, eku=SERVER)
        self.manager = _issue(_name("manager"), self.manager_ca, ca=False, eku=CLIENT)
        self.revoked_serial = "SN-0005"
        crl = crl_for(self.inter_a, [self.devices["SN-0005"].cert], next_update=NOW + 7 * DAY)
        stale = crl_for(self.inter_a, [], next_update=NOW - DAY)

        def pem(cert: x509.Certificate, name: str) -> Path:
            path = d / name
            path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            return path

        self.root_a_pem = pem(self.root_a.cert, "root-a.pem")
        self.inter_a_pem = pem(self.inter_a.cert, "inter-a.pem")
        self.root_b_pem = pem(self.root_b.cert, "root-b.pem")
        self.manager_ca_pem = pem(self.manager_ca.cert, "manager-ca.pem")
        self.crl_a = d / "inter-a.crl"
        self.crl_a.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        self.stale_crl_a = d / "inter-a-stale.crl"
        self.stale_crl_a.write_bytes(stale.public_bytes(serialization.Encoding.PEM))
        self.manager_cert, self.manager_key = self.manager.write(d, "manager")

    def device_files(self, serial: str, *, with_chain: bool = True) -> tuple[Path, Path]:
        issued = {"SN-0006": self.expired}.get(serial) or self.devices[serial]
        return issued.write(self.directory, f"device-{serial}{'' if with_chain else '-nochain'}", with_chain=with_chain)

    def impostor_files(self) -> tuple[Path, Path]:
        return self.impostor_b.write(self.directory, "impostor-b")
