"""Certificate identity, issuer binding and revocation, on a PKI made per run (no I/O)."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import pytest
from cryptography import x509

from callhome_transport import (
    CertificateRejectedError,
    Device,
    IdentifierField,
    Inventory,
    InventoryError,
    RevokedCertificateError,
    StaleCRLPolicy,
    TLSIdentity,
    Transport,
)
from callhome_transport.identity.tls_trust import TLSTrust, cert_fingerprint, identifiers

from ..pki import DevicePKI

PEER = ("192.0.2.1", 50000)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevicePKI:
    return DevicePKI(tmp_path_factory.mktemp("pki"))


def load_crl(path: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(path.read_bytes())


def device(name: str, pki: DevicePKI, **kwargs: object) -> Device:
    tls = {"issuers": (pki.root_a.cert,), "identifier": name, "crls": (load_crl(pki.crl_a),), **kwargs}
    return Device(name=name, transport=Transport.TLS, tls=TLSIdentity(**tls))  # type: ignore[arg-type]


def chain_of(pki: DevicePKI, serial: str) -> list[x509.Certificate]:
    return [pki.devices[serial].cert, pki.inter_a.cert, pki.root_a.cert]


def test_identifies_by_subject_serial_number(pki: DevicePKI) -> None:
    trust = TLSTrust(Inventory([device("SN-0003", pki), device("SN-0004", pki)]))
    who = trust.identify(chain_of(pki, "SN-0004"), PEER)
    assert who.device == "SN-0004"
    assert "serialNumber=SN-0004" in who.subject
    assert who.fingerprint == cert_fingerprint(pki.devices["SN-0004"].cert)
    assert {c.subject for c in trust.anchors()} == {pki.root_a.cert.subject}


def test_unknown_identifier_from_the_right_issuer_is_rejected(pki: DevicePKI) -> None:
    trust = TLSTrust(Inventory([device("SN-0003", pki)]))
    with pytest.raises(CertificateRejectedError) as info:
        trust.identify(chain_of(pki, "SN-9999"), PEER)
    err = info.value
    assert "no device in the inventory expects" in err.reason
    assert "SN-9999" in err.subject
    assert err.issuer.startswith("CN=Manufacturer A Device CA")
    assert err.serial == format(pki.devices["SN-9999"].cert.serial_number, "X")


def test_another_manufacturer_cannot_pose_as_the_device(pki: DevicePKI) -> None:
    # manufacturer B's root is trusted for its own device, so OpenSSL would
    # accept B's chain; the identity must still be bound to A's issuer
    b_device = Device(
        name="SN-B1",
        transport=Transport.TLS,
        tls=TLSIdentity(issuers=(pki.root_b.cert,), identifier="SN-B1"),
    )
    trust = TLSTrust(Inventory([device("SN-0003", pki), b_device]))
    with pytest.raises(CertificateRejectedError, match="does not lead to an issuer configured for device SN-0003"):
        trust.identify([pki.impostor_b.cert, pki.root_b.cert], PEER)


def test_revoked_certificate(pki: DevicePKI) -> None:
    trust = TLSTrust(Inventory([device("SN-0005", pki)]))
    with pytest.raises(RevokedCertificateError) as info:
        trust.identify(chain_of(pki, "SN-0005"), PEER)
    assert info.value.device == "SN-0005"
    assert "revoked on" in info.value.reason
    # one spelling of the subject serialNumber in the whole message (was 2.5.4.5= in the reason)
    assert "(serialNumber=SN-0005," in info.value.reason
    assert "2.5.4.5" not in str(info.value)


def test_mixed_issuers_each_device_is_validated_against_its_own(pki: DevicePKI) -> None:
    # failed before the fix: SN-0004 was refused ("the chain does not lead to an
    # issuer configured for device SN-0004"), its chain ending at SN-0003's issuer
    trust = TLSTrust(
        Inventory(
            [device("SN-0003", pki, issuers=(pki.inter_a.cert,)), device("SN-0004", pki, issuers=(pki.root_a.cert,))]
        )
    )
    # with both anchors trusted, the handshake's verified chain stops at the intermediate
    handshake_chain = [pki.devices["SN-0004"].cert, pki.inter_a.cert]
    assert trust.identify(handshake_chain, PEER).device == "SN-0004"
    assert trust.identify([pki.devices["SN-0003"].cert, pki.inter_a.cert], PEER).device == "SN-0003"


def test_mixed_issuers_keep_the_issuer_binding_and_revocation(pki: DevicePKI) -> None:
    b_root = Device(
        name="SN-B1", transport=Transport.TLS, tls=TLSIdentity(issuers=(pki.root_b.cert,), identifier="SN-B1")
    )
    trust = TLSTrust(Inventory([device("SN-0003", pki), device("SN-0005", pki), b_root]))
    with pytest.raises(CertificateRejectedError, match="does not lead to an issuer configured for device SN-0003"):
        trust.identify([pki.impostor_b.cert, pki.root_b.cert], PEER)
    inter = Device(name="INTER", transport=Transport.TLS, tls=TLSIdentity(issuers=(pki.inter_a.cert,), identifier="X"))
    trust = TLSTrust(Inventory([device("SN-0005", pki), inter]))
    with pytest.raises(RevokedCertificateError):
        trust.identify([pki.devices["SN-0005"].cert, pki.inter_a.cert], PEER)


def test_stale_crl_rejects_by_default_and_warns_by_policy(pki: DevicePKI, caplog: pytest.LogCaptureFixture) -> None:
    stale = (load_crl(pki.stale_crl_a),)
    strict = TLSTrust(Inventory([device("SN-0003", pki, crls=stale)]))
    with pytest.raises(CertificateRejectedError, match=r"is stale .*policy: reject"):
        strict.identify(chain_of(pki, "SN-0003"), PEER)
    lenient = TLSTrust(Inventory([device("SN-0003", pki, crls=stale, stale_crl=StaleCRLPolicy.WARN)]))
    with caplog.at_level(logging.WARNING):
        assert lenient.identify(chain_of(pki, "SN-0003"), PEER).device == "SN-0003"
    assert "policy: warn" in caplog.text


def test_without_a_configured_crl_revocation_is_not_known(pki: DevicePKI) -> None:
    # revocation is checked only against CRLs the inventory configures (no network fetch)
    trust = TLSTrust(Inventory([device("SN-0005", pki, issuers=(pki.root_a.cert,), crls=())]))
    assert trust.identify(chain_of(pki, "SN-0005"), PEER).device == "SN-0005"


def test_pinned_certificate_identifies_without_issuer(pki: DevicePKI) -> None:
    pinned = Device(
        name="PINNED",
        transport=Transport.TLS,
        tls=TLSIdentity(pinned_certificates=(pki.devices["SN-0004"].cert,)),
    )
    trust = TLSTrust(Inventory([pinned]))
    assert trust.identify(chain_of(pki, "SN-0004"), PEER).device == "PINNED"
    with pytest.raises(CertificateRejectedError):
        trust.identify(chain_of(pki, "SN-0003"), PEER)


def test_identifier_fields(pki: DevicePKI) -> None:
    cert = pki.devices["SN-0003"].cert
    assert identifiers(cert, IdentifierField.SERIAL_NUMBER) == ["SN-0003"]
    assert identifiers(cert, IdentifierField.COMMON_NAME) == ["sn-0003"]
    assert identifiers(cert, IdentifierField.DNS) == ["sn-0003.devices.example"]
    assert identifiers(cert, IdentifierField.URI) == []
    by_dns = device("sn-0003.devices.example", pki, identifier_field=IdentifierField.DNS)
    trust = TLSTrust(Inventory([by_dns]))
    assert trust.identify(chain_of(pki, "SN-0003"), PEER).device == "sn-0003.devices.example"


def test_expiry_is_not_our_check_but_time_is_passed_through(pki: DevicePKI) -> None:
    # validity dates are checked by OpenSSL during the handshake (before our
    # client certificate is sent); identify() checks CRL freshness against `now`
    trust = TLSTrust(Inventory([device("SN-0003", pki)]))
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
    with pytest.raises(CertificateRejectedError, match="stale"):
        trust.identify(chain_of(pki, "SN-0003"), PEER, now=later)


def test_inventory_tls_section_from_yaml(tmp_path: Path, pki: DevicePKI) -> None:
    path = tmp_path / "inv.yml"
    path.write_text(
        f"""
devices:
  SN-0003:
    transport: tls
    tls:
      issuers: [{pki.root_a_pem}]
      identifier: SN-0003
      crls: [{pki.crl_a}]
      stale_crl: warn
"""
    )
    inv = Inventory.from_file(path)
    tls = inv["SN-0003"].tls
    assert tls is not None
    assert tls.issuers == (pki.root_a.cert,)
    assert tls.stale_crl is StaleCRLPolicy.WARN
    assert inv.device_for_tls_identifier(IdentifierField.SERIAL_NUMBER, "SN-0003") is inv["SN-0003"]


@pytest.mark.parametrize(
    ("tls", "key_path", "expected"),
    [
        ("{identifier: X}", "devices.D.tls", "tls.issuers"),
        ("{issuers: [ROOT]}", "devices.D.tls", "tls.identifier"),
        ("{issuers: [nope.pem], identifier: X}", "devices.D.tls.issuers[0]", "a readable file"),
        ("{issuers: [BADPEM], identifier: X}", "devices.D.tls.issuers[0]", "X.509 certificate"),
        ("{issuers: [ROOT], identifier: X, identifier_field: mac}", "devices.D.tls.identifier_field", "serialNumber"),
        ("{issuers: [ROOT], identifier: X, stale_crl: maybe}", "devices.D.tls.stale_crl", "reject, warn"),
        ("{issuers: [ROOT], identifier: X, crls: [ROOT]}", "devices.D.tls.crls[0]", "CRL"),
    ],
)
def test_bad_tls_sections(tmp_path: Path, pki: DevicePKI, tls: str, key_path: str, expected: str) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    text = tls.replace("ROOT", str(pki.root_a_pem)).replace("BADPEM", str(bad))
    path = tmp_path / "inv.yml"
    path.write_text(f"devices:\n  D:\n    transport: tls\n    tls: {text}\n")
    with pytest.raises(InventoryError) as info:
        Inventory.from_file(path)
    assert info.value.key_path == key_path
    assert expected in info.value.expected


def test_tls_device_needs_a_tls_section() -> None:
    with pytest.raises(ValueError, match="a tls section"):
        Device(name="D", transport=Transport.TLS)


def test_same_identifier_for_two_devices_is_rejected(pki: DevicePKI) -> None:
    a = device("SN-0003", pki)
    b = Device(name="OTHER", transport=Transport.TLS, tls=TLSIdentity(issuers=(pki.root_a.cert,), identifier="SN-0003"))
    with pytest.raises(InventoryError, match="already expected for device SN-0003"):
        Inventory([a, b])
