"""Our parser and the real schema agree: every fixture payload is also
validated with ``yanglint`` (Debian's libyang2-tools) against the
ietf-netconf-server module sets in ``../shared/yang`` (relative to the
repository root), plus the agent's own module for its section."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from callhome_transport.agent.config import parse_config, yang_dir
from callhome_transport.errors import AgentConfigError

ROOT = Path(__file__).resolve().parents[3]
YANG = ROOT.parent / "shared" / "yang"
FIXTURES = Path(__file__).parent / "fixtures"

NEW, OLD = ("2023-12-28", "2025-04-24"), ("2019-07-02",)

# (fixture, revisions, valid for yanglint, valid for our parser)
AGREE = [
    ("callhome-2023-2025.xml", NEW, True),
    ("callhome-2023-2025.json", NEW, True),
    ("callhome-2019.xml", OLD, True),
    ("callhome-2019.json", OLD, True),
    ("callhome-2023-2025.xml", OLD, False),  # max-wait, netconf-server-parameters
    ("callhome-2023-2025.json", OLD, False),
    ("invalid-2019-max-wait.xml", OLD, False),  # valid call home of -30, not of -14
    ("invalid-2019-keepalives.xml", OLD, False),  # -14's keepalives need all three leaves
    ("invalid-anchor-seconds.json", NEW, False),
    ("invalid-typo.json", NEW + OLD, False),
    ("invalid-port-string.json", NEW + OLD, False),
    ("invalid-two-connection-types.json", NEW, False),
]
# Where they differ, the difference lies only in what the agent does not read
# (the keystore, ssh-server-parameters: the real server's), never in call home.
DIFFER = [
    ("callhome-2019.xml", NEW, "keystore and server-identity in the -14 shape"),
    ("invalid-2019-max-wait.xml", NEW, "keystore and server-identity in the -14 shape"),
    ("invalid-2019-keepalives.xml", NEW, "keystore and server-identity in the -14 shape"),
]


def yanglint_available() -> str | None:
    if not YANG.is_dir():
        return f"{YANG} is absent: the YANG module sets live in ../shared/yang beside the repository"
    if shutil.which("yanglint") is None:
        return "yanglint is not installed (Debian libyang2-tools; make test installs it)"
    return None


def yanglint(fixture: Path, revision: str) -> tuple[bool, str]:
    modules = YANG / f"netconf-server-{revision}"
    agent_module = next(yang_dir().glob("callhome-agent@*.yang"))
    out = subprocess.run(
        [
            "yanglint",
            "-t",
            "config",
            "-ii",  # every feature (ssh-call-home, central-netconf-server-supported, ...)
            "-p",
            str(modules),
            str(modules / f"ietf-netconf-server@{revision}.yang"),
            *map(str, modules.glob("ietf-keystore@*.yang")),
            str(agent_module),
            str(fixture),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return out.returncode == 0, out.stderr.strip()


def ours(fixture: Path, revision: str) -> bool:
    try:
        parse_config(fixture.read_bytes(), revision=revision, source=fixture.name)
    except AgentConfigError:
        return False
    return True


@pytest.fixture(scope="module", autouse=True)
def _need_yanglint() -> None:
    reason = yanglint_available()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize(
    ("name", "revision", "valid"),
    [(name, rev, valid) for name, revs, valid in AGREE for rev in revs],
    ids=str,
)
def test_yanglint_and_our_parser_agree(name: str, revision: str, valid: bool) -> None:
    fixture = FIXTURES / name
    lint_ok, lint_says = yanglint(fixture, revision)
    assert lint_ok is valid, lint_says
    assert ours(fixture, revision) is valid


@pytest.mark.parametrize(
    ("name", "revision", "why"), [(n, rev, why) for n, revs, why in DIFFER for rev in revs], ids=str
)
def test_known_differences_lie_outside_call_home(name: str, revision: str, why: str) -> None:
    fixture = FIXTURES / name
    lint_ok, lint_says = yanglint(fixture, revision)
    assert not lint_ok
    assert "/ietf-keystore:keystore" in lint_says, (why, lint_says)  # not in call-home
    assert ours(fixture, revision)


def test_every_fixture_is_covered() -> None:
    covered = {name for name, _, _ in AGREE}
    assert covered == {p.name for p in FIXTURES.iterdir() if p.suffix in (".xml", ".json")}
