"""The transports: the reversed-TCP listener, SSH (RFC 8071), TLS (RFC 7589, and the
strict C4 stack), Junos outbound-ssh, and the relay between a device stream and a local socket."""
