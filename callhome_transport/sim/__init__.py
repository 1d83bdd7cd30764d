"""The embedded simulated call-home device (real SSH server, small NETCONF
datastore).  See :class:`SimulatedDevice`.

:class:`~.callhome.ModelCallHome` makes it the first device here that can be
provisioned through the standard model end to end: it stores the
ietf-netconf-server call-home configuration written with edit-config and
calls as it says, with the agent's scheduler (docs/agent.md)."""

from .datastore import Datastores, NetconfServerSession
from .device import SimulatedDevice

__all__ = ["Datastores", "NetconfServerSession", "SimulatedDevice"]
