"""The call-home gateway: ``callhome serve`` holds the fleet's call-home
sessions and exposes each device at a local Unix socket.

``Gateway``, ``GatewayConfig`` and ``run`` load on first use: the clients in
:mod:`callhome_transport.gateway.client` need none of the service's imports.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import GatewayConfig
    from .service import Gateway, run

_LAZY = {"GatewayConfig": "config", "Gateway": "service", "run": "service"}

__all__ = ["Gateway", "GatewayConfig", "run"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
