#!/usr/bin/env bash
# The test command: set up (scripts/bootstrap.sh --test), then run the whole test suite.
#   scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest -q "$@"
