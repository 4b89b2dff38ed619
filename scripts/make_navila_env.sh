#!/usr/bin/env bash
# Create (once) a separate virtual environment with NaVILA's pinned LLM stack (transformers 4.37.2,
# tokenizers 0.15.2), for `python -m navila_tune.handoff check DIR --navila-python ENV/bin/python`.
#
#   scripts/make_navila_env.sh [ENV_DIR]        # default: .venv-navila in the repository
#
# Prints the environment's python on the last line. Safe to run again: it only reinstalls when
# requirements/navila_pinned.txt changed. torch comes from the local wheel (torch==2.13.0 only).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-${NAVILA_PINNED_VENV:-$repo/.venv-navila}}"
python="${PYTHON:-python3.11}"
pins="$repo/requirements/navila_pinned.txt"
stamp="$venv/.navila-pinned"
want="$(sha256sum "$pins" | cut -c1-16)"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$venv/bin/python"
  exit 0
fi
started=$(date +%s)
if [ ! -x "$venv/bin/python" ]; then
  echo "make_navila_env: creating $venv with $python" >&2
  "$python" -m venv "$venv"
fi
echo "make_navila_env: installing $pins into $venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$pins"
"$venv/bin/python" - <<'PY' >&2
import tokenizers, torch, transformers
print(f"make_navila_env: transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
      f"torch {torch.__version__}")
PY
echo "$want" > "$stamp"
echo "make_navila_env: ready in $(( $(date +%s) - started )) s" >&2
echo "$venv/bin/python"
