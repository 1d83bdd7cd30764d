"""What users and packagers get: the wheel and sdist as built, one version
everywhere, the collection's changelog and execution-environment files, read
by the real tools (build, antsibull-changelog, ansible-builder)."""

from __future__ import annotations

import ast
import email
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _version_in_init() -> str:
    tree = ast.parse((ROOT / "callhome_transport" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            assert isinstance(node.value, ast.Constant)
            return str(node.value.value)
    raise AssertionError("callhome_transport/__init__.py has no __version__")


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed in this environment (make test installs the test extra)")
    return str(path)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_one_version_everywhere(built: Path) -> None:
    version = _version_in_init()
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    assert galaxy["version"] == version, "galaxy.yml and callhome_transport.__version__ differ"
    (wheel,) = built.glob("*.whl")
    assert wheel.name.startswith(f"callhome_transport-{version}-")
    ee = yaml.safe_load((ROOT / "examples/execution-environment/requirements.yml").read_text())
    assert f"callhome-network-{version}.tar.gz" in ee["collections"][0]["name"]
    cli = subprocess.run(
        [sys.executable, "-m", "callhome_transport.cli", "--version"], capture_output=True, text=True, check=False
    )
    assert cli.returncode == 0
    assert cli.stdout.strip() == f"callhome {version}"


def test_wheel_carries_licences_types_and_project_urls(built: Path) -> None:
    (wheel,) = built.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(z.read(metadata_name))
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert any(n.endswith(".dist-info/licenses/LICENSES/Apache-2.0.txt") for n in names), names
    assert "callhome_transport/py.typed" in names
    assert not any(n.startswith(("tests/", "plugins/", "benchmarks/")) for n in names)
    urls = dict(v.split(", ", 1) for v in metadata.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Repository", "Issues", "Changelog"} <= set(urls)
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "Typing :: Typed" in (metadata.get_all("Classifier") or [])


def test_sdist_carries_tests_docs_and_changelog(built: Path) -> None:
    (sdist,) = built.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for wanted in (
        "pyproject.toml",
        "CHANGELOG.rst",
        "docs/gateway.md",
        "tests/pki.py",
        "tests/unit/test_framing.py",
        "extensions/eda/plugins/event_source/gateway_events.py",  # tests/unit/test_eda_gateway_events.py loads it
    ):
        assert wanted in names, wanted
    assert not any(n.startswith(".venv/") or "__pycache__" in n for n in names)


def test_the_collection_artifact_carries_the_eda_source(tmp_path: Path) -> None:
    """ansible-rulebook finds callhome.network.gateway_events in an installed
    collection only if galaxy.yml's manifest ships extensions/."""
    proc = subprocess.run(
        [_tool("ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (artifact,) = tmp_path.glob("callhome-network-*.tar.gz")
    with tarfile.open(artifact) as tar:
        names = set(tar.getnames())
    assert "extensions/eda/plugins/event_source/gateway_events.py" in names
    assert not any(n.startswith(("tests/integration", "callhome_transport/", "benchmarks/")) for n in names)


def test_changelog_fragments_lint_clean() -> None:
    proc = subprocess.run(
        [_tool("antsibull-changelog"), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "", proc.stdout
    assert "CHANGELOG.rst" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("definition", ["execution-environment.yml", "decision-environment.yml"])
def test_execution_environment_example_builds_a_context(tmp_path: Path, definition: str) -> None:
    """ansible-builder cannot build an image here (no container engine); it
    still reads and validates the definition and writes the build context."""
    example = tmp_path / "ee"
    shutil.copytree(ROOT / "examples/execution-environment", example)
    (example / f"callhome-network-{_version_in_init()}.tar.gz").write_bytes(b"")  # built by the user
    proc = subprocess.run(
        [_tool("ansible-builder"), "create", "-f", definition, "--context", "ctx"],
        cwd=example,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    build = example / "ctx" / "_build"
    assert (build / "requirements.yml").read_text() == (example / "requirements.yml").read_text()
    assert (build / "collections" / f"callhome-network-{_version_in_init()}.tar.gz").exists()
    if definition == "decision-environment.yml":  # ansible-rulebook and its Java 17
        assert "ansible-rulebook" in (build / "requirements.txt").read_text()
        assert "java-17-openjdk-headless [platform:rpm]" in (build / "bindep.txt").read_text()


def test_collection_declares_what_execution_environments_read() -> None:
    requirements = (ROOT / "requirements.txt").read_text()
    assert "callhome-transport" in requirements
    assert (ROOT / "bindep.txt").read_text().strip()
    assert (ROOT / "tests/unit/requirements.txt").exists()  # galaxy.yml's manifest includes it
    runtime = yaml.safe_load((ROOT / "meta/runtime.yml").read_text())
    # every module that talks to the gateway (its options come from the gateway.module doc fragment)
    gateway_modules = {
        p.stem for p in (ROOT / "plugins/modules").glob("*.py") if "callhome.network.gateway.module" in p.read_text()
    }
    assert gateway_modules
    assert set(runtime["action_groups"]["gateway"]) == gateway_modules
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    for key in ("repository", "documentation", "issues"):
        assert galaxy[key].startswith("https://"), key
