#!/usr/bin/env bash
# The main job: set up (scripts/bootstrap.sh), then run a whole local study — dealer and
# 3 nodes on localhost, three simulated providers, the full pipeline, results and plots.
#   scripts/main.sh [--out DIR] [local_study.sh options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
args=("$@")
has_out=0
for a in "${args[@]}"; do [ "$a" = "--out" ] && has_out=1; done
[ $has_out -eq 0 ] && args+=(--out out)
exec scripts/local_study.sh "${args[@]}"
