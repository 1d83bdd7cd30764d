#!/bin/sh
# Make the collections the playbooks need importable without Ansible Galaxy:
#   DEST/ansible_collections/ansible/netcommon, ansible/utils  (from the PyPI "ansible" bundle)
#   DEST/ansible_collections/callhome/network -> this repository
# then point ANSIBLE_COLLECTIONS_PATH at DEST.  Only PyPI is contacted, and only
# once: the downloaded wheel is kept in DEST/.cache (copy that directory to an
# air-gapped machine and this script runs there with no network at all).
#
#   scripts/install-ansible-collections.sh PYTHON DEST
set -eu
PYTHON=$1
DEST=$2
ANSIBLE_BUNDLE=${ANSIBLE_BUNDLE:-ansible==12.3.0}   # ansible.netcommon 8.2, ansible.utils 6.0
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$DEST/ansible_collections/callhome" "$DEST/.cache"
if [ ! -f "$DEST/ansible_collections/ansible/netcommon/galaxy.yml" ] && \
   [ ! -f "$DEST/ansible_collections/ansible/netcommon/MANIFEST.json" ]; then
    if ! ls "$DEST"/.cache/ansible-*.whl >/dev/null 2>&1; then
        "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
            "$ANSIBLE_BUNDLE" -d "$DEST/.cache"
    fi
    "$PYTHON" - "$DEST" <<'PY'
import glob, sys, zipfile
dest = sys.argv[1]
wheel = sorted(glob.glob(f"{dest}/.cache/ansible-*.whl"))[-1]
wanted = ("ansible_collections/ansible/netcommon/", "ansible_collections/ansible/utils/")
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(wanted):
            z.extract(name, dest)
print(f"ansible.netcommon and ansible.utils from {wheel.rsplit('/', 1)[-1]} -> {dest}/ansible_collections")
PY
fi
ln -sfn "$REPO" "$DEST/ansible_collections/callhome/network"
