# Copyright: callhome developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a module's main() as Ansible runs it: arguments in, the JSON result
it prints and its exit status out (no patched exit_json/fail_json)."""

from __future__ import annotations

import contextlib
import json

import pytest

from ansible.module_utils import basic

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19: the classic set_module_args

    @contextlib.contextmanager
    def patch_module_args(args=None):
        previous = getattr(basic, "_ANSIBLE_ARGS", None)
        basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}).encode()
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = previous


@pytest.fixture
def run_module(capsys):
    """``run_module(main, args)`` -> ``(exit status, result)``."""

    def run(main, args):
        capsys.readouterr()
        with patch_module_args(args), pytest.raises(SystemExit) as exited:
            main()
        out = capsys.readouterr().out
        return exited.value.code, json.loads(out.strip().splitlines()[-1])

    return run
