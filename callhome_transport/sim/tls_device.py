"""Simulated NETCONF-over-TLS and RESTCONF devices that call home (RFC 8071
S1-S7 for 4335 and 4336): the device opens TCP to the manager, runs the TLS
*server* role over it with its own certificate (subject serialNumber = its
name, issued by a simulated manufacturer CA, intermediates sent), requires
the manager's client certificate, then serves NETCONF (the small datastore of
:mod:`.datastore`) or a minimal RESTCONF API over h11.

:class:`SimPKI` makes the certificates for a fleet and writes the files a
manager needs (issuer, client certificate and key).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import ssl
from pathlib import Path
from typing import Any, cast

import h11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .datastore import Datastores, NetconfServerSession
from .restconf import RestconfData, YangSchema

__all__ = ["SimPKI", "SimulatedTLSDevice"]


def _name(cn: str, serial: str | None = None) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Simulated Manufacturer"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ]
    if serial:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    return x509.Name(attrs)


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    eku: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name = issuer[0].subject if issuer else subject
    signer = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class SimPKI:
    """A manufacturer CA for simulated devices and a manager CA + client
    certificate, written under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _cert(_name("Simulated Manufacturer Root CA"), self._ca_key, None, ca=True)
        manager_ca_key = ec.generate_private_key(ec.SECP256R1())
        manager_ca = _cert(_name("Simulated Manager CA"), manager_ca_key, None, ca=True)
        manager_key = ec.generate_private_key(ec.SECP256R1())
        manager = _cert(
            _name("manager"), manager_key, (manager_ca, manager_ca_key), ca=False, eku=ExtendedKeyUsageOID.CLIENT_AUTH
        )
        self.ca_file = directory / "device-ca.pem"
        self.ca_file.write_bytes(_pem(self.ca))
        self.manager_ca_file = directory / "manager-ca.pem"
        self.manager_ca_file.write_bytes(_pem(manager_ca))
        self.manager_cert = directory / "manager.pem"
        self.manager_cert.write_bytes(_pem(manager))
        self.manager_key = directory / "manager.key"
        self.manager_key.write_bytes(_key_pem(manager_key))
        self.manager_key.chmod(0o600)

    def device_context(self, serial: str) -> ssl.SSLContext:
        """A TLS server context for device ``serial``, requiring the manager's certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(
            _name(serial.lower(), serial), key, (self.ca, self._ca_key), ca=False, eku=ExtendedKeyUsageOID.SERVER_AUTH
        )
        base = self.directory / "devices"
        base.mkdir(exist_ok=True)
        cert_file, key_file = base / f"{serial}.pem", base / f"{serial}.key"
        cert_file.write_bytes(_pem(cert))
        key_file.write_bytes(_key_pem(key))
        key_file.chmod(0o600)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert_file, key_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(self.manager_ca_file))
        return ctx


class _Protocol(asyncio.Protocol):
    def __init__(self, device: SimulatedTLSDevice) -> None:
        self.device = device
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.netconf: NetconfServerSession | None = None
        self.http: h11.Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # TLS is up: start at once, before the first byte from the manager
        # is delivered (a manager may send its hello right away)
        self.transport = cast(asyncio.Transport, transport)
        self.start()

    def start(self) -> None:
        assert self.transport is not None
        if self.device.protocol == "netconf":
            self.netconf = NetconfServerSession(self.device.datastores)
            self.transport.write(self.netconf.start())
        else:
            self.http = h11.Connection(h11.SERVER)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.netconf is not None:
            reply = self.netconf.receive(data)
            if reply:
                self.transport.write(reply)
            if self.netconf.closed:
                self.transport.close()
        elif self.http is not None:
            self.http.receive_data(data)
            self._serve_http()

    def _serve_http(self) -> None:
        assert self.http is not None and self.transport is not None
        while True:
            try:
                event = self.http.next_event()
            except h11.RemoteProtocolError:
                self.transport.close()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                if self.http.our_state is h11.DONE and self.http.their_state is h11.DONE:
                    self.http.start_next_cycle()
                    continue
                return
            if isinstance(event, h11.Request):
                self._request = event
                self._body = b""
            elif isinstance(event, h11.Data):
                self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                status, body = self.device.restconf(
                    self._request.method.decode(), self._request.target.decode(), self._body
                )
                headers = [("Content-Type", "application/yang-data+json"), ("Content-Length", str(len(body)))]
                self.transport.write(self.http.send(h11.Response(status_code=status, headers=headers)))
                self.transport.write(self.http.send(h11.Data(data=body)))
                self.transport.write(self.http.send(h11.EndOfMessage()))
            elif isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if self.netconf is not None:
            self.netconf.abort()
        if not self.closed.done():
            self.closed.set_result(None)


class SimulatedTLSDevice:
    """A NETCONF-over-TLS (``protocol="netconf"``) or RESTCONF device.

    As a RESTCONF device it serves ``ietf-system:system`` from a plain JSON
    document, and, given a ``schema``, the data resources of the schema's
    modules from ``datastores`` (:mod:`.restconf`): pass the
    :attr:`~.device.SimulatedDevice.datastores` of a NETCONF device to make
    the two one device with two management interfaces."""

    def __init__(
        self,
        name: str,
        pki: SimPKI,
        *,
        protocol: str = "netconf",
        datastores: Datastores | None = None,
        schema: YangSchema | None = None,
    ) -> None:
        if protocol not in ("netconf", "restconf"):
            raise ValueError("protocol must be 'netconf' or 'restconf'")
        self.name = name
        self.protocol = protocol
        self.context = pki.device_context(name)
        self.datastores = datastores if datastores is not None else Datastores(hostname=name.lower())
        # RESTCONF data resources of the schema's modules live in the NETCONF datastore
        self.resources = RestconfData(self.datastores, schema) if schema is not None else None
        self.data: dict[str, Any] = {"ietf-system:system": {"hostname": name.lower(), "location": "lab"}}
        self._proto: _Protocol | None = None

    async def call_home(self, host: str, port: int, **_: Any) -> None:
        """Connect, run the TLS server role, serve until closed.  Returns once TLS is up.

        The socket is connected first and then handed to asyncio as an
        accepted one with a server context, so TLS starts with the first byte
        the manager sends (no window for its ClientHello to be missed)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, address = infos[0][0], infos[0][4]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
            _transport, proto = await loop.connect_accepted_socket(
                lambda: _Protocol(self), sock, ssl=self.context, ssl_handshake_timeout=30
            )
        except BaseException:
            sock.close()
            raise
        self._proto = proto

    def restconf(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        if target == "/.well-known/host-meta":
            return (
                200,
                b'<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0"><Link rel="restconf" href="/restconf"/></XRD>',
            )
        if self.resources is not None and self.resources.handles(target):
            return self.resources.request(method, target, body)
        top = target.removeprefix("/restconf/data/").split("?")[0]
        if top in self.data:
            if method == "GET":
                return 200, json.dumps({top: self.data[top]}).encode()
            if method == "PATCH":
                self.data[top].update(json.loads(body or b"{}").get(top, {}))
                return 204, b""
        error = {
            "ietf-restconf:errors": {
                "error": [{"error-type": "protocol", "error-tag": "invalid-value", "error-path": f"/{top}"}]
            }
        }
        return 404, json.dumps(error).encode()

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()

    async def wait_closed(self) -> None:
        if self._proto is not None:
            await self._proto.closed
