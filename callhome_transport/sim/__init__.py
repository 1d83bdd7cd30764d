"""The embedded simulated call-home device (real SSH server, small NETCONF
datastore).  See :class:`SimulatedDevice`."""

from .datastore import Datastores, NetconfServerSession
from .device import SimulatedDevice

__all__ = ["Datastores", "NetconfServerSession", "SimulatedDevice"]
