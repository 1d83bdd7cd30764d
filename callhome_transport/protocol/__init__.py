"""NETCONF itself, over any transport: framing, hellos, greeted sessions held per device."""
