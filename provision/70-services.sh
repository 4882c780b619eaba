#!/usr/bin/env bash
# Enable the units listed in the rendered files/bakery/units (nothing is started during the bake).
set -o errexit -o nounset -o pipefail
: "${BAKERY_FILES:?}"

units=()
while read -r unit; do
  [[ -z $unit || $unit == \#* ]] && continue
  units+=("$unit")
done < "$BAKERY_FILES/bakery/units"
systemctl enable "${units[@]}"
