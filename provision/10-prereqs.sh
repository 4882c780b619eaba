#!/usr/bin/env bash
# Install the base packages the image's files rely on (rendered list files/bakery/prereqs), only those
# missing: when all are present there is no apt work at all (offline and local bakes).
set -o errexit -o nounset -o pipefail
: "${BAKERY_FILES:?}"
export DEBIAN_FRONTEND=noninteractive

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
