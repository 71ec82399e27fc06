#!/usr/bin/env bash
# The demo: starts the local Klaviyo emulator, loads examples/*.singer through target-klaviyo,
# prints the run summary and what the emulator now holds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python scripts/demo.py "$@"
