"""A direct-TLS handshake running in a worker thread ends when its
connection is shut down (an early drop by admission, a timeout), so the
worker is free again at once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import time
from pathlib import Path

import pytest

from callhome_transport.errors import TransportError
from callhome_transport.identity.inventory import Inventory
from callhome_transport.identity.tls_trust import TLSTrust
from callhome_transport.transports.tls import TLSClientConfig, tls_handshake_direct
from tests.pki import DevicePKI


def test_shutting_the_accepted_socket_down_ends_a_direct_handshake_at_once(tmp_path: Path) -> None:
    # failed before: the SSLSocket had taken the accepted socket's descriptor
    # over, so admission's shutdown of it (an early drop) failed silently and
    # the worker stayed in the handshake until its own 5 s deadline
    pki = DevicePKI(tmp_path)
    config = TLSClientConfig(certfile=pki.manager_cert, keyfile=pki.manager_key, handshake_timeout=5)
    context = config.context([pki.root_a.cert])
    with socket.create_server(("127.0.0.1", 0)) as server:  # TCP: the handshake sets keepalive options
        ours = socket.create_connection(server.getsockname())
        silent, _ = server.accept()  # a device that never answers our ClientHello
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        handshake = loop.create_task(
            tls_handshake_direct(ours, ("192.0.2.7", 1), TLSTrust(Inventory([])), config, context, executor)
        )
        await asyncio.sleep(0.2)  # the worker is in the handshake now
        dropped_at = time.monotonic()
        with contextlib.suppress(OSError):
            ours.shutdown(socket.SHUT_RDWR)  # what PendingConnection.end does
        with pytest.raises(TransportError):
            await handshake
        return time.monotonic() - dropped_at

    try:
        assert asyncio.run(main()) < 1.0
        executor.submit(lambda: None).result(timeout=1)
    finally:
        silent.close()
        executor.shutdown(wait=False)
