"""The device side of call home (RFC 8071 S1-S2): ``callhome agent``.

A NETCONF server without call home (yuma123 netconfd behind OpenSSH, older
netopeer2, an OpenSSH ``netconf`` subsystem) gets it from the agent, driven by
the same configuration a device with native call home takes: the call-home
subtree of ``ietf-netconf-server`` (revisions 2019-07-02, 2023-12-28,
2025-04-24), as RFC 7951 JSON or XML.  The agent dials the managers with the
model's reconnect strategy and splices each connection to the device's own
SSH or TLS server, so the server role, host key and client authentication
stay with the real server.

Rooms: :mod:`.model` (the configuration as dataclasses), :mod:`.config` (the
parser, with key-path errors), :mod:`.schedule` (the sans-I/O reconnect
scheduler, shared with the simulated device), :mod:`.runner` (the sockets).
This package never imports the manager side (server, gateway, plugins).
"""

from .config import DEFAULT_REVISION, load_config, parse_config
from .model import AgentConfig, Endpoint, NetconfClient, Periodic, Persistent, ReconnectStrategy, StartWith
from .schedule import CancelDial, Dial, Exhausted, Hangup, Scheduler, Timing

__all__ = [
    "DEFAULT_REVISION",
    "AgentConfig",
    "CancelDial",
    "Dial",
    "Endpoint",
    "Exhausted",
    "Hangup",
    "NetconfClient",
    "Periodic",
    "Persistent",
    "ReconnectStrategy",
    "Scheduler",
    "StartWith",
    "Timing",
    "load_config",
    "parse_config",
]
