"""The gateway's HTTP endpoints refuse what they cannot answer safely, on a
real ``callhome serve`` process: a wait timeout that is not a finite number
of seconds in range, and a request with both Content-Length and
Transfer-Encoding (RFC 9112 s6.1)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callhome_transport.gateway.client import UnixHTTPConnection

from ..pki import DevicePKI
from .test_gateway import GatewayProcess, restconf_gateway

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevicePKI:
    return DevicePKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, pki: DevicePKI) -> Iterator[GatewayProcess]:
    gw = restconf_gateway(tmp_path_factory.mktemp("gw"), pki, deferral_timeout=1)  # SN-0004 never calls
    yield gw
    assert gw.stop() == 0


def strict_json(text: str) -> Any:
    """JSON as RFC 8259 has it: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def control_get(gw: GatewayProcess, path: str) -> tuple[int, str]:
    conn = UnixHTTPConnection(str(gw.run_dir / "control.sock"), 5)  # a wait must not outlast this
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.mark.parametrize("timeout", ["1e400", "inf", "nan", "-1", "86401", "soon"])
def test_wait_timeout_must_be_a_finite_number_in_range(gateway: GatewayProcess, timeout: str) -> None:
    # failed before the fix: 1e400, inf and 86401 waited (forever), nan answered NaN (not JSON), -1 a 504
    status, body = control_get(gateway, f"/devices/SN-0004/wait?timeout={timeout}")
    assert status == 400
    answer = strict_json(body)
    assert answer == {"error": "timeout must be a number of seconds from 0 to 86400", "timeout": timeout}


def test_wait_timeout_in_range_still_waits(gateway: GatewayProcess) -> None:
    status, body = control_get(gateway, "/devices/SN-0004/wait?timeout=0.2")
    assert status == 504
    assert strict_json(body)["timeout"] == 0.2


def exchange(path: Path, request: bytes) -> tuple[bytes, bool]:
    """Send ``request``; return the answer and whether the gateway then
    closed the connection (EOF within 5 s)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(request)
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except TimeoutError:
            return answer, False
        return answer, True


@pytest.mark.parametrize("endpoint", ["control.sock", "devices/SN-0004/restconf.sock"])
def test_content_length_with_transfer_encoding_is_refused_and_closed(gateway: GatewayProcess, endpoint: str) -> None:
    # failed before the fix: h11 took the chunked body, answered, and kept the connection open
    request = (
        b"POST /restconf/data HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    answer, closed = exchange(gateway.run_dir / endpoint, request)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"RFC 9112 s6.1" in answer
    assert closed, "the connection stayed open after the ambiguous request"


def test_keep_alive_still_serves_a_second_request(gateway: GatewayProcess) -> None:
    get = b"GET /devices HTTP/1.1\r\nHost: gw\r\n\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(gateway.run_dir / "control.sock"))
        for _ in range(2):
            sock.sendall(get)
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(65536)
            head, _, body = answer.partition(b"\r\n\r\n")
            length = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
            while len(body) < length:
                body += sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert strict_json(body.decode())[0]["name"] == "SN-0004"
