#!/usr/bin/env bash
# Creates .venv (once) and installs the project with its test tools into it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "target-klaviyo needs Python 3.10 or newer; '$PYTHON' is $("$PYTHON" --version 2>&1 || echo missing)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $("$PYTHON" --version 2>&1)" >&2
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    # Some distributions ship Python without ensurepip (Debian: python3-venv); virtualenv
    # from the package registry does the same job.
    rm -rf .venv
    echo "python3 -m venv is not available here; using virtualenv from PyPI instead" >&2
    "$PYTHON" -m pip install --quiet --user virtualenv >&2 \
      || { echo "Install python3-venv (or pip) for $PYTHON and run this again." >&2; exit 1; }
    "$PYTHON" -m virtualenv --quiet .venv >&2
  fi
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "Installing target-klaviyo and its test tools into .venv" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip >&2
  .venv/bin/python -m pip install --quiet -e '.[test]' >&2
  touch "$stamp"
fi
