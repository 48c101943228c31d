#!/usr/bin/env bash
# Start computation node I of a study.
#   scripts/start_node.sh STUDY_FILE I DATA_DIR [extra mpcgwas node options]
# Runs in the foreground; stop it with SIGTERM (Ctrl-C).
set -euo pipefail
if [ $# -lt 3 ]; then echo "usage: $0 STUDY_FILE NODE_ID DATA_DIR [options]" >&2; exit 2; fi
study=$1; id=$2; data=$3; shift 3
mkdir -p "$data"
exec mpcgwas node --study "$study" --id "$id" --data "$data" "$@"
