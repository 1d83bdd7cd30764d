"""``callhome agent --check``: validate a file and print what would be done."""

from __future__ import annotations

from pathlib import Path

import pytest

from callhome_transport.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


def test_check_prints_the_plan_and_the_ignored_parts(capsys: pytest.CaptureFixture[str]) -> None:
    config = FIXTURES / "callhome-2023-2025.json"
    assert main(["agent", "--config", str(config), "--check", "--local-ssh", "[::1]:2830"]) == 0
    out = capsys.readouterr().out
    assert "ietf-netconf-server@2025-04-24, 2 netconf-client(s)" in out
    assert "client nms: persistent; start-with last-connected, max-wait 10 s, max-attempts 2" in out
    assert "endpoint primary: ssh to 192.0.2.10:4334 -> local [::1]:2830; keepalives 15/3/5" in out
    assert "endpoint backup: tls to nms-backup.example.net:14335 from 0.0.0.0:0 -> local [::1]:6513" in out
    assert "periodic every 1440 min from 2026-01-01T02:30:00Z, idle-timeout 300 s" in out
    assert "ignored /ietf-keystore:keystore" in out
    assert "ssh-server-parameters/server-identity" in out


def test_check_of_an_invalid_file_names_the_key_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["agent", "--config", str(FIXTURES / "invalid-2019-max-wait.xml"), "--check", "--revision", "2019-07-02"])
        == 1
    )
    err = capsys.readouterr().err
    assert "netconf-client[name='nms']/reconnect-strategy/max-wait" in err
    assert "Traceback" not in err


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = str(FIXTURES / "callhome-2019.xml")
    assert main(["agent", "--config", config, "--check", "--local-ssh", "localhost"]) == 1
    assert "--local-ssh must be HOST:PORT" in capsys.readouterr().err
    assert main(["agent", "--config", str(tmp_path / "absent.xml"), "--check"]) == 1
    assert "absent.xml: a readable file" in capsys.readouterr().err


def test_metrics_and_state_files_need_an_existing_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = str(FIXTURES / "callhome-2019.xml")
    missing = tmp_path / "no-such-dir" / "agent.prom"
    assert main(["agent", "--config", config, "--revision", "2019-07-02", "--metrics-file", str(missing)]) == 1
    assert f"{missing}: a file in an existing directory (--metrics-file)" in capsys.readouterr().err
