#!/usr/bin/env bash
# Create .venv and install the project with the given extras (e.g. "test", "aws-local").
# Re-installs only when pyproject.toml or the extras change, so repeated runs are quick.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=".venv/.indostar-installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${extras//,/_}"
if [ ! -e "$stamp" ]; then
  spec="."
  [ -n "$extras" ] && spec=".[${extras}]"
  # compat mode: a plain .pth path entry, no import-hook finder (8 ms of every CLI start-up)
  .venv/bin/python -m pip install -q -e "$spec" --config-settings editable_mode=compat
  rm -f .venv/.indostar-installed-*
  touch "$stamp"
fi
