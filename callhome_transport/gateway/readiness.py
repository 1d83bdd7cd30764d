"""Telling a supervisor that the gateway is ready: systemd's notification
protocol (``Type=notify``) and a ready file for everything else.

The systemd side is one datagram to the Unix socket named by
``$NOTIFY_SOCKET`` (``sd_notify(3)``: newline-separated ``KEY=VALUE``
assignments such as ``READY=1``); a name starting with ``@`` is in the
abstract namespace.  No dependency on libsystemd.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["remove_ready_file", "sd_notify", "write_ready_file"]

log = logging.getLogger(__name__)


def sd_notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=..."``) to systemd; return
    whether a notification socket was there to send it to.  Never raises:
    a supervisor that went away must not stop the gateway."""
    target = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not target:
        return False
    if target.startswith("@"):
        address = "\0" + target[1:]  # abstract namespace
    elif target.startswith("/"):
        address = target
    else:
        log.warning("NOTIFY_SOCKET=%s is not a Unix socket path: not notifying", target)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", target, exc)
        return False
    return True


def write_ready_file(path: Path, content: Mapping[str, Any]) -> None:
    """Write ``content`` as JSON to ``path`` atomically (a reader sees the
    whole file or none).  Raises :class:`OSError`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def remove_ready_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
