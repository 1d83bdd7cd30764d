"""Which device is calling: the inventory, SSH host-key trust and TLS certificate identity (no I/O)."""
