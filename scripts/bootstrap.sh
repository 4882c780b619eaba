#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (as root) for osquery-bakery: system packages, virtualenv, the project.
# Idempotent: installs only what is missing. Usage: scripts/bootstrap.sh
set -o errexit -o nounset -o pipefail

cd "$(dirname "$0")/.."
VENV=${BAKERY_VENV:-.venv}

# Debian packages: packer (1.6.6 in Debian 12), QEMU + tools for the local target, mmdebstrap for the
# base image and the provisioning tests, shellcheck and rsyslog for the checks, ssh for testinfra.
PACKAGES=(packer qemu-system-x86 qemu-utils mmdebstrap shellcheck rsyslog openssh-client dpkg-dev
          e2fsprogs fdisk python3-venv ca-certificates logrotate)
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
