"""NETCONF framing (RFC 6242 s4), fed one byte at a time and in random splits."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callhome_transport.protocol.framing import EOM, FrameDecoder, Framing, FramingError, MessageSizeExceeded, encode

messages = st.lists(st.binary(min_size=1, max_size=300).filter(lambda b: EOM not in b), min_size=1, max_size=5)


def _feed_bytewise(decoder: FrameDecoder, data: bytes) -> list[bytes]:
    out: list[bytes] = []
    for i in range(len(data)):
        out += decoder.feed(data[i : i + 1])
    return out


@pytest.mark.parametrize("framing", list(Framing))
def test_one_byte_at_a_time(framing: Framing) -> None:
    msgs = [b"<rpc/>", b"<rpc-reply>ok</rpc-reply>", b"x" * 1000]
    wire = b"".join(encode(m, framing) for m in msgs)
    assert _feed_bytewise(FrameDecoder(framing), wire) == msgs


@given(msgs=messages, framing=st.sampled_from(list(Framing)), cuts=st.lists(st.integers(0, 2000), max_size=10))
def test_round_trip_any_split(msgs: list[bytes], framing: Framing, cuts: list[int]) -> None:
    wire = b"".join(encode(m, framing) for m in msgs)
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    decoder = FrameDecoder(framing)
    out: list[bytes] = []
    for start, end in itertools.pairwise(points):
        out += decoder.feed(wire[start:end])
    assert out == msgs


def test_multiple_chunks_make_one_message() -> None:
    wire = b"\n#4\n<rpc\n#3\n/>x\n##\n"
    assert FrameDecoder(Framing.CHUNKED).feed(wire) == [b"<rpc/>x"]


def test_switch_after_hello_keeps_buffered_bytes() -> None:
    decoder = FrameDecoder(Framing.END_OF_MESSAGE)
    hello = b"<hello/>" + EOM
    rpc = encode(b"<rpc/>", Framing.CHUNKED)
    assert decoder.feed(hello + rpc[:3]) == [b"<hello/>"]
    decoder.switch(Framing.CHUNKED)
    assert decoder.feed(rpc[3:]) == [b"<rpc/>"]


@pytest.mark.parametrize(
    "wire",
    [b"garbage", b"\n#0\n", b"\n#01\nx\n##\n", b"\n##\n", b"\n#x\n", b"\n#12345678901\n", b"\n#2\nab\n#!"],
)
def test_malformed_chunked_input_is_a_typed_error(wire: bytes) -> None:
    with pytest.raises(FramingError):
        FrameDecoder(Framing.CHUNKED).feed(wire)


def test_message_size_is_bounded() -> None:
    decoder = FrameDecoder(Framing.END_OF_MESSAGE, max_message_size=100)
    with pytest.raises(MessageSizeExceeded, match="exceeds 100 bytes") as caught:
        decoder.feed(b"a" * 200)
    assert caught.value.limit == 100
    chunked = FrameDecoder(Framing.CHUNKED, max_message_size=100)
    with pytest.raises(MessageSizeExceeded):
        chunked.feed(b"\n#150\n" + b"b" * 150)


@pytest.mark.parametrize("framing", list(Framing))
def test_a_message_of_exactly_the_limit_passes_byte_by_byte(framing: Framing) -> None:
    message = b"m" * 100
    decoder = FrameDecoder(framing, max_message_size=100)
    assert _feed_bytewise(decoder, encode(message, framing) * 2) == [message, message]


def test_clear_drops_a_partial_message() -> None:
    decoder = FrameDecoder(Framing.END_OF_MESSAGE)
    assert decoder.feed(b"<rpc-reply>" + b"x" * 1000) == []
    decoder.clear()
    assert decoder.feed(b"<ok/>" + EOM) == [b"<ok/>"]


def test_empty_chunked_message_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="at least one byte"):
        encode(b"", Framing.CHUNKED)
