"""Where a call comes from and where it lands: the peer address of an accepted
connection and the IANA call-home ports (RFC 8071 s6).  Below every room that
names a peer (identity, the NETCONF sessions, the transports)."""

from __future__ import annotations

__all__ = ["NETCONF_CH_SSH_PORT", "NETCONF_CH_TLS_PORT", "RESTCONF_CH_TLS_PORT", "PeerAddress", "format_peer"]

NETCONF_CH_SSH_PORT = 4334  # RFC 8071 s6: netconf-ch-ssh
NETCONF_CH_TLS_PORT = 4335  # RFC 8071 s6: netconf-ch-tls
RESTCONF_CH_TLS_PORT = 4336  # RFC 8071 s6: restconf-ch-tls

PeerAddress = tuple[str, int]


def format_peer(peer: PeerAddress | None) -> str:
    """``127.0.0.1:53122`` or ``[::1]:53122``."""
    if peer is None:
        return "-"
    host, port = peer
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
