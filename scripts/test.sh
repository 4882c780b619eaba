#!/usr/bin/env bash
# The test command: set everything up on a fresh Debian 12 machine (as root), then run lint, type
# check and every test suite, the local end-to-end bake included. Usage: scripts/test.sh [pytest args]
set -o errexit -o nounset -o pipefail

cd "$(dirname "$0")/.."
scripts/bootstrap.sh
VENV=${BAKERY_VENV:-.venv}
# BAKERY_REQUIRE_HOST_TOOLS=1: pytest stops at once if a tool of scripts/host-tools.txt that bootstrap
# installs is missing, instead of letting a test skip for it.
export PATH="$PWD/$VENV/bin:$PATH" CHECKPOINT_DISABLE=1 BAKERY_REQUIRE_HOST_TOOLS=1

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy
echo "== import contracts"
lint-imports --no-cache --no-logo
echo "== shellcheck"
shellcheck provision/*.sh scripts/*.sh .ci/run
echo "== invoke validate"
invoke validate
echo "== pytest"
python -m pytest --run-slow --run-e2e "$@"
