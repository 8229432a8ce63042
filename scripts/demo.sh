#!/usr/bin/env bash
# The demo, as the README gives it: setup, then weft's demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec weft demo "$@"
