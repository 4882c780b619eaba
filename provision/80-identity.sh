#!/usr/bin/env bash
# Write the image identity before the seal: /etc/bakery/identity.json and osquery's decorator source
# /etc/osquery/osquery.conf.d/bakery-identity.conf (osquery merges <config_path>.d/*.conf). bakery/identity.py
# renders both texts when the bake starts and Packer passes them as runtime variables: they are not rendered
# files, so the input fingerprint does not depend on them. Paths and modes are bakery/identity.py's
# (tests/unit/test_identity.py keeps them in step).
set -o errexit -o nounset -o pipefail
: "${BAKERY_IDENTITY:?}" "${BAKERY_IDENTITY_OSQUERY:?}"

# write DEST MODE TEXT: root-owned, replaced in one rename (the temporary name matches no *.conf glob)
write() {
  local dest=$1 mode=$2 text=$3 tmp
  if [[ $text != \{*\} || $text == *$'\n'* ]]; then
    echo "80-identity.sh: the text for $dest is not one line of JSON: re-run the bake with bakery" >&2
    exit 1
  fi
  install -d -m 0755 -o root -g root "${dest%/*}"
  tmp=$(mktemp "$dest.XXXXXX")
  printf '%s\n' "$text" > "$tmp"
  chown root:root "$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$dest"
}

write /etc/bakery/identity.json 0644 "$BAKERY_IDENTITY"
write /etc/osquery/osquery.conf.d/bakery-identity.conf 0640 "$BAKERY_IDENTITY_OSQUERY"
echo "80-identity.sh: wrote /etc/bakery/identity.json and /etc/osquery/osquery.conf.d/bakery-identity.conf"
