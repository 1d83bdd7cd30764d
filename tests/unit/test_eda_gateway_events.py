"""The Event-Driven Ansible source ``callhome.network.gateway_events`` without
sockets: its arguments, the HTTP answer parsed one byte at a time, and the
resume position (epoch adopted with the first line, restarts, the state file).
It runs in ansible-rulebook's Python, so it is loaded from its file here, as
the rulebook loads it (standard library only)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "extensions" / "eda" / "plugins" / "event_source" / "gateway_events.py"


def load_plugin(name: str = "gateway_events") -> ModuleType:
    """A fresh copy of the plugin module, loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, PLUGIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ge = load_plugin()


def chunked(*parts: bytes, headers: str = "") -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nCallhome-Events-Epoch: e1\r\n{headers}"
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)
    return head.encode() + b"Transfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n"


def line(**fields: Any) -> bytes:
    return json.dumps(fields).encode() + b"\n"


E1 = line(id=1, type="device-connected", device="A", first_call=True)
E2 = line(id=2, type="device-disconnected", device="A", reason="closed")
E3 = line(id=3, type="local-session-opened", device="A", session=1)


def feed_bytewise(parser: Any, data: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(len(data)):
        out += parser.feed(data[i : i + 1])
    return out


# -- the standard library only ----------------------------------------------------------


def test_the_plugin_imports_only_the_standard_library() -> None:
    code = (
        "import sys, importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('ge', {str(PLUGIN)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in "
        "('callhome_transport', 'ansible', 'ansible_collections', 'aiohttp', 'requests', 'yaml')))"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# -- arguments ---------------------------------------------------------------------------


def test_defaults_from_the_environment() -> None:
    options = ge.Options({}, environ={"CALLHOME_RUN_DIR": "/srv/gw"})
    assert options.socket_path == "/srv/gw/control.sock"
    assert (options.types, options.since, options.state_file, options.reconnect_delay) == ((), None, None, 5.0)
    assert ge.Options({}, environ={}).socket_path == "/run/callhome/control.sock"
    assert ge.Options({"run_dir": "/x"}, environ={"CALLHOME_RUN_DIR": "/y"}).socket_path == "/x/control.sock"


def test_types_as_a_list_or_a_comma_separated_string() -> None:
    assert ge.Options({"types": ["device-connected", "device-rejected"]}).types == (
        "device-connected",
        "device-rejected",
    )
    assert ge.Options({"types": "device-connected, source-blocked,device-connected"}).types == (
        "device-connected",
        "source-blocked",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"run-dir": "/x"}, "unknown argument run-dir (known: run_dir, types, since, state_file, reconnect_delay)"),
        ({"types": ["connected"]}, "unknown event type 'connected' in types (known: device-connected, "),
        ({"types": 3}, "types must be a list of event types"),
        ({"since": -1}, "since must be an event id (a whole number >= 0), not -1"),
        ({"since": "5"}, "since must be an event id (a whole number >= 0), not '5'"),
        ({"since": True}, "since must be an event id"),
        ({"run_dir": 7}, "run_dir must be a directory path"),
        ({"state_file": ""}, "state_file must be a file path"),
        ({"reconnect_delay": 0}, "reconnect_delay must be a number of seconds > 0, not 0"),
    ],
)
def test_bad_arguments_name_what_is_wrong(args: dict[str, Any], message: str) -> None:
    with pytest.raises(ge.BadArguments) as info:
        ge.Options(args, environ={})
    assert message in str(info.value)
    assert str(info.value).startswith("callhome.network.gateway_events: ")


# -- the answer, one byte at a time -------------------------------------------------------


def test_a_chunked_answer_fed_one_byte_at_a_time() -> None:
    parser = ge.ResponseParser()
    data = chunked(E1 + E2[:10], E2[10:], E3)
    got = feed_bytewise(parser, data)
    assert [item["id"] for item in got] == [1, 2, 3]
    assert parser.status == 200 and parser.headers["callhome-events-epoch"] == "e1"
    assert parser.done
    assert parser.eof() == []


def test_a_line_split_across_chunks_and_reads_comes_out_once_whole() -> None:
    data = chunked(E1[:5], E1[5:-1], E1[-1:] + E2)
    for cut in range(1, len(data)):
        parser = ge.ResponseParser()
        got = parser.feed(data[:cut]) + parser.feed(data[cut:])
        assert [item["id"] for item in got] == [1, 2], cut


def test_chunk_extensions_and_trailers_are_tolerated() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    data = head + b"%x;ext=1\r\n%s\r\n0\r\nX-Trailer: y\r\n\r\n" % (len(E1), E1)
    parser = ge.ResponseParser()
    assert [i["id"] for i in feed_bytewise(parser, data)] == [1]
    assert parser.done


def test_a_sized_answer_and_one_delimited_by_close() -> None:
    parser = ge.ResponseParser()
    body = E1 + E2
    got = parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert [i["id"] for i in got] == [1, 2] and parser.done
    parser = ge.ResponseParser()
    got = parser.feed(b"HTTP/1.0 200 OK\r\n\r\n" + E1 + E2[:4])
    assert [i["id"] for i in got] == [1]
    assert [i["id"] for i in parser.feed(E2[4:])] == [2]
    assert parser.eof() == []


def test_an_answer_cut_short_is_an_error_and_a_clean_end_is_not() -> None:
    parser = ge.ResponseParser()
    parser.feed(chunked(E1)[:-7])
    with pytest.raises(ge.GatewayEventsError, match="in the middle of an answer"):
        parser.eof()
    parser = ge.ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\n\r\n" + E1[:-1])
    with pytest.raises(ge.GatewayEventsError, match="in the middle of a line"):
        parser.eof()


def test_blank_lines_are_skipped() -> None:
    parser = ge.ResponseParser()
    assert [i["id"] for i in parser.feed(chunked(b"\n" + E1 + b"\r\n\n"))] == [1]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "a malformed header line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "a chunk size that is not hexadecimal"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX", "a chunk not followed by CRLF"),
        (b"HTTP/1.1 200 OK\r\n\r\nnot json\n", "an event line that is not JSON"),
        (b"HTTP/1.1 200 OK\r\n\r\n[1, 2]\n", "an event line that is not an event"),
        (b'HTTP/1.1 200 OK\r\n\r\n{"id": 1}\n', "an event line that is not an event"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "a Content-Length that is not a number"),
    ],
)
def test_what_is_not_the_gateways_answer_is_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(ge.GatewayEventsError, match=message):
        ge.ResponseParser().feed(data)


def test_endless_headers_or_lines_are_bounded() -> None:
    with pytest.raises(ge.GatewayEventsError, match="headers never end"):
        ge.ResponseParser().feed(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000)
    parser = ge.ResponseParser()
    with pytest.raises(ge.GatewayEventsError, match="an event line longer than"):
        parser.feed(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (ge.MAX_LINE + 1))


def test_an_error_answer_carries_the_gateways_reason() -> None:
    body = json.dumps({"error": "unknown event type 'x'"}).encode()
    parser = ge.ResponseParser()
    assert feed_bytewise(parser, b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)) == []
    assert parser.done
    error = parser.refusal()
    assert isinstance(error, ge.GatewayRefused) and error.status == 400
    assert str(error) == "the gateway answered 400 to GET /events: unknown event type 'x'"


# -- the resume position ------------------------------------------------------------------


def query_of(request: bytes) -> dict[str, list[str]]:
    first = request.split(b"\r\n", 1)[0].decode()
    method, target, version = first.split(" ")
    assert (method, version) == ("GET", "HTTP/1.1")
    assert request.endswith(b"\r\n\r\n") and b"Connection: close" in request
    parts = urlsplit(target)
    assert parts.path == "/events"
    return parse_qs(parts.query)


def test_the_request_asks_for_what_follows_the_cursor() -> None:
    assert query_of(ge.Cursor().request()) == {"follow": ["true"]}
    assert query_of(ge.Cursor(5, "e1").request(("device-connected", "source-blocked"))) == {
        "follow": ["true"],
        "since": ["5"],
        "epoch": ["e1"],
        "types": ["device-connected,source-blocked"],
    }


def accept_all(cursor: Any, data: bytes) -> list[dict[str, Any]]:
    parser = ge.ResponseParser()
    out: list[dict[str, Any]] = []
    began = False
    for i in range(len(data)):
        items = parser.feed(data[i : i + 1])
        if parser.status is not None and not began:
            began = True
            cursor.begin(parser.headers)
        for item in items:
            cursor.accept(item)
            out.append(item)
    return out


def test_the_cursor_moves_past_each_event_and_takes_the_epoch_with_the_first_line() -> None:
    cursor = ge.Cursor()
    accept_all(cursor, chunked(E1, E2))
    assert (cursor.since, cursor.epoch) == (2, "e1")


def test_an_answer_cut_before_its_first_line_leaves_the_cursor_as_it_was() -> None:
    """The gateway restarted (new epoch in the header); the connection drops
    before the gateway-restarted line: asking again must still send the old
    epoch, so that the gateway says it restarted instead of serving id 57 of
    its own numbering."""
    cursor = ge.Cursor(57, "old")
    notice = line(type="gateway-restarted", epoch="e1", previous_epoch="old")
    data = chunked(notice, E1)
    cut = data.index(notice)  # headers read, no line
    accept_all(cursor, data[:cut])
    assert (cursor.since, cursor.epoch) == (57, "old")
    accept_all(cursor, data)
    assert (cursor.since, cursor.epoch) == (1, "e1")


def test_a_restart_notice_resets_the_position_to_the_new_gateways_start() -> None:
    cursor = ge.Cursor(57, "old")
    accept_all(cursor, chunked(line(type="gateway-restarted", epoch="e1", previous_epoch="old")))
    assert (cursor.since, cursor.epoch) == (0, "e1")
    assert query_of(cursor.request())["since"] == ["0"]


def test_a_dropped_notice_does_not_move_the_cursor() -> None:
    cursor = ge.Cursor(2, "e1")
    accept_all(cursor, chunked(line(type="events-dropped", after=2, oldest=9, missed=6, epoch="e1")))
    assert cursor.since == 2
    accept_all(cursor, chunked(line(id=9, type="source-blocked")))
    assert cursor.since == 9


def test_an_empty_answer_that_ended_cleanly_adopts_its_epoch() -> None:
    cursor = ge.Cursor()
    accept_all(cursor, chunked())
    assert cursor.epoch is None
    cursor.finished()
    assert cursor.epoch == "e1"


def test_the_state_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "position.json"
    fallback = ge.Cursor(3)
    assert ge.load_position(str(path), fallback) is fallback
    ge.save_position(str(path), ge.Cursor(12, "e1"))
    loaded = ge.load_position(str(path), fallback)
    assert (loaded.since, loaded.epoch) == (12, "e1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["position.json"]  # no temporary left
    path.write_text('{"since": "x"}')
    with pytest.raises(ge.BadArguments, match=r"state_file .* is unreadable: since is not an event id"):
        ge.load_position(str(path), fallback)


def test_the_documented_options_are_the_accepted_arguments() -> None:
    import yaml

    doc = yaml.safe_load(ge.DOCUMENTATION)
    assert tuple(doc["options"]) == ge.Options.KNOWN
    assert doc["options"]["reconnect_delay"]["default"] == ge.Options({}).reconnect_delay
    for event_type in ge.EVENT_TYPES:
        assert f"C({event_type})" in ge.DOCUMENTATION
    examples = yaml.safe_load(ge.EXAMPLES)
    for source in examples[0]["sources"]:
        ge.Options(source["callhome.network.gateway_events"])  # the example's arguments are valid


def test_the_plugin_knows_the_libraries_event_types() -> None:
    from callhome_transport.events import EventType

    assert tuple(t.value for t in EventType) == ge.EVENT_TYPES
