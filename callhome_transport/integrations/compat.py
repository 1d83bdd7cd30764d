"""``call_home()``: a drop-in superset of ``ncclient.manager.call_home``.

It takes ncclient's keyword arguments and returns a standard ncclient
``Manager``, with the stock function's bugs fixed:

* IPv6: ``host="::"`` (or any IPv6 address) works; ``host=None`` binds every
  interface, IPv4 and IPv6.
* ``SO_REUSEADDR``: a second call on the same port right after the first does
  not fail with EADDRINUSE.
* The host key is checked against the *device's* pin (``hostkey_b64``) or, if
  none is given, against ``known_hosts`` entries for the device's address;
  stock ncclient looks up the *bind* address, so everyone disables checking.
* Separate timeouts: ``accept_timeout`` (how long to wait for the device to
  call), ``ssh_timeout`` (handshake + authentication), and the Manager's RPC
  ``timeout``; ``timeout`` alone sets all three, as in ncclient.
* A device with the wrong key (or failing authentication) does not end the
  wait: the listener keeps accepting until ``accept_timeout``, then raises the
  typed error of the last refused attempt.
* Bounded messages: a reply larger than ``max_message_size`` (default
  256 MiB) closes the session with
  :class:`~callhome_transport.errors.MessageTooLargeError` instead of growing
  the caller's memory; bytes that are not UTF-8 raise
  :class:`~callhome_transport.errors.MalformedMessageError`.

Keywords that cannot be honoured on a call-home connection (``sock``,
``sock_fd``, ``bind_addr``, ``ssh_config``, ``allow_agent=True``...) raise
:class:`~callhome_transport.errors.UnsupportedOptionError` naming them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncssh
from ncclient.manager import Manager

from ..addresses import NETCONF_CH_SSH_PORT, NETCONF_CH_TLS_PORT, PeerAddress, format_peer
from ..engine import EventLoopThread
from ..errors import (
    CallHomeError,
    DeviceNotConnectedError,
    HostKeyMismatchError,
    TransportError,
    UnknownDeviceError,
    UnsupportedOptionError,
)
from ..identity.inventory import (
    Device,
    HostKeyPin,
    IdentifierField,
    Inventory,
    SSHCredentials,
    StaleCRLPolicy,
    TLSIdentity,
    Transport,
    fingerprint_of_blob,
)
from ..identity.tls_trust import TLSTrust
from ..identity.trust import AcceptAnyKey, Identity, PinnedKeyTrust, PresentedKey, Trust
from ..transports.contract import DeviceConnection
from ..transports.listener import Listener
from ..transports.ssh import SSHClientConfig, host_key_algorithms, ssh_handshake
from ..transports.tls import TLSClientConfig, tls_handshake
from .netconf import DEFAULT_MAX_MESSAGE_SIZE, manager_over_socket

__all__ = ["call_home", "call_home_tls"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0  # ncclient's call_home accept timeout

_engine: EventLoopThread | None = None
_engine_lock = threading.Lock()


def _shared_engine() -> EventLoopThread:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = EventLoopThread(name="callhome-call_home")
        return _engine


# ncclient keywords with no meaning when the device opens the connection.
_REFUSED = {
    "sock": "call home accepts the device's connection; there is no socket to pass in",
    "sock_fd": "call home accepts the device's connection; there is no socket to pass in",
    "bind_addr": "call home does not dial out; use host= for the listen address",
    "ssh_config": "call home reads no ssh_config (credentials are chosen per identified device)",
    "environment": "no environment variables are sent to call-home devices",
    "use_libssh": "the SSH client role runs on asyncssh",
}


class _KnownHostsTrust:
    """``hostkey_verify=True`` without ``hostkey_b64``: trust the keys that
    ``known_hosts`` lists for the device's *address* (what a forward connection
    to that address would check), else ask ``unknown_host_cb``."""

    def __init__(
        self,
        files: Sequence[str],
        credentials: SSHCredentials,
        unknown_host_cb: Callable[[str, str], bool] | None,
    ) -> None:
        existing = [f for f in files if os.path.exists(f)]
        self._files = existing
        self._known = asyncssh.read_known_hosts(existing) if existing else None
        self._credentials = credentials
        self._unknown_host_cb = unknown_host_cb

    def identify(self, presented: PresentedKey) -> Identity | None:
        host, port = presented.peer_address
        trusted: list[asyncssh.SSHKey] = []
        if self._known is not None:
            trusted = list(asyncssh.match_known_hosts(self._known, host, host, port)[0])
        fingerprints = {fingerprint_of_blob(key.public_data) for key in trusted}
        if presented.fingerprint in fingerprints or (
            self._unknown_host_cb is not None and self._unknown_host_cb(host, presented.fingerprint)
        ):
            return Identity(device=host, credentials=self._credentials, fingerprint=presented.fingerprint)
        return None

    def key_types(self, peer: PeerAddress) -> list[str]:
        """The types of the keys known for ``peer``'s address (OpenSSH also
        prefers the algorithms of the keys it knows for a host); none known
        means any type (``unknown_host_cb`` may accept whatever comes)."""
        host, port = peer
        if self._known is None:
            return []
        return [key.get_algorithm() for key in asyncssh.match_known_hosts(self._known, host, host, port)[0]]

    def refusal(self, exc: UnknownDeviceError, peer: PeerAddress) -> CallHomeError:
        """What to say of a key this trust refused: there is no inventory here."""
        where = f"known_hosts for {peer[0]} ({', '.join(self._files) or 'no file found'})"
        if self._unknown_host_cb is not None:
            where += " and was not accepted by unknown_host_cb"
        return UnknownDeviceError(
            peer_address=peer, fingerprint=exc.fingerprint, key_type=exc.key_type, unknown_to=where
        )


def _trusted_key_types(trust: Trust, peer: PeerAddress) -> list[str]:
    """The types of the host keys ``trust`` accepts from ``peer`` (their
    algorithms are the ones offered); none means any."""
    if isinstance(trust, _KnownHostsTrust):
        return trust.key_types(peer)
    if isinstance(trust, PinnedKeyTrust):
        return list(trust.key_types)
    return []


def _pin_mismatch(expected: str, exc: UnknownDeviceError, peer: PeerAddress) -> CallHomeError:
    return HostKeyMismatchError(device=None, peer_address=peer, fingerprint=exc.fingerprint, expected=expected)


def _as_is(exc: UnknownDeviceError, peer: PeerAddress) -> CallHomeError:
    return exc


def _pin_from_b64(hostkey_b64: str) -> HostKeyPin:
    try:
        blob = base64.b64decode(hostkey_b64, validate=True)
    except (binascii.Error, ValueError):
        raise UnsupportedOptionError("hostkey_b64", "not valid base64 of an SSH public key blob") from None
    length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else 0
    key_type = blob[4 : 4 + length].decode("ascii", "replace")
    return HostKeyPin(fingerprint=fingerprint_of_blob(blob), key_type=key_type, public_key=f"{key_type} {hostkey_b64}")


def _credentials(
    username: str | None, password: str | None, key_filename: str | Sequence[str] | None
) -> SSHCredentials:
    if username is None:
        raise UnsupportedOptionError("username", "call home needs an explicit username (no local-user default)")
    keys = [key_filename] if isinstance(key_filename, str) else list(key_filename or [])
    if len(keys) > 1:
        raise UnsupportedOptionError("key_filename", "give one private key file per device")
    return SSHCredentials(username=username, password=password, private_key=Path(keys[0]) if keys else None)


def call_home(
    *,
    host: str | None = None,
    port: int = NETCONF_CH_SSH_PORT,
    timeout: float | None = None,
    accept_timeout: float | None = None,
    ssh_timeout: float | None = None,
    username: str | None = None,
    password: str | None = None,
    key_filename: str | Sequence[str] | None = None,
    hostkey_verify: bool = True,
    hostkey_b64: str | None = None,
    known_hosts: Sequence[str] | None = None,
    unknown_host_cb: Callable[[str, str], bool] | None = None,
    allow_agent: bool | None = None,
    look_for_keys: bool | None = None,
    keepalive: float | None = None,
    keepalive_count_max: int = 3,
    device_params: Mapping[str, Any] | None = None,
    manager_params: Mapping[str, Any] | None = None,
    nc_params: Mapping[str, Any] | None = None,
    errors_params: Mapping[str, Any] | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    **other: Any,
) -> Manager:
    """Listen on ``host``:``port`` (default every address, port 4334), wait for
    one device to call home, run the SSH client role over its connection and
    return a standard ncclient ``Manager`` on the ``netconf`` subsystem.

    Differs from ``ncclient.manager.call_home`` as the module docstring says;
    in short: IPv6, SO_REUSEADDR, the host key checked against the device's
    pin (``hostkey_b64``) or the device address's ``known_hosts`` entries,
    ``accept_timeout`` and ``ssh_timeout`` split out of ``timeout``, refused
    devices do not end the wait, and a message from the device over
    ``max_message_size`` bytes (256 MiB) closes the session with a typed error.
    ``unknown_host_cb(address, fingerprint)`` receives the device's address and
    its ``SHA256:`` fingerprint.

    Closing the Manager (``close_session()`` or leaving its ``with`` block)
    closes the SSH connection too.
    """
    for name in other:
        if name in _REFUSED:
            raise UnsupportedOptionError(name, _REFUSED[name])
        raise UnsupportedOptionError(name, "not a keyword of ncclient.manager.call_home / connect_ssh")
    if allow_agent:
        raise UnsupportedOptionError("allow_agent", "call home does not use an SSH agent; pass key_filename")
    if look_for_keys:
        raise UnsupportedOptionError("look_for_keys", "call home does not search for default keys; pass key_filename")

    base = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    accept_wait = base if accept_timeout is None else float(accept_timeout)
    ssh_config = SSHClientConfig(
        handshake_timeout=base if ssh_timeout is None else float(ssh_timeout),
        keepalive_interval=float(keepalive or 0),
        keepalive_count_max=keepalive_count_max,
    )
    rpc_timeout = base if timeout is not None else 30.0
    credentials = _credentials(username, password, key_filename)

    device = "call-home-device"
    trust: Trust
    refusal: Callable[[UnknownDeviceError, PeerAddress], CallHomeError] = _as_is
    if hostkey_b64:
        pin = _pin_from_b64(hostkey_b64)
        trust = PinnedKeyTrust(device, (pin,), credentials)
        refusal = functools.partial(_pin_mismatch, pin.fingerprint)
    elif hostkey_verify:
        files = list(known_hosts) if known_hosts is not None else [os.path.expanduser("~/.ssh/known_hosts")]
        known = _KnownHostsTrust(files, credentials, unknown_host_cb)
        trust, refusal = known, known.refusal
    else:
        trust = AcceptAnyKey(device, credentials)

    engine = _shared_engine()
    sock, conn = engine.run(_accept_one(host, port, _ssh_handshake(trust, ssh_config, refusal), accept_wait))

    def _release() -> None:
        engine.loop.call_soon_threadsafe(conn.close)

    try:
        return manager_over_socket(
            sock,
            device=conn.device,
            timeout=rpc_timeout,
            hello_timeout=ssh_config.handshake_timeout,
            device_params=device_params,
            manager_params=manager_params,
            nc_params=nc_params,
            errors_params=errors_params,
            on_close=_release,
            max_message_size=max_message_size,
        )
    except CallHomeError:
        _release()
        raise
    except Exception as exc:
        _release()
        raise TransportError(
            f"NETCONF hello with {format_peer(conn.peer_address)} failed: {exc}",
            device=conn.device,
            peer_address=conn.peer_address,
        ) from exc


async def _accept_one(
    host: str | None,
    port: int,
    handshake: Callable[[socket.socket, PeerAddress], Awaitable[DeviceConnection]],
    accept_timeout: float,
) -> tuple[socket.socket, DeviceConnection]:
    """Listen until one device is identified and authenticated by
    ``handshake`` (which raises the refusal to log), then stop listening;
    return the device's NETCONF stream and its connection.  A refused device
    does not end the wait; the last refusal is raised if no device comes."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[DeviceConnection] = loop.create_future()
    last_error: list[CallHomeError] = []

    async def _handle(sock: socket.socket, peer: PeerAddress) -> None:
        try:
            conn = await handshake(sock, peer)
        except CallHomeError as exc:
            log.warning("peer=%s %s", format_peer(peer), exc)
            last_error.append(exc)
            return
        if done.done():
            conn.close()
        else:
            done.set_result(conn)

    listener = Listener(_handle, listen_address=host, listen_port=port)
    await listener.start()
    try:
        conn = await asyncio.wait_for(asyncio.shield(done), accept_timeout)
    except TimeoutError:
        if last_error:
            raise last_error[-1] from None
        raise DeviceNotConnectedError(
            device=f"any device on port {listener.listen_port}", timeout=accept_timeout
        ) from None
    finally:
        await _close_listener_keeping(listener, done)
    try:
        return await conn.open_stream(), conn
    except BaseException:
        conn.close()
        raise


def _ssh_handshake(
    trust: Trust, config: SSHClientConfig, refusal: Callable[[UnknownDeviceError, PeerAddress], CallHomeError]
) -> Callable[[socket.socket, PeerAddress], Awaitable[DeviceConnection]]:
    """The SSH handshake of :func:`call_home`: ``refusal`` turns a refused host
    key into the error to log and raise (there is no inventory: the pin or
    known_hosts was consulted)."""

    async def handshake(sock: socket.socket, peer: PeerAddress) -> DeviceConnection:
        options = config.options(host_key_algorithms(_trusted_key_types(trust, peer)))
        try:
            return await ssh_handshake(sock, peer, trust, config, options)
        except UnknownDeviceError as exc:
            raise refusal(exc, peer) from exc

    return handshake


async def _close_listener_keeping(listener: Listener, done: asyncio.Future[Any]) -> None:
    """Close the listener; its handler tasks are finished or cancelled, but
    the accepted device's connection (already authenticated) lives on."""
    await listener.close()
    if not done.done():
        done.cancel()


def _load_all(paths: Sequence[str | os.PathLike[str]], what: str) -> list[bytes]:
    out = []
    for path in paths:
        try:
            out.append(Path(path).read_bytes())
        except OSError as exc:
            raise UnsupportedOptionError(what, f"cannot read {path}: {exc.strerror}") from exc
    return out


def call_home_tls(
    *,
    certfile: str | os.PathLike[str],
    keyfile: str | os.PathLike[str] | None = None,
    issuers: Sequence[str | os.PathLike[str]] = (),
    identifier: str | None = None,
    identifier_field: str = IdentifierField.SERIAL_NUMBER.value,
    pinned_certificates: Sequence[str | os.PathLike[str]] = (),
    crls: Sequence[str | os.PathLike[str]] = (),
    stale_crl: str = StaleCRLPolicy.REJECT.value,
    host: str | None = None,
    port: int = NETCONF_CH_TLS_PORT,
    timeout: float | None = None,
    accept_timeout: float | None = None,
    tls_timeout: float | None = None,
    device_params: Mapping[str, Any] | None = None,
    manager_params: Mapping[str, Any] | None = None,
    nc_params: Mapping[str, Any] | None = None,
    errors_params: Mapping[str, Any] | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> Manager:
    """The TLS twin of :func:`call_home`: listen on ``host``:``port`` (default
    every address, port 4335), wait for one device to call home, run the TLS
    client role with our ``certfile``/``keyfile``, accept the device only if its
    chain leads to one of ``issuers`` and carries ``identifier`` in
    ``identifier_field`` (or it is one of ``pinned_certificates``), check
    ``crls``, and return a standard ncclient ``Manager``.

    Stock ncclient has no TLS call home; its forward ``TLSSession`` stalls on
    messages over 4 KiB, which ours does not.  Closing the Manager closes the
    TLS connection (one NETCONF session per connection, RFC 7589).
    """
    from cryptography import x509

    try:
        identity = TLSIdentity(
            issuers=tuple(c for data in _load_all(issuers, "issuers") for c in x509.load_pem_x509_certificates(data)),
            identifier=identifier,
            identifier_field=IdentifierField(identifier_field),
            pinned_certificates=tuple(
                c
                for data in _load_all(pinned_certificates, "pinned_certificates")
                for c in x509.load_pem_x509_certificates(data)
            ),
            crls=tuple(x509.load_pem_x509_crl(data) for data in _load_all(crls, "crls")),
            stale_crl=StaleCRLPolicy(stale_crl),
        )
    except ValueError as exc:
        raise UnsupportedOptionError("issuers/identifier", str(exc)) from exc
    base = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    config = TLSClientConfig(
        certfile=Path(certfile),
        keyfile=Path(keyfile) if keyfile else None,
        handshake_timeout=base if tls_timeout is None else float(tls_timeout),
    )
    device = identifier or "call-home-device"
    trust = TLSTrust(Inventory([Device(name=_safe_name(device), transport=Transport.TLS, tls=identity)]))
    context = config.context(trust.anchors())
    accept_wait = base if accept_timeout is None else float(accept_timeout)
    engine = _shared_engine()
    handshake = functools.partial(tls_handshake, trust=trust, config=config, context=context)
    sock, conn = engine.run(_accept_one(host, port, handshake, accept_wait))
    try:
        return manager_over_socket(
            sock,
            device=conn.device,
            timeout=base if timeout is not None else 30.0,
            hello_timeout=config.handshake_timeout,
            device_params=device_params,
            manager_params=manager_params,
            nc_params=nc_params,
            errors_params=errors_params,
            max_message_size=max_message_size,
        )
    except CallHomeError:
        raise
    except Exception as exc:
        raise TransportError(
            f"NETCONF hello with {format_peer(conn.peer_address)} failed: {exc}",
            device=conn.device,
            peer_address=conn.peer_address,
        ) from exc


def _safe_name(identifier: str) -> str:
    name = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in identifier).lstrip(".")
    return name[:128] or "call-home-device"
