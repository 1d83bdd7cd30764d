#!/bin/sh
# ansible-test on the collection as it ships: build it (galaxy.yml's manifest:
# galaxy.yml, meta/, plugins/, roles/, docs/, tests/unit/plugins), install the
# artifact offline into WORK/ansible_collections/callhome/network beside
# ansible.netcommon/utils, and run sanity (no ignore files) and units there.
#
#   scripts/ansible-test.sh VENV WORK [sanity|units|all]
#
# ansible-test bootstraps pip in its sanity virtualenvs with a get-pip script
# from ci-files.testing.ansible.com, which an air-gapped machine cannot reach;
# the stand-in below installs pip from the interpreter's own ensurepip (in a
# subprocess: in-process ensurepip sets PIP_CONFIG_FILE=/dev/null and pip would
# lose this machine's index configuration), then installs the same packages.
set -eu
VENV=$(cd "$1" && pwd)
mkdir -p "$2"
WORK=$(cd "$2" && pwd)
WHAT=${3:-all}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PATH="$VENV/bin:$PATH"
export PATH

PIP_VERSION=$("$VENV/bin/python" - <<'PY'
import inspect, re
from ansible_test._internal import python_requirements as pr
print(re.search(r"pip='([0-9.]+)'", inspect.getsource(pr.get_venv_packages)).group(1))
PY
)
CACHE="$HOME/.ansible/test/cache"
STANDIN="$CACHE/get_pip_$(echo "$PIP_VERSION" | tr . _).py"
mkdir -p "$CACHE"
cat > "$STANDIN" <<'PY'
"""Offline stand-in for get-pip.py (written by callhome's scripts/ansible-test.sh)."""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
PY

rm -rf "$WORK/build" "$WORK/ansible_collections/callhome"
mkdir -p "$WORK/build" "$WORK/ansible_collections"
(cd "$REPO" && ansible-galaxy collection build --force --output-path "$WORK/build" >/dev/null)
ansible-galaxy collection install --offline --no-deps --force -p "$WORK" "$WORK"/build/callhome-network-*.tar.gz >/dev/null
ln -sfn "$VENV/collections/ansible_collections/ansible" "$WORK/ansible_collections/ansible"
COLLECTION="$WORK/ansible_collections/callhome/network"
# a git repository, so that ansible-test sees exactly the shipped files
(cd "$COLLECTION" && printf '/tests/output/\n' > .gitignore && git init -q && git add -A && git -c user.name=ci -c user.email=ci@localhost commit -qm artifact)
cd "$COLLECTION"
if [ "$WHAT" = sanity ] || [ "$WHAT" = all ]; then
    ansible-test sanity --local --python 3.11 --prime-venvs >/dev/null
    ansible-test sanity --local --python 3.11 --color no
fi
if [ "$WHAT" = units ] || [ "$WHAT" = all ]; then
    ansible-test units --local --python 3.11 --color no
fi
