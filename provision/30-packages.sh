#!/usr/bin/env bash
# Install osquery and fluent-package at their exact versions (upstream: from the vendors' apt
# repositories; mirror and stand-in: the staged .deb files) and hold them.
set -o errexit -o nounset -o pipefail
: "${BAKERY_ARTIFACT_SOURCE:?}" "${BAKERY_ARTIFACTS:?}"
: "${OSQUERY_PACKAGE_VERSION:?}" "${FLUENT_PACKAGE:?}" "${FLUENT_PACKAGE_VERSION:?}"
export DEBIAN_FRONTEND=noninteractive
apt_install=(apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends
  --allow-change-held-packages --allow-downgrades)

# install_pinned NAME VERSION
install_pinned() {
  local name=$1 version=$2 deb
  if [[ $(dpkg-query -W -f='${db:Status-Status} ${Version}' "$name" 2>/dev/null) != "installed $version" ]]; then
    if [[ $BAKERY_ARTIFACT_SOURCE == upstream ]]; then
      "${apt_install[@]}" "$name=$version"
    else
      deb="$BAKERY_ARTIFACTS/${name}_${version#*:}_amd64.deb"
      # shellcheck disable=SC2016 # ${Package} is dpkg-deb's format, not shell
      if [[ $(dpkg-deb --show --showformat='${Package} ${Version}' "$deb") != "$name $version" ]]; then
        echo "30-packages.sh: $deb is not $name $version" >&2
        exit 1
      fi
      "${apt_install[@]}" "$deb"
    fi
  fi
  apt-mark hold "$name" > /dev/null
}

install_pinned osquery "$OSQUERY_PACKAGE_VERSION"
install_pinned "$FLUENT_PACKAGE" "$FLUENT_PACKAGE_VERSION"
