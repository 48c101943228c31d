#!/usr/bin/env bash
# Make this checkout runnable on a fresh machine: a virtual environment in .venv with
# mpcgwas installed (the Cython kernels compile during the install).
#   scripts/bootstrap.sh          # runtime only
#   scripts/bootstrap.sh --test   # plus the test tools: pytest, hypothesis, statsmodels,
#                                 # lifelines, scikit-learn, and plink2 (Debian package)
# Idempotent: a second run only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1
py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=.venv/.mpcgwas-installed
extras=""
[ $want_test -eq 1 ] && extras="[test]"
if [ ! -f "$stamp$extras" ] || [ pyproject.toml -nt "$stamp$extras" ] || [ setup.py -nt "$stamp$extras" ] \
   || [ -n "$(find mpc/_kernels -name '*.p*' -newer "$stamp$extras" 2>/dev/null)" ]; then
  .venv/bin/python -m pip install --quiet -e ".$extras"
  touch "$stamp$extras"
fi
if [ $want_test -eq 1 ] && ! command -v plink2 >/dev/null 2>&1; then
  echo "installing plink2 (Debian package) for the tests" >&2
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq plink2 >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq plink2 >/dev/null
  fi
fi
