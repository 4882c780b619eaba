#!/usr/bin/env bash
# The main job: set up a fresh Debian 12 machine (as root), then bake, boot, test and publish a local
# image end to end. Extra arguments go to `invoke bake` (e.g. --dry-run). Usage: scripts/bake.sh [ARGS]
set -o errexit -o nounset -o pipefail

cd "$(dirname "$0")/.."
scripts/bootstrap.sh
VENV=${BAKERY_VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH" CHECKPOINT_DISABLE=1
invoke bake "$@"
invoke images
