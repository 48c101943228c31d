#!/usr/bin/env python3
"""The secure GWAS across network namespaces at several one-way delays (needs root).

Runs scripts/netns_study.sh at each delay and prints wall time, rounds, hops
(one-way latencies on the critical path, mpc.net.channel) and the slowdown
against the first delay, with the floor "first wall time + hops x delay" that
a latency-bound run approaches.  Workloads (as scripts/bench_gwas.py):

  1k    secure-gwas's 1000 x 1000 x 10 example (5 PCs, 10 power iterations,
        its QC thresholds): the round overhead dominates its 0 ms time
  20k   a simulated 2000 x 20 000 cohort (3 sites, 10 PCs, default options),
        simulated once into the work directory

    sudo python scripts/bench_wan.py [--workload 1k|20k] [--delays 0,10,50] [--rate 1gbit]
                                     [--work DIR] [--allow gwas.pca_eigenvalues=nodes]

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
OPTIONS = {
    "1k": ["--pheno", "CASE", "--covar-names", "all", "--mind", "0.05", "--geno", "0.1", "--maf", "none",
           "--hwe", "none", "--het-min", "0.2", "--het-max", "0.5", "--pcs", "5", "--pca-oversample", "5",
           "--pca-iters", "10", "--pca-eig-iters", "10", "--ld-dist", "1"],
    "20k": ["--pheno", "CASE", "--mind", "0.1", "--geno", "0.1", "--maf", "0.01", "--hwe", "1e-6",
            "--pcs", "10", "--pca-oversample", "10", "--pca-iters", "4", "--pca-eig-iters", "10",
            "--ld-dist", "100000"],
}


def sites_for(workload: str, work: Path) -> list:
    if workload == "1k":
        return [str(SHARED_1K / f"site{i}") for i in (1, 2, 3)]
    sys.path.insert(0, str(ROOT))
    from parties.simulate import simulate

    out = work / "sites20k"
    if not (out / "site3").exists():
        simulate(out_dir=out, sites=3, samples=2000, snps=20000, seed=7)
    return [str(out / f"site{i}") for i in (1, 2, 3)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="1k", choices=sorted(OPTIONS))
    ap.add_argument("--delays", default="0,10,50")
    ap.add_argument("--rate", default="1gbit")
    ap.add_argument("--work", default=None)
    ap.add_argument("--allow", action="append", default=[], help="a reveal-policy entry NAME=RECIPIENTS")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_wan_"))
    rows = []
    sites = sites_for(args.workload, work)
    for delay in [float(d) for d in args.delays.split(",")]:
        out = work / f"delay{delay:g}"
        allow = [a for entry in args.allow for a in ("--allow", entry)]
        cmd = [str(ROOT / "scripts" / "netns_study.sh"), "--delay-ms", f"{delay:g}", "--rate", args.rate,
               "--analyses", "gwas", "--out", str(out)] + allow + OPTIONS[args.workload] + sites
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
