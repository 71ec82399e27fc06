#!/usr/bin/env bash
# The whole test suite: lint, type check, then every test (emulator, target, Meltano end to end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo "== ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy" >&2
.venv/bin/mypy target_klaviyo tests/emulator
echo "== pytest" >&2
exec .venv/bin/python -m pytest "$@"
