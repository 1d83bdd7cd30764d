"""The NETCONF hello exchange, sans I/O: building, parsing, negotiating,
reading the first message one byte at a time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ncclient import manager

from callhome_transport.protocol import hello as hello_module
from callhome_transport.protocol.framing import EOM, Framing
from callhome_transport.protocol.hello import (
    BASE_10,
    BASE_11,
    DEFAULT_CLIENT_CAPABILITIES,
    HELLO_SETTLE,
    Hello,
    HelloError,
    HelloReader,
    encode_hello,
    hello_settle_for,
    needs_hello_settle,
    negotiate,
    parse_hello,
)

LIBNETCONF2_STYLE = (
    b'<hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><capabilities>'
    b"<capability>urn:ietf:params:netconf:base:1.0</capability>"
    b"<capability>urn:ietf:params:netconf:base:1.1</capability>"
    b"<capability>urn:ietf:params:netconf:capability:candidate:1.0</capability>"
    b"</capabilities><session-id>42</session-id></hello>"
)


def test_our_hello_says_what_stock_ncclient_says() -> None:
    assert tuple(manager.make_device_handler({}, []).get_capabilities()) == DEFAULT_CLIENT_CAPABILITIES


def test_parse_a_server_hello() -> None:
    hello = parse_hello(LIBNETCONF2_STYLE)
    assert hello.session_id == "42"
    assert hello.capabilities[:2] == (BASE_10, BASE_11)
    assert hello.bases == {BASE_10, BASE_11}


def test_parse_accepts_a_prefixed_namespace_and_whitespace() -> None:
    raw = (
        b'<?xml version="1.0"?>\n<nc:hello xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0">\n'
        b"  <nc:capabilities>\n    <nc:capability>\n urn:ietf:params:netconf:base:1.1 \n</nc:capability>\n"
        b"  </nc:capabilities>\n  <nc:session-id> 7 </nc:session-id>\n</nc:hello>\n"
    )
    assert parse_hello(raw) == Hello(capabilities=(BASE_11,), session_id="7")


def test_a_hello_seen_before_but_for_its_session_id_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # devices of one model send the same hello; each session-id is still its own
    first = parse_hello(LIBNETCONF2_STYLE.replace(b">42<", b">9001<"))
    parsed: list[bytes] = []
    monkeypatch.setattr(hello_module, "_parse_hello", lambda raw: parsed.append(raw) or first)
    again = parse_hello(LIBNETCONF2_STYLE.replace(b">42<", b">9002<"))
    assert parsed == [] and again == Hello(capabilities=first.capabilities, session_id="9002")
    assert again.capabilities is first.capabilities


def test_only_a_plain_session_id_element_makes_a_hello_recognisable() -> None:
    # the one <session-id> must be the one parsing finds: not one inside CDATA
    cdata = (
        b'<hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><capabilities>'
        b"<capability><![CDATA[urn:x:<session-id>5</session-id>]]></capability></capabilities></hello>"
    )
    for _ in range(2):
        assert parse_hello(cdata) == Hello(capabilities=("urn:x:<session-id>5</session-id>",), session_id=None)
    prefixed = LIBNETCONF2_STYLE.replace(b"session-id", b"nc:session-id").replace(
        b"<hello ", b'<hello xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0" '
    )
    for sid in (b"1", b"2"):
        assert parse_hello(prefixed.replace(b">42<", b">" + sid + b"<")).session_id == sid.decode()


@pytest.mark.parametrize(
    "raw",
    [
        b"<hello",
        b'<rpc xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"/>',
        b'<hello xmlns="urn:example:other"/>',
        b'<!DOCTYPE hello [<!ENTITY a "aaaa">]><hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"/>',
    ],
    ids=["truncated", "not-a-hello", "other-namespace", "dtd"],
)
def test_parse_refuses_what_is_not_a_hello(raw: bytes) -> None:
    with pytest.raises(HelloError):
        parse_hello(raw)


@given(
    st.lists(st.from_regex(r"urn:[a-z:]{1,20}(\?[a-z=&<>]{0,10})?", fullmatch=True), max_size=20),
    st.one_of(st.none(), st.integers(1, 2**32).map(str)),
)
def test_encode_parse_round_trip(capabilities: list[str], session_id: str | None) -> None:
    encoded = encode_hello(capabilities, session_id)
    assert encoded.endswith(EOM) and encoded.count(EOM) == 1
    assert parse_hello(encoded[: -len(EOM)]) == Hello(capabilities=tuple(capabilities), session_id=session_id)


@pytest.mark.parametrize(
    ("ours", "theirs", "framing"),
    [
        ((BASE_10, BASE_11), (BASE_10, BASE_11), Framing.CHUNKED),
        ((BASE_10, BASE_11), (BASE_10,), Framing.END_OF_MESSAGE),
        ((BASE_10,), (BASE_10, BASE_11), Framing.END_OF_MESSAGE),
        ((BASE_11,), (BASE_10,), None),
        ((BASE_10, BASE_11), ("urn:other",), None),
    ],
)
def test_negotiate(ours: tuple[str, ...], theirs: tuple[str, ...], framing: Framing | None) -> None:
    assert negotiate(ours, theirs) is framing


def test_reader_one_byte_at_a_time_keeps_what_follows() -> None:
    stream = LIBNETCONF2_STYLE + EOM + b"\n#5\nhello\n##\n"
    reader = HelloReader()
    found = None
    for i in range(len(stream)):
        found = reader.feed(stream[i : i + 1])
        if i < len(LIBNETCONF2_STYLE) + len(EOM) - 1:
            assert found is None
    assert found == LIBNETCONF2_STYLE
    assert reader.rest == b"\n#5\nhello\n##\n"


@given(st.lists(st.integers(1, 40), min_size=1, max_size=60))
def test_reader_any_split(cuts: list[int]) -> None:
    stream = LIBNETCONF2_STYLE + EOM + b"rest-bytes"
    reader = HelloReader()
    position = 0
    for cut in cuts:
        reader.feed(stream[position : position + cut])
        position += cut
    reader.feed(stream[position:])
    assert reader.message == LIBNETCONF2_STYLE
    assert reader.rest == b"rest-bytes"


def test_reader_bounds_a_hello_without_an_end() -> None:
    reader = HelloReader(max_size=100)
    assert reader.feed(b"x" * 100) is None
    with pytest.raises(HelloError):
        reader.feed(b"x" * 10)


# what yuma123 netconfd 2.13 announces besides the IETF modules (seen here)
YUMA123_MODULES = (
    "http://netconfcentral.org/ns/yuma-ncx?module=yuma-ncx&revision=2012-01-13",
    "http://yuma123.org/ns/yuma123-system?module=yuma123-system&revision=2017-03-26",
)


def test_only_yuma123_needs_the_hello_settle() -> None:
    yuma = Hello(capabilities=(BASE_10, BASE_11, *YUMA123_MODULES))
    assert needs_hello_settle(yuma)
    assert needs_hello_settle(Hello(capabilities=(BASE_11, YUMA123_MODULES[1])))
    assert hello_settle_for(yuma) == HELLO_SETTLE
    others = parse_hello(LIBNETCONF2_STYLE)
    assert not needs_hello_settle(others)
    assert hello_settle_for(others) == 0.0
    assert hello_settle_for(others, forced=True) == HELLO_SETTLE  # quirks: [hello-settle]
    # a module of netconfcentral's namespace that is not yuma's own is no sign
    assert not needs_hello_settle(Hello(capabilities=(BASE_11, "http://netconfcentral.org/ns/toaster?module=toaster")))
