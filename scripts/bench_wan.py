#!/usr/bin/env python3
"""The secure GWAS across network namespaces at several one-way delays (needs root).

Runs scripts/netns_study.sh on secure-gwas's 1000 x 1000 x 10 workload (5 PCs,
10 power iterations, its QC thresholds) at each delay and prints wall time,
rounds, hops (one-way latencies on the critical path, mpc.net.channel) and the
slowdown against the first delay, with the floor "first wall time + hops x
delay" that a latency-bound run approaches.

    sudo python scripts/bench_wan.py [--delays 0,10,50] [--rate 1gbit] [--work DIR]
                                     [--allow gwas.pca_eigenvalues=nodes]

--allow adds a reveal-policy entry to the study (as mpcgwas init-study does):
gwas.pca_eigenvalues=nodes measures the PCA whose small eigenproblem reveals
its spectrum to the nodes (protocols.pca step 4).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_1K = ROOT.parent / "shared" / "data" / "secure-gwas-1k"
OPTIONS = ["--pheno", "CASE", "--covar-names", "all", "--mind", "0.05", "--geno", "0.1", "--maf", "none",
           "--hwe", "none", "--het-min", "0.2", "--het-max", "0.5", "--pcs", "5", "--pca-oversample", "5",
           "--pca-iters", "10", "--pca-eig-iters", "10", "--ld-dist", "1"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delays", default="0,10,50")
    ap.add_argument("--rate", default="1gbit")
    ap.add_argument("--work", default=None)
    ap.add_argument("--allow", action="append", default=[], help="a reveal-policy entry NAME=RECIPIENTS")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_wan_"))
    rows = []
    for delay in [float(d) for d in args.delays.split(",")]:
        out = work / f"delay{delay:g}"
        cmd = [str(ROOT / "scripts" / "netns_study.sh"), "--delay-ms", f"{delay:g}", "--rate", args.rate,
               "--analyses", "gwas", "--out", str(out)] + [a for e in args.allow for a in ("--allow", e)] + OPTIONS + [str(SHARED_1K / f"site{i}") for i in (1, 2, 3)]
        subprocess.run(cmd, check=True)
        s = json.loads((out / "summary.json").read_text())["gwas"]
        rows.append((delay, s["seconds"], max(s["rounds"].values()), max(s.get("hops", {0: 0}).values()),
                     s["phases"]))
    base = rows[0][1]
    print(f"\n{'one-way delay':>14}{'wall s':>10}{'rounds':>9}{'hops':>7}{'slowdown':>10}{'floor s':>9}"
          f"   per phase (s / rounds / hops)")
    for delay, wall, rounds, hops, phases in rows:
        per = ", ".join(f"{p} {v['seconds']:.1f}/{v['rounds']}/{v.get('hops', 0)}"
                        for p, v in phases.items() if v["rounds"])
        floor = base + hops * delay / 1000.0        # the 0 ms time plus one delay per hop
        print(f"{delay:>11g} ms{wall:>10.1f}{rounds:>9}{hops:>7}{wall / base:>9.1f}x{floor:>9.1f}   {per}")


if __name__ == "__main__":
    sys.exit(main())
