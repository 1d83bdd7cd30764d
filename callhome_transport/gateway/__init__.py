"""The call-home gateway: ``callhome serve`` holds the fleet's call-home
sessions and exposes each device at a local Unix socket.

Clients: :func:`connect` (a standard ncclient ``Manager`` on a device, the
fast path) and :class:`GatewayClient` (the control API).  ``Gateway``,
``GatewayConfig`` and ``run`` load on first use: the clients in
:mod:`callhome_transport.gateway.client` need none of the service's imports.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from .client import GatewayClient, connect
    from .config import GatewayConfig
    from .service import Gateway, run

_LAZY = {
    "connect": "client",
    "GatewayClient": "client",
    "GatewayConfig": "config",
    "Gateway": "service",
    "run": "service",
}

__all__ = ["Gateway", "GatewayClient", "GatewayConfig", "connect", "run"]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
