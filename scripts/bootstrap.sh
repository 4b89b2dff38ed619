#!/usr/bin/env bash
# Create (once) and activate the project's virtual environment in .venv, with the pinned set.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it only installs what changed).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${NAVILA_VENV:-$repo/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "navila_tune: creating $venv" >&2
  "$python" -m venv "$venv"
fi
stamp="$venv/.navila-deps"
want="$(cat "$repo/requirements/dev.txt" "$repo/setup.cfg" | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "navila_tune: installing the pinned environment (requirements/dev.txt) into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$repo/requirements/dev.txt" -e "$repo"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
