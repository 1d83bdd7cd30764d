"""``--state-file``: last-connected endpoints kept across restarts of the agent."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from callhome_transport.agent.config import parse_config
from callhome_transport.agent.runner import Agent

CONFIG = parse_config((Path(__file__).parent / "fixtures" / "callhome-2023-2025.json").read_bytes())


def test_a_state_file_restores_last_connected(tmp_path: Path) -> None:
    state = tmp_path / "agent.state"
    state.write_text('{"last_connected": {"nms": "backup"}}')
    assert Agent(CONFIG, state_file=state).scheduler.remembered() == {"nms": "backup"}
    assert Agent(CONFIG, state_file=tmp_path / "absent").scheduler.remembered() == {}


@pytest.mark.parametrize("text", ["{", '{"last_connected": ["nms"]}', '{"other": 1}', '{"last_connected": {"a": 1}}'])
def test_a_broken_state_file_is_ignored_with_a_warning(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "agent.state"
    state.write_text(text)
    with caplog.at_level(logging.WARNING, logger="callhome_transport.agent.runner"):
        assert Agent(CONFIG, state_file=state).scheduler.remembered() == {}
    assert f"ignoring the state file {state}" in caplog.text
