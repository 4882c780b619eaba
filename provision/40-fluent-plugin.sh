#!/usr/bin/env bash
# Install the Pub/Sub output plugin gem at its pinned version into fluent-package's Ruby (mirror: from
# the staged gems only, dependencies included).
set -o errexit -o nounset -o pipefail
: "${BAKERY_ARTIFACT_SOURCE:?}" "${BAKERY_ARTIFACTS:?}" "${FLUENT_PLUGIN:?}" "${FLUENT_PLUGIN_VERSION:?}"
gem=/usr/sbin/fluent-gem

if "$gem" list --installed --exact "$FLUENT_PLUGIN" --version "$FLUENT_PLUGIN_VERSION" > /dev/null; then
  exit 0
fi
if [[ $BAKERY_ARTIFACT_SOURCE == mirror ]]; then
  cd "$BAKERY_ARTIFACTS/gems" # --local resolves dependencies from the gems staged here
  "$gem" install --local --no-document "$FLUENT_PLUGIN-$FLUENT_PLUGIN_VERSION.gem"
else
  "$gem" install --no-document "$FLUENT_PLUGIN" --version "$FLUENT_PLUGIN_VERSION"
fi
