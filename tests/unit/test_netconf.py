"""The ncclient hand-off over a socketpair: hello, immediate send, framing switch."""

from __future__ import annotations

import socket
import threading
import time

from ncclient import manager as nc_manager
from ncclient.transport.session import NetconfBase

from callhome_transport.integrations.netconf import StreamSession, manager_over_socket
from callhome_transport.protocol.framing import FrameDecoder, Framing, encode
from callhome_transport.sim.datastore import Datastores, NetconfServerSession


def serve(sock: socket.socket, stores: Datastores) -> None:
    """A minimal NETCONF server on one end of a socketpair (our sans-I/O session)."""
    session = NetconfServerSession(stores)
    sock.sendall(session.start())
    while not session.closed:
        data = sock.recv(65536)
        if not data:
            break
        reply = session.receive(data)
        if reply:
            sock.sendall(reply)
    sock.close()


def test_manager_over_socket_runs_rpcs_without_the_100ms_tick() -> None:
    ours, theirs = socket.socketpair()
    stores = Datastores(hostname="r1")
    server = threading.Thread(target=serve, args=(theirs, stores), daemon=True)
    server.start()
    closed: list[bool] = []
    m = manager_over_socket(ours, device="R1", on_close=lambda: closed.append(True))
    try:
        assert m.session_id == str(m._session.id)
        assert ":base:1.1" in " ".join(m.server_capabilities)
        started = time.perf_counter()
        for _ in range(20):
            m.get_config(source="running")
        per_rpc = (time.perf_counter() - started) / 20
        # stock ncclient waits for its 0.1 s TICK on every send; 20 RPCs would take >= 2 s
        assert per_rpc < 0.05, per_rpc
    finally:
        m.close_session()
    server.join(5)
    assert closed == [True]


def test_large_reply_is_not_stalled() -> None:
    ours, theirs = socket.socketpair()
    stores = Datastores(hostname="r1")
    big = "x" * 300_000
    edit = (
        '<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
        f'<system xmlns="urn:ietf:params:xml:ns:yang:ietf-system"><contact>{big}</contact></system></config>'
    )
    threading.Thread(target=serve, args=(theirs, stores), daemon=True).start()
    with manager_over_socket(ours, device="R1", timeout=10) as m:
        m.edit_config(target="running", config=edit)
        assert big in m.get_config(source="running").xml


def test_encode_decode_agree_with_ncclient_chunking() -> None:
    # what StreamSession.send writes for base:1.1 decodes with our decoder
    message = b"<rpc message-id='1'/>"
    ours, theirs = socket.socketpair()
    session = StreamSession(nc_manager.make_device_handler({}, []), device="R1", hello_settle=0)
    session._socket, session._connected, session._base = ours, True, NetconfBase.BASE_11
    session._hello_sent_at = session._first_rpc_sent = True  # past the hello: framed as base:1.1
    session.send(message.decode())
    wire = theirs.recv(65536)
    assert FrameDecoder(Framing.CHUNKED).feed(wire) == [message]
    assert wire == encode(message, Framing.CHUNKED)
    session.close()
    theirs.close()


def test_closed_sessions_leave_no_reader_thread() -> None:
    # failed before: close() closed the descriptor under the reader's select,
    # which then polled it every 100 ms for ever (176-196 of 300 stayed alive)
    def readers() -> int:
        return sum(t.name == "callhome-netconf-LEAK-1" for t in threading.enumerate())

    servers = []
    for _ in range(30):
        ours, theirs = socket.socketpair()
        server = threading.Thread(target=serve, args=(theirs, Datastores(hostname="r1")), daemon=True)
        server.start()
        servers.append(server)
        m = manager_over_socket(ours, device="LEAK-1")
        m._session.close()  # the Manager's own close, without a close-session RPC
    for server in servers:
        server.join(5)
    deadline = time.monotonic() + 5
    while readers() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert readers() == 0
