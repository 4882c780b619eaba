#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (as root) for osquery-bakery: system packages, virtualenv, the project.
# Idempotent: installs only what is missing. Usage: scripts/bootstrap.sh [--print-packages]
# (--print-packages: print the Debian packages it would make sure of, one a line, and change nothing)
set -o errexit -o nounset -o pipefail

cd "$(dirname "$0")/.."
VENV=${BAKERY_VENV:-.venv}

# Debian packages: the `apt` rows of scripts/host-tools.txt, the one list of the commands the project runs
# on the host (tests/unit/test_host_tools.py checks it against the code, the tests and these scripts).
TABLE=scripts/host-tools.txt
PACKAGES=()
while read -r command package kind _; do
    [[ -z $command || $command == \#* || $kind != apt ]] && continue
    [[ " ${PACKAGES[*]} " == *" $package "* ]] || PACKAGES+=("$package")
done <"$TABLE"
if ((${#PACKAGES[@]} == 0)); then
    echo "bootstrap: $TABLE lists no apt package: restore it from git" >&2
    exit 2
fi
if [[ ${1:-} == --print-packages ]]; then
    printf '%s\n' "${PACKAGES[@]}"
    exit 0
fi
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # rsyslog is only used for `rsyslogd -N1` checks: do not start it on the host.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[dev]'
echo "bootstrap: ready ($("$VENV/bin/python" --version), $(CHECKPOINT_DISABLE=1 packer version))"
