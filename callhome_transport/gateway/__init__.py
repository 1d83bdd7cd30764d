"""The call-home gateway: ``callhome serve`` holds the fleet's call-home
sessions and exposes each device at a local Unix socket."""

from .config import GatewayConfig
from .service import Gateway, run

__all__ = ["Gateway", "GatewayConfig", "run"]
