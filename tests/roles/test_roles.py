"""The roles' interfaces: meta/argument_specs.yml documents every public
variable with the default defaults/main.yml gives it, the role uses no
undocumented public variable, docs/roles.md shows the same tables, and the
hardened systemd units the roles render pass ``systemd-analyze verify``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .roles_doc import ROLES_DIR, roles, variables_table

REPO = Path(__file__).resolve().parents[2]
TYPES = {"str": str, "path": str, "int": int, "bool": bool, "list": list, "dict": dict}
# public variables that describe the host, not one role: the same name (and spec) in every role that reads them
SHARED = {"callhome_service_manager": ("gateway", "callhome_agent")}


def _spec(role: str) -> dict[str, Any]:
    data = yaml.safe_load((ROLES_DIR / role / "meta" / "argument_specs.yml").read_text())
    return dict(data["argument_specs"]["main"]["options"])


def _defaults(role: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ROLES_DIR / role / "defaults" / "main.yml").read_text()) or {})


def test_there_are_roles() -> None:
    assert "gateway" in roles()


@pytest.mark.parametrize("role", roles())
def test_defaults_agree_with_argument_specs(role: str) -> None:
    spec, defaults = _spec(role), _defaults(role)
    assert sorted(spec) == sorted(defaults), "defaults/main.yml and meta/argument_specs.yml name different variables"
    for name, option in spec.items():
        assert name.startswith(f"{role}_") or role in SHARED.get(name, ()), f"{name}: variables carry the role's prefix"
        assert option.get("description"), f"{name}: no description"
        assert option.get("default") == defaults[name], f"{name}: argument_specs default differs from defaults/main.yml"
        value = defaults[name]
        if value is not None:
            assert isinstance(value, TYPES[option.get("type", "str")]), f"{name}: default is not a {option['type']}"
            if option.get("choices"):
                assert value in option["choices"], f"{name}: default not among the choices"
        if option.get("type") == "list":
            assert option.get("elements"), f"{name}: a list without elements type"


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_variables_have_one_spec(name: str) -> None:
    """callhome_service_manager is one setting of a host: every role that reads it
    documents it with the same type, choices and default."""
    specs = [_spec(role)[name] for role in SHARED[name]]
    for spec in specs:
        assert {k: spec.get(k) for k in ("type", "choices", "default")} == {
            k: specs[0].get(k) for k in ("type", "choices", "default")
        }


@pytest.mark.parametrize("role", roles())
def test_the_role_uses_only_documented_variables(role: str) -> None:
    """A public variable the tasks read but the spec does not list is a typo or a hole in the docs;
    an internal one must be defined in vars/main.yml, registered or set."""
    spec = set(_spec(role))
    internal_defined = set(yaml.safe_load((ROLES_DIR / role / "vars" / "main.yml").read_text()) or {})
    text = ""
    for path in sorted((ROLES_DIR / role).rglob("*")):
        if path.is_file() and path.suffix in (".yml", ".j2") and path.parent.name != "meta":
            text += re.sub(r"^\s*tags:.*$", "", path.read_text(), flags=re.M)  # tags are not variables
    internal_defined |= set(re.findall(rf"register:\s*(_{role}_\w+)", text))
    internal_defined |= set(re.findall(rf"^\s+(_{role}_\w+):", text, re.M))  # set_fact keys, task vars
    used_public = set(re.findall(rf"(?<![\w.])({role}_\w+)", text))
    used_public |= {name for name in SHARED if re.search(rf"(?<![\w.]){name}\b", text)}
    used_internal = set(re.findall(rf"(?<![\w.])(_{role}_\w+)", text))
    assert used_public - spec == set(), "public variables used but not in meta/argument_specs.yml"
    assert used_internal - internal_defined == set(), "internal variables used but never defined"


@pytest.mark.parametrize("role", roles())
def test_docs_show_the_argument_specs(role: str) -> None:
    doc = (REPO / "docs" / "roles.md").read_text()
    begin, end = f"<!-- BEGIN {role} variables -->\n", f"<!-- END {role} variables -->"
    assert begin in doc and end in doc, f"docs/roles.md has no {role} variables table"
    shown = doc.split(begin, 1)[1].split(end, 1)[0]
    assert shown == variables_table(role), "docs/roles.md is stale: python -m tests.roles.roles_doc --write"


def _render(template: Path, dest: Path, role: str, **extra: str) -> str:
    """Render one of a role's templates with its defaults, as the role would."""
    play = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [
                str(ROLES_DIR / role / "defaults" / "main.yml"),
                str(ROLES_DIR / role / "vars" / "main.yml"),
            ],
            # the role's internal values may read role_path
            "vars": {"role_path": str(ROLES_DIR / role)},
            "tasks": [{"ansible.builtin.template": {"src": str(template), "dest": str(dest), "mode": "0644"}}],
        }
    ]
    playbook = dest.with_suffix(".play.yml")
    playbook.write_text(yaml.safe_dump(play))
    args = [str(Path(sys.prefix) / "bin" / "ansible-playbook"), str(playbook)]
    for key, value in extra.items():
        args += ["-e", f"{key}={value}"]
    subprocess.run(args, check=True, capture_output=True, timeout=120)
    return dest.read_text()


HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "CapabilityBoundingSet=\n",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
)
UNITS = {
    "gateway": ("callhome-gateway.service.j2", "callhome-gateway.service", "callhome"),
    "callhome_agent": ("callhome-agent.service.j2", "callhome-agent.service", "callhome-agent"),
}


@pytest.mark.parametrize("role", sorted(UNITS))
def test_systemd_unit_is_hardened_and_verifies(role: str, tmp_path: Path) -> None:
    template, name, user = UNITS[role]
    unit = tmp_path / name
    # the virtualenv must exist for systemd-analyze: this test's own has bin/callhome
    text = _render(ROLES_DIR / role / "templates" / template, unit, role, **{f"{role}_virtualenv": sys.prefix})
    for line in HARDENING:
        assert line in text, f"{line!r} missing from the unit"
    assert re.search(rf"^User={user}$", text, re.M)
    if role == "gateway":
        assert re.search(r"^RuntimeDirectory=callhome$", text, re.M)
        assert re.search(r"^Type=notify$", text, re.M)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed: the unit was checked only for its directives")
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], check=False, capture_output=True, text=True, timeout=60
    )
    # systemd-analyze reports unknown or bad settings on stderr and still exits 0
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


# netconf_server_callhome variables that say how to apply the model to a device, not what it is
APPLY_ONLY = {
    "netconf_server_callhome_state",
    "netconf_server_callhome_target",
    "netconf_server_callhome_lock",
    "netconf_server_callhome_save",
    "netconf_server_callhome_yang_dir",
    "netconf_server_callhome_yanglint",
    "netconf_server_callhome_yang_keystore",
    "netconf_server_callhome_verify",
}


def test_the_agent_takes_the_same_call_home_variables_as_native_devices() -> None:
    """Moving a device between callhome_agent and netconf_server_callhome is one
    variable: the agent reads every model variable of netconf_server_callhome
    (with that role's defaults and argument spec), and nothing else of it."""
    native = _spec("netconf_server_callhome")
    agent_vars = yaml.safe_load((ROLES_DIR / "callhome_agent" / "vars" / "main.yml").read_text())
    assert set(agent_vars["_callhome_agent_model"]) == set(native) - APPLY_ONLY
    text = "".join(p.read_text() for p in (ROLES_DIR / "callhome_agent").rglob("*.yml"))
    assert set(re.findall(r"(?<![\w.])(netconf_server_callhome_\w+)", text)) <= set(native)
    assert "validate_argument_spec" in (ROLES_DIR / "callhome_agent" / "tasks" / "preflight.yml").read_text()


def _plays(path: Path) -> list[dict[str, Any]]:
    """A playbook's plays as what they do: hosts and tasks (name, module, arguments, condition),
    without the variables that say how to reach the hosts."""
    out = []
    for play in yaml.safe_load(path.read_text()):
        tasks = [
            {key: value for key, value in task.items() if key not in ("vars", "delegate_to")}
            for task in play.get("tasks", [])
        ]
        out.append({"hosts": play["hosts"], "roles": play.get("roles", []), "tasks": tasks})
    return out


def test_the_scenarios_converge_with_the_example_playbook() -> None:
    """The molecule converge runs the plays of examples/provision-fleet.yml (plus the harness's
    connection settings, and RESTCONF for the devices that have it): they must not drift apart."""
    example = _plays(REPO / "examples" / "provision-fleet.yml")
    converge = _plays(REPO / "extensions" / "molecule" / "shared" / "converge.yml")
    provisioning = [play for play in example if play["hosts"] in ("callhome_gateways", "callhome_devices")][:2]
    assert len(provisioning) == 2
    assert converge[0] == provisioning[0]
    assert converge[1]["hosts"] == provisioning[1]["hosts"]
    assert converge[1]["tasks"][: len(provisioning[1]["tasks"])] == provisioning[1]["tasks"]
