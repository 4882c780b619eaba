#!/usr/bin/env bash
# The test command: set everything up on a fresh Debian 12 machine (as root), then run lint, type
# check and every test suite, the local end-to-end bake included. Usage: scripts/test.sh [pytest args]
set -o errexit -o nounset -o pipefail

cd "$(dirname "$0")/.."
scripts/bootstrap.sh
VENV=${BAKERY_VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH" CHECKPOINT_DISABLE=1

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy
echo "== shellcheck"
shellcheck provision/*.sh scripts/*.sh .ci/run
echo "== invoke validate"
invoke validate
echo "== pytest"
python -m pytest --run-slow --run-e2e "$@"
