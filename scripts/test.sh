#!/usr/bin/env bash
# The test suite (README, command 2). Extra arguments go to pytest, e.g. scripts/test.sh -k golden
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$repo"
set +e
python -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then  # pytest: no tests collected
  echo "navila_tune: no tests were collected" >&2
  exit 0
fi
exit "$code"
