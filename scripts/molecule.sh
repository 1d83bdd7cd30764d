#!/bin/sh
# The molecule scenarios of the collection (extensions/molecule/), one after
# another, each timed: hosts are Linux network namespaces on this machine
# (root needed; no containers, no Galaxy).
#
#   scripts/molecule.sh VENV [SCENARIO...]      default: every scenario
#
# Builds callhome-transport and its dependencies as wheels once per run (the
# roles install from that wheelhouse with --no-index), serialises with any
# other run on this machine (the scenarios' namespace names are fixed), and
# destroys a scenario's namespaces even when molecule itself dies.
set -eu
VENV=$(cd "$1" && pwd)
shift
REPO=$(cd "$(dirname "$0")/.." && pwd)
BASE=/var/tmp/chm-molecule
PATH="$VENV/bin:$PATH"
ANSIBLE_COLLECTIONS_PATH="$VENV/collections"
export PATH ANSIBLE_COLLECTIONS_PATH
if [ "$(id -u)" != 0 ]; then
    echo "molecule.sh: the scenarios make network namespaces: run as root" >&2
    exit 1
fi
cd "$REPO"
scenarios=${*:-$(find extensions/molecule -mindepth 2 -maxdepth 2 -name molecule.yml | cut -d/ -f3 | sort)}

exec 9>/tmp/chm-molecule.lock
flock 9
mkdir -p "$BASE"
rm -rf "$BASE/wheelhouse"
start=$(date +%s)
"$VENV/bin/python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$BASE/wheelhouse" "$REPO" > "$BASE/wheelhouse.log" 2>&1 || { cat "$BASE/wheelhouse.log" >&2; exit 1; }
echo "molecule.sh: wheelhouse built in $(($(date +%s) - start)) s"

status=0
report=""
for scenario in $scenarios; do
    start=$(date +%s)
    if molecule test -s "$scenario" > "$BASE/$scenario.log" 2>&1; then
        result=passed
    else
        result=FAILED
        status=1
        # molecule destroys on failure; this covers molecule dying first
        molecule destroy -s "$scenario" >> "$BASE/$scenario.log" 2>&1 || true
        sed 's/\x1b\[[0-9;]*m//g' "$BASE/$scenario.log" | tail -n 80 >&2
    fi
    seconds=$(($(date +%s) - start))
    report="$report
  $scenario: $result in $seconds s (log: $BASE/$scenario.log)"
done
rm -rf "$BASE/wheelhouse"
echo "molecule scenarios:$report"
exit $status
