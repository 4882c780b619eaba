#!/usr/bin/env bash
# Make the pinned packages installable.
#   upstream: each vendor key is downloaded, must have exactly the expected fingerprint, and is written to
#             /etc/apt/keyrings/<name>.asc before the rendered deb822 source (signed-by) is installed.
#   mirror, stand-in: the staged artifacts must match their SHA256SUMS.
set -o errexit -o nounset -o pipefail
: "${BAKERY_ARTIFACT_SOURCE:?}" "${BAKERY_ARTIFACTS:?}" "${BAKERY_FILES:?}"

case $BAKERY_ARTIFACT_SOURCE in
  mirror | stand-in)
    cd "$BAKERY_ARTIFACTS"
    sha256sum --check --strict --quiet SHA256SUMS
    exit 0
    ;;
  upstream) ;;
  *)
    echo "20-repos.sh: unknown BAKERY_ARTIFACT_SOURCE '$BAKERY_ARTIFACT_SOURCE'" >&2
    exit 1
    ;;
esac
: "${OSQUERY_KEY_URL:?}" "${OSQUERY_KEY_FINGERPRINT:?}" "${FLUENT_KEY_URL:?}" "${FLUENT_KEY_FINGERPRINT:?}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# install_key NAME URL FINGERPRINT: fetch the key, refuse it unless it holds exactly one primary key with
# FINGERPRINT, then write that key (armored, nothing else) to /etc/apt/keyrings/NAME.asc.
install_key() {
  local name=$1 url=$2 want=$3 home="$work/$1" got
  mkdir -m 0700 "$home"
  curl --fail --silent --show-error --location --proto '=https,file' --max-time 60 --retry 3 \
    --output "$home/download" "$url"
  got=$(gpg --homedir "$home" --show-keys --with-colons "$home/download" 2>/dev/null |
    awk -F: '$1 == "pub" { primary = 1; next } primary && $1 == "fpr" { print $10; primary = 0 }')
  if [[ $got != "$want" ]]; then
    echo "20-repos.sh: $url: key fingerprint '${got//$'\n'/ }' is not the expected $want: refusing it" >&2
    exit 1
  fi
  gpg --homedir "$home" --batch --quiet --import "$home/download"
  gpg --homedir "$home" --batch --armor --export "$want" > "$home/$name.asc"
  install -d -m 0755 /etc/apt/keyrings
  install -m 0644 "$home/$name.asc" "/etc/apt/keyrings/$name.asc"
}

install_key osquery "$OSQUERY_KEY_URL" "$OSQUERY_KEY_FINGERPRINT"
install_key fluent "$FLUENT_KEY_URL" "$FLUENT_KEY_FINGERPRINT"
for name in osquery fluent; do
  install -m 0644 "$BAKERY_FILES/bakery/apt/$name.sources" "/etc/apt/sources.list.d/$name.sources"
done
apt-get -o DPkg::Lock::Timeout=600 update
