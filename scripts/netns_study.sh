#!/usr/bin/env bash
# Run a whole study with every party on its own (emulated) host: one network namespace
# per party, joined by veth links to a bridge in a hub namespace, shaped by tbf (rate)
# and delayed by a userspace relay (one-way delay; this kernel has no netem qdisc).
#
#   sudo scripts/netns_study.sh [--delay-ms D] [--rate 1gbit] [--nodes 3] [--analyses LIST]
#                               [--allow NAME=RECIPIENTS ...] [analysis options] --out DIR [SITE_DIR ...]
#
# Topology (all addresses are created here, 10.231.0.0/24, and removed on exit):
#   mpcg-hub      bridge br0 10.231.0.1 + the delay relay (one port per daemon socket)
#   mpcg-dealer   10.231.0.10      mpcg-nodeI   10.231.0.(20+I)      mpcg-client 10.231.0.100
# Every daemon binds on its own address; every party connects to the relay's port for
# that daemon, so each message crosses the relay once: one-way delay D, RTT 2D.
# Providers and the analyst run in mpcg-client.  With no SITE_DIR, three sites are
# simulated.  Requires root (ip netns) and iproute2.
set -euo pipefail

delay=0
rate=1gbit
nodes=3
analyses=gwas
out=""
samples=1000
snps=1000
sites=()
passthrough=()
allow=()
while [ $# -gt 0 ]; do
  case "$1" in
    --delay-ms) delay=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --nodes) nodes=$2; shift 2 ;;
    --analyses) analyses=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --allow) allow+=(--allow "$2"); shift 2 ;;
    --samples) samples=$2; shift 2 ;;
    --snps) snps=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    --*)
      passthrough+=("$1")
      if [ $# -gt 1 ] && [[ "$2" != --* ]] && [ ! -d "$2" ]; then passthrough+=("$2"); shift; fi
      shift ;;
    *) sites+=("$1"); shift ;;
  esac
done
[ -n "$out" ] || { echo "error: --out DIR is required" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "error: network namespaces need root" >&2; exit 2; }
command -v ip >/dev/null || { echo "error: iproute2 (ip) is not installed" >&2; exit 2; }
mkdir -p "$out"; out=$(cd "$out" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
mpcgwas=$(command -v mpcgwas)
python=$(command -v python3)

if [ ${#sites[@]} -eq 0 ]; then
  "$mpcgwas" simulate --out "$out/sites" --sites 3 --samples "$samples" --snps "$snps" --seed 1 >/dev/null
  sites=("$out/sites/site1" "$out/sites/site2" "$out/sites/site3")
fi
names=()
for s in "${sites[@]}"; do names+=("$(basename "$s" | tr -c 'A-Za-z0-9_\n-' '_')"); done
providers=$(IFS=,; echo "${names[*]}")

ns_list=(mpcg-hub mpcg-dealer mpcg-client)
for i in $(seq 0 $((nodes - 1))); do ns_list+=("mpcg-node$i"); done
pids=()
cleanup() {
  local status=$?
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for ns in "${ns_list[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  exit $status
}
trap cleanup EXIT INT TERM

# ---- namespaces, bridge, veth links, rate shaping
for ns in "${ns_list[@]}"; do
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
ip -n mpcg-hub link add br0 type bridge
ip -n mpcg-hub addr add 10.231.0.1/24 dev br0
ip -n mpcg-hub link set br0 up
declare -A addr=([mpcg-dealer]=10.231.0.10 [mpcg-client]=10.231.0.100)
for i in $(seq 0 $((nodes - 1))); do addr[mpcg-node$i]=10.231.0.$((20 + i)); done
k=0
for ns in "${!addr[@]}"; do
  a="vh$k"; b="vp$k"; k=$((k + 1))
  ip link add "$a" type veth peer name "$b"
  ip link set "$a" netns mpcg-hub
  ip link set "$b" netns "$ns"
  ip -n mpcg-hub link set "$a" master br0
  ip -n mpcg-hub link set "$a" up
  ip -n "$ns" addr add "${addr[$ns]}/24" dev "$b"
  ip -n "$ns" link set "$b" up
  ip netns exec "$ns" tc qdisc add dev "$b" root tbf rate "$rate" burst 1mb latency 100ms
done

# ---- the study: daemons bind on their own address, everyone connects through the relay
study_dir="$out/study"
rm -rf "$study_dir"
study=$("$mpcgwas" init-study --out "$study_dir" --nodes "$nodes" --providers "$providers" --base-port 47000 \
        ${allow[@]+"${allow[@]}"})
relay_pairs=$("$python" - "$study" "$nodes" <<'PY'
import sys, tomllib, tomli_w
path, n = sys.argv[1], int(sys.argv[2])
doc = tomllib.loads(open(path).read())
hosts = {"dealer": "10.231.0.10"} | {f"node{i}": f"10.231.0.{20 + i}" for i in range(n)}
pairs = []
def rewire(table, name):
    for key in ("peer", "service"):
        port = table[key].rsplit(":", 1)[1]
        table[f"{key}_bind"] = f"tcp://{hosts[name]}:{port}"
        table[key] = f"tcp://10.231.0.1:{port}"
        pairs.append(f"10.231.0.1:{port}={hosts[name]}:{port}")
rewire(doc["dealer"], "dealer")
for i, t in enumerate(doc["nodes"]):
    rewire(t, f"node{i}")
doc["study"]["timeout"] = 60.0
open(path, "w").write(tomli_w.dumps(doc))
print(" ".join(pairs))
PY
)
ip netns exec mpcg-hub "$python" "$here/delay_relay.py" --delay-ms "$delay" $relay_pairs \
  >"$study_dir/relay.log" 2>&1 &
pids+=($!)

mkdir -p "$study_dir/logs"
ip netns exec mpcg-dealer "$mpcgwas" dealer --study "$study" --data "$study_dir/data/dealer" \
  --log "$study_dir/logs/dealer.log" >/dev/null 2>&1 &
pids+=($!)
for i in $(seq 0 $((nodes - 1))); do
  ip netns exec "mpcg-node$i" "$mpcgwas" node --study "$study" --id "$i" --data "$study_dir/data/node$i" \
    --log "$study_dir/logs/node$i.log" >/dev/null 2>&1 &
  pids+=($!)
done
ip netns exec mpcg-client "$mpcgwas" wait --study "$study" --timeout 60
echo "== $nodes nodes + dealer on separate namespaces, one-way delay ${delay} ms, rate $rate"

for k in "${!sites[@]}"; do
  ip netns exec mpcg-client "$mpcgwas" submit --study "$study" --name "${names[$k]}" --site "${sites[$k]}"
done
IFS=',' read -ra todo <<< "$analyses"
for a in "${todo[@]}"; do
  ip netns exec mpcg-client "$mpcgwas" run --study "$study" --out "$out" "$a" --no-progress \
    "${passthrough[@]}" >/dev/null
done
"$python" - "$out/summary.json" <<'PY'
import json, sys
for name, s in json.load(open(sys.argv[1])).items():
    rounds = max(s.get("rounds", {0: 0}).values())
    print(f"-- {name}: {s['seconds']} s, {rounds} rounds, "
          + ", ".join(f"{p} {v['seconds']} s / {v['rounds']} rounds" for p, v in s.get("phases", {}).items()))
PY
