"""Device inventory: who may call home, how we recognise them, and the
credentials we use once we have.

A device is named by its identity, never by its address (call-home draft
s3: devices call from NAT and dynamic addresses).  For SSH the identity is the
host key the device presents (RFC 8071 s5: "the host key ... MUST be
validated"); the inventory pins one or more keys per device, as OpenSSH public
key lines or ``SHA256:`` fingerprints.

The same YAML format serves the library, the gateway and the Ansible roles::

    version: 1
    defaults:                      # optional, merged under every device
      ssh:
        username: admin
    devices:
      SN-0001:
        transport: ssh             # ssh (4334), tls (4335), restconf (4336)
        ssh:
          host_keys:
            - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... sn-0001
            - SHA256:2zYk0sB1...
          username: admin
          password_env: SN0001_PASSWORD     # or password: / private_key:
      SN-0003:
        transport: tls
        tls:
          issuers: [pki/manufacturer-a-ca.pem]   # that manufacturer's trust anchor(s)
          identifier: SN-0003                    # expected in...
          identifier_field: serialNumber         # subject serialNumber (IDevID)
          crls: [pki/manufacturer-a.crl]

Secrets may be given inline (``password``), by environment variable
(``password_env``) or by file (``password_file``); the private key is a path.
Credentials never appear in ``repr()`` or logs.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from ..errors import InventoryError
from ..yamlfile import read_yaml_file

__all__ = [
    "BasicAuth",
    "Device",
    "HoldPolicy",
    "HostKeyPin",
    "IdentifierField",
    "Inventory",
    "OutboundSSH",
    "Quirk",
    "SSHCredentials",
    "StaleCRLPolicy",
    "TLSIdentity",
    "Transport",
    "fingerprint_of_blob",
]

INVENTORY_VERSION = 1
_DEVICE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")  # fullmatch: "R1\n" is not a name
_FINGERPRINT = re.compile(r"^SHA256:([A-Za-z0-9+/]{43})=?$")
_OUTBOUND_SSH_DEVICE_ID = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, no spaces


class Transport(enum.Enum):
    """How a device calls home (RFC 8071 s6 ports)."""

    SSH = "ssh"  # NETCONF over SSH, port 4334
    TLS = "tls"  # NETCONF over TLS, port 4335
    RESTCONF = "restconf"  # RESTCONF over TLS, port 4336


def fingerprint_of_blob(blob: bytes) -> str:
    """OpenSSH ``SHA256:`` fingerprint of an SSH public key blob (the
    ``ssh-keygen -lf`` form: unpadded base64 of the SHA-256 digest)."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True, kw_only=True)
class HostKeyPin:
    """One pinned host key: its fingerprint, and the key itself when the
    inventory gave a full public-key line."""

    fingerprint: str
    key_type: str = ""
    public_key: str = ""  # the OpenSSH line as given, without comment

    @classmethod
    def parse(cls, text: str) -> HostKeyPin:
        """Parse an OpenSSH public-key line (``ssh-ed25519 AAAA... comment``)
        or a ``SHA256:`` fingerprint.  Raises :class:`ValueError` with what was
        wrong."""
        text = text.strip()
        match = _FINGERPRINT.match(text)
        if match:
            return cls(fingerprint="SHA256:" + match.group(1))
        parts = text.split()
        if len(parts) < 2:
            raise ValueError("an OpenSSH public key line ('TYPE BASE64 [comment]') or a 'SHA256:' fingerprint")
        key_type, b64 = parts[0], parts[1]
        try:
            blob = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"valid base64 key data after {key_type!r}") from None
        if _ssh_string_prefix(blob) != key_type.encode():
            raise ValueError(f"key data whose embedded type matches {key_type!r}")
        return cls(fingerprint=fingerprint_of_blob(blob), key_type=key_type, public_key=f"{key_type} {b64}")


def _ssh_string_prefix(blob: bytes) -> bytes:
    """The first SSH ``string`` of a key blob: its algorithm name (RFC 4253 s6.6)."""
    if len(blob) < 4:
        return b""
    length = int.from_bytes(blob[:4], "big")
    return blob[4 : 4 + length] if length <= len(blob) - 4 else b""


@dataclass(frozen=True, kw_only=True)
class SSHCredentials:
    """What we authenticate with once a device is identified (RFC 8071 C7).

    ``password`` and ``private_key_passphrase`` are excluded from ``repr``.
    """

    username: str
    password: str | None = field(default=None, repr=False)
    private_key: Path | None = None
    private_key_passphrase: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.username:
            raise ValueError("username must not be empty")
        if self.password is None and self.private_key is None:
            raise ValueError("a password or a private_key")


class IdentifierField(enum.Enum):
    """Which certificate field carries a device's identifier (RFC 8071 C6)."""

    SERIAL_NUMBER = "serialNumber"  # subject serialNumber, e.g. an IEEE 802.1AR IDevID
    COMMON_NAME = "cn"  # subject commonName
    DNS = "dns"  # subjectAltName dNSName
    URI = "uri"  # subjectAltName uniformResourceIdentifier


class HoldPolicy(enum.Enum):
    """Whether the call-home server keeps a greeted NETCONF session ready for
    a device, so that a device which drops a connection with no NETCONF
    session (libnetconf2: ~10 s over SSH, 60 s over TLS) keeps its call."""

    AUTO = "auto"  # TLS: always; SSH: libssh (libnetconf2) servers, and devices seen dropping an idle call
    ALWAYS = "always"
    NEVER = "never"  # greet a session only when a caller asks for one


class Quirk(enum.Enum):
    """A device behaviour the manager works around, named in the inventory
    (``quirks: [hello-settle]``) where it cannot be recognised."""

    # drops an RPC read in the same buffer as the client's hello: the first RPC
    # leaves HELLO_SETTLE after our hello (yuma123 netconfd is recognised by its hello)
    HELLO_SETTLE = "hello-settle"


class StaleCRLPolicy(enum.Enum):
    """What a CRL past its nextUpdate means."""

    REJECT = "reject"  # refuse the device (default): revocation status is unknown
    WARN = "warn"  # use the stale CRL and log a WARNING


@dataclass(frozen=True, kw_only=True)
class TLSIdentity:
    """How a TLS device is recognised (RFC 8071 C5, C6, s5).

    Either ``issuers`` (the trust anchors of the device's manufacturer, never
    the system store) plus the ``identifier`` expected in ``identifier_field``;
    or ``pinned_certificates`` (the device's own end-entity certificates).
    ``crls`` are checked for every certificate of the chain they cover.
    """

    issuers: tuple[x509.Certificate, ...] = ()
    identifier: str | None = None
    identifier_field: IdentifierField = IdentifierField.SERIAL_NUMBER
    pinned_certificates: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    stale_crl: StaleCRLPolicy = StaleCRLPolicy.REJECT
    c4_strict: bool = False  # must call the strict (heartbeat-advertising) TLS listener

    def __post_init__(self) -> None:
        if self.pinned_certificates:
            return
        if not self.issuers:
            raise ValueError("tls.issuers (the manufacturer's trust anchors) or tls.pinned_certificates")
        if not self.identifier:
            raise ValueError("tls.identifier (the value expected in the certificate) with tls.issuers")


@dataclass(frozen=True, kw_only=True)
class BasicAuth:
    """RESTCONF HTTP Basic credentials of one device, sent only over a
    connection whose certificate identified that device (RFC 8071 C7, s5)."""

    username: str
    password: str = field(repr=False)

    def header(self) -> str:
        """The ``Authorization`` header value (RFC 7617)."""
        token = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(token).decode("ascii")


@dataclass(frozen=True, kw_only=True)
class OutboundSSH:
    """How a Junos device calling with outbound-ssh names itself: the
    ``device-id`` of its ``outbound-ssh client`` stanza and, when the stanza
    has one, the shared ``secret`` that authenticates the HOST-KEY line of its
    preamble (excluded from ``repr``).  The device is still identified by its
    pinned host key: the DEVICE-ID only says which device's pins to check."""

    device_id: str
    secret: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not _OUTBOUND_SSH_DEVICE_ID.match(self.device_id):
            raise ValueError("an outbound_ssh.device_id of 1 to 255 visible ASCII characters (no spaces)")
        if self.secret is not None and not self.secret:
            raise ValueError("a non-empty outbound_ssh secret")


@dataclass(frozen=True, kw_only=True)
class Device:
    """A device that may call home, named by identity."""

    name: str
    transport: Transport = Transport.SSH
    host_keys: tuple[HostKeyPin, ...] = ()
    credentials: SSHCredentials | None = None
    tls: TLSIdentity | None = None
    http_auth: BasicAuth | None = None  # RESTCONF devices only
    hold_session: HoldPolicy = HoldPolicy.AUTO  # NETCONF devices (ssh, tls)
    outbound_ssh: OutboundSSH | None = None  # Junos outbound-ssh devices only
    quirks: frozenset[Quirk] = frozenset()  # NETCONF devices

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _DEVICE_NAME.fullmatch(self.name):
            raise ValueError("a device name of letters, digits, '.', '_' or '-' (at most 128, not starting with '.')")
        if self.transport is Transport.SSH:
            if not self.host_keys:
                raise ValueError("at least one pinned host key for an SSH device")
            if self.credentials is None:
                raise ValueError("credentials for an SSH device")
        elif self.tls is None:
            raise ValueError(f"a tls section for a {self.transport.value} device")
        if self.outbound_ssh is not None and self.transport is not Transport.SSH:
            raise ValueError("outbound_ssh only on a transport: ssh device")

    @property
    def fingerprints(self) -> frozenset[str]:
        """The SHA256 fingerprints pinned for this device."""
        return frozenset(pin.fingerprint for pin in self.host_keys)


class Inventory:
    """The devices that may call home, indexed by name and by identity.

    Build it from Python (``Inventory([Device(...), ...])``), a mapping
    (:meth:`from_dict`) or a YAML file (:meth:`from_file`).  A host key pinned
    for two devices is an error: identity must name one device.
    """

    def __init__(self, devices: Iterable[Device] = (), *, source: str = "<python>") -> None:
        self.source = source
        # the source said ``devices: {}``: no device on purpose (a reload that
        # would remove every device needs this, see docs/gateway.md)
        self.explicitly_empty = False
        self._by_name: dict[str, Device] = {}
        self._by_fingerprint: dict[str, str] = {}
        self._by_tls_identifier: dict[tuple[IdentifierField, str], str] = {}
        self._by_outbound_ssh_id: dict[str, str] = {}
        for device in devices:
            self._add(device)

    def _add(self, device: Device) -> None:
        if device.name in self._by_name:
            raise InventoryError(self.source, f"devices.{device.name}", "each device name once")
        for index, pin in enumerate(device.host_keys):
            owner = self._by_fingerprint.get(pin.fingerprint)
            if owner is not None and owner != device.name:
                raise InventoryError(
                    self.source,
                    f"devices.{device.name}.ssh.host_keys[{index}]",
                    f"a host key not already pinned for device {owner} ({pin.fingerprint})",
                )
            self._by_fingerprint[pin.fingerprint] = device.name
        tls = device.tls
        if tls is not None and tls.identifier:
            key = (tls.identifier_field, tls.identifier)
            owner = self._by_tls_identifier.get(key)
            if owner is not None and owner != device.name:
                raise InventoryError(
                    self.source,
                    f"devices.{device.name}.tls.identifier",
                    f"an identifier not already expected for device {owner} "
                    f"({tls.identifier_field.value}={tls.identifier})",
                )
            self._by_tls_identifier[key] = device.name
        if device.outbound_ssh is not None:
            device_id = device.outbound_ssh.device_id
            owner = self._by_outbound_ssh_id.get(device_id)
            if owner is not None and owner != device.name:
                raise InventoryError(
                    self.source,
                    f"devices.{device.name}.outbound_ssh.device_id",
                    f"a device_id not already used by device {owner} ({device_id})",
                )
            self._by_outbound_ssh_id[device_id] = device.name
        self._by_name[device.name] = device

    # -- lookup ---------------------------------------------------------------

    def __iter__(self) -> Iterator[Device]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Device:
        return self._by_name[name]

    def get(self, name: str) -> Device | None:
        """The device called ``name``, or ``None``."""
        return self._by_name.get(name)

    def device_for_fingerprint(self, fingerprint: str) -> Device | None:
        """The device whose pinned host keys include ``fingerprint``, or ``None``."""
        name = self._by_fingerprint.get(fingerprint)
        return None if name is None else self._by_name[name]

    def device_for_outbound_ssh_id(self, device_id: str) -> Device | None:
        """The device whose Junos outbound-ssh ``device_id`` this is, or ``None``."""
        name = self._by_outbound_ssh_id.get(device_id)
        return None if name is None else self._by_name[name]

    def device_for_tls_identifier(self, field: IdentifierField, value: str) -> Device | None:
        """The TLS device expecting ``value`` in ``field``, or ``None``."""
        name = self._by_tls_identifier.get((field, value))
        return None if name is None else self._by_name[name]

    def tls_identifier_fields(self) -> frozenset[IdentifierField]:
        """The certificate fields some device is identified by."""
        return frozenset(field for field, _ in self._by_tls_identifier)

    def __repr__(self) -> str:
        return f"Inventory({len(self)} devices from {self.source})"

    # -- loading ----------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Inventory:
        """Load a YAML inventory.  Errors name the file, the key path and what
        was expected (:class:`~callhome_transport.errors.InventoryError`)."""
        path = Path(path)
        data = read_yaml_file(path)
        if data is None:
            # an empty file is more often a file caught mid-write than a wish for no devices
            raise InventoryError(path, "", "an inventory (the file is empty; write 'devices: {}' for no devices)")
        return cls.from_dict(data, source=str(path), base_dir=path.parent)

    @classmethod
    def from_dict(
        cls,
        data: Any,
        *,
        source: str = "<dict>",
        base_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Inventory:
        """Build an inventory from parsed YAML/JSON data.  Relative paths
        (private keys, password files) are resolved against ``base_dir``."""
        return _Loader(source, base_dir or Path.cwd(), os.environ if environ is None else environ).load(data)


class _Loader:
    """Walks inventory data, keeping the key path for error messages."""

    def __init__(self, source: str, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.source = source
        self.base_dir = base_dir
        self.environ = environ

    def fail(self, key_path: str, expected: str) -> InventoryError:
        return InventoryError(self.source, key_path, expected)

    def mapping(self, value: Any, key_path: str, allowed: Iterable[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key_path or "(top level)", f"a mapping, not {type(value).__name__}")
        allowed = set(allowed)
        for key in value:
            if key not in allowed:
                raise self.fail(f"{key_path}.{key}".lstrip("."), f"one of the keys {', '.join(sorted(allowed))}")
        return value

    def string(self, value: Any, key_path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key_path, "a non-empty string")
        return value

    def load(self, data: Any) -> Inventory:
        top = self.mapping(data, "", ("version", "defaults", "devices"))
        version = top.get("version", INVENTORY_VERSION)
        if version != INVENTORY_VERSION:
            raise self.fail("version", f"{INVENTORY_VERSION}")
        defaults = self.mapping(
            top.get("defaults"), "defaults", ("transport", "ssh", "tls", "restconf", "hold_session", "quirks")
        )
        devices = top.get("devices") or {}
        if not isinstance(devices, dict):
            raise self.fail("devices", f"a mapping of device name to settings, not {type(devices).__name__}")
        inventory = Inventory(source=self.source)
        inventory.explicitly_empty = top.get("devices") == {}
        for name, entry in devices.items():
            key_path = f"devices.{name}"
            if not isinstance(name, str):
                raise self.fail(key_path, "a device name (string)")
            allowed = ("transport", "ssh", "tls", "restconf", "hold_session", "outbound_ssh", "quirks")
            device = self.device(name, _merge(defaults, self.mapping(entry, key_path, allowed)))
            inventory._add(device)
        return inventory

    def device(self, name: str, entry: dict[str, Any]) -> Device:
        key_path = f"devices.{name}"
        raw_transport = entry.get("transport", Transport.SSH.value)
        try:
            transport = Transport(raw_transport)
        except ValueError:
            raise self.fail(f"{key_path}.transport", "one of ssh, tls, restconf") from None
        ssh = self.mapping(
            entry.get("ssh"),
            f"{key_path}.ssh",
            (
                "host_keys",
                "username",
                "password",
                "password_env",
                "password_file",
                "private_key",
                "private_key_passphrase_env",
            ),
        )
        host_keys = self.host_keys(ssh.get("host_keys"), f"{key_path}.ssh.host_keys")
        credentials = self.credentials(ssh, f"{key_path}.ssh") if (ssh or transport is Transport.SSH) else None
        tls = self.tls(entry.get("tls"), f"{key_path}.tls") if entry.get("tls") is not None else None
        try:
            hold = HoldPolicy(entry.get("hold_session", HoldPolicy.AUTO.value))
        except ValueError:
            raise self.fail(f"{key_path}.hold_session", "one of auto, always, never") from None
        quirks = entry.get("quirks") or []
        known = ", ".join(q.value for q in Quirk)
        if not isinstance(quirks, list) or not all(isinstance(q, str) for q in quirks):
            raise self.fail(f"{key_path}.quirks", f"a list of: {known}")
        try:
            quirk_set = frozenset(Quirk(q) for q in quirks)
        except ValueError:
            raise self.fail(f"{key_path}.quirks", f"a list of: {known}") from None
        http_auth = None
        if entry.get("restconf") is not None:
            if transport is not Transport.RESTCONF:
                raise self.fail(f"{key_path}.restconf", "a restconf section only on a transport: restconf device")
            auth = self.mapping(entry["restconf"], f"{key_path}.restconf", ("basic_auth",))
            if auth.get("basic_auth") is not None:
                http_auth = self.basic_auth(auth["basic_auth"], f"{key_path}.restconf.basic_auth")
        outbound_ssh = None
        if "outbound_ssh" in entry:
            outbound_ssh = self.outbound_ssh(name, entry["outbound_ssh"], f"{key_path}.outbound_ssh")
        try:
            return Device(
                name=name,
                transport=transport,
                host_keys=host_keys,
                credentials=credentials,
                tls=tls,
                http_auth=http_auth,
                hold_session=hold,
                outbound_ssh=outbound_ssh,
                quirks=quirk_set,
            )
        except ValueError as exc:
            raise self.fail(key_path, str(exc)) from None

    def tls(self, value: Any, key_path: str) -> TLSIdentity:
        section = self.mapping(
            value,
            key_path,
            ("issuers", "identifier", "identifier_field", "pinned_certificates", "crls", "stale_crl", "c4_strict"),
        )
        c4_strict = section.get("c4_strict", False)
        if not isinstance(c4_strict, bool):
            raise self.fail(f"{key_path}.c4_strict", "true or false")
        try:
            field_ = IdentifierField(section.get("identifier_field", IdentifierField.SERIAL_NUMBER.value))
        except ValueError:
            raise self.fail(f"{key_path}.identifier_field", "one of serialNumber, cn, dns, uri") from None
        try:
            stale = StaleCRLPolicy(section.get("stale_crl", StaleCRLPolicy.REJECT.value))
        except ValueError:
            raise self.fail(f"{key_path}.stale_crl", "one of reject, warn") from None
        identifier = section.get("identifier")
        if identifier is not None:
            identifier = self.string(str(identifier), f"{key_path}.identifier")
        try:
            return TLSIdentity(
                issuers=self.certificates(section.get("issuers"), f"{key_path}.issuers"),
                identifier=identifier,
                identifier_field=field_,
                pinned_certificates=self.certificates(
                    section.get("pinned_certificates"), f"{key_path}.pinned_certificates"
                ),
                crls=self.crls(section.get("crls"), f"{key_path}.crls"),
                stale_crl=stale,
                c4_strict=c4_strict,
            )
        except ValueError as exc:
            raise self.fail(key_path, str(exc)) from None

    def outbound_ssh(self, name: str, value: Any, key_path: str) -> OutboundSSH:
        """``outbound_ssh: {device_id, secret | secret_env | secret_file}``;
        ``device_id`` defaults to the device's name."""
        section = self.mapping(value, key_path, ("device_id", "secret", "secret_env", "secret_file"))
        raw_id = section.get("device_id", name)
        if isinstance(raw_id, int) and not isinstance(raw_id, bool):
            raw_id = str(raw_id)  # YAML reads "device-id 1234" as a number
        device_id = self.string(raw_id, f"{key_path}.device_id")
        try:
            return OutboundSSH(device_id=device_id, secret=self.password(section, key_path, "secret"))
        except ValueError as exc:
            raise self.fail(key_path, str(exc)) from None

    def files(self, value: Any, key_path: str) -> list[tuple[str, bytes]]:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.fail(key_path, "a list of file paths")
        out = []
        for index, item in enumerate(value):
            path = self.path(item, f"{key_path}[{index}]")
            try:
                out.append((f"{key_path}[{index}]", path.read_bytes()))
            except OSError as exc:
                raise self.fail(f"{key_path}[{index}]", f"a readable file ({exc.strerror}: {path})") from exc
        return out

    def certificates(self, value: Any, key_path: str) -> tuple[x509.Certificate, ...]:
        certs: list[x509.Certificate] = []
        for where, data in self.files(value, key_path):
            try:
                certs += (
                    x509.load_pem_x509_certificates(data)
                    if b"-----BEGIN" in data
                    else [x509.load_der_x509_certificate(data)]
                )
            except ValueError:
                raise self.fail(where, "a PEM or DER X.509 certificate file") from None
        return tuple(certs)

    def crls(self, value: Any, key_path: str) -> tuple[x509.CertificateRevocationList, ...]:
        crls: list[x509.CertificateRevocationList] = []
        for where, data in self.files(value, key_path):
            try:
                crls.append(x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data))
            except ValueError:
                raise self.fail(where, "a PEM or DER X.509 CRL file") from None
        return tuple(crls)

    def host_keys(self, value: Any, key_path: str) -> tuple[HostKeyPin, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.fail(key_path, "a list of OpenSSH public key lines or 'SHA256:' fingerprints")
        pins = []
        for index, item in enumerate(value):
            try:
                pins.append(HostKeyPin.parse(self.string(item, f"{key_path}[{index}]")))
            except ValueError as exc:
                raise self.fail(f"{key_path}[{index}]", str(exc)) from None
        return tuple(pins)

    def password(self, section: dict[str, Any], key_path: str, kind: str = "password") -> str | None:
        """The one of password / password_env / password_file given, resolved
        (``kind`` names another secret with the same three forms)."""
        inline, env, file = kind, f"{kind}_env", f"{kind}_file"
        given = [key for key in (inline, env, file) if key in section]
        if len(given) > 1:
            raise self.fail(f"{key_path}.{given[1]}", f"only one of {inline}, {env}, {file} (got {given[0]} too)")
        if inline in section:
            return self.string(section[inline], f"{key_path}.{inline}")
        if env in section:
            var = self.string(section[env], f"{key_path}.{env}")
            if var not in self.environ:
                raise self.fail(f"{key_path}.{env}", f"environment variable {var} to be set")
            return self.environ[var]
        if file in section:
            pw_path = self.path(section[file], f"{key_path}.{file}")
            try:
                return pw_path.read_text(encoding="utf-8").rstrip("\n")
            except UnicodeDecodeError:
                raise self.fail(f"{key_path}.password_file", f"a UTF-8 text file ({pw_path})") from None
            except OSError as exc:
                raise self.fail(f"{key_path}.{file}", f"a readable file ({exc.strerror}: {pw_path})") from exc
        return None

    def basic_auth(self, value: Any, key_path: str) -> BasicAuth:
        section = self.mapping(value, key_path, ("username", "password", "password_env", "password_file"))
        username = self.string(section.get("username"), f"{key_path}.username")
        password = self.password(section, key_path)
        if password is None:
            raise self.fail(key_path, "one of password, password_env, password_file with username")
        return BasicAuth(username=username, password=password)

    def credentials(self, ssh: dict[str, Any], key_path: str) -> SSHCredentials:
        username = self.string(ssh.get("username"), f"{key_path}.username")
        password = self.password(ssh, key_path)
        private_key = None
        if "private_key" in ssh:
            private_key = self.path(ssh["private_key"], f"{key_path}.private_key")
            if not private_key.is_file():
                raise self.fail(f"{key_path}.private_key", f"an existing private key file ({private_key})")
        passphrase = None
        if "private_key_passphrase_env" in ssh:
            var = self.string(ssh["private_key_passphrase_env"], f"{key_path}.private_key_passphrase_env")
            if var not in self.environ:
                raise self.fail(f"{key_path}.private_key_passphrase_env", f"environment variable {var} to be set")
            passphrase = self.environ[var]
        if password is None and private_key is None:
            raise self.fail(key_path, "one of password, password_env, password_file or private_key")
        return SSHCredentials(
            username=username, password=password, private_key=private_key, private_key_passphrase=passphrase
        )

    def path(self, value: Any, key_path: str) -> Path:
        path = Path(self.string(value, key_path)).expanduser()
        return path if path.is_absolute() else self.base_dir / path


def _merge(defaults: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``defaults`` under ``entry`` one level into sections (``ssh``, ``tls``)."""
    merged: dict[str, Any] = dict(defaults)
    for key, value in entry.items():
        base = merged.get(key)
        if isinstance(base, dict) and isinstance(value, dict):
            section = dict(base)
            if key == "ssh" and any(k in value for k in ("password", "password_env", "password_file")):
                for secret in ("password", "password_env", "password_file"):
                    section.pop(secret, None)
            section.update(value)
            merged[key] = section
        else:
            merged[key] = value
    return merged
