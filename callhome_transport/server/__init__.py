"""The call-home server: admission of accepted connections, the registry of
connected devices, and the synchronous facade.  The public names load their
module on first use."""

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from .core import AsyncCallHomeServer, PreparedInventory
    from .facade import CallHomeServer
    from .registry import DeviceConnected, DeviceDisconnected, Registry, RejectedAttempt

_LAZY = {
    "AsyncCallHomeServer": "core",
    "CallHomeServer": "facade",
    "DeviceConnected": "registry",
    "DeviceDisconnected": "registry",
    "PreparedInventory": "core",
    "Registry": "registry",
    "RejectedAttempt": "registry",
}

__all__ = [
    "AsyncCallHomeServer",
    "CallHomeServer",
    "DeviceConnected",
    "DeviceDisconnected",
    "PreparedInventory",
    "Registry",
    "RejectedAttempt",
]

__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
