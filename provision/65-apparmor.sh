#!/usr/bin/env bash
# Where the image has an AppArmor profile for rsyslogd (Ubuntu; enforced on 24.04), add the rendered rule
# for osquery's syslog pipe to the profile's local include (idempotent), and reload the profile when
# AppArmor runs and the profile is not disabled. Without a profile (Debian 12) there is nothing to do.
set -o errexit -o nounset -o pipefail
: "${BAKERY_FILES:?}"
profile=/etc/apparmor.d/usr.sbin.rsyslogd
local_file=/etc/apparmor.d/local/usr.sbin.rsyslogd
rule_file="$BAKERY_FILES/bakery/apparmor/rsyslogd-local"

if [[ ! -f $profile ]]; then
  echo "65-apparmor.sh: no $profile: nothing to do"
  exit 0
fi
mapfile -t rules < <(grep -v -e '^#' -e '^$' "$rule_file" || true)
if ((${#rules[@]} == 0)); then
  echo "65-apparmor.sh: $rule_file holds no rule: re-render" >&2
  exit 1
fi
install -d -m 0755 "$(dirname "$local_file")"
touch "$local_file"
for rule in "${rules[@]}"; do
  if ! grep -qxF -- "$rule" "$local_file"; then
    printf '# osquery-bakery: osquery syslog pipe (see /etc/rsyslog.d/60-osquery.conf)\n%s\n' "$rule" >> "$local_file"
  fi
done
if [[ $(cat /sys/module/apparmor/parameters/enabled 2>/dev/null) == Y && ! -e /etc/apparmor.d/disable/usr.sbin.rsyslogd ]] &&
  command -v apparmor_parser > /dev/null; then
  apparmor_parser --replace --skip-read-cache --write-cache "$profile"
fi
