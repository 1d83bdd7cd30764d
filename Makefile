# callhome: NETCONF/RESTCONF Call Home (RFC 8071) for Python and Ansible.
#   make demo   create the virtualenv, install, run the embedded call-home demo
#   make test   install what the tests need (pip + apt) and run every test

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test lint typecheck unit integration bench system-packages clean collections ansible-lint ansible-sanity ansible-units molecule

$(VENV)/.installed: pyproject.toml
	scripts/make-venv.sh "$(PYTHON)" "$(VENV)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	scripts/install-ansible-collections.sh $(PY) $(VENV)/collections
	touch $@

# ansible.netcommon/utils (from PyPI, no Galaxy) beside callhome.network -> this repo
collections: $(VENV)/.installed-test
	scripts/install-ansible-collections.sh $(PY) $(VENV)/collections

ansible-lint: $(VENV)/.installed-test
	ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/$(VENV)/collections $(VENV)/bin/ansible-lint --nocolor examples/ roles/ extensions/

ansible-sanity: $(VENV)/.installed-test
	scripts/ansible-test.sh $(VENV) $(VENV)/ansible-test sanity

ansible-units: $(VENV)/.installed-test
	scripts/ansible-test.sh $(VENV) $(VENV)/ansible-test units

# the roles' molecule scenarios (extensions/molecule/): hosts are network namespaces
molecule: $(VENV)/.installed-test system-packages
	scripts/molecule.sh $(VENV)

demo: $(VENV)/.installed
	$(PY) -m callhome_transport.demo

system-packages:
	scripts/install-system-packages.sh

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check callhome_transport tests benchmarks
	$(VENV)/bin/ruff format --check callhome_transport tests benchmarks

typecheck: $(VENV)/.installed-test
	$(VENV)/bin/mypy --strict callhome_transport

unit: $(VENV)/.installed-test
	$(VENV)/bin/pytest -q tests/unit

# The suite waits on real peers far more than it computes: test files run in
# parallel (one file's tests stay together in one worker, so its peers and
# fixtures are shared as written).  TEST_WORKERS=0 runs it serially.
TEST_WORKERS ?= 4

integration: $(VENV)/.installed-test system-packages
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile tests/integration

test: $(VENV)/.installed-test system-packages lint typecheck ansible-lint ansible-sanity
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile tests
	scripts/ansible-test.sh $(VENV) $(VENV)/ansible-test units
	scripts/molecule.sh $(VENV)

# every benchmark, each bounded in time (benchmarks/run_all.py: about 20 minutes on 2 cores,
# 125 at most), then the goals table
bench: $(VENV)/.installed-test system-packages
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
