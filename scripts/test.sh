#!/usr/bin/env bash
# The whole test suite, as the README gives it: setup, type check, lint (incl. the layer check),
# then every test (pure and kernel) with the leftover check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== typecheck"; npm run --silent typecheck
echo "== lint"; npm run --silent lint
echo "== tests"; npm test
