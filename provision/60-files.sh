#!/usr/bin/env bash
# Install every file of the rendered MANIFEST with its mode and owner (files already right are left
# alone), apply the tmpfiles.d entries installed (the osquery log ACL), and reload systemd if it runs.
set -o errexit -o nounset -o pipefail
: "${BAKERY_FILES:?}"

tmpfiles=()
while read -r mode owner dest src extra; do
  [[ -z $mode || $mode == \#* ]] && continue
  if [[ ! $mode =~ ^0[0-7]{3}$ || ! $owner =~ ^[a-z_][a-z0-9_-]*:[a-z_][a-z0-9_-]*$ || $dest != /* ||
    -z ${src:-} || $src == /* || $src == *..* || -n ${extra:-} ]]; then
    echo "60-files.sh: malformed MANIFEST line: $mode $owner ${dest:-} ${src:-} ${extra:-}" >&2
    exit 1
  fi
  source="$BAKERY_FILES/$src"
  if ! [[ -f $dest && ! -L $dest ]] || ! cmp -s "$source" "$dest" ||
    [[ $(stat -c '%a %U:%G' "$dest") != "${mode#0} $owner" ]]; then
    install -D -m "$mode" -o "${owner%%:*}" -g "${owner#*:}" "$source" "$dest"
  fi
  [[ $dest == /etc/tmpfiles.d/*.conf ]] && tmpfiles+=("$dest")
done < "$BAKERY_FILES/MANIFEST"

if ((${#tmpfiles[@]})); then
  systemd-tmpfiles --create "${tmpfiles[@]}"
fi
if [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
fi
