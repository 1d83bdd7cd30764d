#!/bin/sh
# Create the project virtualenv.  Debian 12 ships python3 without the venv
# module (package python3-venv); install it when we are root and it is missing.
set -eu
PYTHON=$1
VENV=$2
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    exit 0
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: $PYTHON is $("$PYTHON" --version 2>&1); callhome needs Python 3.11 or newer" >&2
    exit 1
fi
if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "python venv module missing: installing python3-venv" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        "$PYTHON" -m venv "$VENV"
    else
        echo "error: '$PYTHON -m venv' failed; install python3-venv (apt-get install python3-venv)" >&2
        exit 1
    fi
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
