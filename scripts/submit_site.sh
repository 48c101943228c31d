#!/usr/bin/env bash
# Secret-share a provider's site folder with the nodes of a study.
#   scripts/submit_site.sh STUDY_FILE PROVIDER_NAME SITE_DIR [--replace] [--pheno-01]
set -euo pipefail
if [ $# -lt 3 ]; then echo "usage: $0 STUDY_FILE PROVIDER_NAME SITE_DIR [options]" >&2; exit 2; fi
study=$1; name=$2; site=$3; shift 3
exec mpcgwas submit --study "$study" --name "$name" --site "$site" "$@"
