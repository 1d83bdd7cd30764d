"""callhome_transport: NETCONF Call Home (RFC 8071) for Python.

The device opens the TCP connection; we run the SSH client role over it,
identify the device by its host key, authenticate with that device's
credentials, and hand a standard ``ncclient.manager.Manager`` to the caller.

Public API (stable names): :func:`call_home`, :class:`Inventory`,
:class:`CallHomeServer`, the errors in :mod:`callhome_transport.errors`.
"""

import logging
from typing import TYPE_CHECKING

from ._lazy import lazy_names

if TYPE_CHECKING:
    from .addresses import NETCONF_CH_SSH_PORT, NETCONF_CH_TLS_PORT, RESTCONF_CH_TLS_PORT
    from .errors import (
        AuthenticationFailedError,
        CallHomeError,
        CertificateRejectedError,
        ClientHelloError,
        DeviceDisconnectedError,
        DeviceNotConnectedError,
        DeviceStateError,
        HandshakeTimeoutError,
        HelloTimeoutError,
        HostKeyMismatchError,
        InventoryError,
        ListenerError,
        MalformedMessageError,
        MessageTooLargeError,
        OutboundSSHRefusedError,
        RevokedCertificateError,
        TransportError,
        TrustError,
        UnknownDeviceError,
        UnsupportedOptionError,
    )
    from .identity.inventory import (
        BasicAuth,
        Device,
        HoldPolicy,
        HostKeyPin,
        IdentifierField,
        Inventory,
        OutboundSSH,
        Quirk,
        SSHCredentials,
        StaleCRLPolicy,
        TLSIdentity,
        Transport,
    )
    from .integrations.compat import call_home, call_home_tls
    from .integrations.restconf import CallHomeAdapter, DeviceNotConnected, RestconfClient, RestconfError
    from .server import AsyncCallHomeServer, CallHomeServer, DeviceConnected, RejectedAttempt
    from .server.admission import AdmissionConfig, Penalties
    from .status import DeviceState, RefusalReason
    from .transports.outbound_ssh import JUNOS_OUTBOUND_SSH_PORT, OutboundSSHConfig
    from .transports.ssh import SSHClientConfig
    from .transports.tls import TLSClientConfig
    from .transports.tls_strict import HeartbeatConfig

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"

# Public names load their module on first use, so that a light client (the
# Ansible plugins import callhome_transport.gateway.client in every task's
# worker) does not pay for asyncssh, the TLS stacks and requests.
_LAZY = {
    "AdmissionConfig": "server.admission",
    "Penalties": "server.admission",
    "call_home": "integrations.compat",
    "call_home_tls": "integrations.compat",
    "AuthenticationFailedError": "errors",
    "CallHomeError": "errors",
    "CertificateRejectedError": "errors",
    "ClientHelloError": "errors",
    "DeviceDisconnectedError": "errors",
    "DeviceNotConnectedError": "errors",
    "DeviceStateError": "errors",
    "HandshakeTimeoutError": "errors",
    "HelloTimeoutError": "errors",
    "HostKeyMismatchError": "errors",
    "InventoryError": "errors",
    "ListenerError": "errors",
    "MalformedMessageError": "errors",
    "MessageTooLargeError": "errors",
    "OutboundSSHRefusedError": "errors",
    "RevokedCertificateError": "errors",
    "TransportError": "errors",
    "TrustError": "errors",
    "UnknownDeviceError": "errors",
    "UnsupportedOptionError": "errors",
    "BasicAuth": "identity.inventory",
    "Device": "identity.inventory",
    "HoldPolicy": "identity.inventory",
    "HostKeyPin": "identity.inventory",
    "IdentifierField": "identity.inventory",
    "Inventory": "identity.inventory",
    "OutboundSSH": "identity.inventory",
    "Quirk": "identity.inventory",
    "SSHCredentials": "identity.inventory",
    "StaleCRLPolicy": "identity.inventory",
    "TLSIdentity": "identity.inventory",
    "Transport": "identity.inventory",
    "NETCONF_CH_SSH_PORT": "addresses",
    "NETCONF_CH_TLS_PORT": "addresses",
    "RESTCONF_CH_TLS_PORT": "addresses",
    "JUNOS_OUTBOUND_SSH_PORT": "transports.outbound_ssh",
    "OutboundSSHConfig": "transports.outbound_ssh",
    "CallHomeAdapter": "integrations.restconf",
    "DeviceNotConnected": "integrations.restconf",
    "RestconfClient": "integrations.restconf",
    "RestconfError": "integrations.restconf",
    "AsyncCallHomeServer": "server",
    "CallHomeServer": "server",
    "DeviceConnected": "server",
    "RejectedAttempt": "server",
    "DeviceState": "status",
    "RefusalReason": "status",
    "SSHClientConfig": "transports.ssh",
    "TLSClientConfig": "transports.tls",
    "HeartbeatConfig": "transports.tls_strict",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())

__all__ = [
    "NETCONF_CH_SSH_PORT",
    "AdmissionConfig",
    "NETCONF_CH_TLS_PORT",
    "RESTCONF_CH_TLS_PORT",
    "AsyncCallHomeServer",
    "AuthenticationFailedError",
    "CallHomeAdapter",
    "CallHomeError",
    "CallHomeServer",
    "BasicAuth",
    "CertificateRejectedError",
    "ClientHelloError",
    "Device",
    "DeviceConnected",
    "DeviceDisconnectedError",
    "DeviceNotConnected",
    "DeviceNotConnectedError",
    "DeviceState",
    "DeviceStateError",
    "HandshakeTimeoutError",
    "HeartbeatConfig",
    "HelloTimeoutError",
    "HoldPolicy",
    "HostKeyMismatchError",
    "HostKeyPin",
    "IdentifierField",
    "Inventory",
    "InventoryError",
    "JUNOS_OUTBOUND_SSH_PORT",
    "ListenerError",
    "MalformedMessageError",
    "MessageTooLargeError",
    "OutboundSSH",
    "Quirk",
    "OutboundSSHConfig",
    "OutboundSSHRefusedError",
    "Penalties",
    "RefusalReason",
    "RejectedAttempt",
    "RestconfClient",
    "RestconfError",
    "RevokedCertificateError",
    "SSHClientConfig",
    "SSHCredentials",
    "StaleCRLPolicy",
    "TLSClientConfig",
    "TLSIdentity",
    "Transport",
    "TransportError",
    "TrustError",
    "UnknownDeviceError",
    "UnsupportedOptionError",
    "call_home",
    "call_home_tls",
]
