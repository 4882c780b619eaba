#!/usr/bin/env bash
# Install the base packages the image's files rely on (rendered list files/bakery/prereqs), only those
# missing: when all are present there is no apt work at all (offline and local bakes).
set -o errexit -o nounset -o pipefail
: "${BAKERY_FILES:?}"
export DEBIAN_FRONTEND=noninteractive

# On cloud images cloud-init may still be configuring apt when Packer connects: wait for it, bounded.
if command -v cloud-init >/dev/null; then
  status=0
  timeout 600 cloud-init status --wait >/dev/null || status=$?
  # 0: done; 2: done with recoverable errors. Anything else (1 failed, 124 timed out) stops the bake.
  if ((status != 0 && status != 2)); then
    echo "10-prereqs.sh: cloud-init did not finish cleanly (status $status)" >&2
    exit 1
  fi
fi

missing=()
while read -r name; do
  [[ -z $name || $name == \#* ]] && continue
  if [[ $(dpkg-query -W -f='${db:Status-Status}' "$name" 2>/dev/null) != installed ]]; then
    missing+=("$name")
  fi
done < "$BAKERY_FILES/bakery/prereqs"

if ((${#missing[@]})); then
  apt-get -o DPkg::Lock::Timeout=600 update
  apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}"
fi
