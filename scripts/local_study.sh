#!/usr/bin/env bash
# Run a whole study on this machine, end to end:
#   create the study (keys for every party, free loopback ports), start the dealer and
#   N nodes, submit every site, run the analyses, print where the results are and the
#   headline figures, and stop everything this script started.
#
#   scripts/local_study.sh [--nodes N] [--analyses LIST] [--samples N --snps M --seed S]
#                          [analysis options] --out DIR [SITE_DIR ...]
#
# With no SITE_DIR it simulates three sites (mpcgwas simulate).  Analysis options
# (e.g. --pheno CASE --maf 0.01 --pcs 5) pass through to `mpcgwas run` unchanged.
set -euo pipefail

nodes=3
analyses=""
out=""
samples=1000
snps=5000
seed=1
sites=()
passthrough=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=$2; shift 2 ;;
    --analyses) analyses=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --samples) samples=$2; shift 2 ;;
    --snps) snps=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    --*)
      passthrough+=("$1")
      # A flag's value is the next word unless that word is a flag or a site folder.
      if [ $# -gt 1 ] && [[ "$2" != --* ]] && [ ! -d "$2" ]; then passthrough+=("$2"); shift; fi
      shift ;;
    *) sites+=("$1"); shift ;;
  esac
done
if [ -z "$out" ]; then echo "error: --out DIR is required" >&2; exit 2; fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
command -v mpcgwas >/dev/null || { echo "error: mpcgwas is not installed (pip install -e .)" >&2; exit 2; }

if [ ${#sites[@]} -eq 0 ]; then
  echo "== simulating 3 sites ($samples samples x $snps SNPs) in $out/sites"
  mpcgwas simulate --out "$out/sites" --sites 3 --samples "$samples" --snps "$snps" --seed "$seed" >/dev/null
  sites=("$out/sites/site1" "$out/sites/site2" "$out/sites/site3")
fi
names=()
for s in "${sites[@]}"; do
  [ -d "$s" ] || { echo "error: site folder $s does not exist" >&2; exit 2; }
  names+=("$(basename "$s" | tr -c 'A-Za-z0-9_\n-' '_')")
done
providers=$(IFS=,; echo "${names[*]}")
if [ -z "$analyses" ]; then analyses="freq,gwas,gwas-logistic,logreg,logrank"; fi
# Demo defaults for the simulated cohort (an option given on the command line wins).
has() { for a in "${passthrough[@]}"; do [ "$a" = "$1" ] && return 0; done; return 1; }
if [[ ",$analyses," == *",logreg,"* ]] && ! has --label; then passthrough+=(--label DIAGNOSIS --standardize); fi
if ! has --covar-names; then passthrough+=(--covar-names AGE,SEX); fi
if [[ ",$analyses," == *",logrank,"* ]] && ! has --km-min-at-risk; then passthrough+=(--km-min-at-risk 5); fi

study_dir="$out/study"
rm -rf "$study_dir"
echo "== creating a study with $nodes nodes and providers $providers"
# The demo study also lets the analyst see Kaplan-Meier curves (steps with fewer than
# --km-min-at-risk patients at risk suppressed) and the PCs (individual-level: a PC
# plot); a real study decides that in its policy.
study=$(mpcgwas init-study --out "$study_dir" --nodes "$nodes" --providers "$providers" \
        --allow logrank.km=analyst --allow gwas.pcs=analyst)

pids=()
cleanup() {
  local status=$?
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 50); do
      alive=0
      for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      [ $alive -eq 0 ] && break
      sleep 0.2
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
  exit $status
}
trap cleanup EXIT INT TERM

here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$study_dir/logs"
"$here/start_dealer.sh" "$study" "$study_dir/data/dealer" --log "$study_dir/logs/dealer.log" \
  >/dev/null 2>&1 &
pids+=($!)
for i in $(seq 0 $((nodes - 1))); do
  "$here/start_node.sh" "$study" "$i" "$study_dir/data/node$i" --log "$study_dir/logs/node$i.log" \
    >/dev/null 2>&1 &
  pids+=($!)
done
echo "== started dealer and $nodes nodes (logs in $study_dir/logs)"
mpcgwas wait --study "$study" --timeout 60

for k in "${!sites[@]}"; do
  "$here/submit_site.sh" "$study" "${names[$k]}" "${sites[$k]}"
done

IFS=',' read -ra todo <<< "$analyses"
for a in "${todo[@]}"; do
  echo "== running $a"
  mpcgwas run --study "$study" --out "$out" "$a" "${passthrough[@]}" >/dev/null
done

echo "== results in $out"
python3 - "$out/summary.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
for name, s in summary.items():
    keep = {k: v for k, v in s.items() if k not in ("reveals", "traffic_bytes_sent", "rounds", "files",
                                                   "phases", "top_hits")}
    print(f"-- {name}: " + json.dumps(keep, default=str))
    if s.get("files"):
        print("   files: " + ", ".join(s["files"]))
PY
