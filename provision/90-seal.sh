#!/usr/bin/env bash
# Seal the image (runs last): apply /etc/bakery/seal.list (stop units, remove per-host state and secrets,
# empty machine-id), then prove nothing listed remains (exit 1 listing what does) and record the seal in
# /etc/bakery/seal.json (time, items, fingerprints of the removed host keys, sha256 of emptied files)
# so the image suite can tell a booted VM's fresh identity from a baked one.
set -o errexit -o nounset -o pipefail
shopt -s nullglob
: "${BAKERY_BUILD_USER:?}"
list=/etc/bakery/seal.list
marker=/etc/bakery/seal.json
booted=false
[[ -d /run/systemd/system ]] && booted=true

items=()
while read -r action target extra; do
  [[ -z $action || $action == \#* ]] && continue
  if [[ -z ${target:-} || -n ${extra:-} || ! $target =~ ^[][A-Za-z0-9._/*?:@+=-]+$ ]]; then
    echo "90-seal.sh: malformed line in $list: $action ${target:-} ${extra:-}" >&2
    exit 1
  fi
  items+=("$action $target")
done < "$list"

home=/home/$BAKERY_BUILD_USER
[[ $BAKERY_BUILD_USER == root ]] && home=/root
if ! printf '%s\n' "${items[@]}" | grep -qxF "remove $home/.ssh/authorized_keys"; then
  echo "90-seal.sh: $list does not remove the build user's $home/.ssh/authorized_keys: re-render" >&2
  exit 1
fi

# matches GLOB: every existing path the glob names (dangling symlinks included)
matches() {
  local path
  for path in $1; do
    if [[ -e $path || -L $path ]]; then
      printf '%s\n' "$path"
    fi
  done
}

keys=()
declare -A emptied=()
for item in "${items[@]}"; do
  action=${item%% *} target=${item#* }
  case $action in
    stop)
      if $booted; then systemctl stop "$target"; fi
      ;;
    remove-keys | remove)
      mapfile -t found < <(matches "$target")
      if [[ $action == remove-keys ]]; then
        for path in "${found[@]}"; do
          if [[ $path == *.pub ]]; then
            keys+=("$(ssh-keygen -l -E sha256 -f "$path" | awk '{ print $2 }')")
          fi
        done
      fi
      if ((${#found[@]})) && ! rm -rf -- "${found[@]}"; then
        echo "90-seal.sh: could not remove all of: ${found[*]}" >&2
      fi
      ;;
    empty)
      if [[ -e $target ]]; then
        emptied[$target]=$(sha256sum < "$target" | awk '{ print $1 }')
      fi
      if ! : > "$target"; then
        echo "90-seal.sh: could not empty $target" >&2
      fi
      ;;
    *)
      echo "90-seal.sh: unknown action '$action' in $list" >&2
      exit 1
      ;;
  esac
done

remaining=()
for item in "${items[@]}"; do
  action=${item%% *} target=${item#* }
  case $action in
    stop) if $booted && systemctl --quiet is-active "$target"; then remaining+=("running: $target"); fi ;;
    remove-keys | remove) while read -r path; do remaining+=("$path"); done < <(matches "$target") ;;
    empty) if [[ ! -f $target || -s $target ]]; then remaining+=("not empty: $target"); fi ;;
  esac
done
if ((${#remaining[@]})); then
  echo "90-seal.sh: NOT SEALED, still present:" >&2
  printf '  %s\n' "${remaining[@]}" >&2
  exit 1
fi

json_list() {
  local sep="" value
  printf '['
  for value in "$@"; do
    printf '%s\n    "%s"' "$sep" "$value"
    sep=,
  done
  (($#)) && printf '\n  '
  printf ']'
}
{
  printf '{\n  "emptied_sha256": {'
  sep=""
  for path in "${!emptied[@]}"; do
    printf '%s\n    "%s": "%s"' "$sep" "$path" "${emptied[$path]}"
    sep=,
  done
  ((${#emptied[@]})) && printf '\n  '
  printf '},\n  "items": %s,\n' "$(json_list "${items[@]}")"
  printf '  "list_sha256": "%s",\n' "$(sha256sum < "$list" | awk '{ print $1 }')"
  printf '  "removed_host_keys": %s,\n' "$(json_list "${keys[@]}")"
  printf '  "sealed_at": %s\n}\n' "$(date +%s)"
} > "$marker.new"
mv "$marker.new" "$marker"
echo "90-seal.sh: sealed (${#items[@]} items verified, $marker)"
