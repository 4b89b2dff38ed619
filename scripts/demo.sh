#!/usr/bin/env bash
# The embedded default on this machine: every stage of cot_tiny on CPU, offline (README, command 1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$repo"
exec python -m navila_tune "$@"
