"""The agent is the device side: it never imports the manager side (the
server, the gateway, the Ansible plugins, nor their transport rooms)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import callhome_transport.agent

AGENT = Path(callhome_transport.agent.__file__).parent
# the only rooms of the library the agent may use: typed errors, metrics text, log context
ALLOWED = {"callhome_transport.errors", "callhome_transport.metrics", "callhome_transport._log"}
MANAGER_SIDE = (
    "callhome_transport.server",
    "callhome_transport.gateway",
    "callhome_transport.transports.ssh",
    "callhome_transport.transports.tls",
    "callhome_transport.transports.listener",
    "callhome_transport.identity.inventory",
    "callhome_transport.identity.trust",
    "callhome_transport.integrations.netconf",
    "callhome_transport.integrations.restconf",
    "callhome_transport.transports.relay",
    "ansible_collections",
    "asyncssh",
    "ncclient",
)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved."""
    package = "callhome_transport.agent"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names if module.endswith("callhome_transport"))
    return names


def test_the_agent_imports_only_its_own_rooms_and_the_shared_ones() -> None:
    files = sorted(AGENT.glob("*.py"))
    assert {f.name for f in files} >= {"config.py", "model.py", "schedule.py", "runner.py"}
    for path in files:
        ours = {m for m in imported_modules(path) if m.startswith("callhome_transport")}
        outside = {m for m in ours if not m.startswith("callhome_transport.agent") and m not in ALLOWED}
        assert not outside, f"{path.name} imports {sorted(outside)}"
        assert not [m for m in imported_modules(path) if m.startswith(MANAGER_SIDE)], path.name


def test_importing_the_agent_loads_nothing_of_the_manager_side() -> None:
    code = (
        "import sys, callhome_transport.agent.runner, callhome_transport.agent.config\n"
        f"print(sorted(m for m in sys.modules if m.startswith({MANAGER_SIDE!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_the_import_check_would_see_a_manager_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from ..server import CallHomeServer\nfrom ..gateway import client\nimport asyncssh\n")
    found = imported_modules(bad)
    assert {"callhome_transport.server", "callhome_transport.gateway", "asyncssh"} <= found
