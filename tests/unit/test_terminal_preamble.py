"""The optional first line a terminal client sends on terminal.sock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from callhome_transport.gateway.terminal import TerminalRequest, parse_terminal_preamble


def test_preamble_sets_the_pty_and_keeps_what_follows() -> None:
    assert parse_terminal_preamble(b"\0CALLHOME-TERM xterm-256color 120 40\nls\n") == TerminalRequest(
        type="xterm-256color", cols=120, rows=40, rest=b"ls\n"
    )


def test_without_a_preamble_everything_is_input() -> None:
    assert parse_terminal_preamble(b"show version\n") == TerminalRequest(rest=b"show version\n")
    assert parse_terminal_preamble(b"") == TerminalRequest()


def test_bad_preambles_fall_back_to_defaults_and_drop_the_line() -> None:
    assert parse_terminal_preamble(b"\0CALLHOME-TERM xterm wide 40\nx") == TerminalRequest(rest=b"x")
    assert parse_terminal_preamble(b"\0CALLHOME-TERM x;rm 80 24\n") == TerminalRequest()
    assert parse_terminal_preamble(b"\0CALLHOME-TERM xterm 0 24\n") == TerminalRequest()
    assert parse_terminal_preamble(b"\0CALLHOME-TERM xterm 80") == TerminalRequest(rest=b"\0CALLHOME-TERM xterm 80")


@given(st.binary(max_size=300))
def test_never_raises_and_loses_no_input_without_a_preamble(data: bytes) -> None:
    result = parse_terminal_preamble(data)
    if not data.startswith(b"\0CALLHOME-TERM "):
        assert result.rest == data
    assert 0 < result.cols <= 1000 and 0 < result.rows <= 1000
