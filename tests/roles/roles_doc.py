"""The variables tables of docs/roles.md, generated from each role's
meta/argument_specs.yml (tests/roles/test_roles.py checks the doc matches).

    python -m tests.roles.roles_doc --write     # regenerate the tables in docs/roles.md
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES_DIR = REPO / "roles"
DOC = REPO / "docs" / "roles.md"


def roles() -> list[str]:
    return sorted(p.parent.parent.name for p in ROLES_DIR.glob("*/meta/argument_specs.yml"))


def _cell(text: str) -> str:
    """One table cell: Ansible doc markup (C(), O(), V(), I()) as Markdown."""
    text = re.sub(r"\b[COV]\(([^()]*(?:\([^()]*\)[^()]*)*)\)", r"`\1`", " ".join(text.split()))
    text = re.sub(r"\bI\(([^()]*)\)", r"*\1*", text)
    return text.replace("|", "\\|")


def _default(option: dict[str, Any]) -> str:
    if "default" not in option:
        return "" if option.get("required") else "(unset)"
    return "`" + json.dumps(option["default"]) + "`"


def _rows(options: dict[str, Any], prefix: str) -> list[str]:
    rows = []
    for name, option in options.items():
        kind = str(option.get("type", "str"))
        if option.get("elements"):
            kind += f" of {option['elements']}"
        if option.get("choices"):
            kind += ": " + " \\| ".join(str(c) for c in option["choices"])
        if option.get("required"):
            kind += ", required"
        description = option["description"]
        text = " ".join(description) if isinstance(description, list) else description
        path = prefix + name
        rows.append(f"| `{path}` | {kind} | {_default(option)} | {_cell(text)} |")
        if option.get("options"):  # suboptions: list elements get [] in their path
            rows += _rows(option["options"], path + ("[]." if option.get("type") == "list" else "."))
    return rows


def variables_table(role: str) -> str:
    spec = yaml.safe_load((ROLES_DIR / role / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    rows = ["| variable | type | default | meaning |", "| --- | --- | --- | --- |", *_rows(options, "")]
    return "\n".join(rows) + "\n"


def write() -> None:
    doc = DOC.read_text()
    for role in roles():
        begin, end = f"<!-- BEGIN {role} variables -->\n", f"<!-- END {role} variables -->"
        if begin not in doc:
            print(f"docs/roles.md has no '{begin.strip()}' marker for role {role}", file=sys.stderr)
            continue
        head, rest = doc.split(begin, 1)
        doc = head + begin + variables_table(role) + end + rest.split(end, 1)[1]
    DOC.write_text(doc)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        for name in roles():
            print(f"## {name}\n\n{variables_table(name)}")
