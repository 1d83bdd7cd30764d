"""docs/design.md is read from the code: its public API list is
``callhome_transport.__all__`` and its room table names every module."""

from __future__ import annotations

import re
from pathlib import Path

import callhome_transport

ROOT = Path(__file__).resolve().parents[2]
DESIGN = (ROOT / "docs" / "design.md").read_text()


def _section(title: str) -> str:
    start = DESIGN.index(f"## {title}\n")
    end = DESIGN.find("\n## ", start + 1)
    return DESIGN[start : end if end != -1 else None]


def test_the_public_api_list_is_all() -> None:
    section = _section("Public API")
    stable = section[: section.index("For gateway clients")]
    bullets = "\n".join(line for line in stable.splitlines() if line.startswith("- "))
    listed = re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", bullets)
    assert sorted(listed) == sorted(callhome_transport.__all__)
    assert len(listed) == len(set(listed))


def test_every_module_is_in_a_room() -> None:
    rooms = _section("Rooms (from the ground up)")
    package = ROOT / "callhome_transport"
    modules = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if path.name != "__init__.py" and "__pycache__" not in path.parts
    }
    missing = sorted(m for m in modules if f"`{m}`" not in rooms)
    assert missing == []
