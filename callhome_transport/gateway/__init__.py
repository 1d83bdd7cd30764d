"""The call-home gateway: ``callhome serve`` holds the fleet's call-home
sessions and exposes each device at a local Unix socket.

``Gateway``, ``GatewayConfig`` and ``run`` load on first use: the clients in
:mod:`callhome_transport.gateway.client` need none of the service's imports.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from .config import GatewayConfig
    from .service import Gateway, run

_LAZY = {"GatewayConfig": "config", "Gateway": "service", "run": "service"}

__all__ = ["Gateway", "GatewayConfig", "run"]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
