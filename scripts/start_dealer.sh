#!/usr/bin/env bash
# Start the dealer daemon of a study.
#   scripts/start_dealer.sh STUDY_FILE DATA_DIR [extra mpcgwas dealer options]
# Runs in the foreground; stop it with SIGTERM (Ctrl-C).
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 STUDY_FILE DATA_DIR [options]" >&2; exit 2; fi
study=$1; data=$2; shift 2
mkdir -p "$data"
exec mpcgwas dealer --study "$study" --data "$data" "$@"
