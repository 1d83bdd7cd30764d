"""The "add a transport" dry run: a transport written in one file (this one)
plugs into the server with no change to the registry, the accept path, the
refusals, the metrics or the callers' side.

A real transport takes at most four files: its module under
``callhome_transport/transports/`` (connection class, handshake, acceptor,
as here), its inventory section (``identity/inventory.py``), one
``_listen`` line and its port in ``AsyncCallHomeServer.__init__``
(``server/core.py``), and a simulated device (``sim/``).  Here the
inventory reuses an existing section and the "device" is a loopback client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import ClassVar

import pytest

from callhome_transport import AsyncCallHomeServer, Device, HostKeyPin, Inventory, SSHCredentials
from callhome_transport._log import ContextAdapter
from callhome_transport.errors import CallHomeError, TransportError, UnknownDeviceError
from callhome_transport.identity.inventory import Transport
from callhome_transport.server import DeviceConnected, DeviceDisconnected
from callhome_transport.status import DeviceState, RefusalReason
from callhome_transport.transports.contract import ConnectionBase, Handshake
from callhome_transport.transports.preauth import PendingConnection

log = logging.getLogger("tests.fake_transport")


# -- the whole transport ---------------------------------------------------------------


class LineConnection(ConnectionBase):
    """A "transport" whose device says ``IAM <name>`` and is believed (a toy:
    no identity check), then stays until it hangs up."""

    transport = Transport.SSH  # a real transport adds its own Transport member
    pooled: ClassVar[bool] = False

    def __init__(self, handshake: Handshake, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(handshake)
        self._writer = writer
        asyncio.get_running_loop().create_task(self._watch(reader))

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        await reader.read()  # until the device hangs up
        self._end("closed by device")

    def _end(self, reason: str) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)

    def close(self) -> None:
        self._writer.close()
        self._end("closed")


class LineAcceptor:
    """The acceptor: nothing to wait for first; the handshake reads one line."""

    label = kind = "line"
    tls = False
    transports: tuple[Transport, ...] = ()

    def __init__(self, known: set[str]) -> None:
        self.known = known

    async def before_handshake(self, pending: PendingConnection) -> None:
        return None

    async def handshake(self, pending: PendingConnection) -> LineConnection:
        reader, writer = await asyncio.open_connection(sock=pending.sock)
        line = (await asyncio.wait_for(reader.readline(), 5)).decode().split()
        if len(line) != 2 or line[0] != "IAM" or line[1] not in self.known:
            writer.close()
            raise UnknownDeviceError(peer_address=pending.peer, fingerprint=f"LINE:{line}", key_type="line")
        logger = ContextAdapter(log, device=line[1])
        handshake = Handshake(
            device=line[1],
            fingerprint=f"LINE:{line[1]}",
            peer_address=pending.peer,
            log=logger,
            accepted_at=pending.accepted_at,
        )
        return LineConnection(handshake, reader, writer)

    def refusal_kind(self, exc: CallHomeError) -> str:
        return self.kind


# -- the dry run -------------------------------------------------------------------------


def test_a_transport_in_one_file_takes_the_servers_whole_path() -> None:
    pin = HostKeyPin.parse("SHA256:" + "A" * 43)
    inventory = Inventory([Device(name="L1", host_keys=(pin,), credentials=SSHCredentials(username="u", password="p"))])
    events: list[object] = []

    async def main() -> None:
        server = AsyncCallHomeServer(inventory, listen_address="127.0.0.1", listen_port=0, tls=None)
        server.add_acceptor(LineAcceptor({"L1"}), port=0, listen_address="127.0.0.1")
        server.registry.on_connected(events.append)
        server.registry.on_disconnected(events.append)
        async with server:
            port = server.listen_ports()["line"]
            # an impostor first: refused, recorded, charged like any refusal
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"IAM nobody\n")
            waiter = asyncio.ensure_future(server.wait_for("L1", 5))
            _, device = await asyncio.open_connection("127.0.0.1", port)
            device.write(b"IAM L1\n")
            conn = await waiter
            assert isinstance(conn, LineConnection)
            with pytest.raises(TransportError, match="not RESTCONF"):
                await server.open_restconf("L1", 1)  # the contract's transport, not the class, decides
            assert server.registry.status("L1").state is DeviceState.CONNECTED
            assert server.metrics.value("callhome_handshakes_total", transport="ssh", result="ok") == 1
            deadline = time.monotonic() + 5
            while not server.rejected and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            [refused] = server.rejected
            assert refused.reason is RefusalReason.UNKNOWN_DEVICE
            assert server.metrics.value("callhome_handshakes_total", transport="line", result="unknown-device") == 1
            device.close()
            assert await conn.wait_closed() == "closed by device"
            while server.registry.status("L1").state is DeviceState.CONNECTED and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert server.registry.status("L1").state is DeviceState.DISCONNECTED
            w.close()

    asyncio.run(main())
    assert [type(e) for e in events] == [DeviceConnected, DeviceDisconnected]
