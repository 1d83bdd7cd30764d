"""The call-home server: admission of accepted connections, the registry of
connected devices, and the synchronous facade.  The public names load their
module on first use."""

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from .core import AsyncCallHomeServer, CallHomeServer, DeviceConnected, PreparedInventory, RejectedAttempt

_LAZY = {
    "AsyncCallHomeServer": "core",
    "CallHomeServer": "core",
    "DeviceConnected": "core",
    "PreparedInventory": "core",
    "RejectedAttempt": "core",
}

__all__ = ["AsyncCallHomeServer", "CallHomeServer", "DeviceConnected", "PreparedInventory", "RejectedAttempt"]

__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
